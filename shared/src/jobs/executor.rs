//! What runs a claimed job. Executors report progress through [`Progress`], which is also where
//! they learn that the job was canceled.

use std::time::Duration;

use serde_json::Value;

use crate::jobs::model::Job;
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

/// Progress reports from an executor; each is a checkpoint that may say the job was canceled.
#[allow(async_fn_in_trait)]
pub trait Progress {
    /// Records progress (0–100) and an optional short message; `Err(Canceled)` if cancel was asked.
    async fn report(&self, percent: u8, message: Option<&str>) -> Result<(), JobError>;
}

/// The executors, one per kind family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    Sleep,
    /// Real-ESRGAN on one uploaded photo.
    Upscale,
    /// The sharpest of several uploaded photos, optionally upscaled.
    BestCut,
    /// Handed to an outside provider (fal.ai, Replicate, an AI server); a webhook or the
    /// reconciler finishes it.
    Provider,
}

/// How an executor left a job.
#[derive(Debug)]
pub enum Finished {
    /// Done here: this is its output.
    Output(Value),
    /// Handed to a provider: it stays IN_PROGRESS until the provider's webhook or the reconciler.
    HandedOff,
}

impl Executor {
    /// Runs the claimed `job`: to completion here, or until a provider has it.
    pub async fn run(
        self,
        state: &State,
        job: &Job,
        progress: &impl Progress,
    ) -> Result<Finished, JobError> {
        match self {
            Self::Sleep => sleep(&job.input, progress).await.map(Finished::Output),
            Self::Upscale => crate::photos::work::upscale(state, job, progress)
                .await
                .map(Finished::Output),
            Self::BestCut => crate::photos::work::best_cut(state, job, progress)
                .await
                .map(Finished::Output),
            Self::Provider => crate::generation::work::submit(state, job).await,
        }
    }
}

async fn sleep(input: &Value, progress: &impl Progress) -> Result<Value, JobError> {
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
