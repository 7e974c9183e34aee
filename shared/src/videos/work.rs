//! The video executors, run by the worker on a claimed job. Files are streamed between S3 and the
//! job's own directory (never held in memory); FFmpeg reads and writes them there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use utoipa::ToSchema;

use crate::jobs::executor::{JobError, Progress};
use crate::jobs::model::Job;
use crate::media::bucket;
use crate::state::State;
use crate::video::{Probe, ProbeError, RunError, Scan};
use crate::videos::kinds;

/// Thumbnails in a video's strip, and their height.
pub const STRIP_FRAMES: usize = 10;
const STRIP_HEIGHT: u32 = 90;
const POSTER_HEIGHT: u32 = 720;
/// The preview: the first seconds, this high.
const PREVIEW_SECONDS: f64 = 10.0;
const PREVIEW_HEIGHT: u32 = 360;

/// A video's file: the source carries its type; the poster (JPEG), the strip (JPEG) and the
/// preview (MP4) are named by their place in the output.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VideoFile {
    pub key: String,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// One thumbnail of the strip.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Thumbnail {
    pub at_seconds: f64,
    pub key: String,
    pub bytes: u64,
}

/// A tool that failed on a file it had accepted: the file's fault, unless the tool ran out of
/// time or memory, or could not start (the deployment's: worth another attempt).
fn tool_failed(err: RunError) -> JobError {
    match err {
        RunError::Failed { .. } => JobError::permanent("video_failed", err.to_string()),
        RunError::TimedOut { .. } | RunError::OverMemory { .. } => {
            JobError::permanent("video_too_demanding", err.to_string())
        }
        RunError::Spawn { .. } => JobError::Internal(anyhow::Error::new(err)),
    }
}

/// A job's own directory, removed when the job is done with it.
struct WorkDir(PathBuf);

impl WorkDir {
    async fn new(state: &State, job: &Job) -> Result<Self, JobError> {
        let path = state
            .config
            .video
            .work_dir
            .join(format!("lambent-video-{}", job.id));
        // A retried job starts clean.
        let _ = tokio::fs::remove_dir_all(&path).await;
        tokio::fs::create_dir_all(&path)
            .await
            .context("creating a job's directory")?;
        Ok(Self(path))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Streams `key` into `to`, refusing more than `max` bytes.
async fn download(state: &State, key: &str, to: &Path, max: u64) -> Result<u64, JobError> {
    let object = state
        .s3
        .get_object()
        .bucket(bucket(state)?)
        .key(key)
        .send()
        .await;
    let object = match object {
        Ok(object) => object,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Err(JobError::permanent("not_found", "the file is gone"));
        }
        Err(err) => return Err(anyhow::Error::new(err).context("reading a video").into()),
    };
    if object
        .content_length()
        .is_some_and(|n| u64::try_from(n).unwrap_or(u64::MAX) > max)
    {
        return Err(JobError::permanent(
            "file_too_large",
            format!("the file is over {max} bytes"),
        ));
    }
    let mut file = tokio::fs::File::create(to)
        .await
        .context("creating a video file")?;
    // One byte more than allowed tells an over-long body (S3 checks no length locally).
    let mut body = tokio::io::AsyncReadExt::take(object.body.into_async_read(), max + 1);
    let copied = tokio::io::copy(&mut body, &mut file)
        .await
        .context("downloading a video")?;
    file.flush().await.context("writing a video")?;
    if copied > max {
        return Err(JobError::permanent(
            "file_too_large",
            format!("the file is over {max} bytes"),
        ));
    }
    Ok(copied)
}

/// Puts a local file at `key`.
async fn put_file(
    state: &State,
    path: &Path,
    key: &str,
    content_type: &str,
) -> Result<u64, JobError> {
    let bytes = tokio::fs::metadata(path)
        .await
        .context("reading a made file's size")?
        .len();
    let body = ByteStream::from_path(path)
        .await
        .context("reading a made file")?;
    state
        .s3
        .put_object()
        .bucket(bucket(state)?)
        .key(key)
        .content_type(content_type)
        .body(body)
        .send()
        .await
        .context("storing a video file")?;
    Ok(bytes)
}

/// What probing and scanning a file found.
struct Examined {
    probe: Probe,
    scan: Scan,
}

/// Probes and scans a video file, refusing it with its typed error.
async fn examine(state: &State, path: &Path) -> Result<Examined, JobError> {
    let video = &state.config.video;
    let probe = match video.toolchain.probe(path, &video.limits).await {
        Ok(probe) => probe,
        Err(ProbeError::Refused(refusal)) => {
            return Err(JobError::permanent(refusal.code(), refusal.to_string()));
        }
        Err(ProbeError::Run(err)) => return Err(tool_failed(err)),
    };
    let scan = video
        .toolchain
        .scan(path, Duration::from_secs(120))
        .await
        .map_err(tool_failed)?;
    if let Some(corrupt) = &scan.corrupt {
        return Err(JobError::permanent(
            "truncated",
            format!("the file is truncated or corrupt: {corrupt}"),
        ));
    }
    Ok(Examined { probe, scan })
}

/// The poster, the strip and the preview of a video file, stored beside it; the output's part
/// that every video has.
async fn finish_video(
    state: &State,
    job: &Job,
    dir: &WorkDir,
    path: &Path,
    source: VideoFile,
    examined: &Examined,
    progress: &Progress<'_>,
) -> Result<serde_json::Map<String, Value>, JobError> {
    let Examined { probe, scan } = examined;
    let tools = &state.config.video.toolchain;
    let prefix = crate::videos::prefix(&job.user_id, &job.id);
    let duration = probe.duration_seconds;
    // A poster from the first second (or the middle of a shorter clip).
    let poster_path = dir.file("poster.jpg");
    tools
        .frame(
            path,
            (duration / 2.0).min(1.0),
            &poster_path,
            Some(POSTER_HEIGHT.min(probe.video.display_height.max(2))),
        )
        .await
        .map_err(tool_failed)?;
    if !poster_path.exists() {
        return Err(JobError::permanent(
            "video_failed",
            "no frame could be decoded",
        ));
    }
    let poster_key = format!("{prefix}poster.jpg");
    let poster = VideoFile {
        bytes: put_file(state, &poster_path, &poster_key, "image/jpeg").await?,
        key: poster_key,
        content_type: None,
    };
    progress
        .report(50, Some("making the thumbnail strip"))
        .await?;
    let mut strip = Vec::with_capacity(STRIP_FRAMES);
    #[allow(clippy::cast_precision_loss)]
    for i in 0..STRIP_FRAMES {
        let at = duration * (i as f64 + 0.5) / STRIP_FRAMES as f64;
        let path_i = dir.file(&format!("strip-{i:02}.jpg"));
        tools
            .frame(path, at, &path_i, Some(STRIP_HEIGHT))
            .await
            .map_err(tool_failed)?;
        // A time past the last decodable frame gives none: the strip is then shorter.
        if !path_i.exists() {
            continue;
        }
        let key = format!("{prefix}strip-{i:02}.jpg");
        strip.push(Thumbnail {
            at_seconds: (at * 1000.0).round() / 1000.0,
            bytes: put_file(state, &path_i, &key, "image/jpeg").await?,
            key,
        });
    }
    progress.report(75, Some("making the preview")).await?;
    let preview_path = dir.file("preview.mp4");
    tools
        .preview(path, PREVIEW_SECONDS, PREVIEW_HEIGHT, &preview_path)
        .await
        .map_err(tool_failed)?;
    let preview_key = format!("{prefix}preview.mp4");
    let preview = VideoFile {
        bytes: put_file(state, &preview_path, &preview_key, "video/mp4").await?,
        key: preview_key,
        content_type: None,
    };
    let mut output = serde_json::Map::new();
    output.insert("video_id".into(), json!(job.id));
    output.insert(
        "probe".into(),
        serde_json::to_value(probe).context("probe")?,
    );
    output.insert("keyframes".into(), json!(scan.keyframes));
    output.insert(
        "source".into(),
        serde_json::to_value(source).context("source")?,
    );
    output.insert(
        "poster".into(),
        serde_json::to_value(poster).context("poster")?,
    );
    output.insert(
        "strip".into(),
        serde_json::to_value(strip).context("strip")?,
    );
    output.insert(
        "preview".into(),
        serde_json::to_value(preview).context("preview")?,
    );
    Ok(output)
}

/// Where an import's file is: its key, type and extension.
struct Origin {
    key: String,
    content_type: String,
    extension: String,
}

/// The file an import names: one of the owner's video uploads, or the first video file of one of
/// the owner's completed jobs (under its `generations/` prefix).
async fn origin(state: &State, job: &Job, input: &kinds::ImportInput) -> Result<Origin, JobError> {
    if let Some(key) = &input.upload_key {
        if !crate::media::owns(&job.user_id, key) {
            return Err(JobError::permanent("not_found", "no such upload"));
        }
        let content_type = crate::videos::content_type(key)
            .ok_or_else(|| JobError::permanent("invalid_input", "not a video upload"))?;
        return Ok(Origin {
            key: key.clone(),
            content_type: content_type.to_owned(),
            extension: key.rsplit_once('.').map_or("mp4", |(_, e)| e).to_owned(),
        });
    }
    let job_id = input.job_id.as_deref().unwrap_or_default();
    let (key, content_type) = kinds::output_file(
        state,
        &job.user_id,
        job_id,
        |t| crate::video::VIDEO_TYPES.iter().any(|(v, _)| *v == t),
        "no video output of that job",
    )
    .await
    .map_err(job_error)?;
    let extension = crate::video::VIDEO_TYPES
        .iter()
        .find(|(t, _)| *t == content_type)
        .map_or("mp4", |(_, e)| *e)
        .to_owned();
    Ok(Origin {
        key,
        content_type,
        extension,
    })
}

/// A refusal of the API's kind met where the job runs: the job fails with it (an unexpected
/// error is retried).
fn job_error(error: crate::error::ApiError) -> JobError {
    match error {
        crate::error::ApiError::Internal(err) => JobError::Internal(err),
        other => JobError::permanent("not_found", other.to_string()),
    }
}

/// `video_import`: an upload (or a job's video output), downloaded, probed and checked, then kept
/// as a video with its poster, strip and preview.
pub async fn import(state: &State, job: &Job, progress: &Progress<'_>) -> Result<Value, JobError> {
    let input = kinds::check_import(&job.input).map_err(JobError::invalid_input)?;
    let origin = origin(state, job, &input).await?;
    progress.report(1, Some("reading the video")).await?;
    let dir = WorkDir::new(state, job).await?;
    let path = dir.file(&format!("source.{}", origin.extension));
    download(
        state,
        &origin.key,
        &path,
        state.config.video.max_upload_bytes,
    )
    .await?;
    progress.report(10, Some("probing")).await?;
    let examined = examine(state, &path).await?;
    let probe = &examined.probe;
    progress.report(25, Some("making the poster")).await?;
    // The source is kept by a copy inside S3, not sent again.
    let source_key = format!(
        "{}source.{}",
        crate::videos::prefix(&job.user_id, &job.id),
        origin.extension
    );
    let bucket = bucket(state)?;
    state
        .s3
        .copy_object()
        .bucket(bucket)
        .copy_source(format!("{bucket}/{}", origin.key))
        .key(&source_key)
        .content_type(&origin.content_type)
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .send()
        .await
        .context("keeping a video's source")?;
    let source = VideoFile {
        key: source_key,
        bytes: probe.bytes,
        content_type: Some(origin.content_type),
    };
    let mut output = finish_video(state, job, &dir, &path, source, &examined, progress).await?;
    match (input.upload_key, input.job_id) {
        (Some(key), _) => output.insert("upload_key".into(), json!(key)),
        (_, Some(id)) => output.insert("from_job_id".into(), json!(id)),
        _ => None,
    };
    Ok(Value::Object(output))
}

/// Downloads a completed video's source into `dir`: its path and the video's job.
async fn source_of(
    state: &State,
    job: &Job,
    dir: &WorkDir,
    video_id: &str,
) -> Result<(PathBuf, Job), JobError> {
    let video = kinds::ready_video(state, &job.user_id, video_id)
        .await
        .map_err(job_error)?;
    let source: VideoFile = video
        .output
        .as_ref()
        .and_then(|o| o.get("source"))
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .ok_or_else(|| JobError::permanent("not_found", "the video has no source file"))?;
    let extension = source.key.rsplit_once('.').map_or("mp4", |(_, e)| e);
    let path = dir.file(&format!("input.{extension}"));
    download(
        state,
        &source.key,
        &path,
        state.config.video.max_upload_bytes,
    )
    .await?;
    Ok((path, video))
}

/// `capture_frame`: the frame shown at `at_seconds`, exact and rotated as a player shows it, as
/// a PNG upload of the owner's that every image kind accepts.
pub async fn capture(state: &State, job: &Job, progress: &Progress<'_>) -> Result<Value, JobError> {
    let input = kinds::check_capture(&job.input).map_err(JobError::invalid_input)?;
    progress.report(1, Some("reading the video")).await?;
    let dir = WorkDir::new(state, job).await?;
    let (path, video) = source_of(state, job, &dir, &input.video_id).await?;
    let duration = kinds::duration_of(&video).unwrap_or(0.0);
    if input.at_seconds >= duration {
        return Err(JobError::permanent(
            "range",
            format!(
                "{:.3} s is past the end of the video ({duration:.3} s)",
                input.at_seconds
            ),
        ));
    }
    progress.report(40, Some("decoding the frame")).await?;
    let out = dir.file("frame.png");
    state
        .config
        .video
        .toolchain
        .frame(&path, input.at_seconds, &out, None)
        .await
        .map_err(tool_failed)?;
    if !out.exists() {
        return Err(JobError::permanent(
            "range",
            format!("no frame is shown at {:.3} s", input.at_seconds),
        ));
    }
    let (width, height) = image::image_dimensions(&out).map_err(|e| {
        JobError::permanent("video_failed", format!("the frame is unreadable: {e}"))
    })?;
    let key = format!(
        "{}{}.png",
        crate::media::user_prefix(&job.user_id),
        uuid::Uuid::now_v7()
    );
    let bytes = put_file(state, &out, &key, "image/png").await?;
    Ok(json!({
        "video_id": input.video_id,
        "at_seconds": input.at_seconds,
        "upload_key": key,
        "content_type": "image/png",
        "width": width,
        "height": height,
        "bytes": bytes,
    }))
}

/// How many video packets a cut of `[start, end)` copies, when it can copy: the range starts on
/// a keyframe (within half a frame) and ends on one or at the end of the video.
pub fn copyable(
    keyframes: &[f64],
    start: f64,
    end: f64,
    duration: f64,
    frame_rate: f64,
) -> Option<u64> {
    if frame_rate <= 0.0 {
        return None;
    }
    let half_frame = 0.5 / frame_rate;
    let on_keyframe = |t: f64| keyframes.iter().any(|k| (k - t).abs() <= half_frame);
    let frames = ((end - start) * frame_rate).round();
    let copies = on_keyframe(start) && (on_keyframe(end) || end >= duration - half_frame);
    // `as` is exact: a whole, positive count of at most a few thousand frames.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (copies && frames >= 1.0).then_some(frames as u64)
}

/// `select_range`: `[start, end)` of a video as a new video. Packets are copied when the range
/// starts on a keyframe (exact, lossless, fast); otherwise the range is encoded again (H.264 and
/// AAC in MP4). The output says which (`mode`).
pub async fn select(state: &State, job: &Job, progress: &Progress<'_>) -> Result<Value, JobError> {
    let input = kinds::check_range(&job.input).map_err(JobError::invalid_input)?;
    progress.report(1, Some("reading the video")).await?;
    let dir = WorkDir::new(state, job).await?;
    let (path, video) = source_of(state, job, &dir, &input.video_id).await?;
    let duration = kinds::duration_of(&video).unwrap_or(0.0);
    if input.start >= duration || input.end > duration + 0.0005 {
        return Err(JobError::permanent(
            "range",
            format!(
                "{:.3}–{:.3} s is not inside the video (0–{duration:.3} s)",
                input.start, input.end
            ),
        ));
    }
    let output = video.output.as_ref();
    let keyframes: Vec<f64> = output
        .and_then(|o| o.get("keyframes"))
        .and_then(|k| serde_json::from_value(k.clone()).ok())
        .unwrap_or_default();
    let frame_rate = output
        .and_then(|o| o.pointer("/probe/video/frame_rate"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let end = input.end.min(duration);
    let copy_frames = copyable(&keyframes, input.start, end, duration, frame_rate);
    let copy = copy_frames.is_some();
    let extension = if copy {
        path.extension()
            .and_then(|e| e.to_str())
            .unwrap_or("mp4")
            .to_owned()
    } else {
        "mp4".to_owned()
    };
    progress
        .report(
            10,
            Some(if copy {
                "copying the range"
            } else {
                "encoding the range"
            }),
        )
        .await?;
    let cut = dir.file(&format!("range.{extension}"));
    state
        .config
        .video
        .toolchain
        .trim(&path, input.start, end, copy_frames, &cut)
        .await
        .map_err(tool_failed)?;
    let examined = examine(state, &cut).await?;
    let content_type = crate::videos::VIDEO_TYPES
        .iter()
        .find(|(_, e)| *e == extension)
        .map_or("video/mp4", |(t, _)| *t);
    let key = format!(
        "{}source.{extension}",
        crate::videos::prefix(&job.user_id, &job.id)
    );
    let source = VideoFile {
        bytes: put_file(state, &cut, &key, content_type).await?,
        key,
        content_type: Some(content_type.to_owned()),
    };
    progress.report(25, Some("making the poster")).await?;
    let mut output = finish_video(state, job, &dir, &cut, source, &examined, progress).await?;
    output.insert("source_video_id".into(), json!(input.video_id));
    output.insert("range".into(), json!({"start": input.start, "end": end}));
    output.insert("mode".into(), json!(if copy { "copy" } else { "reencode" }));
    Ok(Value::Object(output))
}

/// `mux_audio`: a job's audio (a `music` job) laid over a video for its whole length, the
/// picture copied as it is; a new video.
pub async fn mux(state: &State, job: &Job, progress: &Progress<'_>) -> Result<Value, JobError> {
    let input = kinds::check_mux(&job.input).map_err(JobError::invalid_input)?;
    progress.report(1, Some("reading the video")).await?;
    let dir = WorkDir::new(state, job).await?;
    let (path, video) = source_of(state, job, &dir, &input.video_id).await?;
    let (audio_key, _) = kinds::audio_of(state, &job.user_id, &input.audio_job_id)
        .await
        .map_err(job_error)?;
    let extension = audio_key.rsplit_once('.').map_or("bin", |(_, e)| e);
    let audio = dir.file(&format!("audio.{extension}"));
    download(
        state,
        &audio_key,
        &audio,
        state.config.video.max_upload_bytes,
    )
    .await?;
    let duration = kinds::duration_of(&video).unwrap_or(0.0);
    let has_audio = video
        .output
        .as_ref()
        .and_then(|o| o.pointer("/probe/audio"))
        .is_some_and(|a| !a.is_null());
    progress
        .report(20, Some("laying the audio over the video"))
        .await?;
    let out = dir.file("muxed.mp4");
    state
        .config
        .video
        .toolchain
        .mux(&path, &audio, duration, input.mix, has_audio, &out)
        .await
        .map_err(tool_failed)?;
    let examined = examine(state, &out).await?;
    let key = format!("{}source.mp4", crate::videos::prefix(&job.user_id, &job.id));
    let source = VideoFile {
        bytes: put_file(state, &out, &key, "video/mp4").await?,
        key,
        content_type: Some("video/mp4".to_owned()),
    };
    progress.report(40, Some("making the poster")).await?;
    let mut output = finish_video(state, job, &dir, &out, source, &examined, progress).await?;
    output.insert("source_video_id".into(), json!(input.video_id));
    output.insert("audio_job_id".into(), json!(input.audio_job_id));
    output.insert("mix".into(), json!(input.mix));
    Ok(Value::Object(output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_range_between_keyframes_copies() {
        let keyframes = [0.0, 0.5, 1.0, 1.5];
        assert_eq!(copyable(&keyframes, 0.5, 1.5, 4.0, 30.0), Some(30));
        assert_eq!(copyable(&keyframes, 0.51, 1.0, 4.0, 30.0), Some(15));
        assert_eq!(copyable(&keyframes, 0.6, 1.0, 4.0, 30.0), None);
        assert_eq!(copyable(&keyframes, 0.5, 1.2, 4.0, 30.0), None);
        assert_eq!(copyable(&keyframes, 1.5, 4.0, 4.0, 30.0), Some(75));
    }
}
