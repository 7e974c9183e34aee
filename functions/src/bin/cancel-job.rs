//! `POST /v1/jobs/{id}/cancel`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::CancelJob).await
}
