//! Scheduled: fails unfinished jobs past their deadline, releasing and refunding them.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve_reaper().await
}
