//! `lambent-upscale`: the worker's upscaling path on one file, for `make bench` and for trying
//! models and settings by hand. Prints one JSON line: load and run seconds. A `.png` or `.jpg`
//! output is encoded band by band as the tiles finish, as the worker does (memory does not grow
//! with the output); other formats, and any with `--in-memory`, are made in memory and saved.
//!
//!   lambent-upscale <model> <input> <output> [--provider cpu|openvino|openvino-only|openvino-fp32] (openvino: the worker's mode, every model on Lambent's own engine where the CPU suits it: AMX, or fp32 on FMA where the CPU computes no bf16; openvino-only: OpenVINO for every model)
//!                   [--units amx|fma] [--tile N] [--tile-pad N] [--repeat N] [--library PATH]
//!                   [--models DIR] [--in-memory]
//!
//! `--units` runs Lambent's own engine on those units instead of this CPU's choice (where the CPU
//! has them), to compare them.
//!
//! With `--repeat N` the image is upscaled N times and the last run is timed (the first pays for
//! kernel selection and, with OpenVINO, compiling the tile's shape, as a worker's first job does).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use std::io::Write as _;

use lambent::images::Encoding;
use lambent::upscale::{Options, Provider, Upscaler};
use lambent_local::{models, repo_root};

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: lambent-upscale <model> <input> <output> [--provider cpu|openvino|openvino-only|openvino-fp32] (openvino: the worker's mode, every model on Lambent's own engine where the CPU suits it: AMX, or fp32 on FMA where the CPU computes no bf16; openvino-only: OpenVINO for every model) [--units amx|fma] [--tile N] [--tile-pad N] [--repeat N] [--library PATH] [--models DIR] [--in-memory]";
    let model = args.next().context(usage)?;
    let input = PathBuf::from(args.next().context(usage)?);
    let output = PathBuf::from(args.next().context(usage)?);
    let root = repo_root();
    let (mut provider, mut library, mut dir) = (Provider::Cpu, None, None);
    let mut options = Options::default();
    let (mut repeat, mut in_memory, mut units, mut tile) = (1, false, None, None);
    while let Some(flag) = args.next() {
        if flag == "--in-memory" {
            in_memory = true;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--provider" => {
                provider = match value.as_str() {
                    "cpu" => Provider::Cpu,
                    "openvino" => Provider::OpenVino {
                        bf16: true,
                        amx: true,
                    },
                    "openvino-only" => Provider::OpenVino {
                        bf16: true,
                        amx: false,
                    },
                    "openvino-fp32" => Provider::OpenVino {
                        bf16: false,
                        amx: false,
                    },
                    other => anyhow::bail!("unknown provider {other}"),
                }
            }
            "--units" => units = Some(value),
            "--tile" => tile = Some(value.parse()?),
            "--tile-pad" => options.tile_pad = Some(value.parse()?),
            "--repeat" => repeat = value.parse::<usize>()?.max(1),
            "--library" => library = Some(PathBuf::from(value)),
            "--models" => dir = Some(PathBuf::from(value)),
            other => anyhow::bail!("unknown flag {other}\n{usage}"),
        }
    }
    let library = match (library, provider) {
        (Some(path), _) => path,
        (None, Provider::OpenVino { .. }) => models::openvino_library(&root)?,
        (None, _) => models::onnxruntime_library(&root)?,
    };
    let dir = match dir {
        Some(dir) => dir,
        None => models::models_dir(&root)?,
    };
    let started = Instant::now();
    let mut upscaler = Upscaler::open(Some(&library), &dir, &[&model], provider)?;
    if let Some(units) = &units {
        upscaler = upscaler.on_units(units)?;
    }
    upscaler.build_all()?;
    let load = started.elapsed().as_secs_f64();
    // The worker's tile where none is named: its engine's.
    options.tile = tile.unwrap_or_else(|| upscaler.default_tile(&model));
    let image = image::open(&input).with_context(|| format!("reading {}", input.display()))?;
    let encoding = match output.extension().and_then(|e| e.to_str()) {
        _ if in_memory => None,
        Some("png") => Some(Encoding::Png),
        Some("jpg" | "jpeg") => Some(Encoding::Jpeg { quality: 92 }),
        _ => None,
    };
    let (mut size, mut run) = ((0, 0), 0.0);
    for _ in 0..repeat {
        let started = Instant::now();
        size = match encoding {
            Some(encoding) => {
                let eight = matches!(encoding, Encoding::Jpeg { .. });
                let layout = upscaler.layout(&model, &image, &options, eight)?;
                let file = std::fs::File::create(&output)
                    .with_context(|| format!("writing {}", output.display()))?;
                let mut file = std::io::BufWriter::new(file);
                upscaler.upscale_into(
                    &model,
                    image.clone(),
                    &options,
                    encoding,
                    &mut file,
                    &mut |_, _| true,
                )?;
                file.flush()?;
                (layout.width, layout.height)
            }
            None => {
                let out = upscaler
                    .upscale(&model, image.clone(), &options, &mut |_, _| true)?
                    .context("stopped")?;
                out.save(&output)
                    .with_context(|| format!("writing {}", output.display()))?;
                (out.width(), out.height())
            }
        };
        run = started.elapsed().as_secs_f64();
    }
    println!(
        "{}",
        serde_json::json!({"load_seconds": load, "run_seconds": run, "width": size.0, "height": size.1, "tile": options.tile})
    );
    Ok(())
}
