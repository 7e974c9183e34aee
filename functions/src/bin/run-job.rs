//! The job worker: SQS-triggered Lambda, or a long-running poller in the GPU ECS task.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve_worker().await
}
