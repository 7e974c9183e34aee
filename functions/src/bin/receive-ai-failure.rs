//! `POST /v1/webhooks/ai/{id}/failed`: an AI server's signed failure.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::AiFailedWebhook).await
}
