//! Styles (LoRA) trained on the caller's images by our AI servers: `POST /v1/styles` starts a
//! `train_style` job (the style's id is the job's), progress 0–100 arrives by the AI server's
//! webhooks, and the trained weights are copied to S3 and recorded. A style is then usable in
//! `generate` as `style_id` (its owner's, or anyone's once published: see `marketplace`).

use anyhow::Context as _;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::generation::outputs::FileArtifact;
use crate::http::{Caller, json, json_body};
use crate::jobs::handlers::{CreateJob, Submitted, idempotency_key, owned, submit};
use crate::jobs::model::{Job, JobFailure, Status};
use crate::jobs::store::ListFilter;
use crate::state::State;

const KIND: &str = "train_style";

/// `POST /v1/styles`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStyle {
    /// 1 to 80 characters.
    pub name: String,
    /// 4 to 50 of your uploads (`POST /v1/uploads`): the training images.
    pub upload_keys: Vec<String>,
    /// The word that calls the style up in prompts (letters, digits, `_`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_word: Option<String>,
    /// Training steps, 100 to 5000 (default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// The trainer on your AI servers (default `lambent/style-lora`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Where to send signed `job.*` events for the training.
    #[serde(skip_serializing)]
    pub webhook_url: Option<String>,
}

/// A style.
#[derive(Serialize, ToSchema)]
pub struct Style {
    pub id: String,
    pub name: String,
    pub trigger_word: Option<String>,
    pub status: Status,
    /// 0–100, as the training server reports it.
    pub progress: u8,
    pub progress_message: Option<String>,
    pub error: Option<JobFailure>,
    /// The trained weights, with a presigned URL, once COMPLETED.
    #[schema(value_type = Option<Object>)]
    pub model: Option<Value>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Its marketplace listing, once published or edited (`PATCH /v1/styles/{id}`).
    pub listing: Option<crate::generation::marketplace::Listed>,
}

/// A page of styles.
#[derive(Serialize, ToSchema)]
pub struct StylePage {
    pub items: Vec<Style>,
    pub next_cursor: Option<String>,
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such style")
}

async fn view(state: &State, mut job: Job) -> Result<Style, ApiError> {
    crate::generation::outputs::add_urls(state, &mut job).await?;
    let model = job
        .output
        .as_ref()
        .and_then(|o| o["files"].get(0))
        .filter(|f| serde_json::from_value::<FileArtifact>((*f).clone()).is_ok())
        .cloned();
    let text = |name: &str| job.input[name].as_str().map(str::to_owned);
    let listing = crate::generation::marketplace::listing(state, &job.id)
        .await?
        .map(Into::into);
    Ok(Style {
        listing,
        name: text("name").unwrap_or_default(),
        trigger_word: text("trigger_word"),
        id: job.id,
        status: job.status,
        progress: job.progress,
        progress_message: job.progress_message,
        error: job.error,
        model,
        created_at: job.created_at,
        finished_at: job.finished_at,
    })
}

/// Trains a style on your images (a `train_style` job on the AI servers; 50 credits).
#[utoipa::path(post, path = "/v1/styles", tag = "styles", security(("bearer" = [])), request_body = CreateStyle,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first result for 24 hours")),
    responses((status = 202, body = Submitted), (status = 402, body = crate::error::Problem),
        (status = 404, description = "no such upload", body = crate::error::Problem), (status = 422, body = crate::error::Problem),
        (status = 429, body = crate::error::Problem)))]
pub async fn create_style(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let key = idempotency_key(&req)?;
    let body: CreateStyle = json_body(&req, &["application/json"])?;
    let input = serde_json::to_value(&body).context("encoding a style")?;
    let spec = crate::generation::kinds::parse_training(&input).map_err(ApiError::Validation)?;
    let keys: Vec<&str> = spec.uploads.iter().map(|(_, k)| k.as_str()).collect();
    crate::media::check_uploads(state, &caller, &keys).await?;
    let job = CreateJob {
        kind: KIND.to_owned(),
        input,
        webhook_url: body.webhook_url,
    };
    let mut submitted = submit(state, &caller, key.as_deref(), &job).await?;
    submitted.urls.self_ = format!("/v1/styles/{}", submitted.id);
    let location = submitted.urls.self_.parse().context("location header")?;
    let mut response = json(StatusCode::ACCEPTED, &submitted)?;
    response.headers_mut().insert("location", location);
    Ok(response)
}

/// Your styles, newest first, each with its listing if it has one.
#[utoipa::path(get, path = "/v1/styles/me", tag = "styles", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = StylePage), (status = 400, description = "invalid_cursor", body = crate::error::Problem)))]
pub async fn list_my_styles(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let filter = ListFilter {
        status: None,
        kinds: vec![KIND.to_owned()],
    };
    let (jobs, next_cursor) =
        crate::jobs::handlers::page_of_jobs(state, &req, &caller, "styles", &filter).await?;
    let mut items = Vec::with_capacity(jobs.len());
    for job in jobs {
        items.push(view(state, job).await?);
    }
    let listed = StylePage { items, next_cursor };
    json(StatusCode::OK, &listed)
}

/// One of your styles: training progress, then the trained weights.
#[utoipa::path(get, path = "/v1/styles/{id}", tag = "styles", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Style), (status = 404, body = crate::error::Problem)))]
pub async fn get_style(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let (_, job) = owned(state, &req).await.map_err(|e| match e {
        ApiError::NotFound(_) => not_found(),
        other => other,
    })?;
    if job.kind != KIND {
        return Err(not_found());
    }
    json(StatusCode::OK, &view(state, job).await?)
}
