//! Generation at outside providers: fal.ai, Replicate and our own AI servers. The worker submits a
//! job with a webhook and records the provider's request id before anything else; a verified
//! webhook (or the reconciler, when webhooks stay away) copies the outputs to S3 and finalizes
//! the job through the release transaction.

pub mod ai_server;
pub mod fal;
pub mod finalize;
pub mod inbound;
pub mod kinds;
pub mod marketplace;
pub mod outputs;
pub mod providers;
pub mod reconcile;
pub mod replicate;
pub mod styles;
pub mod work;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::sync::{OnceCell, RwLock};

use crate::generation::ai_server::AiServer;
use crate::generation::fal::Fal;
use crate::generation::providers::{Adapter, ProviderName};
use crate::generation::replicate::Replicate;
use crate::state::State;

/// The provider keys secret: `{"fal_key", "fal_user_id", "replicate_api_token",
/// "replicate_webhook_secret"?}`.
#[derive(Deserialize)]
struct ProviderKeys {
    fal_key: Option<SecretString>,
    /// The fal account `fal_key` belongs to: fal signs it into every webhook
    /// (`X-Fal-Webhook-User-Id`); a webhook signed for another account is refused.
    fal_user_id: Option<String>,
    replicate_api_token: Option<SecretString>,
    /// Else read from Replicate (`GET /v1/webhooks/default/secret`) on first use.
    replicate_webhook_secret: Option<SecretString>,
}

/// fal's Ed25519 webhook keys, shared by every request of this process.
type FalKeys = Arc<Vec<Vec<u8>>>;

/// Per-process caches of the generation providers' keys; the root installs one per [`State`].
#[derive(Default)]
pub struct Runtime {
    keys: OnceCell<ProviderKeys>,
    replicate_secret: OnceCell<SecretString>,
    ai_secret: OnceCell<SecretString>,
    fal_jwks: RwLock<Option<(Instant, FalKeys)>>,
}

fn runtime(state: &State) -> anyhow::Result<&Runtime> {
    state.feature::<Runtime>()
}

async fn provider_keys(state: &State) -> anyhow::Result<&ProviderKeys> {
    runtime(state)?
        .keys
        .get_or_try_init(|| async {
            let id = state
                .config
                .generation
                .provider_keys_secret_id
                .as_deref()
                .context("PROVIDER_KEYS_SECRET_ID is not set")?;
            let text = state.secret_string(id).await?;
            serde_json::from_str::<ProviderKeys>(text.expose_secret())
                .context("the provider keys secret is not the expected JSON")
        })
        .await
}

/// Why a provider cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// This deployment does not offer it (no URL or no key): jobs for it fail.
    #[error("{0} is not configured in this deployment")]
    NotConfigured(&'static str),
    /// Its keys could not be read now: worth another attempt.
    #[error(transparent)]
    Keys(#[from] anyhow::Error),
}

/// Whether this deployment offers a provider, by configuration alone (no secret read).
pub fn offered(state: &State, name: ProviderName) -> bool {
    let generation = &state.config.generation;
    generation.webhook_base_url.is_some()
        && match name {
            ProviderName::Fal | ProviderName::Replicate => {
                generation.provider_keys_secret_id.is_some()
            }
            ProviderName::Ai => {
                generation.ai_server_url.is_some() && generation.ai_webhook_secret_id.is_some()
            }
        }
}

/// The adapter of one provider, with its key.
/// Our fal account's user id, which fal signs into its webhooks.
pub async fn fal_user_id(state: &State) -> Result<&str, Unavailable> {
    provider_keys(state)
        .await?
        .fal_user_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or(Unavailable::NotConfigured("fal_user_id"))
}

pub async fn adapter(state: &State, name: ProviderName) -> Result<Adapter, Unavailable> {
    if !offered(state, name) {
        return Err(Unavailable::NotConfigured(name.as_str()));
    }
    let generation = &state.config.generation;
    let http = state.http.api.clone();
    Ok(match name {
        ProviderName::Fal => Adapter::Fal(Fal {
            http,
            base: generation.fal_queue_url.clone(),
            key: provider_keys(state)
                .await?
                .fal_key
                .clone()
                .filter(|k| !k.expose_secret().trim().is_empty())
                .ok_or(Unavailable::NotConfigured("fal"))?,
        }),
        ProviderName::Replicate => Adapter::Replicate(replicate(state).await?),
        ProviderName::Ai => Adapter::Ai(AiServer {
            http,
            base: generation
                .ai_server_url
                .clone()
                .ok_or(Unavailable::NotConfigured("ai"))?,
            secret: ai_secret(state).await?,
        }),
    })
}

async fn replicate(state: &State) -> Result<Replicate, Unavailable> {
    Ok(Replicate {
        http: state.http.api.clone(),
        base: state.config.generation.replicate_api_url.clone(),
        token: provider_keys(state)
            .await?
            .replicate_api_token
            .clone()
            .filter(|k| !k.expose_secret().trim().is_empty())
            .ok_or(Unavailable::NotConfigured("replicate"))?,
    })
}

/// The secret Replicate signs webhooks with: from the keys secret, else from Replicate's API.
pub async fn replicate_webhook_secret(state: &State) -> Result<SecretString, Unavailable> {
    if let Some(secret) = &provider_keys(state).await?.replicate_webhook_secret {
        return Ok(secret.clone());
    }
    let secret = runtime(state)?
        .replicate_secret
        .get_or_try_init(|| async {
            let replicate = replicate(state).await?;
            replicate.webhook_secret().await.map_err(|e| {
                Unavailable::Keys(anyhow::anyhow!("reading Replicate's webhook secret: {e}"))
            })
        })
        .await?;
    Ok(secret.clone())
}

/// The secret our AI servers and we sign with.
pub async fn ai_secret(state: &State) -> anyhow::Result<SecretString> {
    let secret = runtime(state)?
        .ai_secret
        .get_or_try_init(|| async {
            let id = state
                .config
                .generation
                .ai_webhook_secret_id
                .as_deref()
                .context("AI_WEBHOOK_SECRET_ID is not set")?;
            state.secret_string(id).await
        })
        .await?;
    Ok(secret.clone())
}

/// fal's webhook keys, fetched from its JWKS and kept for [`fal::JWKS_TTL`]; `refresh` fetches
/// them again (a signature no cached key made may come from a new key) unless they are under a
/// minute old.
pub async fn fal_keys(state: &State, refresh: bool) -> anyhow::Result<FalKeys> {
    let max_age = if refresh {
        Duration::from_secs(60)
    } else {
        fal::JWKS_TTL
    };
    let fresh = |entry: &Option<(Instant, FalKeys)>| match entry {
        Some((at, keys)) if at.elapsed() < max_age => Some(keys.clone()),
        _ => None,
    };
    let cache = &runtime(state)?.fal_jwks;
    if let Some(keys) = fresh(&*cache.read().await) {
        return Ok(keys);
    }
    let mut entry = cache.write().await;
    if let Some(keys) = fresh(&entry) {
        return Ok(keys);
    }
    let response = state
        .http
        .api
        .get(&state.config.generation.fal_jwks_url)
        .send()
        .await
        .context("fetching fal's JWKS")?;
    let jwks = providers::answer(response)
        .await
        .map_err(|e| anyhow::anyhow!("fetching fal's JWKS: {e}"))?;
    let keys = Arc::new(fal::jwks_keys(&jwks));
    anyhow::ensure!(!keys.is_empty(), "fal's JWKS holds no Ed25519 key");
    *entry = Some((Instant::now(), keys.clone()));
    Ok(keys)
}

/// Where a provider sends the webhooks of `job_id`.
pub fn webhook_url(state: &State, name: ProviderName, job_id: &str) -> Option<String> {
    let base = state.config.generation.webhook_base_url.as_deref()?;
    Some(match name {
        ProviderName::Fal => format!("{base}/v1/webhooks/fal?job_id={job_id}"),
        ProviderName::Replicate => format!("{base}/v1/webhooks/replicate?job_id={job_id}"),
        ProviderName::Ai => format!("{base}/v1/webhooks/ai/{job_id}"),
    })
}
