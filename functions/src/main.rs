//! `lambent`: every Lambda function of template.yaml in one executable, chosen by the function's
//! `Handler:` (Lambda's `_HANDLER`) or by its name as the first argument (`lambent run-job`).

#[tokio::main]
async fn main() -> Result<(), lambent::lambda::Error> {
    lambent::lambda::main().await
}
