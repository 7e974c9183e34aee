//! `POST /v1/webhook-endpoints`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::CreateWebhookEndpoint).await
}
