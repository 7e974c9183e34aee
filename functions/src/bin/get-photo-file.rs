//! `GET /v1/photos/{id}/file`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::GetPhotoFile).await
}
