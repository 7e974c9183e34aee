//! Secrets Manager rotation of the JWT signing keys.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve_key_rotation().await
}
