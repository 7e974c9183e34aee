//! The Lambda entry point every HTTP function's `main` calls.

pub use lambda_http::Error;
use lambda_http::{Request, service_fn};

use crate::routes::{Route, handle};
use crate::state::State;

/// Serves one route on the Lambda runtime: logs set up and state built once per cold start.
pub async fn serve(route: Route) -> Result<(), Error> {
    crate::telemetry::init();
    let state = State::from_env().await?;
    let state = &state;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(handle(state, route, req).await)
    }))
    .await
}
