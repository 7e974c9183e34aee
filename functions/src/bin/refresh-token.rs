//! `POST /v1/auth/refresh`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::Refresh).await
}
