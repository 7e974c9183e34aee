//! The video toolchain: FFmpeg's `ffprobe` and `ffmpeg`, run as subprocesses (never through a
//! shell) with a time limit and a memory limit. The memory limit is a watchdog on the child's
//! resident set (read from /proc), since `unsafe_code` is forbidden and `setrlimit` in `pre_exec`
//! would need it; on a system without /proc only the time limit holds.
//!
//! What FFmpeg reports is turned into typed facts ([`Probe`], [`Scan`]) and typed refusals
//! ([`Refusal`]); no byte of a container is parsed here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use utoipa::ToSchema;

/// Where the tools are and what they may use.
#[derive(Clone, Debug)]
pub struct Toolchain {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    /// The most resident memory one tool may hold before it is killed.
    pub memory_bytes: u64,
    /// Threads each tool's decoder may use (FFmpeg's input `-threads`); 0 leaves it to FFmpeg,
    /// which sizes its decoders and encoders by the CPUs it sees (measured fastest on 2 cores).
    pub threads: u32,
}

/// What a video may be: the deployment's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_seconds: f64,
    /// The most pixels of one frame.
    pub max_pixels: u64,
    /// The longest side.
    pub max_side: u32,
}

/// The codecs the pipeline decodes (the static FFmpeg build has each).
pub const VIDEO_CODECS: &[&str] = &[
    "h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg", "prores",
];

/// The containers accepted: what `video/mp4`, `video/quicktime` and `video/webm` hold.
const CONTAINERS: &[&str] = &["mov", "mp4", "matroska", "webm"];

/// The upload extensions that are videos, and their types.
pub const VIDEO_TYPES: [(&str, &str); 3] = [
    ("video/mp4", "mp4"),
    ("video/quicktime", "mov"),
    ("video/webm", "webm"),
];

/// The content type of a video key, by its extension.
pub fn content_type(key: &str) -> Option<&'static str> {
    let extension = key.rsplit_once('.')?.1;
    VIDEO_TYPES
        .iter()
        .find(|(_, e)| *e == extension)
        .map(|(t, _)| *t)
}

/// Why a run of a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{tool} ran past its {seconds} s limit")]
    TimedOut { tool: &'static str, seconds: u64 },
    #[error("{tool} went over its memory limit ({mib} MiB)")]
    OverMemory { tool: &'static str, mib: u64 },
    #[error("{tool} exited with {code:?}: {stderr}")]
    Failed {
        tool: &'static str,
        code: Option<i32>,
        stderr: String,
    },
    #[error("{tool} could not run: {source}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
}

/// Why a file is not accepted as a video: each has its own `type` in the API.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the file is not a video FFmpeg can read: {0}")]
    NotAVideo(String),
    #[error("the file is truncated or corrupt: {0}")]
    Truncated(String),
    #[error("the video runs {seconds:.1} s; at most {max:.0} s are accepted")]
    TooLong { seconds: f64, max: f64 },
    #[error(
        "the video is {width}×{height}; at most {max_side} pixels a side and {max_pixels} pixels a frame are accepted"
    )]
    TooLarge {
        width: u64,
        height: u64,
        max_side: u32,
        max_pixels: u64,
    },
    #[error("the video's codec {0} is not one the pipeline decodes")]
    UnsupportedCodec(String),
}

impl Refusal {
    /// The problem type a job fails with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAVideo(_) => "not_a_video",
            Self::Truncated(_) => "truncated",
            Self::TooLong { .. } => "too_long",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedCodec(_) => "unsupported_codec",
        }
    }
}

/// A video's facts, as FFmpeg reads them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Probe {
    /// FFmpeg's demuxer names (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`).
    pub container: String,
    pub duration_seconds: f64,
    pub bytes: u64,
    pub video: VideoStream,
    pub audio: Option<AudioStream>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VideoStream {
    pub codec: String,
    /// As coded.
    pub width: u32,
    pub height: u32,
    /// As shown: width and height swapped by a rotation of 90 or 270 degrees.
    pub display_width: u32,
    pub display_height: u32,
    /// Clockwise degrees a player turns the picture: 0, 90, 180 or 270.
    pub rotation: u32,
    /// Frames per second (the stream's average).
    pub frame_rate: f64,
    pub pixel_format: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AudioStream {
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u32,
}

/// What reading every packet found: the video's keyframes, and whether the file ends early.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scan {
    pub keyframes: Vec<f64>,
    pub corrupt: Option<String>,
}

/// The most output one run keeps (a packet listing of a 3-minute clip is about 1 MB).
const MAX_STDOUT: usize = 32 * 1024 * 1024;
const MAX_STDERR: usize = 16 * 1024;

/// What a run printed.
struct Output {
    stdout: Vec<u8>,
    stderr: String,
}

impl Toolchain {
    /// Runs `program` with `args` (no shell), within `time` and the memory limit.
    async fn run(
        &self,
        tool: &'static str,
        args: Vec<OsString>,
        time: Duration,
    ) -> Result<Output, RunError> {
        let program = if tool == "ffprobe" {
            &self.ffprobe
        } else {
            &self.ffmpeg
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RunError::Spawn { tool, source })?;
        let pid = child.id();
        let stdout = child.stdout.take().map(|s| read_capped(s, MAX_STDOUT));
        let stderr = child.stderr.take().map(|s| read_tail(s, MAX_STDERR));
        let watched = async {
            let (status, out, err) = tokio::join!(
                child.wait(),
                async {
                    match stdout {
                        Some(f) => f.await,
                        None => Vec::new(),
                    }
                },
                async {
                    match stderr {
                        Some(f) => f.await,
                        None => Vec::new(),
                    }
                },
            );
            (status, out, err)
        };
        let limit = self.memory_bytes;
        let started = std::time::Instant::now();
        // The child's peak resident set as last seen (its `VmHWM`), logged with the run.
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = peak.clone();
        let watchdog = async move {
            let Some(pid) = pid else {
                return std::future::pending::<()>().await;
            };
            let path = format!("/proc/{pid}/status");
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match tokio::fs::read_to_string(&path).await {
                    Ok(status) if resident_bytes(&status).is_some_and(|rss| rss > limit) => {
                        return;
                    }
                    Ok(status) => {
                        if let Some(hwm) = field_bytes(&status, "VmHWM:") {
                            seen.fetch_max(hwm, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    // Gone, or no /proc: the time limit alone holds.
                    Err(_) => return std::future::pending::<()>().await,
                }
            }
        };
        let (status, stdout, stderr) = tokio::select! {
            done = watched => done,
            () = watchdog => {
                return Err(RunError::OverMemory { tool, mib: limit / (1024 * 1024) });
            }
            () = tokio::time::sleep(time) => {
                return Err(RunError::TimedOut { tool, seconds: time.as_secs() });
            }
        };
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        let status = status.map_err(|source| RunError::Spawn { tool, source })?;
        tracing::info!(
            tool,
            ms = started.elapsed().as_millis(),
            peak_rss_mib = peak.load(std::sync::atomic::Ordering::Relaxed) / (1024 * 1024),
            ok = status.success(),
            "video tool ran"
        );
        if !status.success() {
            return Err(RunError::Failed {
                tool,
                code: status.code(),
                stderr,
            });
        }
        Ok(Output { stdout, stderr })
    }

    /// The container, duration, streams and size of `file`, or why it is not an accepted video.
    pub async fn probe(&self, file: &Path, limits: &Limits) -> Result<Probe, ProbeError> {
        let bytes = tokio::fs::metadata(file)
            .await
            .map_err(|e| {
                ProbeError::Run(RunError::Spawn {
                    tool: "ffprobe",
                    source: e,
                })
            })?
            .len();
        let args = [
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ]
        .into_iter()
        .map(OsString::from)
        .chain([file.as_os_str().to_owned()])
        .collect();
        match self.run("ffprobe", args, Duration::from_secs(30)).await {
            Ok(output) => parse_probe(
                &output.stdout,
                &scrub(&output.stderr, file),
                &head(file).await,
                bytes,
                limits,
            ),
            Err(RunError::Failed { stderr, .. }) => Err(ProbeError::Refused(unreadable(
                &scrub(&stderr, file),
                &head(file).await,
            ))),
            Err(other) => Err(ProbeError::Run(other)),
        }
    }

    /// Reads every packet of `file` without decoding: the video's keyframe times, and whether the
    /// file ends before its index says it does.
    pub async fn scan(&self, file: &Path, time: Duration) -> Result<Scan, RunError> {
        let args = [
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
        ]
        .into_iter()
        .map(OsString::from)
        .chain([file.as_os_str().to_owned()])
        .collect();
        let output = self.run("ffprobe", args, time).await?;
        Ok(parse_scan(
            &String::from_utf8_lossy(&output.stdout),
            &scrub(&output.stderr, file),
        ))
    }

    fn common(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["-nostdin", "-v", "error", "-y"]
            .into_iter()
            .map(OsString::from)
            .collect();
        if self.threads > 0 {
            args.extend(["-threads".into(), self.threads.to_string().into()]);
        }
        args
    }

    /// One frame at `at` seconds (exact: decoded from the keyframe before it), shown as a player
    /// would (rotation applied), into `out` (its extension picks PNG or JPEG), at most `height`
    /// pixels high when given.
    pub async fn frame(
        &self,
        file: &Path,
        at: f64,
        out: &Path,
        height: Option<u32>,
    ) -> Result<(), RunError> {
        let mut args = self.common();
        args.extend(["-ss".into(), format!("{at:.6}").into(), "-i".into()]);
        args.push(file.as_os_str().to_owned());
        args.extend([
            "-map".into(),
            "0:v:0".into(),
            "-frames:v".into(),
            "1".into(),
        ]);
        if let Some(h) = height {
            args.extend(["-vf".into(), format!("scale=-2:{h}").into()]);
        }
        if out.extension().is_some_and(|e| e == "jpg") {
            args.extend(["-q:v".into(), "3".into()]);
        }
        args.push(out.as_os_str().to_owned());
        self.run("ffmpeg", args, Duration::from_secs(60)).await?;
        Ok(())
    }

    /// `[start, end)` of `file` into `out`: `Some(frames)` copies that many video packets as they
    /// are (exact when the range runs from a keyframe to a keyframe of a closed GOP, where decode
    /// order keeps every frame of the range before the next keyframe); `None` decodes and encodes
    /// again (H.264 and AAC), exact anywhere.
    pub async fn trim(
        &self,
        file: &Path,
        start: f64,
        end: f64,
        copy_frames: Option<u64>,
        out: &Path,
    ) -> Result<(), RunError> {
        let mut args = self.common();
        args.extend(["-ss".into(), format!("{start:.6}").into(), "-i".into()]);
        args.push(file.as_os_str().to_owned());
        args.extend([
            "-t".into(),
            format!("{:.6}", end - start).into(),
            "-map".into(),
            "0:v:0".into(),
            "-map".into(),
            "0:a:0?".into(),
        ]);
        if let Some(frames) = copy_frames {
            args.extend([
                "-frames:v".into(),
                frames.to_string().into(),
                "-c".into(),
                "copy".into(),
            ]);
        } else {
            args.extend(
                [
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-crf",
                    "18",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                    "-b:a",
                    "160k",
                    "-movflags",
                    "+faststart",
                ]
                .map(OsString::from),
            );
        }
        args.push(out.as_os_str().to_owned());
        self.run("ffmpeg", args, Duration::from_secs(300)).await?;
        Ok(())
    }

    /// `audio` laid over `video` for the video's whole `duration` (the audio looped if shorter,
    /// cut if longer): the picture copied as it is, the sound encoded as AAC, in a fast-start MP4.
    /// `mix` keeps the video's own sound under the new one (`video_has_audio` says if it has any).
    pub async fn mux(
        &self,
        video: &Path,
        audio: &Path,
        duration: f64,
        mix: bool,
        video_has_audio: bool,
        out: &Path,
    ) -> Result<(), RunError> {
        let mut args = self.common();
        args.push("-i".into());
        args.push(video.as_os_str().to_owned());
        args.push("-i".into());
        args.push(audio.as_os_str().to_owned());
        // Looped in the graph and cut there: `-stream_loop -1` on the input never ends for
        // `amix`, and the run hangs (measured with FFmpeg 6.0).
        let music = format!(
            "[1:a:0]aloop=loop=-1:size=2147483647,atrim=end={duration:.6},asetpts=N/SR/TB[music]"
        );
        let graph = if mix && video_has_audio {
            format!("{music};[0:a:0][music]amix=inputs=2:duration=first:normalize=0[sound]")
        } else {
            music.replace("[music]", "[sound]")
        };
        args.extend([
            "-filter_complex".into(),
            graph.into(),
            "-map".into(),
            "0:v:0".into(),
            "-map".into(),
            "[sound]".into(),
        ]);
        args.extend(["-t".into(), format!("{duration:.6}").into()]);
        args.extend(
            [
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                "-b:a",
                "192k",
                "-movflags",
                "+faststart",
            ]
            .map(OsString::from),
        );
        args.push(out.as_os_str().to_owned());
        self.run("ffmpeg", args, Duration::from_secs(300)).await?;
        Ok(())
    }

    /// A short low-bitrate rendition to show before the full file loads: the first `seconds`,
    /// `height` pixels high, H.264 at about 400 kbit/s, no audio, fast-start MP4.
    pub async fn preview(
        &self,
        file: &Path,
        seconds: f64,
        height: u32,
        out: &Path,
    ) -> Result<(), RunError> {
        let mut args = self.common();
        args.push("-i".into());
        args.push(file.as_os_str().to_owned());
        args.extend(["-t".into(), format!("{seconds:.3}").into()]);
        args.extend(
            [
                "-map",
                "0:v:0",
                "-an",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-b:v",
                "400k",
                "-maxrate",
                "500k",
                "-bufsize",
                "1000k",
                "-pix_fmt",
                "yuv420p",
                "-movflags",
                "+faststart",
                "-vf",
            ]
            .map(OsString::from),
        );
        args.push(format!("scale=-2:'min({height},ih)'").into());
        args.push(out.as_os_str().to_owned());
        self.run("ffmpeg", args, Duration::from_secs(300)).await?;
        Ok(())
    }
}

/// Why probing did not give a [`Probe`].
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Refused(Refusal),
    #[error(transparent)]
    Run(RunError),
}

/// The resident set of a `/proc/<pid>/status` text, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    field_bytes(status, "VmRSS:")
}

/// A `kB` field of a `/proc/<pid>/status` text, in bytes.
fn field_bytes(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Reads at most `cap` bytes, then drains the rest (a child blocked on a full pipe never ends).
async fn read_capped(mut from: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
        }
    }
}

/// Keeps the last `cap` bytes (FFmpeg's last words say why it stopped).
async fn read_tail(mut from: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > cap {
                    kept.drain(..kept.len() - cap);
                }
            }
        }
    }
}

/// The last meaningful line FFmpeg printed, without its `[demuxer @ 0x…]` prefix.
fn last_words(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    let line = match line.find("] ") {
        Some(i) if line.starts_with('[') => &line[i + 2..],
        _ => line,
    };
    line.chars().take(300).collect()
}

/// FFmpeg names the file it read; the worker's paths are not the client's business.
fn scrub(stderr: &str, file: &Path) -> String {
    stderr.replace(&file.display().to_string(), "the file")
}

/// The first bytes of a file (empty when unreadable).
async fn head(file: &Path) -> Vec<u8> {
    let mut bytes = vec![0u8; 16];
    match tokio::fs::File::open(file).await {
        Ok(mut f) => {
            let n = f.read(&mut bytes).await.unwrap_or(0);
            bytes.truncate(n);
            bytes
        }
        Err(_) => Vec::new(),
    }
}

/// Whether a file starts as an MP4/QuickTime (a top-level box) or a Matroska/WebM (EBML) file.
fn container_signature(head: &[u8]) -> bool {
    let boxes: [&[u8]; 6] = [b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"];
    head.get(4..8).is_some_and(|t| boxes.contains(&t))
        || head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3])
}

/// A file ffprobe cannot open: truncated when it starts as a video container does, else not a
/// video at all.
fn unreadable(stderr: &str, head: &[u8]) -> Refusal {
    if container_signature(head) {
        Refusal::Truncated(last_words(stderr))
    } else {
        Refusal::NotAVideo(last_words(stderr))
    }
}

#[derive(Deserialize)]
struct RawProbe {
    #[serde(default)]
    streams: Vec<RawStream>,
    format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct RawFormat {
    format_name: Option<String>,
    duration: Option<String>,
}

#[derive(Deserialize)]
struct RawStream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u64>,
    height: Option<u64>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    pix_fmt: Option<String>,
    sample_rate: Option<String>,
    channels: Option<u32>,
    duration: Option<String>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    disposition: std::collections::BTreeMap<String, i64>,
}

fn rate(text: Option<&str>) -> Option<f64> {
    let (n, d) = text?.split_once('/')?;
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (n > 0.0 && d > 0.0).then_some(n / d)
}

/// The clockwise rotation a player applies, from the display matrix (FFmpeg reports it
/// counter-clockwise) or the older `rotate` tag.
fn rotation(stream: &RawStream) -> u32 {
    let degrees = stream
        .side_data_list
        .iter()
        .find_map(|s| s.get("rotation").and_then(serde_json::Value::as_f64))
        .map(|ccw| -ccw)
        .or_else(|| {
            stream
                .tags
                .get("rotate")
                .and_then(|r| r.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    // `as` is exact here: the value is rounded and reduced to 0..360 first.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let turned = (degrees.round().rem_euclid(360.0)) as u32;
    (turned + 45) / 90 % 4 * 90
}

/// The picture size ffmpeg refused as invalid (larger than it can address), if it said so.
fn refused_size(stderr: &str) -> Option<(u64, u64)> {
    let at = stderr.find("Picture size ")?;
    let rest = &stderr[at + "Picture size ".len()..];
    let size = rest.split_whitespace().next()?;
    let (w, h) = size.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

fn parse_probe(
    stdout: &[u8],
    stderr: &str,
    head: &[u8],
    bytes: u64,
    limits: &Limits,
) -> Result<Probe, ProbeError> {
    let refuse = |r| Err(ProbeError::Refused(r));
    let raw = match serde_json::from_slice::<RawProbe>(stdout) {
        Ok(raw) if raw.format.is_some() => raw,
        _ => return refuse(unreadable(stderr, head)),
    };
    let container = raw
        .format
        .as_ref()
        .and_then(|f| f.format_name.clone())
        .unwrap_or_default();
    if !container.split(',').any(|c| CONTAINERS.contains(&c)) {
        return refuse(Refusal::NotAVideo(format!(
            "a {} file is not MP4, QuickTime or WebM",
            if container.is_empty() {
                "unknown"
            } else {
                &container
            }
        )));
    }
    // The first video stream that is not a cover picture.
    let Some(video) = raw.streams.iter().find(|s| {
        s.codec_type.as_deref() == Some("video")
            && s.disposition.get("attached_pic").copied().unwrap_or(0) == 0
    }) else {
        return refuse(Refusal::NotAVideo("it has no video stream".into()));
    };
    let codec = video.codec_name.clone().unwrap_or_default();
    if let Some((width, height)) = refused_size(stderr) {
        return refuse(Refusal::TooLarge {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    if !VIDEO_CODECS.contains(&codec.as_str()) {
        return refuse(Refusal::UnsupportedCodec(if codec.is_empty() {
            "unknown".into()
        } else {
            codec
        }));
    }
    let (width, height) = (video.width.unwrap_or(0), video.height.unwrap_or(0));
    if width == 0 || height == 0 {
        return refuse(Refusal::Truncated(format!(
            "its {codec} stream has no picture size ({})",
            last_words(stderr)
        )));
    }
    if width.max(height) > u64::from(limits.max_side) || width * height > limits.max_pixels {
        return refuse(Refusal::TooLarge {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    let duration = raw
        .format
        .as_ref()
        .and_then(|f| f.duration.as_deref())
        .or(video.duration.as_deref())
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d > 0.0);
    let Some(duration) = duration else {
        return refuse(Refusal::Truncated("it states no duration".into()));
    };
    if duration > limits.max_seconds {
        return refuse(Refusal::TooLong {
            seconds: duration,
            max: limits.max_seconds,
        });
    }
    let frame_rate = rate(video.avg_frame_rate.as_deref())
        .or_else(|| rate(video.r_frame_rate.as_deref()))
        .unwrap_or(0.0);
    let rotation = rotation(video);
    let (width, height) = (
        u32::try_from(width).unwrap_or(u32::MAX),
        u32::try_from(height).unwrap_or(u32::MAX),
    );
    let (display_width, display_height) = if rotation % 180 == 90 {
        (height, width)
    } else {
        (width, height)
    };
    let audio = raw
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"))
        .map(|a| AudioStream {
            codec: a.codec_name.clone().unwrap_or_default(),
            sample_rate: a
                .sample_rate
                .as_deref()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            channels: a.channels.unwrap_or(0),
        });
    Ok(Probe {
        container,
        duration_seconds: duration,
        bytes,
        video: VideoStream {
            codec,
            width,
            height,
            display_width,
            display_height,
            rotation,
            frame_rate,
            pixel_format: video.pix_fmt.clone(),
        },
        audio,
    })
}

/// The most keyframes kept (a clip that is all keyframes lists the first ones).
pub const MAX_KEYFRAMES: usize = 2000;

fn parse_scan(stdout: &str, stderr: &str) -> Scan {
    let mut scan = Scan::default();
    // A line is `pts_time,flags` of one packet of the first video stream.
    for line in stdout.lines() {
        let Some((pts, flags)) = line.split_once(',') else {
            continue;
        };
        if flags.contains('C') && scan.corrupt.is_none() {
            scan.corrupt = Some(format!("a corrupt packet at {pts} s"));
        }
        if flags.contains('K')
            && scan.keyframes.len() < MAX_KEYFRAMES
            && let Ok(t) = pts.parse::<f64>()
        {
            scan.keyframes.push(t);
        }
    }
    scan.keyframes.sort_by(f64::total_cmp);
    scan.keyframes.dedup();
    if scan.corrupt.is_none()
        && (stderr.contains("partial file") || stderr.contains("Invalid data found"))
    {
        scan.corrupt = Some(last_words(stderr));
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_seconds: 180.0,
        max_pixels: 3840 * 2160,
        max_side: 4096,
    };

    #[test]
    fn rotations_are_read_clockwise() {
        let stream = |rotation: f64| RawStream {
            codec_type: Some("video".into()),
            codec_name: Some("h264".into()),
            width: Some(320),
            height: Some(240),
            avg_frame_rate: Some("30/1".into()),
            r_frame_rate: None,
            pix_fmt: None,
            sample_rate: None,
            channels: None,
            duration: None,
            side_data_list: vec![serde_json::json!({"rotation": rotation})],
            tags: Default::default(),
            disposition: Default::default(),
        };
        assert_eq!(rotation(&stream(-90.0)), 90);
        assert_eq!(rotation(&stream(90.0)), 270);
        assert_eq!(rotation(&stream(180.0)), 180);
        assert_eq!(rotation(&stream(0.0)), 0);
    }

    #[test]
    fn probes_become_facts_or_refusals() {
        let json = |w: u64, h: u64, d: &str, codec: &str| {
            serde_json::to_vec(&serde_json::json!({
                "streams": [
                    {"codec_type": "video", "codec_name": codec, "width": w, "height": h,
                     "avg_frame_rate": "30000/1001", "pix_fmt": "yuv420p"},
                    {"codec_type": "audio", "codec_name": "aac", "sample_rate": "48000", "channels": 2}
                ],
                "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": d}
            }))
            .expect("json")
        };
        let probe =
            parse_probe(&json(1920, 1080, "12.5", "h264"), "", b"", 10, &LIMITS).expect("ok");
        assert_eq!(probe.video.display_width, 1920);
        assert!((probe.video.frame_rate - 29.97).abs() < 0.01);
        assert_eq!(probe.audio.expect("audio").channels, 2);
        let refusal = |w, h, d, c| match parse_probe(&json(w, h, d, c), "", b"", 10, &LIMITS) {
            Err(ProbeError::Refused(r)) => r.code(),
            other => panic!("{other:?}"),
        };
        assert_eq!(refusal(1920, 1080, "240", "h264"), "too_long");
        assert_eq!(refusal(8000, 100, "2", "h264"), "too_large");
        assert_eq!(refusal(1920, 1080, "2", "theora"), "unsupported_codec");
        assert_eq!(
            match parse_probe(
                b"{}",
                "[mov @ 0x1] moov atom not found\n",
                b"\0\0\0\x20ftypisom",
                10,
                &LIMITS
            ) {
                Err(ProbeError::Refused(r)) => r.code(),
                other => panic!("{other:?}"),
            },
            "truncated"
        );
        assert_eq!(
            match parse_probe(
                b"{}",
                "[mov @ 0x1] moov atom not found\n",
                b"this is text",
                10,
                &LIMITS
            ) {
                Err(ProbeError::Refused(r)) => r.code(),
                other => panic!("{other:?}"),
            },
            "not_a_video"
        );
        let huge = parse_probe(
            &json(0, 0, "1", "mjpeg"),
            "[mjpeg @ 0x1] [IMGUTILS @ 0x2] Picture size 20000x20000 is invalid\n",
            b"",
            10,
            &LIMITS,
        );
        assert!(
            matches!(
                huge,
                Err(ProbeError::Refused(Refusal::TooLarge { width: 20000, .. }))
            ),
            "{huge:?}"
        );
    }

    #[test]
    fn scans_find_keyframes_and_short_files() {
        let scan = parse_scan("0.000000,K__\n0.5,___\n1.0,K__\n", "");
        assert_eq!(scan.keyframes, [0.0, 1.0]);
        assert_eq!(scan.corrupt, None);
        let scan = parse_scan(
            "0.0,K__\n",
            "[mov @ 0x1] stream 0, offset 0x1f: partial file\n",
        );
        assert_eq!(
            scan.corrupt.as_deref(),
            Some("stream 0, offset 0x1f: partial file")
        );
    }

    #[test]
    fn resident_memory_is_read_from_proc() {
        assert_eq!(
            resident_bytes("Name:\tffmpeg\nVmRSS:\t  2048 kB\n"),
            Some(2048 * 1024)
        );
    }
}
