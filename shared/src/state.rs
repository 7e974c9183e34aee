//! What a function builds once per cold start and shares across invocations.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_config::{BehaviorVersion, SdkConfig, timeout::TimeoutConfig};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::RwLock;

use crate::auth::keys::KeyRing;
use crate::config::Config;
use crate::db::Db;
use crate::error::ApiError;
use crate::jobs::registry::Registry;
use crate::upscale::{MODELS, Upscaler};

/// Configuration and clients; the signing keys are fetched on first use, so functions that never
/// sign or verify need no access to the secret.
pub struct State {
    pub config: Config,
    pub db: Db,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub registry: Registry,
    /// The HTTP clients of every outbound call (timeouts, the address policy).
    pub http: crate::net::Clients,
    /// Features' own per-process runtimes, by type (the composition root installs them).
    features: Features,
    secrets: aws_sdk_secretsmanager::Client,
    cursor_key: tokio::sync::OnceCell<Vec<u8>>,
    keys: RwLock<Option<(Instant, Arc<KeyRing>)>>,
    upscaler: tokio::sync::OnceCell<Arc<Upscaler>>,
}

/// S3's timeouts: transfers of outputs up to hundreds of MB fit in an attempt.
static S3_TIMEOUTS: std::sync::LazyLock<TimeoutConfig> = std::sync::LazyLock::new(|| {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(60))
        .operation_timeout(Duration::from_secs(180))
        .build()
});

/// Features' runtimes by type: the core holds them without naming them.
#[derive(Default)]
struct Features(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl State {
    /// The AWS SDK settings from the environment (including the standard `AWS_ENDPOINT_URL*`
    /// variables), with [`State::sdk_timeouts`]: loaded once per cold start.
    pub async fn sdk_from_env() -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(Self::sdk_http_client())
            .timeout_config(Self::sdk_timeouts())
            .load()
            .await
    }

    /// The HTTPS client of every AWS service client in the process, built as the SDK builds its
    /// default one (rustls on aws-lc, a proxy from the standard environment variables) but shared.
    /// The SDK's default is a client per service client, each building its own connector, and
    /// with it a rustls root store parsed from the platform's certificates, on its first call:
    /// a cold create-job built three (STS's, at loading, then DynamoDB's and SQS's). Shared, the
    /// clients with the same timeouts share one connector and its connection pool.
    fn sdk_http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
        use aws_smithy_http_client::{ConnectorBuilder, proxy::ProxyConfig, tls};
        aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
            let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ));
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.build()
        })
    }

    /// Timeouts of every DynamoDB, SQS and Secrets Manager call: an operation, retries included,
    /// ends within 8 s, inside the 10 s of the shortest function (the API's), so a function is
    /// never stopped by Lambda in the middle of a call it could have handled. (S3 has its own,
    /// longer ones: [`S3_TIMEOUTS`]: outputs are large; no API path waits on S3 after admission.)
    pub fn sdk_timeouts() -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(1))
            .operation_attempt_timeout(Duration::from_millis(2500))
            .operation_timeout(Duration::from_secs(8))
            .build()
    }

    /// Builds the state from a configuration, an SDK configuration and the kinds to offer.
    pub fn new(config: Config, sdk: &SdkConfig, registry: Registry) -> anyhow::Result<Self> {
        let db = Db::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.table_name.clone(),
        );
        Ok(Self {
            db,
            sqs: aws_sdk_sqs::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(sdk)
                    .force_path_style(config.s3_force_path_style)
                    .timeout_config(S3_TIMEOUTS.clone())
                    .build(),
            ),
            registry,
            http: crate::net::Clients::new(config.allow_private_webhooks)?,
            features: Features::default(),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            cursor_key: tokio::sync::OnceCell::new(),
            keys: RwLock::new(None),
            upscaler: tokio::sync::OnceCell::new(),
            config,
        })
    }

    /// Installs a feature's per-process runtime (its caches), found again by [`State::feature`].
    pub fn with_feature<T: Any + Send + Sync>(mut self, runtime: T) -> Self {
        self.features.0.insert(TypeId::of::<T>(), Box::new(runtime));
        self
    }

    /// A feature's runtime; an error when the composition root did not install it.
    pub fn feature<T: Any + Send + Sync>(&self) -> anyhow::Result<&T> {
        self.features
            .0
            .get(&TypeId::of::<T>())
            .and_then(|runtime| runtime.downcast_ref::<T>())
            .with_context(|| format!("{} is not installed", std::any::type_name::<T>()))
    }

    /// The key that signs pagination cursors, loaded once per process.
    pub async fn cursor_key(&self) -> Result<&[u8], ApiError> {
        let key = self
            .cursor_key
            .get_or_try_init(|| async {
                let id = self
                    .config
                    .cursor_key_secret_id
                    .as_deref()
                    .context("CURSOR_KEY_SECRET_ID is not set")?;
                let text = self
                    .secret_string(id)
                    .await
                    .context("reading the cursor key")?;
                anyhow::Ok(text.expose_secret().as_bytes().to_vec())
            })
            .await?;
        Ok(key)
    }

    /// Puts `message`, as JSON, on the queue `queue_url`.
    pub async fn send_json(
        &self,
        queue_url: &str,
        message: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        self.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(serde_json::to_string(message)?)
            .send()
            .await
            .with_context(|| format!("queueing on {queue_url}"))?;
        Ok(())
    }

    /// A secret's string value.
    pub async fn secret_string(&self, id: &str) -> anyhow::Result<SecretString> {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .with_context(|| format!("reading the secret {id}"))?;
        let text = out
            .secret_string
            .context("the secret has no string value")?;
        Ok(SecretString::from(text))
    }

    /// The claims of an `Authorization: Bearer <token>` header, checked as API Gateway's JWT
    /// authorizer checks them (signature by one of our keys, `iss`, `aud`, expiry): for the local
    /// gateway's authorizer and the functions behind no authorizer (the streaming function URL).
    pub async fn bearer_claims(
        &self,
        authorization: Option<&str>,
        issuer: &str,
        audience: &str,
    ) -> Result<crate::auth::keys::AccessClaims, ApiError> {
        let unauthorized = |detail| ApiError::Unauthorized {
            code: "invalid_token",
            detail,
        };
        let header = authorization.ok_or(unauthorized("a bearer access token is required"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let keys = self.keys().await?;
        keys.verify(token.trim(), issuer, audience).map_err(|err| {
            tracing::info!(reason = %err, "bearer token refused");
            unauthorized("the access token is invalid or expired")
        })
    }

    /// The signing keys, loaded from Secrets Manager once per process.
    pub async fn keys(&self) -> Result<Arc<KeyRing>, ApiError> {
        self.keys_fresher_than(None).await
    }

    /// The signing keys, reloaded when older than `max_age`: the JWKS publisher uses this so a
    /// rotated key is published within minutes even by a long-lived instance.
    pub async fn keys_fresher_than(
        &self,
        max_age: Option<Duration>,
    ) -> Result<Arc<KeyRing>, ApiError> {
        let fresh = |entry: &Option<(Instant, Arc<KeyRing>)>| match entry {
            Some((loaded, ring)) if max_age.is_none_or(|age| loaded.elapsed() < age) => {
                Some(ring.clone())
            }
            _ => None,
        };
        if let Some(ring) = fresh(&*self.keys.read().await) {
            return Ok(ring);
        }
        let mut entry = self.keys.write().await;
        if let Some(ring) = fresh(&entry) {
            return Ok(ring);
        }
        let text = self
            .secret_string(&self.config.signing_key_secret_id)
            .await
            .context("reading the signing key secret")?;
        let ring = Arc::new(KeyRing::from_secret(&text)?);
        *entry = Some((Instant::now(), ring.clone()));
        Ok(ring)
    }

    /// The upscaler, made once per process: ONNX Runtime loaded and the deployed models found;
    /// each model's session is built when a job first needs it. Models come from `MODELS_DIR`, or
    /// are copied from `MODELS_BUCKET` to /tmp.
    pub async fn upscaler(&self) -> anyhow::Result<Arc<Upscaler>> {
        let upscaler = self
            .upscaler
            .get_or_try_init(|| async {
                let settings = &self.config.upscale;
                let dir = match (&settings.models_dir, &settings.models_bucket) {
                    (Some(dir), _) => dir.clone(),
                    (None, Some(bucket)) => self.fetch_models(bucket, &settings.models_prefix).await?,
                    (None, None) => anyhow::bail!("neither MODELS_DIR nor MODELS_BUCKET is set"),
                };
                let names: Vec<&'static str> = MODELS
                    .iter()
                    .map(|(name, _)| *name)
                    .filter(|name| dir.join(format!("{name}.onnx")).is_file())
                    .collect();
                anyhow::ensure!(!names.is_empty(), "no models in {}", dir.display());
                let (library, provider) = (settings.library.clone(), settings.provider);
                let started = Instant::now();
                let upscaler = tokio::task::spawn_blocking(move || {
                    Upscaler::open(library.as_deref(), &dir, &names, provider)
                })
                .await??;
                tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, models = ?upscaler, "upscaler loaded");
                anyhow::Ok(Arc::new(upscaler))
            })
            .await?;
        Ok(upscaler.clone())
    }

    /// Copies the models from S3 to /tmp (kept across warm invocations).
    async fn fetch_models(&self, bucket: &str, prefix: &str) -> anyhow::Result<std::path::PathBuf> {
        let dir = std::env::temp_dir().join("lambent-models");
        tokio::fs::create_dir_all(&dir).await?;
        for (name, _) in MODELS {
            let path = dir.join(format!("{name}.onnx"));
            if path.is_file() {
                continue;
            }
            let key = format!("{prefix}{name}.onnx");
            let object = match self.s3.get_object().bucket(bucket).key(&key).send().await {
                Ok(object) => object,
                Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => continue,
                Err(err) => {
                    return Err(
                        anyhow::Error::new(err).context(format!("reading s3://{bucket}/{key}"))
                    );
                }
            };
            let partial = dir.join(format!("{name}.onnx.partial"));
            let mut file = tokio::fs::File::create(&partial).await?;
            let mut body = object.body.into_async_read();
            tokio::io::copy(&mut body, &mut file).await?;
            file.sync_all().await?;
            tokio::fs::rename(&partial, &path).await?;
        }
        Ok(dir)
    }
}
