//! `GET /.well-known/jwks.json`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::Jwks).await
}
