//! `POST /v1/webhooks/fal`: fal.ai's signed completion webhook.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::FalWebhook).await
}
