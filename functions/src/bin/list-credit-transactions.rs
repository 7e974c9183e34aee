//! `GET /v1/credits/transactions`.

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::serve(lambent::Route::ListCreditTransactions).await
}
