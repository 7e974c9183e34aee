//! `POST /v1/uploads`: a presigned S3 PUT for one image or video, its key under the caller's prefix. Files
//! never pass through a function; every job that names an upload checks the object again (owner,
//! size, type) before any work, since the emulator and S3 do not enforce all of this themselves.

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_s3::presigning::PresigningConfig;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body};
use crate::media::{MAX_UPLOAD_BYTES, user_prefix};
use crate::state::State;
use crate::users::timestamp;

/// How long an upload URL works.
pub const UPLOAD_URL_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The image types accepted, and the extension their keys get (videos: [`crate::video::VIDEO_TYPES`]).
const TYPES: &[(&str, &str)] = &[
    ("image/jpeg", "jpg"),
    ("image/png", "png"),
    ("image/webp", "webp"),
];

/// `POST /v1/uploads`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// `image/jpeg`, `image/png` or `image/webp`; or `video/mp4`, `video/quicktime` or
    /// `video/webm` (then `POST /v1/videos` makes a video of it).
    #[schema(pattern = "^(image/(jpeg|png|webp)|video/(mp4|quicktime|webm))$")]
    pub content_type: String,
    /// Exact size in bytes: 1 to 20 MiB for an image; for a video, 1 to the deployment's
    /// `VIDEO_MAX_BYTES` (200 MB by default).
    #[schema(minimum = 1, maximum = 5_000_000_000_u64)]
    pub size: u64,
}

/// Where and how to upload.
#[derive(Serialize, ToSchema)]
pub struct Upload {
    /// Name the upload by this key in jobs (`upload_key`).
    pub key: String,
    /// `PUT`.
    pub method: &'static str,
    /// The presigned URL.
    pub url: String,
    /// Headers the PUT must carry, as signed.
    pub headers: BTreeMap<String, String>,
    pub expires_at: String,
}

/// Issues a presigned PUT for one image or video of a declared type and size.
#[utoipa::path(post, path = "/v1/uploads", tag = "uploads", security(("bearer" = [])), request_body = UploadRequest,
    responses((status = 201, body = Upload), (status = 422, body = crate::error::Problem)))]
pub async fn create_upload(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: UploadRequest = json_body(&req, &["application/json"])?;
    let mut errors = Vec::new();
    let image = TYPES.iter().find(|(t, _)| *t == body.content_type);
    let video = crate::video::VIDEO_TYPES
        .iter()
        .find(|(t, _)| *t == body.content_type);
    let extension = image.or(video).map(|(_, e)| *e);
    if extension.is_none() {
        errors.push(FieldError::new(
            "content_type",
            "must be image/jpeg, image/png, image/webp, video/mp4, video/quicktime or video/webm",
        ));
    }
    let largest = if video.is_some() {
        state.config.video.max_upload_bytes
    } else {
        MAX_UPLOAD_BYTES
    };
    if !(1..=largest).contains(&body.size) {
        errors.push(FieldError::new(
            "size",
            format!("must be from 1 to {largest} bytes"),
        ));
    }
    let (Some(extension), true) = (extension, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let bucket = state
        .config
        .media_bucket
        .as_deref()
        .context("MEDIA_BUCKET is not set")?;
    let key = format!(
        "{}{}.{extension}",
        user_prefix(&caller.user_id),
        uuid::Uuid::now_v7()
    );
    let size = i64::try_from(body.size).context("size")?;
    let presigned = state
        .s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type(&body.content_type)
        .content_length(size)
        .presigned(PresigningConfig::expires_in(UPLOAD_URL_LIFETIME).context("presigning config")?)
        .await
        .context("presigning an upload")?;
    let headers = presigned
        .headers()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let expires_at =
        Utc::now() + chrono::Duration::from_std(UPLOAD_URL_LIFETIME).context("lifetime")?;
    tracing::info!(key = %key, size = body.size, "upload issued");
    json(
        StatusCode::CREATED,
        &Upload {
            key,
            method: "PUT",
            url: presigned.uri().to_owned(),
            headers,
            expires_at: timestamp(expires_at),
        },
    )
}
