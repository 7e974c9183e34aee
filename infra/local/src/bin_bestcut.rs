//! `lambent-bestcut`: best-cut sharpness of image files, for `make bench` and by hand. The files
//! are decoded first (not timed); then every score is computed `--repeat` times and the fastest
//! pass is reported. Prints one JSON line.
//!
//!   lambent-bestcut [--repeat N] <image>...

use std::time::Instant;

use anyhow::Context as _;

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeat = 5;
    if args.first().is_some_and(|a| a == "--repeat") {
        repeat = args.get(1).context("--repeat needs a value")?.parse()?;
        args.drain(..2);
    }
    anyhow::ensure!(
        !args.is_empty(),
        "usage: lambent-bestcut [--repeat N] <image>..."
    );
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
