//! `GET /.well-known/openid-configuration`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::OpenIdConfiguration).await
}
