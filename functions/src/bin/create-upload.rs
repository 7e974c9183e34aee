//! `POST /v1/uploads`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::CreateUpload).await
}
