//! `DELETE /v1/webhook-endpoints/{id}`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::DeleteWebhookEndpoint).await
}
