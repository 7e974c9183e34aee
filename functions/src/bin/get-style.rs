//! `GET /v1/styles/{id}`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::GetStyle).await
}
