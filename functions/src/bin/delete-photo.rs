//! `DELETE /v1/photos/{id}`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::DeletePhoto).await
}
