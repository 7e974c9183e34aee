//! `lambent-video-bench` (make bench): the video toolchain's operations on one clip, run exactly
//! as the worker runs them (the same `Toolchain`, limits and arguments), timed and printed as
//! JSON for infra/bench/video.py to set beside its peer.
//!
//! `--file CLIP --runs N`: probe, the packet scan (keyframes), a frame captured mid-clip, a
//! 10-second range copied from a keyframe and one encoded again, the strip's ten thumbnails and
//! the preview. Each is the median of N runs (the encodes of N/2, at least 1).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use lambent::video::{Limits, Toolchain};
use lambent_local::{arg, models, repo_root};
use serde_json::{Value, json};

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Times `op` `runs` times: `{median_ms, min_ms}`.
async fn time<F, Fut>(runs: usize, mut op: F) -> anyhow::Result<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        op().await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(json!({"median_ms": median(samples), "min_ms": min}))
}

#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let file = PathBuf::from(arg("--file").context("--file CLIP")?);
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(5);
    let tools_dir = models::ffmpeg_dir(&repo_root())?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tools = Toolchain {
        ffmpeg: tools_dir.join("ffmpeg"),
        ffprobe: tools_dir.join("ffprobe"),
        memory_bytes: 4 * 1024 * 1024 * 1024,
        // As the worker runs it: FFmpeg sizes its threads by the CPUs.
        threads: 0,
    };
    let limits = Limits {
        max_seconds: 3600.0,
        max_pixels: 3840 * 2160,
        max_side: 4096,
    };
    let out = std::env::temp_dir().join(format!("lambent-video-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out)?;
    let at = |name: &str| -> PathBuf { out.join(name) };

    let probe = tools
        .probe(&file, &limits)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let scan = tools
        .scan(&file, std::time::Duration::from_secs(300))
        .await?;
    let duration = probe.duration_seconds;
    let fps = probe.video.frame_rate;
    // A range from the keyframe nearest a third of the way in, to the one 10 s later (or less).
    let start = scan
        .keyframes
        .iter()
        .copied()
        .min_by(|a, b| {
            (a - duration / 3.0)
                .abs()
                .total_cmp(&(b - duration / 3.0).abs())
        })
        .unwrap_or(0.0);
    let end = scan
        .keyframes
        .iter()
        .copied()
        .filter(|k| *k > start && *k <= start + 10.0)
        .fold(start, f64::max);
    let frames = lambent::videos::work::copyable(&scan.keyframes, start, end, duration, fps)
        .context("the clip has no keyframe-to-keyframe range")?;
    let mid = duration / 2.0 + 0.5 / fps;

    let mut results = serde_json::Map::new();
    let t = &tools;
    let f: &Path = &file;
    results.insert(
        "probe".into(),
        time(runs, || async {
            t.probe(f, &limits)
                .await
                .map(drop)
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .await?,
    );
    results.insert(
        "scan".into(),
        time(runs, || async {
            t.scan(f, std::time::Duration::from_secs(300))
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?,
    );
    let frame = at("frame.png");
    results.insert(
        "capture_frame".into(),
        time(runs, || async {
            t.frame(f, mid, &frame, None).await.map_err(Into::into)
        })
        .await?,
    );
    let copied = at("copy.mp4");
    results.insert(
        "trim_copy".into(),
        time(runs, || async {
            t.trim(f, start, end, Some(frames), &copied)
                .await
                .map_err(Into::into)
        })
        .await?,
    );
    let encoded = at("encoded.mp4");
    let off = start + 0.5;
    results.insert(
        "trim_reencode".into(),
        time((runs / 2).max(1), || async {
            t.trim(f, off, off + (end - start), None, &encoded)
                .await
                .map_err(Into::into)
        })
        .await?,
    );
    results.insert(
        "strip".into(),
        time(runs, || async {
            for i in 0..10 {
                let at_s = duration * (f64::from(i) + 0.5) / 10.0;
                t.frame(f, at_s, &at(&format!("strip-{i}.jpg")), Some(90))
                    .await?;
            }
            Ok(())
        })
        .await?,
    );
    let preview = at("preview.mp4");
    results.insert(
        "preview".into(),
        time((runs / 2).max(1), || async {
            t.preview(f, 10.0, 360, &preview).await.map_err(Into::into)
        })
        .await?,
    );
    let _ = std::fs::remove_dir_all(&out);
    println!(
        "{}",
        json!({
            "clip": {"duration": duration, "width": probe.video.width, "height": probe.video.height,
                     "fps": fps, "bytes": probe.bytes, "keyframes": scan.keyframes.len()},
            "range": {"start": start, "end": end, "frames": frames},
            "threads": threads,
            "ops": results,
        })
    );
    Ok(())
}
