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

/// Serves the signing keys' Secrets Manager rotation.
pub async fn serve_key_rotation() -> Result<(), Error> {
    use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
    use lambda_runtime::LambdaEvent;

    crate::telemetry::init();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let secrets = &aws_sdk_secretsmanager::Client::new(&sdk);
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<SecretsManagerSecretRotationEvent>| async move {
        use tracing::Instrument as _;
        let span = tracing::info_span!("rotation", request_id = %event.context.request_id, step = %event.payload.step);
        crate::auth::rotation::step(secrets, &event.payload, chrono::Utc::now().timestamp())
            .instrument(span)
            .await
            .map_err(|err| {
                tracing::error!(error = format!("{err:#}"), "rotation step failed");
                Error::from(format!("{err:#}"))
            })
    }))
    .await
}
