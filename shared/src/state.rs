//! What a function builds once per cold start and shares across invocations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_config::{BehaviorVersion, SdkConfig, timeout::TimeoutConfig};
use secrecy::SecretString;
use tokio::sync::RwLock;

use crate::auth::keys::KeyRing;
use crate::config::Config;
use crate::db::Db;
use crate::error::ApiError;
use crate::jobs::registry::Registry;

/// Configuration and clients; the signing keys are fetched on first use, so functions that never
/// sign or verify need no access to the secret.
pub struct State {
    pub config: Config,
    pub db: Db,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub registry: Registry,
    secrets: aws_sdk_secretsmanager::Client,
    cursor_key: tokio::sync::OnceCell<Vec<u8>>,
    keys: RwLock<Option<(Instant, Arc<KeyRing>)>>,
}

impl State {
    /// Reads the configuration and the AWS SDK settings from the environment (including the
    /// standard `AWS_ENDPOINT_URL*` variables).
    pub async fn from_env() -> anyhow::Result<Self> {
        let config = Config::from_env()?;
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(15))
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            )
            .load()
            .await;
        Ok(Self::new(config, &sdk))
    }

    /// Builds the state from a configuration and an SDK configuration.
    pub fn new(config: Config, sdk: &SdkConfig) -> Self {
        let db = Db::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.table_name.clone(),
        );
        Self {
            db,
            sqs: aws_sdk_sqs::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(sdk)
                    .force_path_style(config.s3_force_path_style)
                    .build(),
            ),
            registry: Registry::new(config.test_kinds),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            cursor_key: tokio::sync::OnceCell::new(),
            keys: RwLock::new(None),
            config,
        }
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
                let out = self
                    .secrets
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .context("reading the cursor key")?;
                let text = out
                    .secret_string
                    .context("the cursor key has no string value")?;
                anyhow::Ok(text.into_bytes())
            })
            .await?;
        Ok(key)
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
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(&self.config.signing_key_secret_id)
            .send()
            .await
            .context("reading the signing key secret")?;
        let text = out
            .secret_string
            .context("the signing key secret has no string value")?;
        let ring = Arc::new(KeyRing::from_secret(&SecretString::from(text))?);
        *entry = Some((Instant::now(), ring.clone()));
        Ok(ring)
    }
}
