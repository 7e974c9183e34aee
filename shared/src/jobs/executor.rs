//! What a kind's executor returns, and how it reports progress: through [`Progress`], which is
//! also where it learns that the job was canceled.

use std::time::Duration;

use serde_json::Value;

use chrono::Utc;

use crate::jobs::events;
use crate::jobs::model::Job;
use crate::jobs::store::{self, Reported};
use crate::state::State;

/// Why an executor stopped without completing.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job cannot succeed; it fails with this type and message and is refunded.
    #[error("{kind}: {message}")]
    Permanent { kind: &'static str, message: String },
    /// Worth another attempt: the message goes back to the queue.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The owner canceled the job; noticed at a checkpoint.
    #[error("canceled")]
    Canceled,
    /// Something unexpected (a store error): retried like [`JobError::Retryable`].
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl JobError {
    /// A failure the job cannot get past, with its type and message.
    pub fn permanent(kind: &'static str, message: impl Into<String>) -> Self {
        Self::Permanent {
            kind,
            message: message.into(),
        }
    }

    /// An input that no longer passes its kind's checks (`invalid_input`, each field named).
    pub fn invalid_input(errors: Vec<crate::error::FieldError>) -> Self {
        let fields: Vec<_> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        Self::permanent("invalid_input", fields.join("; "))
    }
}

/// Progress reports from a running job; each is a checkpoint that may say the job was canceled.
pub struct Progress<'a> {
    state: &'a State,
    job_id: &'a str,
    user_id: &'a str,
}

impl<'a> Progress<'a> {
    /// The reporter of a claimed job.
    pub fn new(state: &'a State, job: &'a Job) -> Self {
        Self {
            state,
            job_id: &job.id,
            user_id: &job.user_id,
        }
    }

    /// Records progress (0–100) and an optional short message; `Err(Canceled)` if cancel was asked.
    pub async fn report(&self, percent: u8, message: Option<&str>) -> Result<(), JobError> {
        match store::report_progress(&self.state.db, self.job_id, percent, message, Utc::now())
            .await?
        {
            Reported::Stop => Err(JobError::Canceled),
            Reported::Recorded { before } => {
                events::progressed(
                    self.state,
                    self.job_id,
                    self.user_id,
                    before,
                    percent,
                    message,
                )
                .await;
                Ok(())
            }
        }
    }
}

/// How an executor left a job.
#[derive(Debug)]
pub enum Finished {
    /// Done here: this is its output.
    Output(Value),
    /// Done here, priced by what it used (a chat reply's tokens): `cost` credits of the estimate
    /// debited at admission are kept, the rest is given back in the release (never more than
    /// the estimate: a higher figure keeps the estimate).
    Settled { output: Value, cost: i64 },
    /// Handed to a provider: it stays IN_PROGRESS until the provider's webhook or the reconciler.
    HandedOff,
}

/// The `sleep` test kind's executor: sleeps `ms`, reporting progress, and fails if told to.
pub(crate) async fn sleep(input: &Value, progress: &Progress<'_>) -> Result<Value, JobError> {
    let ms = input["ms"].as_u64().unwrap_or(0);
    // A checkpoint every quarter second or so, at most ten.
    let steps = (ms / 250).clamp(1, 10);
    for step in 0..steps {
        tokio::time::sleep(Duration::from_millis(ms / steps)).await;
        let percent = u8::try_from((step + 1) * 100 / steps).unwrap_or(100);
        if step + 1 < steps {
            progress.report(percent, Some("sleeping")).await?;
        }
    }
    if input["fail"].as_bool().unwrap_or(false) {
        return Err(JobError::Permanent {
            kind: "invalid_input",
            message: "the job was told to fail".into(),
        });
    }
    Ok(serde_json::json!({ "slept_ms": ms }))
}
