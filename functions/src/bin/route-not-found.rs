//! API Gateway's $default route: 404 and 405 as problem+json.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::NotFound).await
}
