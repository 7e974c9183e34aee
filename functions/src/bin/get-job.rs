//! `GET /v1/jobs/{id}`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::GetJob).await
}
