//! Scheduled: polls jobs at a provider that went quiet and finalizes them.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve_reconciler().await
}
