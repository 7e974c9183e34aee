//! The video routes. Every video is its owner's: anyone else's id, or upload key, is a 404.

use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::http::{Caller, json, json_body};
use crate::jobs::handlers::{CreateJob, idempotency_key, submit};
use crate::jobs::model::{Job, JobFailure, Status};
use crate::jobs::store::ListFilter;
use crate::state::State;
use crate::users::timestamp;
use crate::video::Probe;
use crate::videos::VIDEO_KINDS;
use crate::videos::kinds::ImportInput;
use crate::videos::work::{Thumbnail, VideoFile};

/// How long a video's presigned URLs work.
pub const URL_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A presigned file.
#[derive(Serialize, ToSchema)]
pub struct Presigned {
    pub bytes: u64,
    /// Presigned GET, valid for 15 minutes.
    pub url: String,
}

/// A video: the job that made it (`video_import` or `select_range`) and, once it completed, its
/// facts and files.
#[derive(Serialize, ToSchema)]
pub struct Video {
    /// The video's id, which is its job's.
    pub id: String,
    /// `video_import` (from an upload or a job's output), `select_range` (cut from another video)
    /// or `mux_audio` (music laid over another video).
    pub kind: String,
    pub status: Status,
    pub progress: u8,
    /// Why it was refused: `not_a_video`, `truncated`, `too_long`, `too_large`,
    /// `unsupported_codec`, `file_too_large`, `range`, …
    pub error: Option<JobFailure>,
    pub probe: Option<Probe>,
    /// The video file itself.
    pub source: Option<Presigned>,
    pub content_type: Option<String>,
    /// A JPEG from the first second.
    pub poster: Option<Presigned>,
    /// The first 10 seconds at 360 pixels high, about 400 kbit/s, no audio (MP4).
    pub preview: Option<Presigned>,
    /// `select_range`: the video it was cut from, the range, and `copy` (packets copied from a
    /// keyframe) or `reencode`.
    pub source_video_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub range: Option<Value>,
    pub mode: Option<String>,
    /// Made from the video output of this job (a glitch, a template).
    pub from_job_id: Option<String>,
    /// `mux_audio`: the job whose audio was laid over `source_video_id`, and whether the video's
    /// own sound was kept under it.
    pub audio_job_id: Option<String>,
    pub mix: Option<bool>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub urls: VideoUrls,
}

#[derive(Serialize, ToSchema)]
pub struct VideoUrls {
    #[serde(rename = "self")]
    pub self_: String,
    pub job: String,
    pub timeline: String,
}

/// A page of videos.
#[derive(Serialize, ToSchema)]
pub struct VideoPage {
    pub items: Vec<Video>,
    pub next_cursor: Option<String>,
}

/// The 202 of `POST /v1/videos`.
#[derive(Serialize, ToSchema)]
pub struct VideoSubmitted {
    pub id: String,
    pub status: Status,
    pub urls: VideoUrls,
}

/// A thumbnail of the strip.
#[derive(Serialize, ToSchema)]
pub struct TimelineFrame {
    pub at_seconds: f64,
    pub url: String,
}

/// What the studio's timeline draws.
#[derive(Serialize, ToSchema)]
pub struct Timeline {
    pub video_id: String,
    pub duration_seconds: f64,
    pub frame_rate: f64,
    /// Keyframe times in seconds (the first 2,000): a range starting on one is cut without
    /// encoding again.
    pub keyframes: Vec<f64>,
    /// Ten thumbnails, 90 pixels high, evenly spaced.
    pub strip: Vec<TimelineFrame>,
    pub poster_url: Option<String>,
    pub preview_url: Option<String>,
    pub urls_expire_at: String,
}

fn urls(id: &str) -> VideoUrls {
    VideoUrls {
        self_: format!("/v1/videos/{id}"),
        job: format!("/v1/jobs/{id}"),
        timeline: format!("/v1/videos/{id}/timeline"),
    }
}

fn part<T: serde::de::DeserializeOwned>(job: &Job, name: &str) -> Option<T> {
    job.output
        .as_ref()
        .and_then(|o| o.get(name))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

async fn presigned(state: &State, file: Option<VideoFile>) -> Result<Option<Presigned>, ApiError> {
    let Some(file) = file else {
        return Ok(None);
    };
    Ok(Some(Presigned {
        url: crate::media::presign_get(state, &file.key, URL_LIFETIME).await?,
        bytes: file.bytes,
    }))
}

async fn view(state: &State, job: Job) -> Result<Video, ApiError> {
    let source: Option<VideoFile> = part(&job, "source");
    Ok(Video {
        probe: part(&job, "probe"),
        content_type: source.as_ref().and_then(|s| s.content_type.clone()),
        source: presigned(state, source).await?,
        poster: presigned(state, part(&job, "poster")).await?,
        preview: presigned(state, part(&job, "preview")).await?,
        source_video_id: part(&job, "source_video_id"),
        range: part(&job, "range"),
        mode: part(&job, "mode"),
        from_job_id: part(&job, "from_job_id"),
        audio_job_id: part(&job, "audio_job_id"),
        mix: part(&job, "mix"),
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

/// Makes a video of an uploaded file, or of a completed job's video output (`job_id`: a glitch, a
/// template), as a job, free: it is downloaded, probed (container, codecs,
/// duration, size, frame rate, rotation, audio) and every packet read before any other work, then
/// kept with a poster, a thumbnail strip and a preview. A file that is not a video, is truncated,
/// too long, too large or in a codec the pipeline does not decode fails with its own error type.
#[utoipa::path(post, path = "/v1/videos", tag = "videos", security(("bearer" = [])), request_body = ImportInput,
    responses((status = 202, body = VideoSubmitted), (status = 404, description = "no such upload or job", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn create_video(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let input: Value = json_body(&req, &["application/json"])?;
    let parsed = crate::videos::kinds::check_import(&input).map_err(ApiError::Validation)?;
    if let Some(key) = &parsed.upload_key {
        crate::media::check_uploads(state, &caller, &[key.as_str()]).await?;
    }
    if let Some(job_id) = &parsed.job_id {
        crate::jobs::store::get(&state.db, job_id)
            .await?
            .filter(|j| j.user_id == caller.user_id)
            .ok_or(ApiError::NotFound("no such job"))?;
    }
    let key = idempotency_key(&req)?;
    let body = CreateJob {
        kind: "video_import".to_owned(),
        input,
        webhook_url: None,
    };
    let crate::jobs::handlers::Submitted { id, status, .. } =
        submit(state, &caller, key.as_deref(), &body).await?;
    let mut response = json(
        StatusCode::ACCEPTED,
        &VideoSubmitted {
            urls: urls(&id),
            id: id.clone(),
            status,
        },
    )?;
    let location = format!("/v1/videos/{id}")
        .parse()
        .context("location header")?;
    response.headers_mut().insert("location", location);
    Ok(response)
}

/// The caller's videos, newest first.
#[utoipa::path(get, path = "/v1/videos", tag = "videos", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = VideoPage), (status = 400, description = "invalid_cursor", body = crate::error::Problem)))]
pub async fn list_videos(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let filter = ListFilter {
        status: None,
        kinds: VIDEO_KINDS.iter().map(|k| (*k).to_owned()).collect(),
    };
    let (jobs, next_cursor) =
        crate::jobs::handlers::page_of_jobs(state, &req, &caller, "videos", &filter).await?;
    let mut items = Vec::with_capacity(jobs.len());
    for job in jobs {
        items.push(view(state, job).await?);
    }
    json(StatusCode::OK, &VideoPage { items, next_cursor })
}

/// One of the caller's videos, or a 404.
async fn owned_video(state: &State, req: &Request) -> Result<Job, ApiError> {
    crate::jobs::handlers::owned_of(state, req, &VIDEO_KINDS, "no such video").await
}

/// A video: status, probe, files with presigned URLs.
#[utoipa::path(get, path = "/v1/videos/{id}", tag = "videos", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Video), (status = 404, body = crate::error::Problem)))]
pub async fn get_video(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let job = owned_video(state, &req).await?;
    json(StatusCode::OK, &view(state, job).await?)
}

/// The studio's timeline of a completed video: duration, keyframes, the thumbnail strip.
#[utoipa::path(get, path = "/v1/videos/{id}/timeline", tag = "videos", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Timeline), (status = 404, body = crate::error::Problem),
        (status = 409, description = "video_not_ready", body = crate::error::Problem)))]
pub async fn get_video_timeline(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let job = owned_video(state, &req).await?;
    if job.status != Status::Completed {
        return Err(ApiError::Conflict {
            code: "video_not_ready",
            detail: format!("the video is {}", job.status.as_str()),
        });
    }
    let probe: Probe = part(&job, "probe").context("a completed video has its probe")?;
    let thumbnails: Vec<Thumbnail> = part(&job, "strip").unwrap_or_default();
    let mut strip = Vec::with_capacity(thumbnails.len());
    for t in thumbnails {
        strip.push(TimelineFrame {
            url: crate::media::presign_get(state, &t.key, URL_LIFETIME).await?,
            at_seconds: t.at_seconds,
        });
    }
    let expires = Utc::now() + chrono::Duration::from_std(URL_LIFETIME).context("lifetime")?;
    let timeline = Timeline {
        keyframes: part(&job, "keyframes").unwrap_or_default(),
        poster_url: presigned(state, part(&job, "poster")).await?.map(|p| p.url),
        preview_url: presigned(state, part(&job, "preview"))
            .await?
            .map(|p| p.url),
        duration_seconds: probe.duration_seconds,
        frame_rate: probe.video.frame_rate,
        strip,
        urls_expire_at: timestamp(expires),
        video_id: job.id,
    };
    json(StatusCode::OK, &timeline)
}

/// Deletes a finished video: its files, then its record. A video still processing is a 409.
#[utoipa::path(delete, path = "/v1/videos/{id}", tag = "videos", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204, description = "deleted"), (status = 404, body = crate::error::Problem),
        (status = 409, description = "video_processing", body = crate::error::Problem)))]
pub async fn delete_video(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let job = owned_video(state, &req).await?;
    let prefix = crate::videos::prefix(&job.user_id, &job.id);
    crate::jobs::handlers::delete_finished_with_files(
        state,
        &job,
        &prefix,
        "video_processing",
        "video",
    )
    .await
}
