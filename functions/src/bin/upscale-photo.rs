//! `POST /v1/photos/upscale`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::UpscalePhoto).await
}
