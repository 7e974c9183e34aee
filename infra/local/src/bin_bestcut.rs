//! `lambent-bestcut`: best-cut sharpness of image files, for `make bench` and by hand. Prints one
//! JSON line with the fastest of `--repeat` passes.
//!
//!   lambent-bestcut [--repeat N] [--end-to-end] <image>...
//!
//! By default the files are decoded first (not timed) and only the scores are timed. With
//! `--end-to-end` each pass reads, decodes and scores every file as the worker does: as many
//! photos at once as the CPU has threads, each decoded into a buffer its thread keeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;

/// Reads, decodes and scores each file as the worker does: `threads` photos at a time, each
/// thread taking the next file and decoding into its own buffer, kept from one photo to the next.
fn end_to_end(paths: &[String], threads: usize) -> anyhow::Result<Vec<f64>> {
    let next = AtomicUsize::new(0);
    let limits = lambent::photos::media::upload_limits();
    let scored = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.clamp(1, paths.len().max(1)))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<(usize, f64)>> {
                    let (mut buffer, mut scores) = (Vec::new(), Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else {
                            return Ok(scores);
                        };
                        let bytes =
                            std::fs::read(path).with_context(|| format!("reading {path}"))?;
                        let (_, _, score) =
                            lambent::bestcut::score_encoded(&bytes, &limits, &mut buffer)
                                .with_context(|| format!("decoding {path}"))?;
                        scores.push((i, score));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut scores = vec![0.0; paths.len()];
    for (i, score) in scored.into_iter().flatten() {
        scores[i] = score;
    }
    Ok(scores)
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeat = 5;
    if args.first().is_some_and(|a| a == "--repeat") {
        repeat = args.get(1).context("--repeat needs a value")?.parse()?;
        args.drain(..2);
    }
    let whole = args.first().is_some_and(|a| a == "--end-to-end");
    if whole {
        args.remove(0);
    }
    anyhow::ensure!(
        !args.is_empty(),
        "usage: lambent-bestcut [--repeat N] [--end-to-end] <image>..."
    );
    if whole {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (mut best, mut scores) = (f64::INFINITY, Vec::new());
        for _ in 0..repeat.max(1) {
            let started = Instant::now();
            scores = end_to_end(&args, threads)?;
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "{}",
            serde_json::json!({"seconds": best, "threads": threads, "scores": scores})
        );
        return Ok(());
    }
    let images = args
        .iter()
        .map(|path| image::open(path).with_context(|| format!("reading {path}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pixels: u64 = images
        .iter()
        .map(|i| u64::from(i.width()) * u64::from(i.height()))
        .sum();
    let (mut best, mut scores) = (f64::INFINITY, Vec::new());
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        scores = images.iter().map(lambent::bestcut::sharpness).collect();
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        serde_json::json!({"seconds": best, "megapixels": pixels as f64 / 1e6, "scores": scores})
    );
    Ok(())
}
