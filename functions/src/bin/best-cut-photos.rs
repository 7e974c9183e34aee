//! `POST /v1/photos/bestcut`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::BestCutPhotos).await
}
