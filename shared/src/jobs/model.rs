//! A job as stored and as shown.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::db::{Item, get_i64, get_s};
pub use crate::domain::{ProviderName, Queue};

/// `IN_QUEUE → IN_PROGRESS → COMPLETED | FAILED | CANCELED`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema, strum::EnumString, strum::IntoStaticStr,
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
    /// `worker_crashed`, `canceled_by_user`, `enqueue_failed`.
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
    /// The provider fields of a job item, when it has them.
    pub fn from_item(item: &Item) -> Option<Self> {
        Some(Self {
            name: ProviderName::parse(get_s(item, "provider")?)?,
            model: get_s(item, "provider_model")?.to_owned(),
            request_id: get_s(item, "provider_request_id")?.to_owned(),
        })
    }
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
}

impl Job {
    pub fn from_item(item: &Item) -> anyhow::Result<Self> {
        let text = |name: &str| get_s(item, name).map(str::to_owned);
        let required =
            |name: &str| text(name).ok_or_else(|| anyhow::anyhow!("job item lacks {name}"));
        let status =
            Status::parse(&required("status")?).ok_or_else(|| anyhow::anyhow!("unknown status"))?;
        let error = text("error_type").map(|kind| JobFailure {
            kind,
            message: text("error_message").unwrap_or_default(),
        });
        Ok(Self {
            id: required("id")?,
            user_id: required("user_id")?,
            kind: required("kind")?,
            input: serde_json::from_str(&required("input")?)?,
            status,
            progress: u8::try_from(get_i64(item, "progress").unwrap_or(0).clamp(0, 100))
                .unwrap_or(0),
            progress_message: text("progress_message"),
            cancel_requested: item
                .get("cancel_requested")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            cost: get_i64(item, "cost").unwrap_or(0),
            error,
            output: text("output")
                .map(|o| serde_json::from_str(&o))
                .transpose()?,
            webhook_url: text("webhook_url"),
            webhook_secret: text("webhook_secret"),
            provider: ProviderJob::from_item(item),
            created_at: required("created_at")?,
            started_at: text("started_at"),
            finished_at: text("finished_at"),
            deadline: get_i64(item, "deadline").unwrap_or(0),
        })
    }
}
