//! The Lambda entry: one executable, `lambent`, serves every function of `template.yaml`. Lambda
//! sets `_HANDLER` from the function's `Handler:`; `lambent <function>` names it on the command
//! line instead (the GPU task runs `lambent run-job`).

use futures::future::LocalBoxFuture;
pub use lambda_http::Error;
use lambda_http::{Request, service_fn};

use crate::routes::{self, Route, handle};

/// How a function that is not an HTTP route serves.
type Serve = fn() -> LocalBoxFuture<'static, Result<(), Error>>;

/// The functions fed by queues, schedules and Secrets Manager rather than by HTTP.
pub const EVENT_FUNCTIONS: &[(&str, Serve)] = &[
    ("run-job", || Box::pin(serve_worker())),
    ("fail-dead-jobs", || Box::pin(serve_dead_letters())),
    ("deliver-webhooks", || Box::pin(serve_deliveries())),
    ("send-account-mail", || Box::pin(serve_account_mail())),
    ("remove-account-data", || Box::pin(serve_account_removals())),
    ("process-social-events", || Box::pin(serve_social_events())),
    ("refresh-instagram-tokens", || {
        Box::pin(serve_instagram_refresh())
    }),
    ("refresh-rankings", || Box::pin(serve_rankings())),
    ("index-search", || Box::pin(serve_search_index())),
    ("reap-jobs", || Box::pin(serve_reaper())),
    ("reconcile-jobs", || Box::pin(serve_reconciler())),
    ("stream-replies", || Box::pin(serve_stream_replies())),
    ("rotate-signing-key", || Box::pin(serve_key_rotation())),
];

/// Every function the executable can serve: the routes' and the event functions'.
pub fn functions() -> Vec<&'static str> {
    routes::ROUTES
        .iter()
        .chain([&routes::NOT_FOUND])
        .map(|r| r.function)
        .chain(EVENT_FUNCTIONS.iter().map(|(name, _)| *name))
        .collect()
}

/// Serves the function named by the first argument, else by `_HANDLER`. An unknown name fails
/// before the runtime starts (a failed init in Lambda), listing the known ones.
pub async fn main() -> Result<(), Error> {
    let name = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("_HANDLER").ok())
        .unwrap_or_default();
    if let Some(route) = routes::by_function(&name) {
        return serve(route).await;
    }
    if let Some((_, serve)) = EVENT_FUNCTIONS.iter().find(|(n, _)| *n == name) {
        return serve().await;
    }
    Err(format!(
        "no function {name:?} (set _HANDLER or pass its name); the functions are: {}",
        functions().join(", ")
    )
    .into())
}

/// Serves one route on the Lambda runtime: logs set up and state built once per cold start.
pub async fn serve(route: &'static Route) -> Result<(), Error> {
    crate::telemetry::init();
    let state = crate::compose::state_from_env().await?;
    let state = &state;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(handle(state, route, req).await)
    }))
    .await
}

/// Serves the streaming function URL (`RESPONSE_STREAM`): chat replies as Server-Sent Events.
/// Its state lives as long as the process, for the replies still streaming after a handler
/// returned its response.
pub async fn serve_stream_replies() -> Result<(), Error> {
    crate::telemetry::init();
    let state: &'static crate::state::State =
        Box::leak(Box::new(crate::compose::state_from_env().await?));
    lambda_http::run_with_streaming_response(service_fn(move |req: Request| async move {
        Ok::<_, Error>(crate::conversations::stream::handle(state, req).await)
    }))
    .await
}

/// Serves the signing keys' Secrets Manager rotation.
pub async fn serve_key_rotation() -> Result<(), Error> {
    use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
    use lambda_runtime::LambdaEvent;

    crate::telemetry::init();
    // One SDK configuration, with the same operation timeouts as every other function.
    let sdk = crate::state::State::sdk_from_env().await;
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

/// The job worker: an SQS-triggered Lambda when the Lambda runtime starts it, otherwise a
/// long-running poller of `WORKER_QUEUE_URL` (default: the GPU queue, else the CPU queue) with
/// `WORKER_CONCURRENCY` jobs at once (default 4), as the GPU ECS task runs it.
pub async fn serve_worker() -> Result<(), Error> {
    use aws_lambda_events::event::sqs::SqsEvent;
    use lambda_runtime::LambdaEvent;

    use crate::jobs::worker::{self, Consumer};

    crate::telemetry::init();
    let state = std::sync::Arc::new(crate::compose::state_from_env().await?);
    // ONNX Runtime and the models' files load at cold start, not on the first photo; a failure
    // is logged and retried by the first job that needs them. On Lambda a model's session is
    // built by the first job that needs it (a cold start compiles one model, not five); the
    // long-running poller builds them all before it polls.
    let upscale = &state.config.upscale;
    let lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    if upscale.models_dir.is_some() || upscale.models_bucket.is_some() {
        match state.upscaler().await {
            Ok(upscaler) if !lambda => {
                let built = tokio::task::spawn_blocking(move || upscaler.build_all()).await;
                if let Ok(Err(err)) = built {
                    tracing::error!(error = format!("{err:#}"), "a model did not load");
                }
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = format!("{err:#}"), "the upscaler did not load"),
        }
    }
    if !lambda {
        let queue = std::env::var("WORKER_QUEUE_URL")
            .ok()
            .or_else(|| state.config.gpu_jobs_queue_url.clone())
            .or_else(|| state.config.jobs_queue_url.clone())
            .ok_or("no queue to poll: set WORKER_QUEUE_URL")?;
        let concurrency = std::env::var("WORKER_CONCURRENCY")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(4);
        tracing::info!(concurrency, "polling");
        worker::poll(state, Consumer::JOBS, queue, concurrency).await;
        return Ok(());
    }
    let state = &state;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<SqsEvent>| async move {
            Ok::<_, Error>(worker::handle_batch(state, Consumer::JOBS, event.payload).await)
        },
    ))
    .await
}

/// The account mail queue's consumer: verification and reset mail through SES.
pub async fn serve_account_mail() -> Result<(), Error> {
    serve_queue(crate::auth::account::MAIL).await
}

/// The account removal queue's consumer: deleted accounts' purges and providers' unlinks.
pub async fn serve_account_removals() -> Result<(), Error> {
    serve_queue(crate::auth::deletion::REMOVALS).await
}

/// The social queue's consumer: deleted posts' purges.
pub async fn serve_social_events() -> Result<(), Error> {
    serve_queue(crate::social::events::SOCIAL).await
}

/// The dead-letter consumer: jobs whose messages exhausted their deliveries fail as `worker_crashed`.
pub async fn serve_dead_letters() -> Result<(), Error> {
    serve_queue(crate::jobs::worker::Consumer::DEAD_LETTERS).await
}

/// An SQS-triggered function: each batch to `consumer`, failures reported item by item.
async fn serve_queue(consumer: crate::jobs::worker::Consumer) -> Result<(), Error> {
    use aws_lambda_events::event::sqs::SqsEvent;
    use lambda_runtime::LambdaEvent;

    crate::telemetry::init();
    let state = &crate::compose::state_from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<SqsEvent>| async move {
            Ok::<_, Error>(crate::jobs::worker::handle_batch(state, consumer, event.payload).await)
        },
    ))
    .await
}

/// The reaper, run on a schedule: unfinished jobs past their deadline are failed and refunded.
pub async fn serve_reaper() -> Result<(), Error> {
    serve_schedule("reaper ran", |state| {
        Box::pin(crate::jobs::worker::reap(state))
    })
    .await
}

/// The reconciler, run on a schedule: jobs at a provider with no news for a while are polled there.
pub async fn serve_reconciler() -> Result<(), Error> {
    serve_schedule("reconciler ran", |state| {
        Box::pin(crate::generation::reconcile::run(state))
    })
    .await
}

/// The Instagram token refresher (daily): every linked token 20 days before it runs out.
pub async fn serve_instagram_refresh() -> Result<(), Error> {
    serve_schedule("Instagram tokens refreshed", |state| {
        Box::pin(crate::personas::instagram::refresh_due(state))
    })
    .await
}

/// The social layer's upkeep (every 10 minutes): trending hashtags and the for-you feed, and the
/// social outbox's events whose sender stopped before queueing them.
pub async fn serve_rankings() -> Result<(), Error> {
    serve_schedule("rankings refreshed", |state| {
        Box::pin(async move {
            let ranked = crate::social::rankings::refresh(state).await?;
            let resent = crate::social::events::resend_due(state).await?;
            anyhow::Ok(serde_json::json!({"ranked": ranked, "resent": resent}))
        })
    })
    .await
}

/// The search index's writer: each batch of its queue's wake-ups is one run (a failed run
/// leaves the batch to be delivered again), and so is each scheduled event.
pub async fn serve_search_index() -> Result<(), Error> {
    use lambda_runtime::LambdaEvent;

    crate::telemetry::init();
    let state = &crate::compose::state_from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let records = event
                .payload
                .get("Records")
                .and_then(|r| r.as_array())
                .cloned()
                .unwrap_or_default();
            let messages: Vec<String> = records
                .iter()
                .filter_map(|m| m.get("messageId")?.as_str().map(str::to_owned))
                .collect();
            // Wake-ups that a run of this instance answered already need no run.
            let runtime = state.feature::<crate::search::index::Runtime>()?;
            let answered = !records.is_empty()
                && records.iter().all(|m| {
                    m.get("body")
                        .and_then(|b| b.as_str())
                        .is_some_and(|b| runtime.answers(b))
                });
            if answered {
                return Ok(serde_json::json!({"batchItemFailures": []}));
            }
            match crate::social::search::sync(state).await {
                Ok(synced) => {
                    tracing::info!(?synced, "search index written");
                    Ok::<_, Error>(serde_json::json!({"batchItemFailures": [], "synced": synced}))
                }
                Err(err) if !messages.is_empty() => {
                    tracing::error!(error = format!("{err:#}"), "search index not written");
                    let failures: Vec<_> = messages
                        .iter()
                        .map(|id| serde_json::json!({"itemIdentifier": id}))
                        .collect();
                    Ok(serde_json::json!({"batchItemFailures": failures}))
                }
                Err(err) => Err(Error::from(format!("{err:#}"))),
            }
        },
    ))
    .await
}

/// A scheduled function: each event runs `pass` once; its report is logged and answered.
async fn serve_schedule<T: serde::Serialize + std::fmt::Debug>(
    done: &'static str,
    pass: for<'a> fn(&'a crate::state::State) -> futures::future::BoxFuture<'a, anyhow::Result<T>>,
) -> Result<(), Error> {
    use lambda_runtime::LambdaEvent;

    crate::telemetry::init();
    let state = &crate::compose::state_from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let report = pass(state)
                .await
                .map_err(|err| Error::from(format!("{err:#}")))?;
            tracing::info!(?report, "{done}");
            Ok::<_, Error>(serde_json::to_value(report)?)
        },
    ))
    .await
}

/// The webhook deliverer: events and retries from the deliveries queue, signed and sent.
pub async fn serve_deliveries() -> Result<(), Error> {
    serve_queue(crate::webhooks::deliver::DELIVERIES).await
}
