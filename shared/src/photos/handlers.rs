//! The photo routes. Every photo is its owner's: anyone else's id, or upload key, is a 404.

use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::http::{Caller, json, json_body, query_param};
use crate::jobs::handlers::{CreateJob, idempotency_key, submit};
use crate::jobs::model::{Job, JobFailure, Status};
use crate::jobs::store::ListFilter;
use crate::photos::kinds::{BestCutInput, UpscaleInput};
use crate::photos::media::{self, Artifact};
use crate::state::State;
use crate::users::timestamp;

/// How long a photo's presigned URLs work.
pub const URL_LIFETIME: Duration = Duration::from_secs(15 * 60);

const KINDS: [&str; 2] = ["upscale", "bestcut"];

/// A photo file: its artifact record and a presigned GET URL.
#[derive(Serialize, ToSchema)]
pub struct PhotoFile {
    pub content_type: String,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    pub sha256: String,
    /// Presigned GET, valid for 15 minutes.
    pub url: String,
    pub url_expires_at: String,
}

/// A photo: the job that made it, and its files once it completed.
#[derive(Serialize, ToSchema)]
pub struct Photo {
    /// The photo's id, which is its job's.
    pub id: String,
    /// `upscale` or `bestcut`.
    pub kind: String,
    pub status: Status,
    pub progress: u8,
    pub error: Option<JobFailure>,
    pub lat: Option<f64>,
    pub lng: Option<f64>,
    pub model: Option<String>,
    pub original: Option<PhotoFile>,
    pub upscaled: Option<PhotoFile>,
    /// Best-cut: every upload's sharpness, in the order given, and the winner's key.
    #[schema(value_type = Option<Object>)]
    pub scores: Option<Value>,
    pub winner: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub urls: PhotoUrls,
}

#[derive(Serialize, ToSchema)]
pub struct PhotoUrls {
    #[serde(rename = "self")]
    pub self_: String,
    pub job: String,
}

/// A page of photos.
#[derive(Serialize, ToSchema)]
pub struct PhotoPage {
    pub items: Vec<Photo>,
    pub next_cursor: Option<String>,
}

/// The 202 of a photo submission.
#[derive(Serialize, ToSchema)]
pub struct PhotoSubmitted {
    pub id: String,
    pub status: Status,
    pub urls: PhotoUrls,
}

fn urls(id: &str) -> PhotoUrls {
    PhotoUrls {
        self_: format!("/v1/photos/{id}"),
        job: format!("/v1/jobs/{id}"),
    }
}

async fn presign(state: &State, key: &str) -> Result<String, ApiError> {
    Ok(crate::media::presign_get(state, key, URL_LIFETIME).await?)
}

fn artifact(output: Option<&Value>, variant: &str) -> Option<Artifact> {
    output
        .and_then(|o| o.get(variant))
        .and_then(|a| serde_json::from_value(a.clone()).ok())
}

async fn file(state: &State, artifact: Option<Artifact>) -> Result<Option<PhotoFile>, ApiError> {
    let Some(a) = artifact else {
        return Ok(None);
    };
    let expires = Utc::now() + chrono::Duration::from_std(URL_LIFETIME).context("lifetime")?;
    Ok(Some(PhotoFile {
        url: presign(state, &a.key).await?,
        url_expires_at: timestamp(expires),
        content_type: a.content_type,
        bytes: a.bytes,
        width: a.width,
        height: a.height,
        sha256: a.sha256,
    }))
}

async fn view(state: &State, job: Job) -> Result<Photo, ApiError> {
    let output = job.output.as_ref();
    let text = |name: &str| {
        output
            .and_then(|o| o.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let number = |name: &str| job.input.get(name).and_then(Value::as_f64);
    let model = text("model").or_else(|| {
        let upscales =
            job.kind == "upscale" || job.input.get("upscale") == Some(&Value::Bool(true));
        upscales.then(|| {
            job.input
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(crate::upscale::DEFAULT_MODEL)
                .to_owned()
        })
    });
    Ok(Photo {
        original: file(state, artifact(output, "original")).await?,
        upscaled: file(state, artifact(output, "upscaled")).await?,
        scores: output.and_then(|o| o.get("scores")).cloned(),
        winner: text("winner"),
        model,
        lat: number("lat"),
        lng: number("lng"),
        urls: urls(&job.id),
        id: job.id,
        kind: job.kind,
        status: job.status,
        progress: job.progress,
        error: job.error,
        created_at: job.created_at,
        finished_at: job.finished_at,
    })
}

async fn submit_photo(
    state: &State,
    req: &Request,
    caller: &Caller,
    kind: &str,
    input: Value,
) -> Result<Response<Body>, ApiError> {
    let key = idempotency_key(req)?;
    let body = CreateJob {
        kind: kind.to_owned(),
        input,
        webhook_url: None,
    };
    let crate::jobs::handlers::Submitted { id, status, .. } =
        submit(state, caller, key.as_deref(), &body).await?;
    let mut response = json(
        StatusCode::ACCEPTED,
        &PhotoSubmitted {
            urls: urls(&id),
            id: id.clone(),
            status,
        },
    )?;
    let location = format!("/v1/photos/{id}")
        .parse()
        .context("location header")?;
    response.headers_mut().insert("location", location);
    Ok(response)
}

/// Upscales an uploaded photo with Real-ESRGAN (a job; the photo's id is the job's).
#[utoipa::path(post, path = "/v1/photos/upscale", tag = "photos", security(("bearer" = [])), request_body = UpscaleInput,
    responses((status = 202, body = PhotoSubmitted), (status = 402, body = crate::error::Problem),
        (status = 404, description = "no such upload", body = crate::error::Problem), (status = 422, body = crate::error::Problem),
        (status = 429, body = crate::error::Problem)))]
pub async fn upscale_photo(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let input: Value = json_body(&req, &["application/json"])?;
    let parsed = crate::photos::kinds::check_upscale(&input).map_err(ApiError::Validation)?;
    crate::media::check_uploads(state, &caller, &[parsed.upload_key.as_str()]).await?;
    submit_photo(state, &req, &caller, "upscale", input).await
}

/// Picks the sharpest of 2–20 uploaded photos, optionally upscaling it (a job).
#[utoipa::path(post, path = "/v1/photos/bestcut", tag = "photos", security(("bearer" = [])), request_body = BestCutInput,
    responses((status = 202, body = PhotoSubmitted), (status = 402, body = crate::error::Problem),
        (status = 404, description = "no such upload", body = crate::error::Problem), (status = 422, body = crate::error::Problem),
        (status = 429, body = crate::error::Problem)))]
pub async fn best_cut_photos(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let input: Value = json_body(&req, &["application/json"])?;
    let parsed = crate::photos::kinds::check_best_cut(&input).map_err(ApiError::Validation)?;
    let keys: Vec<&str> = parsed.upload_keys.iter().map(String::as_str).collect();
    crate::media::check_uploads(state, &caller, &keys).await?;
    submit_photo(state, &req, &caller, "bestcut", input).await
}

/// The caller's photos, newest first.
#[utoipa::path(get, path = "/v1/photos", tag = "photos", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = PhotoPage), (status = 400, description = "invalid_cursor", body = crate::error::Problem)))]
pub async fn list_photos(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let filter = ListFilter {
        status: None,
        kinds: KINDS.iter().map(|k| (*k).to_owned()).collect(),
    };
    let (jobs, next_cursor) =
        crate::jobs::handlers::page_of_jobs(state, &req, &caller, "photos", &filter).await?;
    let mut items = Vec::with_capacity(jobs.len());
    for job in jobs {
        items.push(view(state, job).await?);
    }
    let listed = PhotoPage { items, next_cursor };
    json(StatusCode::OK, &listed)
}

/// One of the caller's photos (a photo job), or a 404.
async fn owned_photo(state: &State, req: &Request) -> Result<Job, ApiError> {
    crate::jobs::handlers::owned_of(state, req, &KINDS, "no such photo").await
}

/// A photo: status, place, files with presigned URLs, best-cut scores.
#[utoipa::path(get, path = "/v1/photos/{id}", tag = "photos", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Photo), (status = 404, body = crate::error::Problem)))]
pub async fn get_photo(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let job = owned_photo(state, &req).await?;
    json(StatusCode::OK, &view(state, job).await?)
}

/// Redirects to a presigned URL of the photo's `original` or `upscaled` (default) file.
#[utoipa::path(get, path = "/v1/photos/{id}/file", tag = "photos", security(("bearer" = [])),
    params(("id" = String, Path), ("variant" = Option<String>, Query, description = "original or upscaled (default)")),
    responses((status = 302, description = "Location: a presigned URL"), (status = 404, body = crate::error::Problem),
        (status = 409, description = "photo_not_ready", body = crate::error::Problem),
        (status = 422, description = "validation_failed: `variant` is neither", body = crate::error::Problem)))]
pub async fn get_photo_file(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let variant = query_param(&req, "variant").unwrap_or_else(|| "upscaled".into());
    if !matches!(variant.as_str(), "original" | "upscaled") {
        return Err(ApiError::invalid("variant", "must be original or upscaled"));
    }
    let job = owned_photo(state, &req).await?;
    if job.status != Status::Completed {
        return Err(ApiError::Conflict {
            code: "photo_not_ready",
            detail: format!("the photo is {}", job.status.as_str()),
        });
    }
    let artifact = artifact(job.output.as_ref(), &variant)
        .ok_or(ApiError::NotFound("this photo has no such file"))?;
    let url = presign(state, &artifact.key).await?;
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", url)
        .header("cache-control", "no-store")
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Deletes a finished photo: its files, then its record. A photo still processing is a 409.
#[utoipa::path(delete, path = "/v1/photos/{id}", tag = "photos", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204, description = "deleted"), (status = 404, body = crate::error::Problem),
        (status = 409, description = "photo_processing", body = crate::error::Problem)))]
pub async fn delete_photo(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let job = owned_photo(state, &req).await?;
    let prefix = media::photo_prefix(&job.user_id, &job.id);
    crate::jobs::handlers::delete_finished_with_files(
        state,
        &job,
        &prefix,
        "photo_processing",
        "photo",
    )
    .await
}
