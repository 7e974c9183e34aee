//! SQS: signs and delivers job events to webhook endpoints, with retries.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve_deliveries().await
}
