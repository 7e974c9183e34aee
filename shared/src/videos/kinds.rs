//! The video job kinds: `video_import` (an upload becomes a video), and the studio's
//! `capture_frame` and `select_range`. All run on the video worker (the CPU worker with FFmpeg).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::Queue;
use crate::error::{ApiError, FieldError};
use crate::jobs::executor::Finished;
use crate::jobs::model::{Job, Status};
use crate::jobs::registry::Kind;
use crate::state::State;

/// The longest range `select_range` cuts (LOKIZ's remixes take at most 10 seconds).
pub const MAX_RANGE_SECONDS: f64 = 10.0;

/// `video_import`'s input (`POST /v1/videos`): one of the two.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportInput {
    /// A key from `POST /v1/uploads` of type `video/mp4`, `video/quicktime` or `video/webm`.
    pub upload_key: Option<String>,
    /// A completed job of the caller's whose output is a video (a glitch, a template, an
    /// image-to-video generation): its first video file.
    pub job_id: Option<String>,
}

/// `capture_frame`'s input: one frame of a video as an image upload.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureInput {
    /// One of the caller's videos, completed.
    pub video_id: String,
    /// From 0 to less than the video's duration.
    pub at_seconds: f64,
}

/// `select_range`'s input: `[start, end)` of a video as a new video, at most 10 seconds.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeInput {
    pub video_id: String,
    pub start: f64,
    pub end: f64,
}

/// `mux_audio`'s input: a completed job's audio (a `music` job) laid over a video, a new video.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuxInput {
    pub video_id: String,
    /// One of the caller's completed jobs whose output is audio (`music`).
    pub audio_job_id: String,
    /// Keep the video's own sound under the music (default: the music replaces it).
    #[serde(default)]
    pub mix: bool,
}

fn parse<T: serde::de::DeserializeOwned>(input: &Value) -> Result<T, Vec<FieldError>> {
    if !input.is_object() {
        return Err(vec![FieldError::new("input", "must be an object")]);
    }
    crate::http::from_value_at(input, "").map_err(|e| vec![e])
}

fn finish<T>(value: T, errors: Vec<FieldError>) -> Result<T, Vec<FieldError>> {
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(errors)
    }
}

/// Whether `key` names a video upload (its owner is checked against the caller elsewhere).
pub fn is_video_key(key: &str) -> bool {
    key.starts_with("uploads/")
        && key.len() <= 512
        && !key.contains("..")
        && crate::videos::content_type(key).is_some()
}

pub fn check_import(input: &Value) -> Result<ImportInput, Vec<FieldError>> {
    let input: ImportInput = parse(input)?;
    let mut errors = Vec::new();
    match (&input.upload_key, &input.job_id) {
        (Some(key), None) if !is_video_key(key) => errors.push(FieldError::new(
            "upload_key",
            "must be a key from POST /v1/uploads of a video (mp4, mov or webm)",
        )),
        (None, Some(id)) if uuid::Uuid::parse_str(id).is_err() => {
            errors.push(FieldError::new("job_id", "must be a job's id"));
        }
        (Some(_), None) | (None, Some(_)) => {}
        _ => errors.push(FieldError::new(
            "upload_key",
            "give either upload_key or job_id",
        )),
    }
    finish(input, errors)
}

fn video_id_ok(id: &str, errors: &mut Vec<FieldError>) {
    if uuid::Uuid::parse_str(id).is_err() {
        errors.push(FieldError::new("video_id", "must be a video's id"));
    }
}

pub fn check_capture(input: &Value) -> Result<CaptureInput, Vec<FieldError>> {
    let input: CaptureInput = parse(input)?;
    let mut errors = Vec::new();
    video_id_ok(&input.video_id, &mut errors);
    if !(input.at_seconds.is_finite() && input.at_seconds >= 0.0) {
        errors.push(FieldError::new("at_seconds", "must be 0 or more"));
    }
    finish(input, errors)
}

pub fn check_range(input: &Value) -> Result<RangeInput, Vec<FieldError>> {
    let input: RangeInput = parse(input)?;
    let mut errors = Vec::new();
    video_id_ok(&input.video_id, &mut errors);
    if !(input.start.is_finite() && input.start >= 0.0) {
        errors.push(FieldError::new("start", "must be 0 or more"));
    }
    if !(input.end.is_finite() && input.end > input.start) {
        errors.push(FieldError::new("end", "must be after start"));
    } else if input.end - input.start > MAX_RANGE_SECONDS + 1e-6 {
        errors.push(FieldError::new(
            "end",
            format!(
                "the range is {:.3} s; at most {MAX_RANGE_SECONDS} s are selected",
                input.end - input.start
            ),
        ));
    }
    finish(input, errors)
}

pub fn check_mux(input: &Value) -> Result<MuxInput, Vec<FieldError>> {
    let input: MuxInput = parse(input)?;
    let mut errors = Vec::new();
    video_id_ok(&input.video_id, &mut errors);
    if uuid::Uuid::parse_str(&input.audio_job_id).is_err() {
        errors.push(FieldError::new("audio_job_id", "must be a job's id"));
    }
    finish(input, errors)
}

/// A completed video of `user_id`'s, or a 404 (someone else's id reads as missing) or a 409.
pub async fn ready_video(state: &State, user_id: &str, video_id: &str) -> Result<Job, ApiError> {
    let missing = || ApiError::NotFound("no such video");
    if uuid::Uuid::parse_str(video_id).is_err() {
        return Err(missing());
    }
    let job = crate::jobs::store::get(&state.db, video_id)
        .await?
        .filter(|j| j.user_id == user_id && crate::videos::VIDEO_KINDS.contains(&j.kind.as_str()))
        .ok_or_else(missing)?;
    if job.status != Status::Completed {
        return Err(ApiError::Conflict {
            code: "video_not_ready",
            detail: format!("the video is {}", job.status.as_str()),
        });
    }
    Ok(job)
}

/// The first file of one of `user_id`'s completed jobs, under the job's own `generations/` prefix,
/// whose type `wanted` accepts: its key and type; a 404 saying `missing` when there is none.
pub async fn output_file(
    state: &State,
    user_id: &str,
    job_id: &str,
    wanted: fn(&str) -> bool,
    missing: &'static str,
) -> Result<(String, String), ApiError> {
    if uuid::Uuid::parse_str(job_id).is_err() {
        return Err(ApiError::NotFound(missing));
    }
    let job = crate::jobs::store::get(&state.db, job_id)
        .await?
        .filter(|j| j.user_id == user_id && j.status == Status::Completed)
        .ok_or(ApiError::NotFound(missing))?;
    let prefix = crate::media::output_prefix(crate::media::Outputs::Generations, user_id, job_id);
    job.output
        .as_ref()
        .and_then(|o| o.get("files"))
        .and_then(Value::as_array)
        .and_then(|files| {
            files.iter().find_map(|f| {
                let key = f.get("key")?.as_str()?;
                let content_type = f.get("content_type")?.as_str()?;
                (wanted(content_type) && key.starts_with(&prefix))
                    .then(|| (key.to_owned(), content_type.to_owned()))
            })
        })
        .ok_or(ApiError::NotFound(missing))
}

/// The first audio file of one of `user_id`'s completed jobs (a `music` job): its key and type.
pub async fn audio_of(
    state: &State,
    user_id: &str,
    job_id: &str,
) -> Result<(String, String), ApiError> {
    output_file(
        state,
        user_id,
        job_id,
        |t| t.starts_with("audio/"),
        "no such job with an audio output",
    )
    .await
}

/// A video's duration, from its stored probe.
pub fn duration_of(video: &Job) -> Option<f64> {
    video
        .output
        .as_ref()?
        .pointer("/probe/duration_seconds")?
        .as_f64()
}

/// What the jobs core asks of every submission: a `video_id` it names must be the submitter's
/// completed video, and the times asked must fall inside it (refused before anything is debited).
async fn check(state: &State, user_id: &str, input: &Value) -> Result<(), ApiError> {
    let Some(video_id) = input.get("video_id").and_then(Value::as_str) else {
        return Ok(());
    };
    let video = ready_video(state, user_id, video_id).await?;
    if let Some(audio_job_id) = input.get("audio_job_id").and_then(Value::as_str) {
        audio_of(state, user_id, audio_job_id).await?;
    }
    let duration = duration_of(&video).unwrap_or(0.0);
    let past = |field: &str, at: f64| {
        ApiError::invalid(
            field,
            format!("{at:.3} s is past the end of the video ({duration:.3} s)"),
        )
    };
    if let Some(at) = input.get("at_seconds").and_then(Value::as_f64)
        && at >= duration
    {
        return Err(past("at_seconds", at));
    }
    if let Some(start) = input.get("start").and_then(Value::as_f64)
        && start >= duration
    {
        return Err(past("start", start));
    }
    // Half a millisecond of slack: a range "to the end" names the duration as printed.
    if let Some(end) = input.get("end").and_then(Value::as_f64)
        && end > duration + 0.0005
    {
        return Err(past("end", end));
    }
    Ok(())
}

pub const CHECK: crate::jobs::registry::Check =
    |state, user_id, input| Box::pin(check(state, user_id, input));

/// A Lambda worker runs at most 15 minutes; a video job gets 14.
const DEADLINE: Duration = Duration::from_secs(14 * 60);

/// The studio's price, as the deployment sets it (`VIDEO_STUDIO_CREDITS`).
fn studio_quote<'a>(
    state: &'a State,
    _: &'a str,
    _: &'a Value,
) -> futures::future::BoxFuture<'a, Result<i64, ApiError>> {
    Box::pin(async move { Ok(state.config.video.studio_credits) })
}

/// A video kind: free unless `quote` prices it.
fn kind(
    name: &'static str,
    validate: fn(&Value) -> Result<(), Vec<FieldError>>,
    run: crate::jobs::registry::Run,
    quote: Option<crate::jobs::registry::Quote>,
) -> Kind {
    Kind {
        name,
        cost: |_| 0,
        deadline: |_| DEADLINE,
        queue: Queue::Video,
        validate,
        offered: Kind::always_offered,
        run,
        present: None,
        quote,
    }
}

/// The video kinds.
pub fn kinds() -> Vec<Kind> {
    vec![
        kind(
            "video_import",
            |input| check_import(input).map(drop),
            |state, job, progress| {
                Box::pin(async move {
                    crate::videos::work::import(state, job, progress)
                        .await
                        .map(Finished::Output)
                })
            },
            None,
        ),
        kind(
            "capture_frame",
            |input| check_capture(input).map(drop),
            |state, job, progress| {
                Box::pin(async move {
                    crate::videos::work::capture(state, job, progress)
                        .await
                        .map(Finished::Output)
                })
            },
            Some(studio_quote),
        ),
        kind(
            "mux_audio",
            |input| check_mux(input).map(drop),
            |state, job, progress| {
                Box::pin(async move {
                    crate::videos::work::mux(state, job, progress)
                        .await
                        .map(Finished::Output)
                })
            },
            Some(studio_quote),
        ),
        kind(
            "select_range",
            |input| check_range(input).map(drop),
            |state, job, progress| {
                Box::pin(async move {
                    crate::videos::work::select(state, job, progress)
                        .await
                        .map(Finished::Output)
                })
            },
            Some(studio_quote),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0190e4c5-8a9b-7c3d-9e2f-123456789abc";

    #[test]
    fn inputs_are_checked_field_by_field() {
        assert!(check_import(&json!({"upload_key": "uploads/u/a.mp4"})).is_ok());
        assert!(check_import(&json!({"job_id": ID})).is_ok());
        assert!(check_import(&json!({})).is_err());
        assert!(check_import(&json!({"job_id": ID, "upload_key": "uploads/u/a.mp4"})).is_err());
        assert!(check_import(&json!({"upload_key": "uploads/u/a.jpg"})).is_err());
        assert!(check_import(&json!({"upload_key": "uploads/u/a.mp4", "x": 1})).is_err());
        assert!(check_capture(&json!({"video_id": ID, "at_seconds": 1.5})).is_ok());
        assert!(check_capture(&json!({"video_id": ID, "at_seconds": -1})).is_err());
        assert!(check_range(&json!({"video_id": ID, "start": 1, "end": 11})).is_ok());
        let errors =
            check_range(&json!({"video_id": "x", "start": 0, "end": 11})).expect_err("11 s");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["video_id", "end"]);
        assert!(check_range(&json!({"video_id": ID, "start": 2, "end": 2})).is_err());
    }
}
