//! Applying what a provider said to a job: progress, or the end through the release transaction
//! (one final state, one refund at most, however often and in whatever order news arrives).

use chrono::Utc;
use serde_json::{Value, json};

use crate::generation::outputs::{self, CopyError};
use crate::generation::providers::{Failure, Remote};
use crate::jobs::model::Job;
use crate::jobs::store::{self, JobRef, Outcome};
use crate::state::State;

/// What applying news did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Applied {
    Completed,
    Failed,
    Canceled,
    Progress,
    /// Nothing: the job had already ended, or the news was old.
    Unchanged,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The largest provider result document kept beside the files.
const MAX_RESULT_BYTES: usize = 16 * 1024;

/// Applies `remote` to `job`. `Err` means "try again later" (a file could not be fetched or
/// stored now); the job is left as it was.
pub async fn apply(state: &State, job: &Job, remote: Remote) -> anyhow::Result<Applied> {
    if job.status.is_terminal() {
        return Ok(Applied::Unchanged);
    }
    let release = |outcome: Outcome, applied: Applied| async move {
        let released = crate::jobs::finish(state, &JobRef::from(job), &outcome, Utc::now()).await?;
        anyhow::Ok(if released {
            applied
        } else {
            Applied::Unchanged
        })
    };
    match remote {
        Remote::Running { progress: None } => Ok(Applied::Unchanged),
        Remote::Running {
            progress: Some(percent),
        } => progress(state, job, percent, None).await,
        Remote::Succeeded { files, result } => match outputs::copy(state, job, &files).await {
            Ok(files) => {
                let result = if result.to_string().len() <= MAX_RESULT_BYTES {
                    result
                } else {
                    Value::Null
                };
                let provider = job.provider.as_ref();
                let output = json!({
                    "provider": provider.map(|p| p.name.as_str()),
                    "model": provider.map(|p| p.model.as_str()),
                    "files": files,
                    "result": result,
                });
                release(Outcome::Completed(output), Applied::Completed).await
            }
            Err(CopyError::Permanent(message)) => {
                release(Outcome::failed("provider_error", message), Applied::Failed).await
            }
            Err(CopyError::Transient(err)) => Err(err),
        },
        Remote::Failed { message } => {
            tracing::warn!(job_id = %job.id, detail = %message.chars().take(1000).collect::<String>(), "the provider reported a failure");
            release(
                Outcome::failed("provider_error", Failure::Failed.message()),
                Applied::Failed,
            )
            .await
        }
        Remote::Canceled if job.cancel_requested => {
            release(
                Outcome::Canceled {
                    message: "canceled by its owner".into(),
                },
                Applied::Canceled,
            )
            .await
        }
        Remote::Canceled => {
            release(
                Outcome::failed("provider_error", "the provider canceled the request"),
                Applied::Failed,
            )
            .await
        }
    }
}

/// Progress an AI server reported, with its message.
pub async fn progress(
    state: &State,
    job: &Job,
    percent: u8,
    message: Option<&str>,
) -> anyhow::Result<Applied> {
    if job.status.is_terminal() {
        return Ok(Applied::Unchanged);
    }
    let before =
        store::record_provider_progress(&state.db, &job.id, percent, message, Utc::now()).await?;
    let Some(before) = before else {
        return Ok(Applied::Unchanged);
    };
    crate::jobs::events::progressed(state, &job.id, &job.user_id, before, percent, message).await;
    Ok(Applied::Progress)
}
