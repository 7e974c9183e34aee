//! `POST /v1/webhooks/replicate`: Replicate's signed completion webhook.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::ReplicateWebhook).await
}
