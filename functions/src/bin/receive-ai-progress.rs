//! `PATCH /v1/webhooks/ai/{id}/progress`: an AI server's signed progress report.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::AiProgressWebhook).await
}
