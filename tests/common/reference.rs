//! What the model tests share: the fixture, the ncnn reference engine, PSNR.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GenericImageView};

pub fn root() -> PathBuf {
    lambent_local::repo_root()
}

pub fn scene() -> DynamicImage {
    image::open(root().join("tests/fixtures/images/scene.png")).expect("fixture")
}

/// PSNR in dB between two images of the same size, over every 8-bit RGB sample.
pub fn psnr(a: &DynamicImage, b: &DynamicImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let (a, b) = (a.to_rgb8(), b.to_rgb8());
    let mse = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// The package's own ncnn engine on `input`.
pub fn ncnn(model: &str, input: &Path) -> DynamicImage {
    let root = root();
    // One file per call: tests running at once on the same model must not share (or remove)
    // each other's output.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let output = std::env::temp_dir().join(format!(
        "lambent-ncnn-{model}-{}-{call}.png",
        std::process::id()
    ));
    let status = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("infra/models/reference.py"))
        .args([model.as_ref(), input.as_os_str(), output.as_os_str()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the reference runs");
    assert!(status.success(), "reference.py {model} failed: {status}");
    let image = image::open(&output).expect("reference output");
    let _ = std::fs::remove_file(output);
    image
}
