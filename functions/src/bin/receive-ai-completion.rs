//! `POST /v1/webhooks/ai/{id}/complete`: an AI server's signed completion.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::AiCompleteWebhook).await
}
