//! The photo executors: `upscale` and `bestcut`, run by the worker on a claimed job.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use image::{DynamicImage, ImageFormat};
use serde::Serialize;
use serde_json::{Value, json};

use crate::bestcut;
use crate::images;
use crate::jobs::executor::{JobError, Progress};
use crate::jobs::model::Job;
use crate::photos::kinds::{self, UpscaleSettings};
use crate::photos::media::{self, Artifact};
use crate::state::State;
use crate::upscale::Options;

/// The most pixels the x4plus models upscale in one job on the CPU worker (about 1920×1080: some
/// minutes of CPU); the compact models take four times more. Larger photos need `pre_shrink`.
const HEAVY_MODEL_PIXELS: u64 = 2_100_000;
const LIGHT_MODEL_PIXELS: u64 = 8_400_000;
/// The most pixels an output made in memory may have (8192 × 8192): another `outscale`, or WebP.
const MAX_OUTPUT_PIXELS: u64 = 8192 * 8192;
/// The most pixels a streamed output may have (16384 × 16384): memory does not grow with it, so
/// the input budgets above decide (the compact models' 8.4 MP at x4 is 134 MP out).
const MAX_STREAMED_OUTPUT_PIXELS: u64 = 16_384 * 16_384;
/// The longest side an output may have (JPEG's limit).
const MAX_OUTPUT_SIDE: u32 = 65_535;
const DEFAULT_QUALITY: u8 = 92;

/// `upscale`: one upload → `original` and `upscaled` artifacts.
pub async fn upscale(state: &State, job: &Job, progress: &Progress<'_>) -> Result<Value, JobError> {
    let input = kinds::parse_upscale(&job.input).map_err(JobError::invalid_input)?;
    progress.report(1, Some("reading the photo")).await?;
    let loaded = media::load(state, &job.user_id, &input.upload_key).await?;
    let format = loaded.inspected.format;
    let size = (loaded.image.width(), loaded.image.height());
    let upscaled =
        upscale_image(state, job, loaded.image, format, &input.settings, progress).await?;
    let original =
        media::keep_original(state, &job.user_id, &job.id, format, loaded.bytes, size).await?;
    Ok(json!({
        "photo_id": job.id,
        "model": input.settings.model(),
        "original": original,
        "upscaled": upscaled,
    }))
}

/// One image's best-cut score.
#[derive(Serialize)]
struct Score {
    upload_key: String,
    score: f64,
}

/// `bestcut`: the sharpest of 2–20 uploads (every score listed), kept as `original` and optionally
/// upscaled. A photo's decode is one thread's work, so as many photos are read, decoded and
/// scored at once as the CPU has threads, each into a pixel buffer kept for the next photo. Of the
/// best so far only the encoded bytes are kept; the winner is decoded again for its upscale.
pub async fn best_cut(
    state: &State,
    job: &Job,
    progress: &Progress<'_>,
) -> Result<Value, JobError> {
    let input = kinds::parse_best_cut(&job.input).map_err(JobError::invalid_input)?;
    let total = input.upload_keys.len();
    let at_once = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, total.max(1));
    let buffers: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let mut photos = futures::stream::iter(input.upload_keys.iter().cloned())
        .map(|key| score_upload(state, &job.user_id, key, Arc::clone(&buffers)))
        .buffered(at_once);
    let mut scores = Vec::with_capacity(total);
    let mut best: Option<Scored> = None;
    let mut pixels = 0u64;
    while let Some(photo) = photos.next().await {
        let photo = photo?;
        // Priced at submission by the headers; uploads replaced since may not cost more work.
        pixels += u64::from(photo.inspected.width) * u64::from(photo.inspected.height);
        if pixels > kinds::BEST_CUT_MAX_PIXELS || kinds::best_cut_price(pixels, &input) > job.cost {
            return Err(JobError::permanent(
                "image_too_large",
                "the photos have more pixels than this job was priced for (were they replaced?); submit it again",
            ));
        }
        scores.push(Score {
            upload_key: photo.key.clone(),
            score: photo.score,
        });
        // Ties go to the first (the stream keeps the uploads' order), as `bestcut::best_cut` does.
        if best.as_ref().is_none_or(|b| photo.score > b.score) {
            best = Some(photo);
        }
        let share = if input.upscale { 30 } else { 90 };
        let percent = u8::try_from(scores.len() * share / total).unwrap_or(100);
        progress.report(percent, Some("scoring")).await?;
    }
    drop(photos);
    drop(buffers);
    let winner = best.context("no images")?;
    let format = winner.inspected.format;
    let (bytes, size, upscaled) = if input.upscale {
        let loaded = media::decode(&winner.key, winner.bytes).await?;
        let size = (loaded.image.width(), loaded.image.height());
        let upscaled =
            upscale_image(state, job, loaded.image, format, &input.settings, progress).await?;
        (loaded.bytes, size, Some(upscaled))
    } else {
        (winner.bytes, winner.upright, None)
    };
    let original = media::keep_original(state, &job.user_id, &job.id, format, bytes, size).await?;
    Ok(json!({
        "photo_id": job.id,
        "winner": winner.key,
        "score": winner.score,
        "scores": scores,
        "model": input.upscale.then(|| input.settings.model()),
        "original": original,
        "upscaled": upscaled,
    }))
}

/// One best-cut photo, scored.
struct Scored {
    key: String,
    bytes: Vec<u8>,
    inspected: images::Inspected,
    /// Width and height once the EXIF orientation is applied.
    upright: (u32, u32),
    score: f64,
}

/// Reads an upload and scores it off the async threads, in a pixel buffer from `buffers` (or a
/// new one), given back afterwards.
async fn score_upload(
    state: &State,
    user_id: &str,
    key: String,
    buffers: Arc<Mutex<Vec<Vec<u8>>>>,
) -> Result<Scored, JobError> {
    let bytes = media::fetch(state, user_id, &key).await?;
    let (bytes, scored) = tokio::task::spawn_blocking(move || {
        let mut buffer = buffers
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_default();
        let scored = bestcut::score_encoded(&bytes, &media::upload_limits(), &mut buffer);
        if let Ok(mut free) = buffers.lock() {
            free.push(buffer);
        }
        (bytes, scored)
    })
    .await
    .context("scoring")?;
    let (inspected, upright, score) = scored.map_err(|e| media::decode_error(&key, &e))?;
    Ok(Scored {
        key,
        bytes,
        inspected,
        upright,
        score,
    })
}

/// Runs the upscaler off the async threads, reporting its progress every second and stopping at
/// the next tile when the owner cancels; stores the result. At the model's own scale in PNG or
/// JPEG (the usual case) the output is encoded band by band as the tiles finish and uploaded in
/// parts as it is encoded, so memory does not grow with the output; another `outscale` (a resize
/// of the whole image) or WebP (whose encoder takes the whole image) are made in memory.
async fn upscale_image(
    state: &State,
    job: &Job,
    image: DynamicImage,
    source: ImageFormat,
    settings: &UpscaleSettings,
    progress: &Progress<'_>,
) -> Result<Artifact, JobError> {
    let upscaler = state.upscaler().await?;
    let model = settings.model().to_owned();
    let scale = upscaler.scale(&model).ok_or_else(|| {
        JobError::permanent("invalid_input", format!("{model} is not deployed here"))
    })?;
    let options = Options {
        tile: settings
            .tile
            .or(state.config.upscale.tile)
            .unwrap_or_else(|| upscaler.default_tile(&model)),
        tile_pad: settings.tile_pad,
        outscale: settings.outscale,
        pre_shrink: settings.pre_shrink,
    };
    // The size the model will see, after `pre_shrink`.
    let (width, height) = crate::upscale::shrunk(&image, &options);
    let (width, height) = (u64::from(width), u64::from(height));
    let budget = if model.starts_with("realesrgan-") {
        HEAVY_MODEL_PIXELS
    } else {
        LIGHT_MODEL_PIXELS
    };
    let wanted = settings.format.unwrap_or_default();
    let format = media::chosen_format(source, wanted, image.color().has_alpha());
    let out_scale = f64::from(settings.outscale.unwrap_or(scale as f32)).max(f64::from(scale));
    let streamed = format != ImageFormat::WebP
        && settings
            .outscale
            .is_none_or(|o| (f64::from(o) - f64::from(scale)).abs() < 1e-6);
    let max_output = if streamed {
        MAX_STREAMED_OUTPUT_PIXELS
    } else {
        MAX_OUTPUT_PIXELS
    };
    if width * height > budget
        || (width * height) as f64 * out_scale * out_scale > max_output as f64
        || width.max(height) as f64 * out_scale > f64::from(MAX_OUTPUT_SIDE)
    {
        return Err(JobError::permanent(
            "image_too_large",
            format!(
                "{width}x{height} is too large to upscale with {model} (at most {budget} pixels in, \
                 {max_output} pixels and {MAX_OUTPUT_SIDE} a side out); set pre_shrink"
            ),
        ));
    }
    let quality = settings.quality.unwrap_or(DEFAULT_QUALITY);
    let percent = Arc::new(AtomicU32::new(0));
    let cancel = Arc::new(AtomicBool::new(false));
    let (tile_percent, tile_cancel) = (percent.clone(), cancel.clone());
    let tick = move |done: usize, total: usize| {
        let share = u32::try_from(done * 100 / total.max(1)).unwrap_or(100);
        tile_percent.store(share, Ordering::Relaxed);
        !tile_cancel.load(Ordering::Relaxed)
    };
    if !streamed {
        let work = tokio::task::spawn_blocking(move || {
            let mut tick = tick;
            let Some(out) = upscaler.upscale(&model, image, &options, &mut tick)? else {
                return anyhow::Ok(None);
            };
            let (format, bytes) = media::encode(&out, source, wanted, quality)?;
            anyhow::Ok(Some((format, bytes, (out.width(), out.height()))))
        });
        let Some((format, bytes, size)) = watch(job, progress, work, &percent, &cancel).await?
        else {
            return Err(JobError::Canceled);
        };
        progress.report(98, Some("storing")).await?;
        let key = media::photo_key(&job.user_id, &job.id, "upscaled", format);
        return media::store(state, key, format, bytes, size).await;
    }
    let jpeg = format == ImageFormat::Jpeg;
    let layout = upscaler
        .layout(&model, &image, &options, jpeg)
        .map_err(JobError::Internal)?;
    let encoding = if jpeg {
        images::Encoding::Jpeg { quality }
    } else {
        images::Encoding::Png
    };
    let (mut parts, receiver) = media::parts();
    let work = tokio::task::spawn_blocking(move || {
        let mut tick = tick;
        let finished =
            upscaler.upscale_into(&model, image, &options, encoding, &mut parts, &mut tick)?;
        if finished {
            parts.finish()?;
        }
        anyhow::Ok(finished.then_some(()))
    });
    let key = media::photo_key(&job.user_id, &job.id, "upscaled", format);
    let size = (layout.width, layout.height);
    let (made, stored) = tokio::join!(
        watch(job, progress, work, &percent, &cancel),
        media::store_parts(state, key, format, size, receiver)
    );
    // Both fail only when the upload failed first (the upscaler then reads "the upload stopped"
    // from its writer): the upload's error is the cause. An upscaler that fails on its own leaves
    // the upload `Ok(None)`, aborted.
    let stored = match (made, stored) {
        (Err(err), Ok(_)) | (Ok(_), Err(err)) => return Err(err),
        (Err(made), Err(stored)) => {
            tracing::warn!(error = %made, "the upscaler stopped with its upload");
            return Err(stored);
        }
        (Ok(made), Ok(stored)) => made.and(stored),
    };
    stored.ok_or(JobError::Canceled)
}

/// Waits for the upscaler, turning its tile count into the job's progress every second and
/// telling it to stop when the owner cancels.
async fn watch<T>(
    job: &Job,
    progress: &Progress<'_>,
    mut work: tokio::task::JoinHandle<anyhow::Result<T>>,
    percent: &AtomicU32,
    cancel: &AtomicBool,
) -> Result<T, JobError> {
    let (start, span) = progress_span(job);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            done = &mut work => return Ok(done.context("the upscaler stopped")?.context("upscaling")?),
            _ = ticks.tick() => {
                let share = percent.load(Ordering::Relaxed);
                let at = u8::try_from(u32::from(start) + share * u32::from(span) / 100).unwrap_or(99);
                if let Err(JobError::Canceled) = progress.report(at, Some("upscaling")).await {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The progress range upscaling covers: most of an upscale, the rest of a best-cut after scoring.
fn progress_span(job: &Job) -> (u8, u8) {
    if job.kind == "bestcut" {
        (30, 65)
    } else {
        (5, 90)
    }
}
