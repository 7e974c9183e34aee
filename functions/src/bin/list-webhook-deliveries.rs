//! `GET /v1/webhook-endpoints/{id}/deliveries`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::ListWebhookDeliveries).await
}
