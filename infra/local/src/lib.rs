//! The local stack: the emulator, the resources of `template.yaml` created in it, and the gateway
//! serving every route. `make dev` runs it; the integration tests start one per test.

pub mod emulator;
pub mod fakes;
pub mod gateway;
pub mod models;
pub mod template;

/// The value after `name` on the command line (the bench binaries' flags).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use lambent::Config;
use tokio::net::TcpListener;

pub use emulator::{Emulator, repo_root, sdk_config};
pub use gateway::Gateway;
pub use template::{LocalStack, Template};

/// How to start the local stack.
pub struct Options {
    /// Prefix of every resource name, so several stacks share one emulator.
    pub prefix: String,
    /// Loopback port to serve on; 0 picks a free one.
    pub port: u16,
    /// Environment values that win over the template's (configuration for tests, or the shell's).
    pub overrides: HashMap<String, String>,
    /// Run the queue consumers (the worker, the dead-letter consumer, the webhook deliverer), as
    /// AWS runs them for the deployed stack.
    pub worker: bool,
    /// Run the reaper and the reconciler this often (AWS runs them every minute).
    pub reaper_every: Option<std::time::Duration>,
    /// Rank trending tags and the for-you feed this often (AWS: every 10 minutes; tests rank
    /// when they choose, calling `lambent::social::rankings::refresh`).
    pub rankings_every: Option<std::time::Duration>,
}

/// Local settings a developer expects: the test job kinds, and webhooks to local receivers.
pub const LOCAL_DEFAULTS: &[(&str, &str)] = &[
    ("ENABLE_TEST_KINDS", "true"),
    ("ALLOW_PRIVATE_WEBHOOKS", "true"),
    ("S3_FORCE_PATH_STYLE", "true"),
];

/// A running gateway over a bootstrapped stack.
pub struct Running {
    pub base_url: String,
    /// The streaming function URL's base.
    pub stream_url: String,
    pub stack: LocalStack,
    pub sdk: aws_config::SdkConfig,
    pub gateway: Arc<Gateway>,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The functions' environment: the template's, resolved against this stack, with the local
    /// settings and overrides on top.
    pub env: HashMap<String, String>,
}

/// Creates the template's resources in the emulator at `endpoint` and serves the API.
pub async fn start(endpoint: &str, options: Options) -> anyhow::Result<Running> {
    let root = repo_root();
    let template = Template::load(&root.join("template.yaml"))?;
    let sdk = sdk_config(endpoint).await;
    let stack = template::bootstrap(&template, &sdk, &options.prefix).await?;
    let listener = TcpListener::bind(("127.0.0.1", options.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", options.port))?;
    let base_url = format!("http://{}", listener.local_addr()?);
    // The streaming function URL, on the next port when it is free (any free one for tests, or
    // when the next is taken: the walkthrough prints the one it got).
    let stream_listener = match options.port.checked_add(1).filter(|_| options.port != 0) {
        Some(next) => match TcpListener::bind(("127.0.0.1", next)).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(port = next, error = %err, "the next port is taken; streaming on a free one");
                TcpListener::bind(("127.0.0.1", 0)).await?
            }
        },
        None => TcpListener::bind(("127.0.0.1", 0)).await?,
    };
    let stream_url = format!("http://{}", stream_listener.local_addr()?);
    let mut env = stack.env.clone();
    env.insert("CHAT_STREAM_URL".into(), stream_url.clone());
    env.insert("JWT_ISSUER".into(), base_url.clone());
    // One local gateway serves the webhooks API too.
    env.insert("WEBHOOK_BASE_URL".into(), base_url.clone());
    // And the browser sign-in's callbacks.
    env.insert("OAUTH_CALLBACK_BASE_URL".into(), base_url.clone());
    env.extend(
        LOCAL_DEFAULTS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env.extend(options.overrides.clone());
    // The upscaler's runtime and models where setup put them (`make models`), in place of the
    // template's Lambda paths (/opt/lib, the models bucket): the OpenVINO build for the
    // template's UPSCALE_PROVIDER=openvino, the exact CPU build for UPSCALE_PROVIDER=cpu.
    let library = match env.get("UPSCALE_PROVIDER").map(String::as_str) {
        Some("openvino") => models::openvino_library(&root),
        _ => models::onnxruntime_library(&root),
    };
    if let (Ok(library), Ok(models)) = (library, models::models_dir(&root)) {
        env.insert("ORT_DYLIB_PATH".into(), library.display().to_string());
        env.insert("MODELS_DIR".into(), models.display().to_string());
    }
    // FFmpeg where setup put it, in place of the Lambda layer's /opt/bin.
    if let Ok(tools) = models::ffmpeg_dir(&root) {
        env.insert(
            "FFMPEG_PATH".into(),
            tools.join("ffmpeg").display().to_string(),
        );
        env.insert(
            "FFPROBE_PATH".into(),
            tools.join("ffprobe").display().to_string(),
        );
    }
    env.extend(options.overrides.into_iter().filter(|(name, _)| {
        matches!(
            name.as_str(),
            "ORT_DYLIB_PATH" | "MODELS_DIR" | "FFMPEG_PATH" | "FFPROBE_PATH"
        )
    }));
    let config = Config::from_lookup(|name| env.get(name).cloned())?;
    let state = Arc::new(lambent::compose::state(config, &sdk)?);
    let function_env = env.clone();
    let gateway = Arc::new(Gateway {
        timeouts: template.timeouts(),
        issuer: state.config.issuer()?.to_owned(),
        audience: state.config.audience.clone(),
        state: state.clone(),
    });
    let server = tokio::spawn(gateway::serve(listener, gateway.clone()));
    // The streaming function keeps its state for the replies it streams after answering.
    let stream_state: &'static lambent::State = Box::leak(Box::new(state.clone()));
    tokio::spawn(gateway::serve_streaming(stream_listener, stream_state));
    if options.worker {
        use lambent::jobs::worker::{self, Consumer};
        // As AWS runs them: each queue polled by the function the template gives it. The GPU
        // queue has no function in the template (the ECS task polls it); the local stack runs the
        // worker on it too.
        let mut consumers = stack.consumers.clone();
        if let Some(gpu) = stack.refs.get("GpuJobsQueue") {
            consumers.push((gpu.clone(), "run-job".into()));
        }
        for (url, function) in consumers {
            let (consumer, concurrency) = match function.as_str() {
                "run-job" => (Consumer::JOBS, 16),
                "fail-dead-jobs" => (Consumer::DEAD_LETTERS, 4),
                "deliver-webhooks" => (lambent::webhooks::deliver::DELIVERIES, 16),
                "send-account-mail" => (lambent::auth::account::MAIL, 4),
                "remove-account-data" => (lambent::auth::deletion::REMOVALS, 4),
                "process-social-events" => (lambent::social::events::SOCIAL, 8),
                // One writer of the search index at a time, as its reserved concurrency says.
                "index-search" => (lambent::social::search::WRITER, 1),
                other => anyhow::bail!("no local consumer for {other}"),
            };
            tokio::spawn(worker::poll(state.clone(), consumer, url, concurrency));
        }
    }
    if let Some(every) = options.rankings_every {
        let state = state.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                if let Err(err) = lambent::social::rankings::refresh(&state).await {
                    tracing::warn!(error = format!("{err:#}"), "rankings failed");
                }
                if let Err(err) = lambent::social::events::resend_due(&state).await {
                    tracing::warn!(error = format!("{err:#}"), "the social outbox failed");
                }
            }
        });
    }
    if let Some(every) = options.reaper_every {
        use lambent::jobs::worker;
        let reaper_state = state.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                if let Err(err) = worker::reap(&reaper_state).await {
                    tracing::warn!(error = format!("{err:#}"), "reaper failed");
                }
                if let Err(err) = lambent::personas::instagram::refresh_due(&reaper_state).await {
                    tracing::warn!(error = format!("{err:#}"), "Instagram refresh failed");
                }
                if let Err(err) = lambent::generation::reconcile::run(&reaper_state).await {
                    tracing::warn!(error = format!("{err:#}"), "reconciler failed");
                }
            }
        });
    }
    Ok(Running {
        base_url,
        stream_url,
        stack,
        sdk,
        gateway,
        server,
        env: function_env,
    })
}

/// Hands the stack's payment keys (the PaymentKeys secret) to the fake Toss and Stripe, and
/// points their webhooks at this gateway's routes.
pub async fn connect_payments(
    fakes: &fakes::FakeProviders,
    running: &Running,
) -> anyhow::Result<()> {
    let state = &running.gateway.state;
    let keys: serde_json::Value = serde_json::from_str(secrecy::ExposeSecret::expose_secret(
        &state
            .secret_string(&running.stack.refs["PaymentKeys"])
            .await?,
    ))?;
    let key = |name: &str| keys[name].as_str().unwrap_or_default().to_owned();
    let base = running.base_url.clone();
    fakes.with_payments(|p| {
        p.toss_secret = key("toss_secret_key");
        p.stripe_secret = key("stripe_secret_key");
        p.stripe_webhook_secret = key("stripe_webhook_secret");
        p.toss_webhook_url = Some(format!("{base}/v1/webhooks/toss"));
        p.stripe_webhook_url = Some(format!("{base}/v1/webhooks/stripe"));
    });
    Ok(())
}
