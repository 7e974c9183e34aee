//! The dead-letter queues' consumer: fails jobs whose messages exhausted their deliveries.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve_dead_letters().await
}
