//! Real-ESRGAN's RRDB models (x4plus, x4plus-anime) computed on Intel AMX by Lambent itself.
//!
//! OpenVINO runs these models' convolutions through oneDNN's AMX kernels, which reach 22–30% of
//! AMX's peak at their widths (32 and 64 channels; #17). Here every 3x3 convolution is one implicit
//! GEMM on the tiles: 32 output pixels of a row by 32 output channels, accumulated in four fp32
//! tiles over the 9 taps and the input's 32-channel blocks, each block read straight from its own
//! buffer. So the dense blocks' concatenations cost nothing: a conv reads the block's input and
//! the outputs before it where they lie. Activations are bf16 between convolutions (as OpenVINO's
//! bf16 mode keeps them); the trunk that the residuals add up is kept in fp32.
//! The two upsampling convs (a 3x3 conv of the map enlarged x2 by nearest neighbour) are computed
//! as the four 2x2 convs of the map itself that their output's pixels amount to
//! (`Layer::phases`). They, `hr` and the last conv run a band of output rows at a time, each a few
//! rows ahead of the next ([`Tail`]), so the maps at x2 and x4 are rings of a few rows: whole,
//! they were two thirds of a tile's memory.
//! A dense block's five convs run row by row, each a few rows behind the one before it, so the
//! four maps the block grows are read from L2 a few rows after they are written: each thread keeps
//! only those rows of them (`RINGS`), and the block's input and output are the only maps it
//! streams through memory.
//!
//! On a CPU that computes no bf16 of its own (AMD's Zen 3, Intel's before AVX-512 BF16) the
//! same networks run in fp32 on AVX2 and FMA instead ([`fma`]): the maps are bf16 as on AMX,
//! and the 3x3 convolutions are Winograd's F(4x4, 3x3), four rows at a time, so a dense block's
//! grown maps are whole maps there.
//!
//! The engine takes a model only when its graph is the architecture it computes (RRDBNet, 64
//! features, 32 growth channels, x4, LeakyReLU and residual scale 0.2), read from the ONNX file
//! itself; any other model stays on ONNX Runtime.

#![cfg(target_arch = "x86_64")]

use std::arch::asm;
use std::arch::x86_64::*;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;

mod fma;

/// LeakyReLU's slope, and the scale of every residual.
const SLOPE: f32 = 0.2;
/// Output pixels of a row computed together (two tiles of 16), and the channels of a block.
const BLOCK: usize = 32;
/// The rows each of a dense block's four grown maps keeps ([`Rrdb::run`]): conv `k`'s row `y`,
/// computed at step `y + k`, is read last by the block's last conv at step `y + 5`, and is
/// overwritten by its row `y + 6 - k` at step `y + 6`.
const RINGS: [usize; 4] = [6, 5, 4, 3];

/// The input widths the engine computes without waste: it computes a row in blocks of 32 pixels,
/// and a last block of 16 as one tile, so a tile that meets another is best widened to a multiple
/// of 16 with real context (which the worker does) rather than computed over zeros.
pub const WIDTH_MULTIPLE: usize = 16;

/// What computes the convolutions: AMX's tiles in bf16, or AVX2's FMA in fp32 where the CPU
/// computes no bf16 ([`fma`]). The maps between convolutions are bf16 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AMX's tiles, bf16 products summed in fp32.
    Amx,
    /// AVX2's FMA, fp32.
    Fma,
}

impl Backend {
    /// This CPU's: AMX where it has it, FMA where it computes no bf16 of its own, else none:
    /// OpenVINO's bf16 is the faster path there (AVX-512 BF16: x4plus at 74% of its peak, twice
    /// the fp32 peak that FMA is bound by).
    pub fn of_this_cpu() -> Option<Self> {
        if available() {
            Some(Self::Amx)
        } else if fma::available() {
            Some(Self::Fma)
        } else {
            None
        }
    }

    /// Whether this CPU computes on these units (FMA: AVX2 and FMA, whether or not it has bf16).
    pub fn runs_here(self) -> bool {
        match self {
            Self::Amx => available(),
            Self::Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        }
    }

    /// The units' name: `amx` or `fma`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Amx => "amx",
            Self::Fma => "fma",
        }
    }
}

/// Whether this CPU and kernel let a process compute on AMX tiles in bf16.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
        let leaf = __cpuid_count(7, 0);
        let amx = leaf.edx & (1 << 22) != 0 && leaf.edx & (1 << 24) != 0;
        amx && is_x86_feature_detected!("avx512f") && request_tile_data()
    })
}

/// Linux hands out AMX's 8 KiB of tile state only to a process that asks
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); a kernel without it refuses. Other
/// systems: no AMX engine.
#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: a system call with integer arguments; it reads and writes no memory of ours.
    unsafe {
        asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
             in("rdi") ARCH_REQ_XCOMP_PERM, in("rsi") XFEATURE_XTILEDATA,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret == 0
}

/// A convolution's weights in the tiles' layout, and its bias.
struct Layer {
    /// Input and output channels, each rounded up to a block of 32.
    cin: usize,
    cout: usize,
    /// The output channels the model has (`cout` before rounding up).
    outputs: usize,
    /// A phase's place `(py, px)`: output pixel `(y, x)` goes to `(2y + py, 2x + px)` of a map
    /// twice the size, and its taps start `py` rows and `px` columns further down the input.
    phase: Option<(usize, usize)>,
    /// On AMX, `[out block][ky][kx][in block][half][16 pairs of input channels][16 outputs][2]`,
    /// bf16: the B tiles of each step, 1 KiB each, one after the other. On FMA, fp32 as
    /// [`fma::pack`] lays them out.
    weights: Aligned,
    /// On FMA, a 3x3 conv's weights for Winograd's F(4x4, 3x3) ([`fma::winograd_weights`]), its
    /// only weights there (`weights` is empty).
    winograd: Option<Aligned>,
    bias: Vec<f32>,
    /// PReLU's slope for each output channel (the compact models), padded as `bias`.
    slopes: Vec<f32>,
}

fn bf16(x: f32) -> u16 {
    let u = x.to_bits();
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

impl Layer {
    /// `w` as ONNX holds it: `[cout][cin][k][k]`, for `backend`.
    fn pack(w: &[f32], cout: usize, cin: usize, k: usize, bias: &[f32], backend: Backend) -> Self {
        let (pin, pout) = (cin.div_ceil(BLOCK) * BLOCK, cout.div_ceil(BLOCK) * BLOCK);
        let layer = |weights: Aligned, winograd: Option<Aligned>| {
            let mut b = vec![0.0; pout];
            b[..cout].copy_from_slice(bias);
            Self {
                cin: pin,
                cout: pout,
                outputs: cout,
                phase: None,
                weights,
                winograd,
                bias: b,
                slopes: vec![0.0; pout],
            }
        };
        if backend == Backend::Fma {
            // A 3x3 conv is computed by Winograd alone (every row and column): its weights as
            // the direct kernel reads them would go unread.
            return if k == 3 {
                layer(
                    Aligned::zeroed(0),
                    Some(fma::winograd_weights(w, cout, cin, pin)),
                )
            } else {
                layer(Aligned::of(&fma::pack(w, cout, cin, k, pin)), None)
            };
        }
        let mut weights = Vec::with_capacity(pin * pout * k * k);
        for nb in 0..pout / BLOCK {
            for ky in 0..k {
                for kx in 0..k {
                    for cb in 0..pin / BLOCK {
                        for half in 0..2 {
                            for pair in 0..16 {
                                for n in 0..16 {
                                    for e in 0..2 {
                                        let (o, c) =
                                            (nb * BLOCK + half * 16 + n, cb * BLOCK + 2 * pair + e);
                                        weights.push(if o < cout && c < cin {
                                            bf16(w[((o * cin + c) * k + ky) * k + kx])
                                        } else {
                                            0
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        layer(Aligned::of(&weights), None)
    }

    /// The kernel's side: 3, or 2 for a phase of an upsampling conv ([`Layer::phases`]).
    fn k(&self) -> usize {
        if self.phase.is_some() { 2 } else { 3 }
    }

    fn with_slopes(mut self, slopes: &[f32]) -> Self {
        self.slopes[..slopes.len()].copy_from_slice(slopes);
        self
    }

    /// A 3x3 conv of a map upscaled x2 by nearest neighbour, as four 2x2 convs of the map itself
    /// (one for each output pixel's place in its 2x2 cell): the nearest-neighbour copies make
    /// neighbouring taps read the same input pixel, so their weights are summed once here. The
    /// same arithmetic in 4 x 4 taps a cell instead of 4 x 9, and no upscaled map.
    ///
    /// Output row `2y` reads the upscaled rows `2y - 1, 2y, 2y + 1`, which are input rows
    /// `y - 1, y, y`: tap 0 for the first, taps 1 and 2 summed for the second. Row `2y + 1` reads
    /// input rows `y, y, y + 1`. Columns alike.
    fn phases(w: &[f32], cout: usize, cin: usize, bias: &[f32], backend: Backend) -> [Self; 4] {
        const TAPS: [[&[usize]; 2]; 2] = [[&[0], &[1, 2]], [&[0, 1], &[2]]];
        std::array::from_fn(|phase| {
            let (py, px) = (phase / 2, phase % 2);
            let mut summed = vec![0f32; cout * cin * 4];
            for oc in 0..cout * cin {
                for ty in 0..2 {
                    for tx in 0..2 {
                        summed[oc * 4 + ty * 2 + tx] = TAPS[py][ty]
                            .iter()
                            .flat_map(|ky| TAPS[px][tx].iter().map(move |kx| (ky, kx)))
                            .map(|(ky, kx)| w[oc * 9 + ky * 3 + kx])
                            .sum();
                    }
                }
            }
            Self {
                phase: Some((py, px)),
                ..Self::pack(&summed, cout, cin, 2, bias, backend)
            }
        })
    }
}

/// RRDBNet (x4plus: 23 blocks; x4plus-anime: 6), ready to run.
pub struct Rrdb {
    blocks: usize,
    layers: Vec<Layer>,
    backend: Backend,
    threads: usize,
    /// The last run's buffers, kept for the next tile of the same size: allocating them anew
    /// faulted in 450 MB of pages a 276 px tile, a sixth of its time.
    scratch: std::sync::Mutex<Option<Scratch>>,
}

/// The maps and fp32 buffers of a run, kept for the next: the worker's tiles come in a few sizes
/// (the edges' tiles are narrower), and a smaller tile fits in a larger tile's buffers.
struct Scratch {
    size: (usize, usize),
    /// The bf16 maps, in the order of the network's geometry.
    maps: Vec<Aligned>,
    /// fp32 buffers of 64 channels a pixel (the RRDB's trunk: x, rrdb, features).
    trunk: Vec<Aligned>,
}

/// A map's geometry: its width and height in pixels, its pitch, its channels a pixel.
type Geometry = (usize, usize, usize, usize);

/// The output rows (x4) the convs after the trunk compute a step at a time ([`Tail`]): a multiple
/// of 4 (FMA's rows of Winograd tiles), and enough for every thread to have a few tiles' rows.
fn tail_band(threads: usize) -> usize {
    16 * threads.max(4)
}

/// The rows each of the tail's three rings keeps (`up1` at x2, `up2` and `hr` at x4) for steps of
/// `band` output rows: a step writes about `band / 2` rows of `up1` and `band` of the others, and
/// reads 3 to 5 rows more than it writes ([`Tail::at`]); the margin keeps the oldest row still
/// read out of the slots written.
fn tail_rings(band: usize) -> [usize; 3] {
    [band / 2 + 16, band + 16, band + 16]
}

/// The RRDB's maps at an input of `w` x `h`: the image, xa, xb, then up1 (x2), up2 and hr (x4)
/// as rings of a few rows ([`Tail`]): whole, these three were two thirds of a tile's memory. On
/// AMX the dense blocks' four grown maps are rings of a few rows, each thread its own
/// ([`Rrdb::run`]); on FMA they are four more whole maps, since its convs run four rows at a time.
fn rrdb_geometry(w: usize, h: usize, backend: Backend, rings: [usize; 3]) -> Vec<Geometry> {
    let (p1, p2, p4) = (pitch(w), pitch(2 * w), pitch(4 * w));
    let [r1, r2, r4] = rings;
    // A ring of `r` rows is a map `r - 2` rows high (its border rows counted).
    let ring = |w: usize, p: usize, r: usize| (w, r - 2, p, 64);
    let grown = if backend == Backend::Fma { 4 } else { 0 };
    [
        (w, h, p1, BLOCK),
        (w, h, p1, 64),
        (w, h, p1, 64),
        ring(2 * w, p2, r1),
        ring(4 * w, p4, r2),
        ring(4 * w, p4, r4),
    ]
    .into_iter()
    .chain(std::iter::repeat_n((w, h, p1, BLOCK), grown))
    .collect()
}

/// The convs after the trunk (the two upsampling convs, `hr` and the last), computed a band of
/// output rows at a time, each a few rows ahead of the one after it, so that their maps are rings
/// of a few rows ([`tail_rings`]) and not whole maps at x2 and x4. At step `s` (frontier
/// `f = s band` output rows) the last conv has computed rows `..f`, `hr` rows `..f + 4` (its
/// rows are read from `f - 1` to `f + 4`), `up2` the rows that `hr`'s need (`up1`'s rows
/// `..(f + 4) / 2 + 1`, each two of `up2`'s), and `up1` those that `up2`'s need. Every band
/// starts at a multiple of 4, so FMA's Winograd rows are those of the whole maps: the output is
/// the same bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tail {
    /// The input rows of `up1` (x1), of `up2` (`up1`'s rows, x2), and the output rows of `hr` and
    /// of the last conv (x4), computed so far.
    up1: usize,
    up2: usize,
    hr: usize,
    last: usize,
}

impl Tail {
    /// The rows computed once the last conv has its rows up to `frontier`, for an input `h` rows
    /// high.
    fn at(frontier: usize, h: usize) -> Self {
        let (h2, h4) = (2 * h, 4 * h);
        let hr = (frontier + 4).min(h4);
        // `hr`'s rows `..hr` read `up2`'s rows up to `hr` (its border past the last), which
        // are phases of `up1`'s rows up to `hr / 2`; those read `up1`'s rows one further, phases
        // of the input's rows up to half that.
        let up2 = (hr / 2 + 1).min(h2);
        let up1 = (up2 / 2 + 1).min(h);
        Self {
            up1,
            up2,
            hr,
            last: frontier.min(h4),
        }
    }
}

/// Thread `t`'s rows of `rows` among `threads`: on FMA each band starts at a multiple of 4, so
/// the rows computed four at a time ([`fma::conv_rows`]) are the same whatever the threads.
fn band(t: usize, threads: usize, rows: usize, backend: Backend) -> (usize, usize) {
    match backend {
        Backend::Amx => (t * rows / threads, (t + 1) * rows / threads),
        Backend::Fma => {
            let quads = rows.div_ceil(4);
            let at = |t: usize| (4 * (t * quads / threads)).min(rows);
            (at(t), at(t + 1))
        }
    }
}

/// The compact model's maps: the image and two of 64 channels, all at the input's size.
fn compact_geometry(w: usize, h: usize) -> Vec<Geometry> {
    let p1 = pitch(w);
    vec![(w, h, p1, BLOCK), (w, h, p1, 64), (w, h, p1, 64)]
}

fn map_bytes((_, h, pitch, channels): Geometry) -> usize {
    (h + 2) * pitch * channels * 2
}

impl Scratch {
    fn new(w: usize, h: usize, geometry: &[Geometry], trunk: usize) -> Self {
        Self {
            size: (w, h),
            maps: geometry
                .iter()
                .map(|&g| Aligned::zeroed(map_bytes(g)))
                .collect(),
            trunk: (0..trunk)
                .map(|_| Aligned::zeroed(w * h * 64 * 4))
                .collect(),
        }
    }

    /// Takes an input of `w` x `h` in these buffers if they are large enough: its borders (and
    /// the columns past its width) zeroed, since a larger input left values there.
    fn fit(&mut self, w: usize, h: usize, geometry: &[Geometry]) -> bool {
        if self.size == (w, h) {
            return true;
        }
        let fits = self.maps.len() == geometry.len()
            && self
                .maps
                .iter()
                .zip(geometry)
                .all(|(m, &g)| m.layout.size() >= map_bytes(g))
            && self.trunk.iter().all(|t| t.layout.size() >= w * h * 64 * 4);
        if !fits {
            return false;
        }
        for (map, &(w, h, pitch, channels)) in self.maps.iter_mut().zip(geometry) {
            let all = map.u16s();
            for row in all[..(h + 2) * pitch * channels].chunks_exact_mut(pitch * channels) {
                row[..channels].fill(0);
                row[(w + 1) * channels..].fill(0);
            }
            all[..pitch * channels].fill(0);
            all[(h + 1) * pitch * channels..(h + 2) * pitch * channels].fill(0);
        }
        // The image's channels past the third are zero: only those three are ever written.
        self.size = (w, h);
        true
    }

    /// The buffers for an input of `w` x `h` in `slot`: the last run's when they fit, else new.
    fn take<'a>(
        slot: &'a mut Option<Self>,
        w: usize,
        h: usize,
        geometry: &[Geometry],
        trunk: usize,
    ) -> &'a mut Self {
        if !slot.as_mut().is_some_and(|s| s.fit(w, h, geometry)) {
            *slot = None; // the old buffers go before the new ones come
        }
        slot.get_or_insert_with(|| Self::new(w, h, geometry, trunk))
    }

    /// The image's interior from a planar RGB input (its other channels stay zero).
    fn load_image(&mut self, input: &[f32], w: usize, h: usize) {
        let p1 = pitch(w);
        let (plane, pixels) = (w * h, self.maps[0].u16s());
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    pixels[((y + 1) * p1 + x + 1) * BLOCK + c] = bf16(input[c * plane + y * w + x]);
                }
            }
        }
    }
}

impl std::fmt::Debug for Rrdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rrdb")
            .field("blocks", &self.blocks)
            .field("backend", &self.backend)
            .finish()
    }
}

/// What the epilogue of a convolution does with `acc + bias`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Post {
    /// LeakyReLU, to bf16.
    LRelu,
    /// The first conv: the trunk's start, kept in fp32 three times (the dense block's input,
    /// the RRDB's input, the features the body's output is added to).
    First,
    /// A dense block's last conv: `x + 0.2 v`.
    Rdb,
    /// The last dense block of an RRDB: `r + 0.2 (x + 0.2 v)`.
    Rrdb,
    /// The body's conv: `features + v`.
    Body,
    /// The last conv: three channels of fp32, planar.
    Last,
    /// PReLU with the layer's slopes, to bf16 (the compact models).
    PRelu,
    /// The compact models' last conv: `3 s²` channels shuffled into an `s` times larger planar
    /// output (ONNX's DepthToSpace, CRD), each plus its input pixel (the nearest-neighbour
    /// upscale the model adds its output to).
    Shuffle,
}

/// A bf16 image with a zero border of one pixel: rows of `pitch` pixels of `stride` channels.
/// A map of `ring` rows (not 0) holds only the last rows written: row `r` is at `r % ring`.
#[derive(Clone, Copy)]
struct Map {
    ptr: *mut u16,
    stride: usize,
    pitch: usize,
    ring: usize,
}

impl Map {
    fn at(self, channel: usize) -> Src {
        Src {
            ptr: self.ptr.wrapping_add(channel),
            stride: self.stride,
            ring: self.ring,
        }
    }

    /// Where row `r` (its border counted: the image's row `r - 1`) begins.
    fn row(self, r: usize) -> *mut u16 {
        self.ptr
            .wrapping_add(slot(r, self.ring) * self.pitch * self.stride)
    }
}

/// Where row `r` of a map of `ring` rows is kept: its own place in a whole map (`ring` 0).
fn slot(r: usize, ring: usize) -> usize {
    if ring == 0 { r } else { r % ring }
}

/// One 32-channel block a conv reads, from a map of `ring` rows as [`Map`]'s.
#[derive(Clone, Copy)]
struct Src {
    ptr: *const u16,
    stride: usize,
    ring: usize,
}

impl Src {
    /// Where row `r` begins in a map of `pitch` pixels a row.
    fn row(self, r: usize, pitch: usize) -> *const u16 {
        self.ptr
            .wrapping_add(slot(r, self.ring) * pitch * self.stride)
    }
}

/// The fp32 buffers an epilogue reads and writes (64 channels a pixel, no border), and the output.
#[derive(Clone, Copy)]
struct Trunk {
    x: *mut f32,
    rrdb: *mut f32,
    features: *mut f32,
    /// The planar output, and its height.
    out: *mut f32,
    out_rows: usize,
    /// The planar input and the scale ([`Post::Shuffle`]).
    input: *const f32,
    scale: usize,
}

// SAFETY: the buffers behind these pointers live for the whole run, and the threads write
// disjoint rows of them between barriers.
unsafe impl Send for Map {}
// SAFETY: as for `Map`.
unsafe impl Sync for Map {}
// SAFETY: as for `Map`.
unsafe impl Send for Src {}
// SAFETY: as for `Map`.
unsafe impl Sync for Src {}
// SAFETY: as for `Map`.
unsafe impl Send for Trunk {}
// SAFETY: as for `Map`.
unsafe impl Sync for Trunk {}

/// The four accumulator tiles stored for the epilogue. Aligned to a cache line as the tile rows
/// are: unaligned, every row's load straddles two lines just written (twice the time a run).
#[repr(C, align(64))]
struct Accumulators([[f32; 256]; 4]);

#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    /// Palette 1, all eight tiles 16 rows of 64 bytes.
    fn full() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        Self(c)
    }
}

fn round_up(x: usize) -> usize {
    x.div_ceil(BLOCK) * BLOCK
}

/// The pitch of a map `w` pixels wide: its columns computed in blocks of 32, and a border pixel
/// on either side.
fn pitch(w: usize) -> usize {
    round_up(w) + 2
}

/// Zeroed memory aligned to a cache line. Every tile row is 64 bytes: in a `Vec` (whose large
/// blocks glibc's malloc places 16 bytes past a page) each row straddles two lines, and a run
/// takes 1.7 times as long.
struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn zeroed(bytes: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(bytes.max(64).next_multiple_of(64), 64)
            .unwrap_or_else(|_| panic!("{bytes} bytes cannot be allocated"));
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, layout }
    }

    /// A copy of `values`.
    fn of<T: Copy>(values: &[T]) -> Self {
        let aligned = Self::zeroed(std::mem::size_of_val(values));
        // SAFETY: `aligned` holds `values.len()` values of `T`, aligned to 64 bytes, and is a
        // block of its own.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), aligned.ptr::<T>(), values.len()) };
        aligned
    }

    fn ptr<T>(&self) -> *mut T {
        self.ptr.as_ptr().cast()
    }

    fn u16s(&mut self) -> &mut [u16] {
        // SAFETY: the block is initialized (zeroed), aligned for u16, and borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.layout.size() / 2) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: `Aligned` owns its block as a `Vec` does; it is shared only read-only (the weights).
unsafe impl Send for Aligned {}
// SAFETY: as above.
unsafe impl Sync for Aligned {}

impl Rrdb {
    fn from_graph(
        graph: &onnx::Graph<'_>,
        backend: Backend,
    ) -> anyhow::Result<Option<(usize, Vec<Layer>)>> {
        let convs = graph.convs()?;
        if convs.len() < 6 || (convs.len() - 6) % 15 != 0 {
            return Ok(None);
        }
        let blocks = (convs.len() - 6) / 15;
        let mut shapes = vec![(64, 3)];
        for _ in 0..blocks * 3 {
            shapes.extend([(32, 64), (32, 96), (32, 128), (32, 160), (64, 192)]);
        }
        shapes.extend([(64, 64), (64, 64), (64, 64), (64, 64), (3, 64)]);
        let ops = |op: &str| graph.nodes.iter().filter(|n| n.op == op).count();
        let recognized = convs
            .iter()
            .zip(&shapes)
            .all(|(c, &(o, i))| c.cout == o && c.cin == i && c.k == 3)
            && ops("LeakyRelu") == blocks * 12 + 3
            && ops("Resize") == 2
            && ops("Mul") == blocks * 4
            && graph
                .nodes
                .iter()
                .all(|n| n.slope.is_none_or(|s| s == SLOPE))
            && graph.scales.iter().all(|&s| s == SLOPE);
        if !recognized {
            return Ok(None);
        }
        // The two upsampling convs (the fourth and third from the end) as their phases.
        let upsampling = convs.len() - 4..convs.len() - 2;
        let layers = convs
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                if upsampling.contains(&i) {
                    Layer::phases(&c.weight, c.cout, c.cin, &c.bias, backend).into()
                } else {
                    vec![Layer::pack(&c.weight, c.cout, c.cin, 3, &c.bias, backend)]
                }
            })
            .collect();
        Ok(Some((blocks, layers)))
    }

    fn run(&self, input: &[f32], w: usize, h: usize) -> Vec<f32> {
        assert_eq!(input.len(), 3 * w * h, "a planar RGB input");
        let (w2, h2, w4, h4) = (2 * w, 2 * h, 4 * w, 4 * h);
        let (p1, p2, p4) = (pitch(w), pitch(w2), pitch(w4));
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let band_rows = tail_band(self.threads);
        let rings = tail_rings(band_rows);
        let geometry = rrdb_geometry(w, h, self.backend, rings);
        let sc = Scratch::take(&mut scratch, w, h, &geometry, 3);
        sc.load_image(input, w, h);
        let mut out = vec![0f32; 3 * w4 * h4];
        let map = |v: &Aligned, stride, pitch| Map {
            ptr: v.ptr(),
            stride,
            pitch,
            ring: 0,
        };
        // The rings' first rows are the maps' top border: a run of the same size left rows there.
        for (ring, p) in sc.maps[3..6].iter_mut().zip([p2, p4, p4]) {
            ring.u16s()[..p * 64].fill(0);
        }
        let m = &sc.maps;
        let image = map(&m[0], BLOCK, p1);
        let (xa, xb) = (map(&m[1], 64, p1), map(&m[2], 64, p1));
        let [r1, r2, r4] = rings;
        let ring = |v: &Aligned, pitch, ring| Map {
            ring,
            ..map(v, 64, pitch)
        };
        let (up1, up2, hr) = (
            ring(&m[3], p2, r1),
            ring(&m[4], p4, r2),
            ring(&m[5], p4, r4),
        );
        let trunk = Trunk {
            x: sc.trunk[0].ptr(),
            rrdb: sc.trunk[1].ptr(),
            features: sc.trunk[2].ptr(),
            out: out.as_mut_ptr(),
            out_rows: h4,
            input: input.as_ptr(),
            scale: 4,
        };

        let threads = self.threads;
        on_tiles(threads, self.backend, |t, barrier| {
            let part = |rows: usize| band(t, threads, rows, self.backend);
            // The first conv, the dense blocks' 15 each, then the convs after them.
            let (first, rest) = self.layers.split_at(1);
            let (dense_blocks, tail) = rest.split_at(self.blocks * 15);
            let mut layers = first.iter().chain(tail);
            let mut conv =
                |srcs: &[Src], rows: usize, cols: usize, pitch: usize, post: Post, out: Map| {
                    let layer = layers.next().expect("as many layers as convs");
                    // An upsampling conv is its four phases, each writing its own pixels.
                    let phases = if layer.phase.is_some() { 4 } else { 1 };
                    let (y0, y1) = part(rows);
                    for layer in std::iter::once(layer).chain(layers.by_ref().take(phases - 1)) {
                        // SAFETY: the tiles are configured (`on_tiles`); each thread computes its
                        // own rows of every layer into maps sized for this input (`Scratch`; a
                        // phase's output twice its size), and the barrier orders a layer's writes
                        // before the next layer's reads.
                        unsafe {
                            convolve(
                                self.backend,
                                layer,
                                srcs,
                                y0..y1,
                                cols,
                                pitch,
                                post,
                                out,
                                trunk,
                            )
                        };
                    }
                    barrier.wait();
                };
            // On AMX, this thread's grown maps of the dense blocks: the rows still to be read of
            // each. On FMA, the whole maps all threads share.
            let by_rows = self.backend == Backend::Amx;
            let rings: Vec<Aligned> = RINGS
                .iter()
                .filter(|_| by_rows)
                .map(|&rows| Aligned::zeroed(rows * p1 * BLOCK * 2))
                .collect();
            let grown: Vec<Map> = if by_rows {
                rings
                    .iter()
                    .zip(RINGS)
                    .map(|(ring, rows)| Map {
                        ptr: ring.ptr(),
                        stride: BLOCK,
                        pitch: p1,
                        ring: rows,
                    })
                    .collect()
            } else {
                m[6..10].iter().map(|g| map(g, BLOCK, p1)).collect()
            };

            conv(&[image.at(0)], h, w, p1, Post::First, xa);
            let (mut x, mut next) = (xa, xb);
            let (y0, y1) = part(h);
            // A thread with no rows of its own (an input fewer rows high than threads) only meets
            // the others.
            let (top, bottom) = (y0 as isize, y1 as isize - 1);
            let steps = top - 4..=if y0 < y1 { bottom + 4 } else { top - 5 };
            for (i, dense) in dense_blocks.chunks_exact(5).enumerate() {
                let srcs = [
                    x.at(0),
                    x.at(32),
                    grown[0].at(0),
                    grown[1].at(0),
                    grown[2].at(0),
                    grown[3].at(0),
                ];
                // Each RRDB is three dense blocks; the third's output adds the RRDB's input.
                let last = if i % 3 == 2 { Post::Rrdb } else { Post::Rdb };
                if !by_rows {
                    // On FMA, conv by conv over the whole maps: its convs compute two rows at a
                    // time, which the rows' schedule below does not give them.
                    for (k, layer) in dense.iter().enumerate() {
                        let (srcs, post, out) = if k == 4 {
                            (&srcs[..], last, next)
                        } else {
                            (&srcs[..k + 2], Post::LRelu, grown[k])
                        };
                        // SAFETY: as for `conv`: the grown maps are whole maps of this input.
                        unsafe {
                            convolve(self.backend, layer, srcs, y0..y1, w, p1, post, out, trunk)
                        };
                        barrier.wait();
                    }
                    std::mem::swap(&mut x, &mut next);
                    continue;
                }
                // The dense block row by row, its five convs one row apart: at step `s`,
                // conv `k` computes row `s - k`, whose inputs (rows `s - k - 1..=s - k + 1`
                // of the convs before it) are done. So the grown maps are read a few rows
                // after they are written, from L2, not from memory. This thread's rows of
                // the block's output need `4 - k` rows more of conv `k` on either side; the
                // rows just outside the image are the zero border.
                for step in steps.clone() {
                    for (k, layer) in dense.iter().enumerate() {
                        let (y, halo) = (step - k as isize, 4 - k as isize);
                        let inner = k == 4;
                        let (lo, hi) = if inner {
                            (top, bottom)
                        } else {
                            ((top - halo).max(-1), (bottom + halo).min(h as isize))
                        };
                        if y < lo || y > hi {
                            continue;
                        }
                        let (srcs, post, out) = if inner {
                            (&srcs[..], last, next)
                        } else {
                            (&srcs[..k + 2], Post::LRelu, grown[k])
                        };
                        let row = (y + 1) as usize; // the map's row, its border counted
                        if y == -1 || y == h as isize {
                            // SAFETY: a ring's row is `p1` pixels of `BLOCK` channels.
                            unsafe { std::ptr::write_bytes(out.row(row), 0, p1 * BLOCK) };
                            continue;
                        }
                        // SAFETY: as for `conv`; the rows this conv reads of the grown maps
                        // were computed at earlier steps or earlier in this one, and are
                        // still in their rings (`RINGS`).
                        unsafe {
                            let rows = row - 1..row;
                            convolve(self.backend, layer, srcs, rows, w, p1, post, out, trunk)
                        };
                    }
                }
                barrier.wait();
                std::mem::swap(&mut x, &mut next);
            }
            conv(&[x.at(0), x.at(32)], h, w, p1, Post::Body, next);

            // The tail, a band of output rows a step ([`Tail`]): each conv's rows of the step,
            // shared among the threads, then the barrier before the next conv reads them.
            let tail: Vec<&Layer> = layers.collect();
            let stage = |layers: &[&Layer],
                         srcs: &[Src],
                         rows: std::ops::Range<usize>,
                         geometry: (usize, usize),
                         post: Post,
                         out: Map,
                         border: usize| {
                let (cols, pitch) = geometry;
                let (a, b) = part(rows.len());
                for layer in layers {
                    // SAFETY: as for `conv`; the rings hold the rows these read and write
                    // (`tail_rings`), and the barrier orders a conv's rows before their reads.
                    unsafe {
                        let rows = rows.start + a..rows.start + b;
                        convolve(
                            self.backend,
                            layer,
                            srcs,
                            rows,
                            cols,
                            pitch,
                            post,
                            out,
                            trunk,
                        );
                    }
                }
                // The ring's row past its map's last is the bottom border: zeros once the conv
                // has written its last row (its slot held a row no longer read).
                if t == 0 && post != Post::Last && !rows.is_empty() && rows.end == border {
                    let last = layers[0].phase.map_or(rows.end, |_| 2 * rows.end);
                    // SAFETY: a ring's row is `out.pitch` pixels of `out.stride` channels, and no
                    // other thread writes this slot or reads this map now.
                    unsafe { std::ptr::write_bytes(out.row(last + 1), 0, out.pitch * out.stride) };
                }
                barrier.wait();
            };
            let (x1, x2, x4, lrelu) = ((w, p1), (w2, p2), (w4, p4), Post::LRelu);
            let mut done = Tail::default();
            let mut frontier = 0;
            while done.last < h4 {
                frontier += band_rows;
                let to = Tail::at(frontier, h);
                // Each conv: its layers, the map it reads, its rows (of that map), that map's
                // geometry, its epilogue, the ring it writes, the rows of the map it reads.
                let stages = [
                    (&tail[..4], next, done.up1..to.up1, x1, lrelu, up1, h),
                    (&tail[4..8], up1, done.up2..to.up2, x2, lrelu, up2, h2),
                    (&tail[8..9], up2, done.hr..to.hr, x4, lrelu, hr, h4),
                    (&tail[9..], hr, done.last..to.last, x4, Post::Last, hr, h4),
                ];
                for (layers, from, rows, geometry, post, out, border) in stages {
                    let srcs = [from.at(0), from.at(32)];
                    stage(layers, &srcs, rows, geometry, post, out, border);
                }
                done = to;
            }
        });
        drop(scratch);
        out
    }
}

/// A model this engine computes, ready to run.
pub enum Net {
    /// RRDBNet (x4plus, x4plus-anime).
    Rrdb(Rrdb),
    /// SRVGGNetCompact (the animevideov3 models).
    Compact(Compact),
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rrdb(net) => net.fmt(f),
            Self::Compact(net) => f
                .debug_struct("Compact")
                .field("scale", &net.scale)
                .field("resize", &net.resize)
                .finish(),
        }
    }
}

impl Net {
    /// The model in `path` on `backend`'s units (this CPU's choice: [`Backend::of_this_cpu`]), if
    /// its graph is one this engine computes and this CPU has those units
    /// ([`Backend::runs_here`]), `None` otherwise (ONNX Runtime runs it). `threads` compute every
    /// run.
    pub fn from_onnx_on(
        path: &Path,
        threads: usize,
        backend: Backend,
    ) -> anyhow::Result<Option<Self>> {
        if !backend.runs_here() {
            return Ok(None);
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let graph =
            onnx::Graph::parse(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        let (threads, scratch) = (threads.max(1), || std::sync::Mutex::new(None));
        if let Some((blocks, layers)) = Rrdb::from_graph(&graph, backend)? {
            return Ok(Some(Self::Rrdb(Rrdb {
                blocks,
                layers,
                backend,
                threads,
                scratch: scratch(),
            })));
        }
        Ok(
            Compact::from_graph(&graph, backend)?.map(|(scale, resize, layers)| {
                Self::Compact(Compact {
                    scale,
                    resize,
                    layers,
                    backend,
                    threads,
                    scratch: scratch(),
                })
            }),
        )
    }

    /// The model on a planar RGB input (`[3][h][w]`, 0 to 1): the planar output at its scale.
    pub fn run(&self, input: &[f32], w: usize, h: usize) -> Vec<f32> {
        match self {
            Self::Rrdb(net) => net.run(input, w, h),
            Self::Compact(net) => net.run(input, w, h),
        }
    }

    /// The units it computes on.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Rrdb(net) => net.backend,
            Self::Compact(net) => net.backend,
        }
    }
}

/// SRVGGNetCompact: a conv and PReLU of 64 features, `n` more, a last conv to `3 s²` channels
/// shuffled to `s` times the size and added to the input upscaled by nearest neighbour. Every
/// conv is at the input's size.
pub struct Compact {
    scale: usize,
    /// The bicubic resize after the x4 network (animevideov3-x2: 0.5, x3: 0.75).
    resize: Option<f32>,
    layers: Vec<Layer>,
    backend: Backend,
    threads: usize,
    /// The last run's buffers (see [`Rrdb`]'s).
    scratch: std::sync::Mutex<Option<Scratch>>,
}

impl Compact {
    /// The network's scale, the bicubic resize after it, and its layers, if `graph` is one.
    #[allow(clippy::type_complexity)]
    fn from_graph(
        graph: &onnx::Graph<'_>,
        backend: Backend,
    ) -> anyhow::Result<Option<(usize, Option<f32>, Vec<Layer>)>> {
        let ops = |op: &str| graph.nodes.iter().filter(|n| n.op == op).count();
        let Some(shuffle) = graph.nodes.iter().find(|n| n.op == "DepthToSpace") else {
            return Ok(None);
        };
        let scale = match (shuffle.blocksize, shuffle.mode) {
            (Some(s @ 2..=4), Some("CRD")) => s as usize,
            _ => return Ok(None),
        };
        // Resizes: the input by nearest neighbour to the network's scale (added to its output),
        // and maybe a bicubic resize of the sum (Keys' a = -0.75, half-pixel centres, edges
        // clamped: ONNX's defaults otherwise).
        let factor = |n: &onnx::Node<'_>| match n.inputs.get(2).and_then(|s| graph.constant(s)) {
            Some(&[1.0, 1.0, a, b]) if a == b => Some(a),
            _ => None,
        };
        let (mut nearest, mut resize) = (0, None);
        for n in graph.nodes.iter().filter(|n| n.op == "Resize") {
            match (n.mode, n.transform, n.cubic_a, factor(n)) {
                _ if n.outside_or_antialias => return Ok(None),
                (Some("nearest"), Some("asymmetric"), _, Some(f)) if f == scale as f32 => {
                    nearest += 1
                }
                (Some("cubic"), Some("half_pixel"), Some(a), Some(f))
                    if a == -0.75 && resize.is_none() && [0.5, 0.75].contains(&f) =>
                {
                    resize = Some(f)
                }
                _ => return Ok(None),
            }
        }
        if nearest != 1 {
            return Ok(None);
        }
        let convs = graph.convs()?;
        let slopes = graph.prelu_slopes()?;
        let n = convs.len();
        let recognized = n >= 2
            && slopes.len() == n - 1
            && ops("DepthToSpace") == 1
            && ops("Add") == 1
            && ops("Conv") == n
            && graph.nodes.len() == 2 * n + 2 + usize::from(resize.is_some())
            && convs.iter().enumerate().all(|(i, c)| {
                let (cout, cin) = match i {
                    0 => (64, 3),
                    i if i == n - 1 => (3 * scale * scale, 64),
                    _ => (64, 64),
                };
                c.cout == cout && c.cin == cin && c.k == 3
            })
            && slopes.iter().all(|s| s.len() == 64);
        if !recognized {
            return Ok(None);
        }
        let layers = convs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let layer = Layer::pack(&c.weight, c.cout, c.cin, 3, &c.bias, backend);
                match slopes.get(i) {
                    Some(s) => layer.with_slopes(s),
                    None => layer,
                }
            })
            .collect();
        Ok(Some((scale, resize, layers)))
    }

    fn run(&self, input: &[f32], w: usize, h: usize) -> Vec<f32> {
        assert_eq!(input.len(), 3 * w * h, "a planar RGB input");
        let (s, p1) = (self.scale, pitch(w));
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sc = Scratch::take(&mut scratch, w, h, &compact_geometry(w, h), 0);
        sc.load_image(input, w, h);
        let mut out = vec![0f32; 3 * w * h * s * s];
        let map = |v: &Aligned, stride| Map {
            ptr: v.ptr(),
            stride,
            pitch: p1,
            ring: 0,
        };
        let (image, a, b) = (
            map(&sc.maps[0], BLOCK),
            map(&sc.maps[1], 64),
            map(&sc.maps[2], 64),
        );
        let trunk = Trunk {
            x: std::ptr::null_mut(),
            rrdb: std::ptr::null_mut(),
            features: std::ptr::null_mut(),
            out: out.as_mut_ptr(),
            out_rows: h * s,
            input: input.as_ptr(),
            scale: s,
        };
        let last = self.layers.len() - 1;
        on_tiles(self.threads, self.backend, |t, barrier| {
            let (y0, y1) = band(t, self.threads, h, self.backend);
            let (mut from, mut to) = (a, b);
            for (i, layer) in self.layers.iter().enumerate() {
                let (srcs, post) = match i {
                    0 => (vec![image.at(0)], Post::PRelu),
                    i if i == last => (vec![from.at(0), from.at(32)], Post::Shuffle),
                    _ => (vec![from.at(0), from.at(32)], Post::PRelu),
                };
                let out = if i == 0 { from } else { to };
                // SAFETY: as in `Rrdb::run`: the tiles are configured (`on_tiles`), the maps are
                // sized for this input, and this thread writes only its rows `y0..y1`.
                unsafe { convolve(self.backend, layer, &srcs, y0..y1, w, p1, post, out, trunk) };
                barrier.wait();
                if i > 0 {
                    std::mem::swap(&mut from, &mut to);
                }
            }
        });
        drop(scratch);
        match self.resize {
            Some(factor) => bicubic(&out, w * s, h * s, factor),
            None => out,
        }
    }
}

/// A planar RGB image (`[3][h][w]`) resized by `factor` as ONNX's Resize does it in `cubic` mode
/// with half-pixel centres, Keys' a = -0.75, and the edges clamped (checked against ONNX Runtime
/// to 2e-6).
fn bicubic(image: &[f32], w: usize, h: usize, factor: f32) -> Vec<f32> {
    /// For each output position along an axis of `n`: four input indices and their weights.
    fn taps(n: usize, factor: f32) -> Vec<([usize; 4], [f32; 4])> {
        let keys = |d: f32| {
            let (a, d) = (-0.75f32, d.abs());
            if d <= 1.0 {
                ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
            } else if d < 2.0 {
                ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
            } else {
                0.0
            }
        };
        let out = (n as f32 * factor) as usize;
        (0..out)
            .map(|o| {
                let centre = (o as f32 + 0.5) / factor - 0.5;
                let (floor, t) = (centre.floor(), centre - centre.floor());
                let index = |k: i64| (floor as i64 + k).clamp(0, n as i64 - 1) as usize;
                (
                    [index(-1), index(0), index(1), index(2)],
                    [keys(1.0 + t), keys(t), keys(1.0 - t), keys(2.0 - t)],
                )
            })
            .collect()
    }
    let (across, down) = (taps(w, factor), taps(h, factor));
    let (ow, oh) = (across.len(), down.len());
    let mut rows = vec![0f32; ow * h];
    let mut out = vec![0f32; 3 * ow * oh];
    for c in 0..3 {
        let plane = &image[c * w * h..(c + 1) * w * h];
        for (y, row) in rows.chunks_exact_mut(ow).enumerate() {
            let from = &plane[y * w..(y + 1) * w];
            for (value, (index, weight)) in row.iter_mut().zip(&across) {
                *value = (0..4).map(|k| from[index[k]] * weight[k]).sum();
            }
        }
        for (y, (index, weight)) in down.iter().enumerate() {
            let to = &mut out[(c * oh + y) * ow..(c * oh + y + 1) * ow];
            for (x, value) in to.iter_mut().enumerate() {
                *value = (0..4).map(|k| rows[index[k] * ow + x] * weight[k]).sum();
            }
        }
    }
    out
}

/// Runs `work(thread, barrier)` on `threads` threads, each with AMX's tiles configured (palette
/// 1, eight tiles of 16 rows of 64 bytes) and released at the end where `backend` is AMX.
fn on_tiles(threads: usize, backend: Backend, work: impl Fn(usize, &Spin) + Sync) {
    let barrier = Spin::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (barrier, work) = (&barrier, &work);
            s.spawn(move || {
                let tiles = backend == Backend::Amx;
                let config = TileConfig::full();
                if tiles {
                    // SAFETY: a `Net` on AMX exists only where `available()` holds
                    // (`Backend::of_this_cpu`), so this thread may configure and use the tiles;
                    // the configuration is a valid palette 1.
                    unsafe {
                        asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
                    }
                }
                work(t, barrier);
                if tiles {
                    // SAFETY: as above.
                    unsafe { asm!("tilerelease", options(nostack, nomem)) };
                }
            });
        }
    });
}

/// A barrier that spins: the threads meet after every layer or dense block (x4plus: 75 times a
/// run; 350 when each conv was a layer), and a sleeping thread's wake-up (`std::sync::Barrier`)
/// took 0.5 ms of each, a fifth of x4plus's time then.
struct Spin {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl Spin {
    fn new(threads: usize) -> Self {
        Self {
            threads,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }

    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < 1 << 16 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// [`conv_rows`] on `backend`'s units.
///
/// # Safety
/// As [`conv_rows`]'s on AMX, [`fma::conv_rows`]'s on FMA: the net was built for `backend` on
/// this CPU (`Backend::of_this_cpu`).
#[allow(clippy::too_many_arguments)]
unsafe fn convolve(
    backend: Backend,
    layer: &Layer,
    srcs: &[Src],
    rows: std::ops::Range<usize>,
    cols: usize,
    pitch: usize,
    post: Post,
    out: Map,
    trunk: Trunk,
) {
    // SAFETY: the caller's.
    unsafe {
        match backend {
            Backend::Amx => conv_rows(layer, srcs, rows, cols, pitch, post, out, trunk),
            Backend::Fma => fma::conv_rows(layer, srcs, rows, cols, pitch, post, out, trunk),
        }
    }
}

/// For [`Post::Shuffle`], each of the `3 s²` channels' place in the planar output past its
/// pixel's first, and its colour plane's in the input (divisions once, not a pixel).
fn shuffle_places(cols: usize, trunk: Trunk) -> Vec<(usize, usize)> {
    let (s, rows) = (trunk.scale, trunk.out_rows / trunk.scale);
    let (wide, tall) = (cols * s, trunk.out_rows);
    (0..3 * s * s)
        .map(|g| {
            let (c, at) = (g / (s * s), g % (s * s));
            (c * tall * wide + (at / s) * wide + at % s, c * rows * cols)
        })
        .collect()
}

/// Rows `rows` of a 3x3 convolution over `cols` columns: output row `y` reads rows `y..y + 3` of
/// its sources (their border included) and is written to row `y + 1` of `out` (or, for
/// [`Post::Last`], to row `y` of the planar output). Columns past `cols` up to the next block of
/// 32 are written as zeros, so they read as the border to the next conv. A phase of an upsampling
/// conv ([`Layer::phases`]) reads rows `y + py..y + py + 2` and writes its pixels of `out`,
/// which is twice the size.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn conv_rows(
    layer: &Layer,
    srcs: &[Src],
    rows: std::ops::Range<usize>,
    cols: usize,
    pitch: usize,
    post: Post,
    out: Map,
    trunk: Trunk,
) {
    // SAFETY: the caller holds the tile configuration and AMX permission ([`Rrdb::run`]), the
    // sources hold rows `rows.start..rows.end + 2` of `pitch` pixels of their blocks, `out` and
    // the trunk hold this conv's output rows, and no other thread touches these rows now.
    unsafe {
        let blocks_in = layer.cin / BLOCK;
        debug_assert_eq!(blocks_in, srcs.len());
        // Where output pixel (y, x) goes in `out`: `(step y + py, step x + px)`.
        let (step, (py, px)) = layer.phase.map_or((1, (0, 0)), |at| (2, at));
        let k = layer.k();
        let mut acc = Accumulators([[0f32; 256]; 4]);
        let acc = &mut acc.0;
        let slope = _mm512_set1_ps(SLOPE);
        let zero = _mm512_setzero_ps();
        let shuffle = if post == Post::Shuffle {
            shuffle_places(cols, trunk)
        } else {
            Vec::new()
        };
        // The rows a conv reads, for each source and kernel row, found once an output row.
        let mut reads = [[std::ptr::null::<u16>(); 3]; 6];
        debug_assert!(srcs.len() <= reads.len());
        for y in rows {
            for (src, at) in srcs.iter().zip(&mut reads) {
                for (ky, read) in at.iter_mut().enumerate().take(k) {
                    *read = src.row(y + ky + py, pitch);
                }
            }
            let written = out.row(step * y + py + 1);
            for x0 in (0..cols).step_by(BLOCK) {
                // A row's last block computes 16 pixels when no more are left (one A tile).
                let pixels = if cols - x0 <= 16 { 16 } else { BLOCK };
                for nb in 0..layer.cout / BLOCK {
                    // A block of outputs with none past its first 16 needs only the first B tile.
                    let outputs = if layer.outputs <= nb * BLOCK + 16 {
                        16
                    } else {
                        BLOCK
                    };
                    let mut wp = layer
                        .weights
                        .ptr::<u16>()
                        .cast_const()
                        .add(nb * k * k * blocks_in * 1024);
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack, nomem)
                    );
                    for ky in 0..k {
                        for kx in 0..k {
                            let column = x0 + kx + px;
                            for (src, at) in srcs.iter().zip(&reads) {
                                let a = at[ky].add(column * src.stride);
                                // The weights are read with the hint not to keep them in L1
                                // (`tileloaddt1`): they pass once a block, and the inputs, read
                                // again at the next tap, stay there. One block of assembly for
                                // each tile: what a narrow block leaves out is skipped, and the
                                // loads issued in this order (each product's operands first)
                                // took 5% less time than all four in one block.
                                let (sa, w, sw) = (src.stride * 2, wp, 64usize);
                                asm!(
                                    "tileloadd tmm4, [{a} + {sa} * 1]",
                                    "tileloaddt1 tmm6, [{w} + {sw} * 1]",
                                    a = in(reg) a,
                                    sa = in(reg) sa,
                                    w = in(reg) w,
                                    sw = in(reg) sw,
                                    options(nostack, readonly),
                                );
                                if pixels == BLOCK {
                                    asm!(
                                        "tileloadd tmm5, [{a} + {sa} * 1]",
                                        a = in(reg) a.add(16 * src.stride),
                                        sa = in(reg) sa,
                                        options(nostack, readonly),
                                    );
                                }
                                if outputs == BLOCK {
                                    asm!(
                                        "tileloaddt1 tmm7, [{w} + {sw} * 1 + 1024]",
                                        w = in(reg) w,
                                        sw = in(reg) sw,
                                        options(nostack, readonly),
                                    );
                                }
                                asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem));
                                if outputs == BLOCK {
                                    asm!("tdpbf16ps tmm1, tmm4, tmm7", options(nostack, nomem));
                                }
                                if pixels == BLOCK {
                                    asm!("tdpbf16ps tmm2, tmm5, tmm6", options(nostack, nomem));
                                    if outputs == BLOCK {
                                        asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
                                    }
                                }
                                wp = wp.add(1024);
                            }
                        }
                    }
                    asm!(
                        "tilestored [{p} + {s} * 1], tmm0",
                        "tilestored [{p} + {s} * 1 + 1024], tmm1",
                        "tilestored [{p} + {s} * 1 + 2048], tmm2",
                        "tilestored [{p} + {s} * 1 + 3072], tmm3",
                        p = in(reg) acc.as_mut_ptr(),
                        s = in(reg) 64usize,
                        options(nostack),
                    );
                    let b0 = _mm512_loadu_ps(layer.bias.as_ptr().add(nb * BLOCK));
                    let b1 = _mm512_loadu_ps(layer.bias.as_ptr().add(nb * BLOCK + 16));
                    for half in 0..pixels / 16 {
                        for p in 0..16 {
                            let x = x0 + 16 * half + p;
                            let mut v0 = _mm512_add_ps(
                                _mm512_loadu_ps(acc[2 * half].as_ptr().add(16 * p)),
                                b0,
                            );
                            let mut v1 = _mm512_add_ps(
                                _mm512_loadu_ps(acc[2 * half + 1].as_ptr().add(16 * p)),
                                b1,
                            );
                            let at = (y * cols + x) * 64 + nb * BLOCK;
                            if x >= cols {
                                if matches!(post, Post::Last | Post::Shuffle) {
                                    continue;
                                }
                                v0 = zero;
                                v1 = zero;
                            } else {
                                match post {
                                    Post::PRelu => {
                                        let s0 =
                                            _mm512_loadu_ps(layer.slopes.as_ptr().add(nb * BLOCK));
                                        let s1 = _mm512_loadu_ps(
                                            layer.slopes.as_ptr().add(nb * BLOCK + 16),
                                        );
                                        v0 = _mm512_fmadd_ps(
                                            s0,
                                            _mm512_min_ps(v0, zero),
                                            _mm512_max_ps(v0, zero),
                                        );
                                        v1 = _mm512_fmadd_ps(
                                            s1,
                                            _mm512_min_ps(v1, zero),
                                            _mm512_max_ps(v1, zero),
                                        );
                                    }
                                    Post::Shuffle => {
                                        let mut v = [0f32; 32];
                                        _mm512_storeu_ps(v.as_mut_ptr(), v0);
                                        _mm512_storeu_ps(v.as_mut_ptr().add(16), v1);
                                        let s = trunk.scale;
                                        let (to, from) = (y * s * cols * s + x * s, y * cols + x);
                                        let channels = &shuffle[(nb * BLOCK).min(shuffle.len())..];
                                        for (value, &(out_at, in_at)) in v.iter().zip(channels) {
                                            *trunk.out.add(to + out_at) =
                                                value + *trunk.input.add(from + in_at);
                                        }
                                        continue;
                                    }
                                    Post::LRelu => {
                                        v0 = _mm512_max_ps(v0, _mm512_mul_ps(v0, slope));
                                        v1 = _mm512_max_ps(v1, _mm512_mul_ps(v1, slope));
                                    }
                                    Post::First => {
                                        for to in [trunk.x, trunk.rrdb, trunk.features] {
                                            _mm512_storeu_ps(to.add(at), v0);
                                            _mm512_storeu_ps(to.add(at + 16), v1);
                                        }
                                    }
                                    Post::Rdb | Post::Rrdb => {
                                        let mut pair = [v0, v1];
                                        for (i, v) in pair.iter_mut().enumerate() {
                                            let at = at + 16 * i;
                                            *v = _mm512_fmadd_ps(
                                                *v,
                                                slope,
                                                _mm512_loadu_ps(trunk.x.add(at)),
                                            );
                                            if post == Post::Rrdb {
                                                *v = _mm512_fmadd_ps(
                                                    *v,
                                                    slope,
                                                    _mm512_loadu_ps(trunk.rrdb.add(at)),
                                                );
                                                _mm512_storeu_ps(trunk.rrdb.add(at), *v);
                                            }
                                            _mm512_storeu_ps(trunk.x.add(at), *v);
                                        }
                                        [v0, v1] = pair;
                                    }
                                    Post::Body => {
                                        v0 = _mm512_add_ps(
                                            v0,
                                            _mm512_loadu_ps(trunk.features.add(at)),
                                        );
                                        v1 = _mm512_add_ps(
                                            v1,
                                            _mm512_loadu_ps(trunk.features.add(at + 16)),
                                        );
                                    }
                                    Post::Last => {
                                        if nb == 0 {
                                            let mut v = [0f32; 16];
                                            _mm512_storeu_ps(v.as_mut_ptr(), v0);
                                            for (c, value) in v.iter().take(3).enumerate() {
                                                *trunk
                                                    .out
                                                    .add((c * trunk.out_rows + y) * cols + x) =
                                                    *value;
                                            }
                                        }
                                        continue;
                                    }
                                }
                            }
                            let column = step * x + px;
                            if column + 2 >= out.pitch {
                                continue; // a phase's zeros past the larger map's last block
                            }
                            let to = written.add((column + 1) * out.stride + nb * BLOCK);
                            _mm256_storeu_si256(to.cast(), to_bf16(v0));
                            _mm256_storeu_si256(to.add(16).cast(), to_bf16(v1));
                        }
                    }
                }
            }
        }
    }
}

/// Sixteen floats to bf16, rounded to nearest even.
#[target_feature(enable = "avx512f")]
fn to_bf16(v: __m512) -> __m256i {
    let u = _mm512_castps_si512(v);
    let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(u), _mm512_set1_epi32(1));
    let rounded = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd);
    _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(rounded))
}

/// Just enough of ONNX's protobuf to read a model's nodes and its float initializers.
mod onnx {
    use std::collections::HashMap;

    use anyhow::{Context, bail};

    /// Protobuf's fields of one message: (number, wire type, value or bytes).
    enum Value<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
        Fixed32(u32),
    }

    fn varint(data: &[u8], at: &mut usize) -> anyhow::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *data.get(*at).context("truncated varint")?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("varint too long")
    }

    fn fields(data: &[u8]) -> impl Iterator<Item = anyhow::Result<(u64, Value<'_>)>> {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= data.len() {
                return None;
            }
            Some((|| {
                let key = varint(data, &mut at)?;
                let value = match key & 7 {
                    0 => Value::Varint(varint(data, &mut at)?),
                    1 => {
                        at = at
                            .checked_add(8)
                            .filter(|&e| e <= data.len())
                            .context("truncated")?;
                        Value::Varint(0)
                    }
                    2 => {
                        let len = usize::try_from(varint(data, &mut at)?)?;
                        let end = at
                            .checked_add(len)
                            .filter(|&e| e <= data.len())
                            .context("truncated")?;
                        let bytes = &data[at..end];
                        at = end;
                        Value::Bytes(bytes)
                    }
                    5 => {
                        let end = at
                            .checked_add(4)
                            .filter(|&e| e <= data.len())
                            .context("truncated")?;
                        let v = u32::from_le_bytes(data[at..end].try_into()?);
                        at = end;
                        Value::Fixed32(v)
                    }
                    t => bail!("wire type {t}"),
                };
                Ok((key >> 3, value))
            })())
        })
    }

    fn text(bytes: &[u8]) -> anyhow::Result<&str> {
        std::str::from_utf8(bytes).context("a name that is not UTF-8")
    }

    pub struct Node<'a> {
        pub op: &'a str,
        pub name: &'a str,
        pub inputs: Vec<&'a str>,
        /// LeakyRelu's `alpha`.
        pub slope: Option<f32>,
        /// DepthToSpace's `blocksize` and `mode` (also Resize's).
        pub blocksize: Option<i64>,
        pub mode: Option<&'a str>,
        /// Resize's `coordinate_transformation_mode`, `cubic_coeff_a`, and whether it sets
        /// `exclude_outside` or `antialias` (to anything but 0).
        pub transform: Option<&'a str>,
        pub cubic_a: Option<f32>,
        pub outside_or_antialias: bool,
    }

    struct Tensor {
        dims: Vec<usize>,
        data: Vec<f32>,
    }

    pub struct Graph<'a> {
        pub nodes: Vec<Node<'a>>,
        tensors: HashMap<&'a str, Tensor>,
        /// The scalar constants the graph's `Mul` nodes multiply by.
        pub scales: Vec<f32>,
    }

    pub struct Conv {
        pub cout: usize,
        pub cin: usize,
        pub k: usize,
        pub weight: Vec<f32>,
        pub bias: Vec<f32>,
    }

    impl<'a> Graph<'a> {
        pub fn parse(model: &'a [u8]) -> anyhow::Result<Self> {
            let mut graph = None;
            for field in fields(model) {
                if let (7, Value::Bytes(b)) = field? {
                    graph = Some(b);
                }
            }
            let graph = graph.context("no graph")?;
            let (mut nodes, mut tensors) = (Vec::new(), HashMap::new());
            for field in fields(graph) {
                match field? {
                    (1, Value::Bytes(b)) => nodes.push(node(b)?),
                    (5, Value::Bytes(b)) => {
                        let (name, t) = tensor(b)?;
                        tensors.insert(name, t);
                    }
                    _ => {}
                }
            }
            let scales = nodes
                .iter()
                .filter(|n| n.op == "Mul")
                .map(|n| {
                    let t = n
                        .inputs
                        .get(1)
                        .and_then(|i| tensors.get(i))
                        .context("a Mul without a constant")?;
                    match t.data[..] {
                        [s] => Ok(s),
                        _ => bail!("a Mul by more than a scalar"),
                    }
                })
                .collect::<anyhow::Result<_>>()?;
            Ok(Self {
                nodes,
                tensors,
                scales,
            })
        }

        /// The values of the constant `name`.
        pub fn constant(&self, name: &str) -> Option<&[f32]> {
            self.tensors.get(name).map(|t| &t.data[..])
        }

        /// The slopes of the graph's PRelu nodes, in the graph's order.
        pub fn prelu_slopes(&self) -> anyhow::Result<Vec<Vec<f32>>> {
            self.nodes
                .iter()
                .filter(|n| n.op == "PRelu")
                .map(|n| {
                    let t = n.inputs.get(1).and_then(|i| self.tensors.get(i));
                    Ok(t.context("a PRelu without constant slopes")?.data.clone())
                })
                .collect()
        }

        /// The convolutions in the graph's order, each conv that `convert.py` split into parts
        /// along its input channels (`<name>.part<k>`) joined again.
        pub fn convs(&self) -> anyhow::Result<Vec<Conv>> {
            let mut convs: Vec<(String, Conv)> = Vec::new();
            for n in self.nodes.iter().filter(|n| n.op == "Conv") {
                let (base, part) = match n.name.rsplit_once(".part") {
                    Some((base, k)) if k.parse::<usize>().is_ok() => (base, k != "0"),
                    _ => (n.name, false),
                };
                let w = n
                    .inputs
                    .get(1)
                    .and_then(|i| self.tensors.get(i))
                    .context("a Conv without weights")?;
                let &[cout, cin, k, k2] = &w.dims[..] else {
                    bail!("{}: weights of rank {}", n.name, w.dims.len())
                };
                if k != k2 {
                    bail!("{}: a {k}x{k2} kernel", n.name);
                }
                if part {
                    let (last, conv) = convs.last_mut().context("a part without its conv")?;
                    if last != base || conv.cout != cout || conv.k != k {
                        bail!("{}: a part apart from its conv", n.name);
                    }
                    // Join along the input channels: [cout][cin][k][k].
                    let (a, b) = (conv.cin * k * k, cin * k * k);
                    let mut joined = Vec::with_capacity(cout * (a + b));
                    for o in 0..cout {
                        joined.extend_from_slice(&conv.weight[o * a..(o + 1) * a]);
                        joined.extend_from_slice(&w.data[o * b..(o + 1) * b]);
                    }
                    conv.weight = joined;
                    conv.cin += cin;
                    continue;
                }
                let bias = match n.inputs.get(2) {
                    Some(b) => self
                        .tensors
                        .get(b)
                        .context("a Conv's bias is not a constant")?
                        .data
                        .clone(),
                    None => vec![0.0; cout],
                };
                if bias.len() != cout || w.data.len() != cout * cin * k * k {
                    bail!("{}: weights and bias of other sizes", n.name);
                }
                convs.push((
                    base.to_owned(),
                    Conv {
                        cout,
                        cin,
                        k,
                        weight: w.data.clone(),
                        bias,
                    },
                ));
            }
            Ok(convs.into_iter().map(|(_, c)| c).collect())
        }
    }

    fn node(data: &[u8]) -> anyhow::Result<Node<'_>> {
        let (mut op, mut name, mut inputs, mut slope) = ("", "", Vec::new(), None);
        let (mut blocksize, mut mode) = (None, None);
        let (mut transform, mut cubic_a, mut outside_or_antialias) = (None, None, false);
        for field in fields(data) {
            match field? {
                (1, Value::Bytes(b)) => inputs.push(text(b)?),
                (3, Value::Bytes(b)) => name = text(b)?,
                (4, Value::Bytes(b)) => op = text(b)?,
                (5, Value::Bytes(b)) => {
                    // AttributeProto: name 1, f 2, i 3, s 4.
                    let (mut attr, mut f, mut i, mut text_value) = ("", None, None, None);
                    for field in fields(b) {
                        match field? {
                            (1, Value::Bytes(b)) => attr = text(b)?,
                            (2, Value::Fixed32(v)) => f = Some(f32::from_bits(v)),
                            (3, Value::Varint(v)) => i = Some(v as i64),
                            (4, Value::Bytes(b)) => text_value = Some(text(b)?),
                            _ => {}
                        }
                    }
                    match attr {
                        "alpha" => slope = f,
                        "blocksize" => blocksize = i,
                        "mode" => mode = text_value,
                        "coordinate_transformation_mode" => transform = text_value,
                        "cubic_coeff_a" => cubic_a = f,
                        "exclude_outside" | "antialias" => outside_or_antialias |= i != Some(0),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        Ok(Node {
            op,
            name,
            inputs,
            slope,
            blocksize,
            mode,
            transform,
            cubic_a,
            outside_or_antialias,
        })
    }

    fn tensor(data: &[u8]) -> anyhow::Result<(&str, Tensor)> {
        let (mut name, mut dims, mut kind, mut raw, mut floats) =
            ("", Vec::new(), 0, None, Vec::new());
        for field in fields(data) {
            match field? {
                (1, Value::Varint(d)) => dims.push(usize::try_from(d)?),
                (1, Value::Bytes(b)) => {
                    let mut at = 0;
                    while at < b.len() {
                        dims.push(usize::try_from(varint(b, &mut at)?)?);
                    }
                }
                (2, Value::Varint(k)) => kind = k,
                (4, Value::Fixed32(v)) => floats.push(f32::from_bits(v)),
                (4, Value::Bytes(b)) => floats.extend(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                ),
                (8, Value::Bytes(b)) => name = text(b)?,
                (9, Value::Bytes(b)) => raw = Some(b),
                _ => {}
            }
        }
        let data = match raw {
            Some(b) if kind == 1 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            _ if kind == 1 => floats,
            _ => Vec::new(), // not a float tensor: no convolution's weights
        };
        let count = dims.iter().product::<usize>();
        if kind == 1 && data.len() != count {
            bail!("{name}: {} floats for dims {dims:?}", data.len());
        }
        Ok((name, Tensor { dims, data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_keeps_a_flat_image_flat_at_its_new_size() {
        for (factor, size) in [(0.5, (4, 3)), (0.75, (6, 4))] {
            let out = bicubic(&vec![0.25f32; 3 * 8 * 6], 8, 6, factor);
            assert_eq!(out.len(), 3 * size.0 * size.1, "x{factor}");
            assert!(
                out.iter().all(|v| (v - 0.25).abs() < 1e-6),
                "x{factor}: {out:?}"
            );
        }
    }

    /// The tail's steps ([`Tail`]), simulated slot by slot in its rings: every row a conv reads
    /// is still in its slot (the borders' zeros included), every row is computed once, and the
    /// 3x3 convs' rows start at multiples of 4 (FMA's Winograd rows, so the bits of whole maps).
    #[test]
    fn the_tails_rings_hold_every_row_until_it_is_read() {
        for threads in [1, 2, 3, 6, 16] {
            let band = tail_band(threads);
            assert_eq!(band % 4, 0);
            let sizes = tail_rings(band);
            for h in [1, 2, 3, 4, 5, 17, 37, 64, 100, 255, 532] {
                // Each ring's slots: the map row (border counted) each holds; row 0, the top
                // border, is zeroed before the run.
                let mut rings: Vec<Vec<Option<usize>>> = sizes
                    .iter()
                    .map(|&r| (0..r).map(|s| (s == 0).then_some(0)).collect())
                    .collect();
                let write = |rings: &mut Vec<Vec<Option<usize>>>, ring: usize, row: usize| {
                    let len = rings[ring].len();
                    rings[ring][row % len] = Some(row);
                };
                let read = |rings: &Vec<Vec<Option<usize>>>, ring: usize, row: usize| {
                    let len = rings[ring].len();
                    let held = rings[ring][row % len];
                    assert_eq!(held, Some(row), "threads {threads}, h {h}, ring {ring}");
                };
                let (mut done, mut frontier) = (Tail::default(), 0);
                while done.last < 4 * h {
                    frontier += band;
                    let to = Tail::at(frontier, h);
                    assert!(to.last > done.last, "h {h}: no progress");
                    assert!(done.up1 <= to.up1 && done.up2 <= to.up2 && done.hr <= to.hr);
                    for start in [done.hr, done.last] {
                        assert!(start % 4 == 0 || start == 4 * h, "h {h}: a band at {start}");
                    }
                    // up1: the input's rows, two rows of the x2 ring each, then its border.
                    for i in done.up1..to.up1 {
                        write(&mut rings, 0, 2 * i + 1);
                        write(&mut rings, 0, 2 * i + 2);
                    }
                    if to.up1 == h && done.up1 < h {
                        write(&mut rings, 0, 2 * h + 1);
                    }
                    // up2: up1's row `j` reads its map's rows `j..=j + 2`, writes two rows.
                    for j in done.up2..to.up2 {
                        (j..=j + 2).for_each(|r| read(&rings, 0, r));
                    }
                    for j in done.up2..to.up2 {
                        write(&mut rings, 1, 2 * j + 1);
                        write(&mut rings, 1, 2 * j + 2);
                    }
                    if to.up2 == 2 * h && done.up2 < 2 * h {
                        write(&mut rings, 1, 4 * h + 1);
                    }
                    // hr: row `y` reads up2's rows `y..=y + 2`, writes row `y + 1`.
                    for y in done.hr..to.hr {
                        (y..=y + 2).for_each(|r| read(&rings, 1, r));
                    }
                    for y in done.hr..to.hr {
                        write(&mut rings, 2, y + 1);
                    }
                    if to.hr == 4 * h && done.hr < 4 * h {
                        write(&mut rings, 2, 4 * h + 1);
                    }
                    // The last conv reads hr's rows.
                    for y in done.last..to.last {
                        (y..=y + 2).for_each(|r| read(&rings, 2, r));
                    }
                    done = to;
                }
                let all = Tail {
                    up1: h,
                    up2: 2 * h,
                    hr: 4 * h,
                    last: 4 * h,
                };
                assert_eq!(done, all, "threads {threads}, h {h}");
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3f80);
        // Half-way between 0x3f80 and 0x3f81 goes to the even one; between 0x3f81 and 0x3f82 too.
        assert_eq!(bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        // Just past half-way goes up.
        assert_eq!(bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(bf16(-2.0), 0xc000);
    }

    /// Protobuf's encoding, as far as the tests' graphs need it.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes(field: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn tensor(name: &str, dims: &[u64], values: &[f32]) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            varint(1 << 3, &mut t);
            varint(d, &mut t);
        }
        varint(2 << 3, &mut t);
        varint(1, &mut t); // FLOAT
        bytes(8, name.as_bytes(), &mut t);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes(9, &raw, &mut t);
        t
    }

    fn node(op: &str, name: &str, inputs: &[&str]) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            bytes(1, i.as_bytes(), &mut n);
        }
        bytes(2, format!("{name}.out").as_bytes(), &mut n);
        bytes(3, name.as_bytes(), &mut n);
        bytes(4, op.as_bytes(), &mut n);
        n
    }

    fn model(nodes: &[Vec<u8>], tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut g = Vec::new();
        for n in nodes {
            bytes(1, n, &mut g);
        }
        for t in tensors {
            bytes(5, t, &mut g);
        }
        let mut m = Vec::new();
        bytes(7, &g, &mut m);
        m
    }

    #[test]
    fn a_conv_split_into_parts_is_joined_along_its_input_channels() {
        let w0: Vec<f32> = (0..18).map(|v| v as f32).collect(); // [2][1][3][3]
        let w1: Vec<f32> = (100..136).map(|v| v as f32).collect(); // [2][2][3][3]
        let bytes = model(
            &[
                node("Conv", "c.part0", &["x", "c.part0.weight", "c.bias"]),
                node("Conv", "c.part1", &["y", "c.part1.weight"]),
                node("Sum", "c.sum", &["c.part0.out", "c.part1.out"]),
            ],
            &[
                tensor("c.part0.weight", &[2, 1, 3, 3], &w0),
                tensor("c.part1.weight", &[2, 2, 3, 3], &w1),
                tensor("c.bias", &[2], &[0.5, -0.5]),
            ],
        );
        let graph = onnx::Graph::parse(&bytes).expect("parses");
        let convs = graph.convs().expect("convs");
        assert_eq!(convs.len(), 1);
        let c = &convs[0];
        assert_eq!((c.cout, c.cin, c.k), (2, 3, 3));
        assert_eq!(c.bias, [0.5, -0.5]);
        // Output 0: its one channel of part 0, then its two of part 1; then output 1 likewise.
        let expected: Vec<f32> = [&w0[..9], &w1[..18], &w0[9..], &w1[18..]].concat();
        assert_eq!(c.weight, expected);
    }

    #[test]
    fn a_graph_that_is_not_an_rrdbnet_is_left_to_onnx_runtime() {
        let w: Vec<f32> = vec![0.0; 64 * 3 * 9];
        let bytes = model(
            &[node(
                "Conv",
                "first",
                &["input", "first.weight", "first.bias"],
            )],
            &[
                tensor("first.weight", &[64, 3, 3, 3], &w),
                tensor("first.bias", &[64], &[0.0; 64]),
            ],
        );
        let graph = onnx::Graph::parse(&bytes).expect("parses");
        assert!(
            Rrdb::from_graph(&graph, Backend::Amx)
                .expect("reads")
                .is_none()
        );
    }

    #[test]
    fn a_truncated_model_is_an_error_not_a_panic() {
        let w: Vec<f32> = vec![1.0; 9];
        let bytes = model(
            &[node("Conv", "c", &["x", "c.weight"])],
            &[tensor("c.weight", &[1, 1, 3, 3], &w)],
        );
        for end in [1, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                onnx::Graph::parse(&bytes[..end])
                    .and_then(|g| g.convs().map(|_| ()))
                    .is_err(),
                "cut at {end}"
            );
        }
    }
}
