//! `lambent-bestcut`: best-cut sharpness of image files, for `make bench` and by hand. Prints one
//! JSON line with the fastest of `--repeat` passes.
//!
//!   lambent-bestcut [--repeat N] [--end-to-end] <image>...
//!
//! By default the files are decoded first (not timed) and only the scores are timed. With
//! `--end-to-end` each pass reads, decodes and scores every file, as the worker does, the files
//! spread over the CPU's threads.

use std::time::Instant;

use anyhow::Context as _;

/// Reads, decodes and scores each file, `threads` files at a time.
fn end_to_end(paths: &[String], threads: usize) -> anyhow::Result<Vec<f64>> {
    let mut scores = vec![0.0; paths.len()];
    let chunk = paths.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .zip(scores.chunks_mut(chunk))
            .map(|(paths, scores)| {
                scope.spawn(move || -> anyhow::Result<()> {
                    for (path, score) in paths.iter().zip(scores.iter_mut()) {
                        let bytes =
                            std::fs::read(path).with_context(|| format!("reading {path}"))?;
                        let image = image::load_from_memory(&bytes)
                            .with_context(|| format!("decoding {path}"))?;
                        *score = lambent::bestcut::sharpness(&image);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?)
    })?;
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
