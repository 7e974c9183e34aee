//! `PATCH /v1/users/me`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::UpdateMe).await
}
