//! Where setup put the ONNX Runtime library and the converted models (see the Makefile).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The ONNX Runtime library of the `onnxruntime` wheel in the project venv (CPU kernels only).
pub fn onnxruntime_library(root: &Path) -> anyhow::Result<PathBuf> {
    let lib = root.join(".venv/lib");
    let found = std::fs::read_dir(&lib)
        .with_context(|| format!("{} is missing: run `make venv`", lib.display()))?
        .flatten()
        .find_map(|python| library_in(&python.path().join("site-packages")));
    found.context("the onnxruntime wheel is not in .venv: run `make models`")
}

/// The ONNX Runtime library with the OpenVINO execution provider (the `onnxruntime-openvino`
/// wheel, installed apart in `.venv/openvino` because both wheels are the `onnxruntime` package).
pub fn openvino_library(root: &Path) -> anyhow::Result<PathBuf> {
    library_in(&root.join(".venv/openvino"))
        .context("the onnxruntime-openvino wheel is not in .venv/openvino: run `make models`")
}

fn library_in(packages: &Path) -> Option<PathBuf> {
    std::fs::read_dir(packages.join("onnxruntime/capi"))
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
}

/// The FFmpeg build setup installed (`make ffmpeg`): the directory of `ffmpeg` and `ffprobe`.
pub fn ffmpeg_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join(".venv/ffmpeg/ffmpeg/binaries");
    anyhow::ensure!(
        dir.join("ffmpeg").is_file() && dir.join("ffprobe").is_file(),
        "{} has no ffmpeg and ffprobe: run `make ffmpeg`",
        dir.display()
    );
    Ok(dir)
}

/// The converted models (`make models`).
pub fn models_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("infra/models/out");
    anyhow::ensure!(
        dir.join("manifest.json").is_file(),
        "{} has no converted models: run `make models`",
        dir.display()
    );
    Ok(dir)
}
