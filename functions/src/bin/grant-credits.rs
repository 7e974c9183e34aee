//! `POST /v1/admin/credits/grants`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::GrantCredits).await
}
