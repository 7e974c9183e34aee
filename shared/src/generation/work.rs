//! The worker's part of a generation job: check its uploads, submit it to its provider (retrying
//! 429 and 5xx with backoff), and record the provider's request id before anything else, so a
//! crash afterwards cannot lose the paid-for result.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use crate::generation::kinds;
use crate::generation::providers::{Failure, Provider as _, ProviderError, Submission};
use crate::generation::{self, Unavailable};
use crate::jobs::executor::{Finished, JobError};
use crate::jobs::model::{Job, ProviderJob};
use crate::jobs::store;
use crate::media;
use crate::media::MAX_UPLOAD_BYTES;
use crate::state::State;

/// Submission attempts before the job fails as `provider_error`.
pub const SUBMIT_ATTEMPTS: u32 = 4;
/// The first backoff; each next one doubles, with jitter.
const BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait a provider's `Retry-After` may impose within one attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(20);

/// A backoff of `BACKOFF * 2^attempt`, ±25 %.
fn backoff(attempt: u32) -> Duration {
    crate::backoff::exponential(BACKOFF, attempt, 0.25)
}

/// Submits a claimed generation job and hands it to its provider.
pub async fn submit(state: &State, job: &Job) -> Result<Finished, JobError> {
    let mut spec =
        kinds::configured_spec(&state.config, &job.kind, &job.input).map_err(|errors| {
            let message = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            JobError::permanent("invalid_input", message)
        })?;
    let adapter = match generation::adapter(state, spec.provider).await {
        Ok(adapter) => adapter,
        Err(Unavailable::NotConfigured(name)) => {
            return Err(JobError::permanent(
                "provider_error",
                format!("{name} is not configured in this deployment"),
            ));
        }
        Err(Unavailable::Keys(err)) => return Err(JobError::Internal(err)),
    };
    let run_for = spec.task.run_for();
    let mut images = Vec::with_capacity(spec.uploads.len());
    for (role, key) in &spec.uploads {
        images.push((*role, readable_upload(state, job, key, run_for).await?));
    }
    if let Some(style_id) = &spec.style_id {
        images.push(("style", style_weights(state, job, style_id, run_for).await?));
    }
    if let Some(video_id) = &spec.video_id {
        images.push((
            "video",
            readable_video(state, job, video_id, run_for).await?,
        ));
    }
    if let Some(persona_id) = &spec.persona_id {
        // The persona as it is now: its owner may have edited it since the job was admitted.
        let persona = crate::persona::get(&state.db, &job.user_id, persona_id)
            .await?
            .ok_or_else(|| JobError::permanent("not_found", format!("no persona {persona_id}")))?;
        spec.prompt = spec
            .prompt
            .take()
            .map(|prompt| format!("{}. {prompt}", persona.describe()));
    }
    let input = kinds::provider_input(&spec, &images);
    let webhook_url = generation::webhook_url(state, spec.provider, &job.id)
        .ok_or_else(|| JobError::permanent("provider_error", "WEBHOOK_BASE_URL is not set"))?;
    let submission = Submission {
        job_id: &job.id,
        model: &spec.model,
        input: &input,
        webhook_url: &webhook_url,
        run_for,
    };
    // Canceled while its inputs were prepared: nothing paid for yet.
    if store::get(&state.db, &job.id)
        .await?
        .is_some_and(|current| current.cancel_requested)
    {
        return Err(JobError::Canceled);
    }
    let request_id = submit_with_retries(&adapter, &submission).await?;
    let provider = ProviderJob {
        name: spec.provider,
        model: spec.model.clone(),
        request_id,
    };
    tracing::info!(job_id = %job.id, provider = provider.name.as_str(), request_id = %provider.request_id, "submitted");
    let mut recorded = Err(anyhow::anyhow!("not attempted"));
    for attempt in 0..3 {
        recorded =
            store::record_submission(&state.db, &job.id, &provider, run_for, Utc::now()).await;
        if recorded.is_ok() {
            break;
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    match recorded {
        Ok(store::Recorded::Recorded) => Ok(Finished::HandedOff),
        Ok(store::Recorded::CancelRequested) => {
            // Its owner canceled it while it was being submitted: stop it there, end it here
            // (the worker releases it as canceled and refunds it once).
            tracing::info!(job_id = %job.id, "canceled during submission; canceling at the provider");
            cancel_at_provider(state, &job.id, &provider).await;
            Err(JobError::Canceled)
        }
        Ok(store::Recorded::Ended) => {
            // The job ended meanwhile (canceled, reaped): stop the request we just paid for.
            tracing::warn!(job_id = %job.id, "the job ended during submission; canceling at the provider");
            cancel_at_provider(state, &job.id, &provider).await;
            Ok(Finished::HandedOff)
        }
        Err(err) => {
            // Without the request id on record nobody could finish the job: cancel the request
            // and let the queue try again.
            cancel_at_provider(state, &job.id, &provider).await;
            Err(JobError::Internal(err.context("recording the submission")))
        }
    }
}

/// Submits, retrying rate limits and provider outages with backoff; a refusal fails at once.
async fn submit_with_retries(
    adapter: &impl crate::generation::providers::Provider,
    submission: &Submission<'_>,
) -> Result<String, JobError> {
    for attempt in 0..SUBMIT_ATTEMPTS {
        match adapter.submit(submission).await {
            Ok(request_id) => return Ok(request_id),
            Err(ProviderError::Rejected(detail)) => {
                // The provider's own words go to the log; the owner gets a message of ours.
                tracing::warn!(job_id = %submission.job_id, detail = %detail, "the provider refused the job");
                return Err(JobError::permanent(
                    "provider_error",
                    Failure::Refused.message(),
                ));
            }
            Err(err) => {
                tracing::warn!(job_id = %submission.job_id, attempt, error = %err, "submission failed; backing off");
                let wait = match &err {
                    ProviderError::RateLimited {
                        retry_after: Some(after),
                    } => (*after).min(MAX_RETRY_AFTER),
                    _ => backoff(attempt),
                };
                if attempt + 1 < SUBMIT_ATTEMPTS {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    Err(JobError::permanent(
        "provider_error",
        format!("the provider was unavailable for all {SUBMIT_ATTEMPTS} attempts"),
    ))
}

/// A URL the provider can read one of the owner's uploads at, for as long as the job may run.
async fn readable_upload(
    state: &State,
    job: &Job,
    key: &str,
    run_for: Duration,
) -> Result<String, JobError> {
    let size = media::upload_size(state, &job.user_id, key)
        .await?
        .ok_or_else(|| JobError::permanent("not_found", format!("no upload {key}")))?;
    if size > MAX_UPLOAD_BYTES {
        return Err(JobError::permanent(
            "image_too_large",
            format!("{key} is over {MAX_UPLOAD_BYTES} bytes"),
        ));
    }
    presign(state, key, run_for).await
}

/// A URL the provider can read one of the owner's videos at: a completed job's `source` file
/// under the owner's `videos/` prefix (the admission check found it the owner's and complete;
/// it may have been deleted since).
async fn readable_video(
    state: &State,
    job: &Job,
    video_id: &str,
    run_for: Duration,
) -> Result<String, JobError> {
    let missing = || JobError::permanent("not_found", format!("no video {video_id}"));
    let video = store::get(&state.db, video_id)
        .await?
        .filter(|v| v.user_id == job.user_id && v.status == crate::jobs::model::Status::Completed)
        .ok_or_else(missing)?;
    let prefix = media::output_prefix(media::Outputs::Videos, &job.user_id, video_id);
    let key = video
        .output
        .as_ref()
        .and_then(|o| o.pointer("/source/key"))
        .and_then(Value::as_str)
        .filter(|key| key.starts_with(&prefix))
        .ok_or_else(missing)?
        .to_owned();
    presign(state, &key, run_for).await
}

/// A URL the provider can read a trained style's weights at: a `train_style` job that completed,
/// the owner's or one it may use (published, or the one it was admitted with).
async fn style_weights(
    state: &State,
    job: &Job,
    style_id: &str,
    run_for: Duration,
) -> Result<String, JobError> {
    let style = match store::get(&state.db, style_id)
        .await?
        .filter(|s| s.kind == "train_style")
    {
        Some(style) if crate::generation::marketplace::usable(state, job, &style).await? => style,
        _ => {
            return Err(JobError::permanent(
                "not_found",
                format!("no style {style_id}"),
            ));
        }
    };
    let key = style
        .output
        .as_ref()
        .and_then(|o| o["files"][0]["key"].as_str())
        .filter(|_| style.status == crate::jobs::model::Status::Completed)
        .ok_or_else(|| {
            JobError::permanent(
                "invalid_input",
                format!("the style {style_id} is not trained"),
            )
        })?
        .to_owned();
    presign(state, &key, run_for).await
}

async fn presign(state: &State, key: &str, run_for: Duration) -> Result<String, JobError> {
    let lifetime = (run_for + Duration::from_secs(3600)).min(Duration::from_secs(7 * 86_400));
    Ok(media::presign_get(state, key, lifetime).await?)
}

/// Asks a job's provider to stop its request; failures are logged (the provider's own run-time
/// What the jobs core calls to stop a job at its provider (reaped, canceled).
pub const ABANDON: crate::jobs::registry::Abandon =
    |state, job_id, provider| Box::pin(cancel_at_provider(state, job_id, provider));

/// bound, `Cancel-After` or `X-Fal-Request-Timeout`, still ends it).
pub async fn cancel_at_provider(state: &State, job_id: &str, provider: &ProviderJob) {
    let result = match generation::adapter(state, provider.name).await {
        Ok(adapter) => adapter
            .cancel(&provider.model, &provider.request_id)
            .await
            .map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match result {
        Ok(()) => tracing::info!(
            job_id,
            provider = provider.name.as_str(),
            "canceled at the provider"
        ),
        Err(error) => {
            tracing::warn!(
                job_id,
                provider = provider.name.as_str(),
                error,
                "cancel at the provider failed"
            );
        }
    }
}
