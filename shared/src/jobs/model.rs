//! A job as stored and as shown.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::db::Item;
pub use crate::domain::{ProviderName, Queue};

/// `IN_QUEUE → IN_PROGRESS → COMPLETED | FAILED | CANCELED`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ToSchema,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    InQueue,
    InProgress,
    Completed,
    Failed,
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

/// Why a job failed: a machine-readable type and a human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct JobFailure {
    /// `invalid_input`, `invalid_image`, `image_too_large`, `provider_error`, `timed_out`,
    /// `worker_crashed`, `canceled_by_user`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// A job handed to an outside provider: which, the model, and the provider's request id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProviderJob {
    pub name: ProviderName,
    pub model: String,
    pub request_id: String,
}

impl ProviderJob {
    /// The provider fields of a job's item, when an outside provider has it.
    pub fn from_item(item: &Item) -> Option<Self> {
        serde_dynamo::from_item::<_, StoredProvider>(item.clone())
            .ok()?
            .into_job()
    }
}

/// The provider attributes of a job's item.
#[derive(Deserialize)]
pub(crate) struct StoredProvider {
    pub provider: Option<ProviderName>,
    pub provider_model: Option<String>,
    pub provider_request_id: Option<String>,
}

impl StoredProvider {
    /// The provider running the job, when all three attributes are there.
    pub fn into_job(self) -> Option<ProviderJob> {
        Some(ProviderJob {
            name: self.provider?,
            model: self.provider_model?,
            request_id: self.provider_request_id?,
        })
    }
}

/// A share of a job's cost that another account earns when the job completes (an artist's
/// price for the style a generation uses): debited from the owner with the cost at admission,
/// refunded with it if the job fails, and credited to the payee in the release that completes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// The account that earns.
    pub payee: String,
    /// What the owner pays for it (part of the job's cost).
    pub price: i64,
    /// What the payee earns: the price less the platform's fee.
    pub earning: i64,
    /// The style it pays for, which the ledger lines link to.
    pub style_id: Option<String>,
}

/// A job.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub input: Value,
    pub status: Status,
    /// 0–100.
    pub progress: u8,
    pub progress_message: Option<String>,
    pub cancel_requested: bool,
    /// Credits debited at admission.
    pub cost: i64,
    /// What a job priced by its use kept of `cost` when it completed (the rest was given back).
    pub charged: Option<i64>,
    pub error: Option<JobFailure>,
    /// The job's result document.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub webhook_url: Option<String>,
    /// Signs the job's webhooks; shown only when the job is submitted.
    #[serde(skip)]
    pub webhook_secret: Option<String>,
    /// Where the job runs when an outside provider runs it.
    pub provider: Option<ProviderJob>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Unix seconds after which the reaper fails the job.
    #[serde(skip)]
    pub deadline: i64,
    /// Who earns a share of its cost when it completes.
    #[serde(skip)]
    pub share: Option<Share>,
}

/// A job's item as stored (`input` and `output` as JSON text); other attributes (keys, index
/// keys, expiry) are not the job's.
#[derive(Deserialize)]
struct StoredJob {
    id: String,
    user_id: String,
    kind: String,
    input: String,
    status: Status,
    #[serde(default)]
    progress: i64,
    progress_message: Option<String>,
    #[serde(default)]
    cancel_requested: bool,
    #[serde(default)]
    cost: i64,
    charged: Option<i64>,
    error_type: Option<String>,
    error_message: Option<String>,
    output: Option<String>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    provider: Option<ProviderName>,
    provider_model: Option<String>,
    provider_request_id: Option<String>,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    #[serde(default)]
    deadline: i64,
    share_payee: Option<String>,
    #[serde(default)]
    share_price: i64,
    #[serde(default)]
    share_earning: i64,
    share_style_id: Option<String>,
}

impl Job {
    pub fn from_item(item: &Item) -> anyhow::Result<Self> {
        let stored: StoredJob =
            serde_dynamo::from_item(item.clone()).context("reading a job's item")?;
        let provider = StoredProvider {
            provider: stored.provider,
            provider_model: stored.provider_model,
            provider_request_id: stored.provider_request_id,
        }
        .into_job();
        Ok(Self {
            id: stored.id,
            user_id: stored.user_id,
            kind: stored.kind,
            input: serde_json::from_str(&stored.input)?,
            status: stored.status,
            progress: u8::try_from(stored.progress.clamp(0, 100)).unwrap_or(0),
            progress_message: stored.progress_message,
            cancel_requested: stored.cancel_requested,
            cost: stored.cost,
            charged: stored.charged,
            error: stored.error_type.map(|kind| JobFailure {
                kind,
                message: stored.error_message.unwrap_or_default(),
            }),
            output: stored
                .output
                .map(|o| serde_json::from_str(&o))
                .transpose()?,
            webhook_url: stored.webhook_url,
            webhook_secret: stored.webhook_secret,
            provider,
            created_at: stored.created_at,
            started_at: stored.started_at,
            finished_at: stored.finished_at,
            deadline: stored.deadline,
            share: stored.share_payee.map(|payee| Share {
                payee,
                price: stored.share_price,
                earning: stored.share_earning,
                style_id: stored.share_style_id,
            }),
        })
    }
}
