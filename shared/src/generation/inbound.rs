//! Inbound webhooks (public routes; the signature is the authentication): fal.ai (Ed25519 against
//! its JWKS), Replicate (Standard Webhooks with the account's secret) and our AI servers (Standard
//! Webhooks with our secret). A verified webhook for an unknown job, another provider's job or
//! another request is acknowledged and ignored; a duplicate or late one changes nothing.

use lambda_http::{Body, Request, Response, http::StatusCode};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::generation::finalize::{self, Applied};
use crate::generation::providers::{ProviderName, Remote};
use crate::generation::{self, Unavailable, ai_server};
use crate::generation::{fal as fal_api, replicate as replicate_api};
use crate::http::{body_bytes, json, path_param, query_param};
use crate::jobs::model::Job;
use crate::jobs::store;
use crate::state::State;

fn refused(detail: &'static str) -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_signature",
        detail,
    }
}

fn unavailable(err: impl std::fmt::Display, what: &'static str) -> ApiError {
    tracing::error!(error = %err, "{what}");
    ApiError::Unavailable("the webhook cannot be verified now; retry later")
}

fn acknowledged(applied: Applied) -> Result<Response<Body>, ApiError> {
    json(StatusCode::OK, &json!({ "result": applied.as_str() }))
}

fn ignored(why: &'static str) -> Result<Response<Body>, ApiError> {
    tracing::warn!(why, "webhook ignored");
    json(StatusCode::OK, &json!({ "result": "ignored" }))
}

fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedBody(e.to_string()))
}

/// The job a webhook is about, if it is at `provider` under `request_id`.
async fn job_at(
    state: &State,
    job_id: Option<String>,
    provider: ProviderName,
    request_id: Option<&str>,
) -> Result<Option<Job>, ApiError> {
    let Some(job_id) = job_id.filter(|id| uuid::Uuid::parse_str(id).is_ok()) else {
        return Ok(None);
    };
    let job = store::get(&state.db, &job_id).await?;
    // A fast provider may answer before the worker has recorded its request id: ask for a retry.
    if job
        .as_ref()
        .is_some_and(|job| job.provider.is_none() && !job.status.is_terminal())
    {
        return Err(ApiError::Unavailable(
            "the job is not ready for this webhook yet; retry",
        ));
    }
    Ok(job.filter(|job| {
        job.provider
            .as_ref()
            .is_some_and(|p| p.name == provider && request_id.is_none_or(|id| p.request_id == id))
    }))
}

async fn apply(state: &State, job: &Job, remote: Remote) -> Result<Response<Body>, ApiError> {
    match finalize::apply(state, job, remote).await {
        Ok(applied) => {
            tracing::info!(job_id = %job.id, result = applied.as_str(), "webhook applied");
            acknowledged(applied)
        }
        // The provider retries; the reconciler is the backstop.
        Err(err) => Err(unavailable(format!("{err:#}"), "finalizing failed")),
    }
}

fn fal_refusal(err: fal_api::FalSignatureError) -> ApiError {
    match err {
        fal_api::FalSignatureError::Stale => refused("the webhook's timestamp is too far from now"),
        fal_api::FalSignatureError::Header(_) => {
            refused("the webhook's signature headers are missing or malformed")
        }
        fal_api::FalSignatureError::Invalid => refused("the webhook's signature is not fal's"),
    }
}

/// Refuses a Standard Webhooks request without its headers or with a stale timestamp, before any
/// secret is read.
fn precheck_standard(req: &Request) -> Result<(), ApiError> {
    let headers = req.headers();
    if ["webhook-id", "webhook-signature"]
        .iter()
        .any(|name| headers.get(*name).is_none_or(|v| v.is_empty()))
    {
        return Err(refused(
            "the webhook's signature headers are missing or malformed",
        ));
    }
    let sent: i64 = headers
        .get("webhook-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| refused("the webhook's signature headers are missing or malformed"))?;
    if (chrono::Utc::now().timestamp() - sent).abs() > fal_api::TIMESTAMP_TOLERANCE_SECS {
        return Err(refused("the webhook's timestamp is too far from now"));
    }
    Ok(())
}

/// `POST /v1/webhooks/fal?job_id=`: fal's completion webhook.
#[utoipa::path(post, path = "/v1/webhooks/fal", tag = "webhooks", params(("job_id" = String, Query)),
    responses((status = 200, description = "applied or ignored"), (status = 401, description = "invalid_signature", body = crate::error::Problem)))]
pub async fn receive_fal_webhook(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let body = body_bytes(&req)?;
    let now = chrono::Utc::now().timestamp();
    fal_api::precheck(req.headers(), now).map_err(fal_refusal)?;
    let keys = generation::fal_keys(state, false)
        .await
        .map_err(|e| unavailable(format!("{e:#}"), "fal's JWKS is unavailable"))?;
    let verdict = match fal_api::verify(req.headers(), body, &keys, now) {
        // Perhaps signed by a key published since we cached the JWKS.
        Err(fal_api::FalSignatureError::Invalid) => {
            let keys = generation::fal_keys(state, true)
                .await
                .map_err(|e| unavailable(format!("{e:#}"), "fal's JWKS is unavailable"))?;
            fal_api::verify(req.headers(), body, &keys, now)
        }
        verdict => verdict,
    };
    verdict.map_err(fal_refusal)?;
    // fal signs every account's webhooks with the same keys: the signed account must be ours.
    let ours = generation::fal_user_id(state).await.map_err(|e| match e {
        Unavailable::NotConfigured(_) => {
            refused("fal webhooks need fal_user_id in the provider keys secret")
        }
        Unavailable::Keys(err) => {
            unavailable(format!("{err:#}"), "the provider keys are unavailable")
        }
    })?;
    let signed_user = req
        .headers()
        .get("x-fal-webhook-user-id")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(signed_user, ours.as_bytes())) {
        return Err(refused("the webhook was signed for another fal account"));
    }
    let document = parse_body(body)?;
    let signed_request = req
        .headers()
        .get("x-fal-webhook-request-id")
        .and_then(|v| v.to_str().ok());
    let request_id = document["request_id"].as_str();
    if request_id.is_none() || request_id != signed_request {
        return ignored("the body's request_id is not the signed one");
    }
    let Some(job) = job_at(
        state,
        query_param(&req, "job_id"),
        ProviderName::Fal,
        request_id,
    )
    .await?
    else {
        return ignored("no job at fal under this request");
    };
    apply(state, &job, fal_api::webhook_outcome(&document)).await
}

/// Verifies Standard Webhooks headers over `body` with `secret`.
fn verify_standard(
    req: &Request,
    body: &[u8],
    secret: &secrecy::SecretString,
) -> Result<(), ApiError> {
    let signer =
        ai_server::signer(secret).map_err(|e| unavailable(e, "a webhook secret is malformed"))?;
    signer.verify(body, req.headers()).map_err(|e| match e {
        standardwebhooks::WebhookError::TimestampTooOldError
        | standardwebhooks::WebhookError::FutureTimestampError => {
            refused("the webhook's timestamp is too far from now")
        }
        standardwebhooks::WebhookError::InvalidSignature => {
            refused("the webhook's signature does not match")
        }
        _ => refused("the webhook's signature headers are missing or malformed"),
    })
}

/// `POST /v1/webhooks/replicate?job_id=`: Replicate's `completed` webhook.
#[utoipa::path(post, path = "/v1/webhooks/replicate", tag = "webhooks", params(("job_id" = String, Query)),
    responses((status = 200, description = "applied or ignored"), (status = 401, description = "invalid_signature", body = crate::error::Problem)))]
pub async fn receive_replicate_webhook(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let body = body_bytes(&req)?;
    precheck_standard(&req)?;
    let secret = generation::replicate_webhook_secret(state)
        .await
        .map_err(|e| match e {
            Unavailable::NotConfigured(_) => refused("Replicate is not configured here"),
            Unavailable::Keys(err) => unavailable(
                format!("{err:#}"),
                "Replicate's webhook secret is unavailable",
            ),
        })?;
    verify_standard(&req, body, &secret)?;
    let prediction = parse_body(body)?;
    let Some(job) = job_at(
        state,
        query_param(&req, "job_id"),
        ProviderName::Replicate,
        Some(prediction["id"].as_str().unwrap_or_default()),
    )
    .await?
    else {
        return ignored("no job at Replicate under this prediction");
    };
    apply(state, &job, replicate_api::outcome(&prediction)).await
}

/// Which AI server report a route receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AiReport {
    Progress,
    Complete,
    Failed,
}

impl AiReport {
    /// The `type` a signed report of this route must carry (its route's last segment).
    fn name(self) -> &'static str {
        match self {
            Self::Progress => "progress",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }
}

/// The signature covers the body, not the URL: so the body must name the job (`job_id`) and the
/// report (`type`) of the route it was sent to, or a report signed for one job or route could be
/// replayed at another.
fn bound_to_route(
    document: &Value,
    job_id: Option<&str>,
    report: AiReport,
) -> Result<(), ApiError> {
    if document["job_id"]
        .as_str()
        .is_some_and(|id| Some(id) == job_id)
        && document["type"].as_str() == Some(report.name())
    {
        return Ok(());
    }
    Err(ApiError::BadRequest {
        code: "webhook_mismatch",
        detail: format!(
            "a signed report to this URL must carry \"job_id\" (the job in the URL) and \"type\": \"{}\"",
            report.name()
        ),
    })
}

/// An AI server's progress: `{progress: 0-100, message?}`; progress only rises.
#[utoipa::path(patch, path = "/v1/webhooks/ai/{id}/progress", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, description = "applied or ignored"), (status = 400, description = "webhook_mismatch: the signed body names another job or report", body = crate::error::Problem),
        (status = 401, description = "invalid_signature", body = crate::error::Problem)))]
pub async fn receive_ai_progress(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    ai(state, req, AiReport::Progress).await
}

/// An AI server's completion: `{outputs: [{url, content_type?}], result?}`.
#[utoipa::path(post, path = "/v1/webhooks/ai/{id}/complete", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, description = "applied or ignored"), (status = 400, description = "webhook_mismatch: the signed body names another job or report", body = crate::error::Problem),
        (status = 401, description = "invalid_signature", body = crate::error::Problem)))]
pub async fn receive_ai_completion(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    ai(state, req, AiReport::Complete).await
}

/// An AI server's failure: `{error}`; the job fails as `provider_error` and is refunded.
#[utoipa::path(post, path = "/v1/webhooks/ai/{id}/failed", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, description = "applied or ignored"), (status = 400, description = "webhook_mismatch: the signed body names another job or report", body = crate::error::Problem),
        (status = 401, description = "invalid_signature", body = crate::error::Problem)))]
pub async fn receive_ai_failure(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    ai(state, req, AiReport::Failed).await
}

/// The AI server routes: Standard Webhooks signed with our secret; the job id is in the path.
async fn ai(state: &State, req: Request, report: AiReport) -> Result<Response<Body>, ApiError> {
    let body = body_bytes(&req)?;
    precheck_standard(&req)?;
    let secret = generation::ai_secret(state)
        .await
        .map_err(|e| unavailable(format!("{e:#}"), "the AI webhook secret is unavailable"))?;
    verify_standard(&req, body, &secret)?;
    let document = parse_body(body)?;
    let job_id = path_param(&req, "id");
    bound_to_route(&document, job_id.as_deref(), report)?;
    let Some(job) = job_at(state, job_id, ProviderName::Ai, None).await? else {
        return ignored("no job at the AI server under this id");
    };
    match report {
        AiReport::Progress => {
            let percent = document["progress"]
                .as_u64()
                .filter(|p| *p <= 100)
                .and_then(|p| u8::try_from(p).ok())
                .ok_or_else(|| ApiError::invalid("progress", "must be an integer from 0 to 100"))?;
            let message = document["message"].as_str();
            let applied = finalize::progress(state, &job, percent, message)
                .await
                .map_err(|e| unavailable(format!("{e:#}"), "recording progress failed"))?;
            acknowledged(applied)
        }
        AiReport::Complete => {
            let remote = Remote::Succeeded {
                files: ai_server::files(&document),
                result: document.get("result").cloned().unwrap_or(Value::Null),
            };
            apply(state, &job, remote).await
        }
        AiReport::Failed => {
            let message = document["error"]
                .as_str()
                .or_else(|| document["error"]["message"].as_str())
                .or_else(|| document["message"].as_str())
                .unwrap_or("the AI server reported a failure")
                .chars()
                .take(500)
                .collect();
            apply(state, &job, Remote::Failed { message }).await
        }
    }
}
