//! The engine's convolutions in fp32 on AVX2 and FMA, for the CPUs that compute no bf16 (AMD's
//! Zen 3 and older, Intel's cores before AVX-512 BF16), where OpenVINO runs the models in fp32:
//! on a Zen 3 its x4plus ran at 72–84% of the FMA units' peak, and a direct convolution written
//! here (the 6x16 kernel below, 80–87% on one core) only matched it (#17).
//!
//! So the 3x3 convolutions are Winograd's F(4x4, 3x3) ([`winograd_quad`]): 36 products a 4x4
//! tile where a direct convolution does 144, each product one GEMM of the tiles' transformed
//! inputs by the transformed weights. F(2x2, 3x3) came first (16 products a 2x2 tile, 2.25 times
//! fewer than direct): on a Zen 3 x4plus's model took 1.36–1.49 times less time than on
//! OpenVINO's fp32; F(4x4, 3x3) took 1.8 times less again, at the same distance from exact fp32
//! (its fp32 error is far below the bf16 maps'). The maps stay bf16 as on AMX (half the memory
//! and bandwidth; the quality is the AMX engine's); every product and sum is fp32.
//!
//! The GEMMs are BLIS's 6x16 sgemm kernel's shape: 6 rows by 16 outputs in 12 ymm accumulators,
//! two weight registers and a broadcast input. The upsampling convs' 2x2 phases are computed
//! directly: a chunk of [`CHUNK`] columns' input rows widened to fp32 side by side, then tap by
//! tap the same kernel.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::{Layer, Map, Post, SLOPE, Src, Trunk};

/// Output pixels a kernel call computes: 6 pixels of 16 outputs are 12 ymm accumulators.
const PIXELS: usize = 6;
/// Output channels a kernel call computes: two ymm.
const OUTPUTS: usize = 16;
/// Columns of a row computed from one staging of its inputs: the staged rows of a dense block's
/// last conv (3 rows of 50 pixels of 192 channels, 115 KB) and its weights for 16 outputs (110
/// KB) stay in L2 together.
const CHUNK: usize = 48;

/// A chunk's sums for 16 outputs, on a cache line.
#[repr(C, align(64))]
struct Sums([[f32; OUTPUTS]; CHUNK]);

/// Tiles of four rows transformed at a time: their 36 transformed inputs of 192 channels (332
/// KB) stay in L2, each product's (9 KB) in L1. 18 ran as fast on a Zen 3, 6 and 24 slower.
const TILES: usize = 12;

thread_local! {
    /// The staged fp32 inputs of a chunk, kept by each thread for its next conv row.
    static STAGE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// [`winograd_quad`]'s transformed inputs, products and output sums.
    #[allow(clippy::type_complexity)]
    static WINOGRAD: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
    /// A row of zeros, read for the rows past a conv's last (a last tile's rows not written).
    static ZEROS: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU has AVX2 and FMA but computes no bf16 of its own (no AVX-512 BF16, no AMX):
/// where it does, OpenVINO's bf16 (or the AMX engine) is the faster path.
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // CPUID leaf 7, subleaf 1: EAX bit 5 AVX512_BF16. Leaf 7, subleaf 0: EDX bit 22
        // AMX-BF16.
        let native_bf16 = __cpuid(0).eax >= 7
            && (__cpuid_count(7, 1).eax & (1 << 5) != 0
                || __cpuid_count(7, 0).edx & (1 << 22) != 0);
        super::Backend::Fma.runs_here() && !native_bf16
    })
}

/// `w` as ONNX holds it (`[cout][cin][k][k]`) as the kernel reads it:
/// `[out block of 16][ky][kx][input channel of pin][16 outputs]`, fp32, zero past `cout` and `cin`.
pub(crate) fn pack(w: &[f32], cout: usize, cin: usize, k: usize, pin: usize) -> Vec<f32> {
    let blocks = cout.div_ceil(OUTPUTS);
    let mut weights = Vec::with_capacity(blocks * k * k * pin * OUTPUTS);
    for ob in 0..blocks {
        for ky in 0..k {
            for kx in 0..k {
                for c in 0..pin {
                    for n in 0..OUTPUTS {
                        let o = ob * OUTPUTS + n;
                        weights.push(if o < cout && c < cin {
                            w[((o * cin + c) * k + ky) * k + kx]
                        } else {
                            0.0
                        });
                    }
                }
            }
        }
    }
    weights
}

/// What one conv's rows need, found once a call.
struct Conv<'a> {
    layer: &'a Layer,
    srcs: &'a [Src],
    cols: usize,
    pitch: usize,
    post: Post,
    out: Map,
    trunk: Trunk,
    shuffle: Vec<(usize, usize)>,
}

/// [`super::conv_rows`] on AVX2 and FMA, to the same contract: output row `y` reads rows
/// `y + py..y + py + k` of its sources (their border included) and is written to row
/// `step y + py + 1` of `out` (or, for [`Post::Last`], to row `y` of the planar output). Only the
/// `cols` columns are written: the columns past them are the zeros the buffers hold
/// (`Scratch::fit`, the rings zeroed). A 3x3 conv's rows are computed four at a time from
/// `rows.start` by Winograd's F(4x4, 3x3) ([`winograd_quad`]); a phase's directly.
///
/// # Safety
/// The CPU has AVX2 and FMA ([`available`]); the sources hold rows `rows.start + py..rows.end +
/// py + k` of `pitch` pixels of their 32-channel blocks, `layer` reads as many blocks as `srcs`
/// holds, `out` and the trunk hold this conv's output rows, and no other thread touches these
/// rows now.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv_rows(
    layer: &Layer,
    srcs: &[Src],
    rows: std::ops::Range<usize>,
    cols: usize,
    pitch: usize,
    post: Post,
    out: Map,
    trunk: Trunk,
) {
    debug_assert_eq!(layer.cin, srcs.len() * super::BLOCK);
    let shuffle = if post == Post::Shuffle {
        super::shuffle_places(cols, trunk)
    } else {
        Vec::new()
    };
    let conv = Conv {
        layer,
        srcs,
        cols,
        pitch,
        post,
        out,
        trunk,
        shuffle,
    };
    // SAFETY: the caller's, for every row of `rows`.
    unsafe {
        if let Some(transformed) = &layer.winograd {
            let stride = srcs.iter().map(|src| src.stride).max().unwrap_or(0);
            ZEROS.with_borrow_mut(|zeros| {
                zeros.resize(zeros.len().max(pitch * stride), 0);
                for y in rows.clone().step_by(4) {
                    winograd_quad(&conv, transformed, y, rows.end, zeros.as_ptr());
                }
            });
        } else {
            for y in rows {
                direct(&conv, y);
            }
        }
    }
}

/// Output row `y` of a phase, each pixel a sum over the taps (the 6x16 kernel).
#[target_feature(enable = "avx2,fma")]
unsafe fn direct(conv: &Conv<'_>, y: usize) {
    let Conv {
        layer,
        srcs,
        cols,
        pitch,
        out,
        ..
    } = *conv;
    let cin = layer.cin;
    let k = layer.k();
    let (step, (py, px)) = layer.phase.map_or((1, (0, 0)), |at| (2, at));
    // One staged row: the chunk's pixels and the `k - 1` more its taps reach.
    let staged_row = (CHUNK + k - 1) * cin;
    STAGE.with_borrow_mut(|stage| {
        stage.resize(k * staged_row, 0.0);
        let stage = stage.as_mut_ptr();
        let weights = layer.weights.ptr::<f32>().cast_const();
        let mut reads = [[std::ptr::null::<u16>(); 3]; 6];
        for (src, at) in srcs.iter().zip(&mut reads) {
            for (ky, read) in at.iter_mut().enumerate().take(k) {
                *read = src.row(y + ky + py, pitch);
            }
        }
        let written = out.row(step * y + py + 1);
        for c0 in (0..cols).step_by(CHUNK) {
            let n = (cols - c0).min(CHUNK);
            // SAFETY: the sources hold these rows and columns (the caller); the stage holds
            // `k` rows of `CHUNK + k - 1` pixels of `cin` channels.
            unsafe {
                for (ky, row) in (0..k).map(|ky| (ky, stage.add(ky * staged_row))) {
                    for col in 0..n + k - 1 {
                        for (b, (src, at)) in srcs.iter().zip(&reads).enumerate() {
                            let from = at[ky].add((c0 + col + px) * src.stride);
                            widen(from, row.add(col * cin + b * super::BLOCK));
                        }
                    }
                }
            }
            for ob in 0..layer.outputs.div_ceil(OUTPUTS) {
                // The chunk's sums, tap by tap: one tap's weights for 16 outputs (at most 192
                // channels, 12 KB) stay in L1 while every pixel of the chunk uses them.
                let mut sums = Sums([[0f32; OUTPUTS]; CHUNK]);
                for tap in 0..k * k {
                    let (ky, kx) = (tap / k, tap % k);
                    // SAFETY: the weights hold `outputs` rounded up to 16 blocks of
                    // `k k cin 16`.
                    let wp = unsafe { weights.add(((ob * k * k) + tap) * cin * OUTPUTS) };
                    for x0 in (0..n).step_by(PIXELS) {
                        let a = stage
                            .cast_const()
                            .wrapping_add(ky * staged_row + (x0 + kx) * cin);
                        let to = sums.0[x0..].as_mut_ptr().cast::<f32>();
                        let first = tap == 0;
                        // SAFETY: the stage holds the block's pixels and their taps' reach,
                        // and `to` at least the block's pixels.
                        unsafe { gemm(a, cin, wp, to, OUTPUTS, (n - x0).min(PIXELS), first) };
                    }
                }
                for (p, sums) in sums.0.iter().enumerate().take(n) {
                    // SAFETY: as for `conv_rows`: pixel `c0 + p` of output row `y` is this
                    // thread's to write.
                    unsafe { epilogue(conv, ob, sums.as_ptr(), (c0 + p, y), written, step, px) };
                }
            }
        }
    });
}

/// Output rows `y..y + 4` (those below `end`), in 4x4 tiles by Winograd's F(4x4, 3x3): each
/// tile's 6x6 inputs transformed (`Bᵀ d B`, [`input_transform`]), 36 products of `cin` x 16
/// outputs each with the transformed weights (`G g Gᵀ`, [`winograd_weights`]), the 4x4 outputs
/// transformed back (`Aᵀ m A`, [`output_transform`]). 36 products a tile where a direct conv
/// does 144: 4 times fewer multiplies. In fp32 its error is a few hundred-thousandths of the
/// values (the maps' bf16 rounds at a few thousandths).
///
/// A last tile past `cols`, or past `end`, is computed whole and only its pixels inside written:
/// the columns it reads past the border are in the row's pitch (zeros), the rows past the
/// sources' last (`end + 2`) read as `zeros`.
#[target_feature(enable = "avx2,fma")]
unsafe fn winograd_quad(
    conv: &Conv<'_>,
    transformed: &super::Aligned,
    y: usize,
    end: usize,
    zeros: *const u16,
) {
    let Conv {
        layer,
        srcs,
        cols,
        pitch,
        out,
        ..
    } = *conv;
    let cin = layer.cin;
    let blocks = layer.outputs.div_ceil(OUTPUTS);
    let padded = blocks * OUTPUTS;
    let valid = (end - y).min(4);
    let u = transformed.ptr::<f32>().cast_const();
    WINOGRAD.with_borrow_mut(|(v, m, sums)| {
        v.resize(36 * TILES * cin, 0.0);
        m.resize(36 * TILES * padded, 0.0);
        sums.resize(4 * 4 * TILES * padded, 0.0);
        let mut reads = [[zeros; 6]; 6];
        for (src, at) in srcs.iter().zip(&mut reads) {
            for (r, read) in at.iter_mut().enumerate().take(valid + 2) {
                *read = src.row(y + r, pitch);
            }
        }
        let tiles = cols.div_ceil(4);
        for t0 in (0..tiles).step_by(TILES) {
            let n = (tiles - t0).min(TILES);
            // SAFETY: the sources hold rows `y..y + valid + 2` (border counted; the rest read
            // `zeros`, as long as a row) and the tiles' columns `4 t..4 t + 6`, inside the pitch
            // (`4 t < cols` and both multiples of 4, so `4 t + 6 <= round_up(cols) + 2`); the
            // buffers are sized above.
            unsafe {
                for t in 0..n {
                    let x = 4 * (t0 + t);
                    for (b, (src, at)) in srcs.iter().zip(&reads).enumerate() {
                        for c in (0..super::BLOCK).step_by(8) {
                            let to = v.as_mut_ptr().add(t * cin + b * super::BLOCK + c);
                            input_transform(at, (x * src.stride + c, src.stride), to, TILES * cin);
                        }
                    }
                }
                for ob in 0..blocks {
                    for xi in 0..36 {
                        let wp = u.add((ob * 36 + xi) * cin * OUTPUTS);
                        for t in (0..n).step_by(PIXELS) {
                            let a = v.as_ptr().add((xi * TILES + t) * cin);
                            let to = m.as_mut_ptr().add((xi * TILES + t) * padded + ob * OUTPUTS);
                            gemm(a, cin, wp, to, padded, (n - t).min(PIXELS), true);
                        }
                    }
                }
                // Back to pixels: `sums[row][pixel][output]`, `4 TILES` pixels a row.
                let row = 4 * TILES * padded;
                for t in 0..n {
                    for o in (0..padded).step_by(8) {
                        let at = m.as_ptr().add(t * padded + o);
                        let to = sums.as_mut_ptr().add(4 * t * padded + o);
                        output_transform(at, TILES * padded, to, padded, row);
                    }
                }
                let pixels = (cols - 4 * t0).min(4 * n);
                for r in 0..valid {
                    let written = out.row(y + r + 1);
                    for p in 0..pixels {
                        for ob in 0..blocks {
                            let at = sums.as_ptr().add(r * row + p * padded + ob * OUTPUTS);
                            epilogue(conv, ob, at, (4 * t0 + p, y + r), written, 1, 0);
                        }
                    }
                }
            }
        }
    });
}

/// F(4x4, 3x3)'s `Bᵀ` applied to six vectors.
#[target_feature(enable = "avx2,fma")]
fn bt(d: [__m256; 6]) -> [__m256; 6] {
    let (add, sub) = (_mm256_add_ps, _mm256_sub_ps);
    let (four, five, two) = (
        _mm256_set1_ps(4.0),
        _mm256_set1_ps(5.0),
        _mm256_set1_ps(2.0),
    );
    let (d12, d34, e12, e43) = (
        add(d[1], d[2]),
        add(d[3], d[4]),
        sub(d[1], d[2]),
        sub(d[4], d[3]),
    );
    let (d13, e42) = (sub(d[1], d[3]), sub(d[4], d[2]));
    [
        _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4])),
        _mm256_fnmadd_ps(four, d12, d34),
        _mm256_fmadd_ps(four, e12, e43),
        _mm256_fnmadd_ps(two, d13, e42),
        _mm256_fmadd_ps(two, d13, e42),
        _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5])),
    ]
}

/// F(4x4, 3x3)'s `Aᵀ` applied to six vectors.
#[target_feature(enable = "avx2,fma")]
fn at(m: [__m256; 6]) -> [__m256; 4] {
    let (add, sub) = (_mm256_add_ps, _mm256_sub_ps);
    let (a, b) = (add(m[1], m[2]), sub(m[1], m[2]));
    let (c, d) = (add(m[3], m[4]), sub(m[3], m[4]));
    [
        add(add(m[0], a), c),
        _mm256_fmadd_ps(_mm256_set1_ps(2.0), d, b),
        _mm256_fmadd_ps(_mm256_set1_ps(4.0), c, a),
        add(_mm256_fmadd_ps(_mm256_set1_ps(8.0), d, b), m[5]),
    ]
}

/// `Bᵀ d B` of a 6x6 tile of 8 channels: row `r` of the tile at `rows[r] + offset`, its columns
/// `stride` values apart; its 36 values `to_stride` floats apart from `to`.
#[target_feature(enable = "avx2,fma")]
unsafe fn input_transform(
    rows: &[*const u16; 6],
    (offset, stride): (usize, usize),
    to: *mut f32,
    to_stride: usize,
) {
    // SAFETY: the caller's: six pixels of 8 channels in each row, 36 places from `to`.
    unsafe {
        // `Bᵀ d`, column by column: `columns[s][i]`.
        let columns: [[__m256; 6]; 6] = std::array::from_fn(|s| {
            bt(std::array::from_fn(|r| {
                widen8(rows[r].add(offset + s * stride))
            }))
        });
        let rows: [[__m256; 6]; 6] =
            std::array::from_fn(|i| std::array::from_fn(|s| columns[s][i]));
        for (i, row) in rows.into_iter().enumerate() {
            for (j, value) in bt(row).into_iter().enumerate() {
                _mm256_storeu_ps(to.add((i * 6 + j) * to_stride), value);
            }
        }
    }
}

/// `Aᵀ m A` of a tile's 36 products of 8 outputs (`stride` floats apart from `from`): its 4x4
/// pixels to `to` (pixels `pixel` floats apart, rows `row_stride`).
#[target_feature(enable = "avx2,fma")]
unsafe fn output_transform(
    from: *const f32,
    stride: usize,
    to: *mut f32,
    pixel: usize,
    row_stride: usize,
) {
    // SAFETY: the caller's: 36 places `stride` apart, and the 4x4 pixels.
    unsafe {
        // `Aᵀ m`, column by column: `columns[j][r]`.
        let columns: [[__m256; 4]; 6] = std::array::from_fn(|j| {
            at(std::array::from_fn(|i| {
                _mm256_loadu_ps(from.add((i * 6 + j) * stride))
            }))
        });
        let rows: [[__m256; 6]; 4] =
            std::array::from_fn(|r| std::array::from_fn(|j| columns[j][r]));
        for (r, row) in rows.into_iter().enumerate() {
            for (p, value) in at(row).into_iter().enumerate() {
                _mm256_storeu_ps(to.add(r * row_stride + p * pixel), value);
            }
        }
    }
}

/// A 3x3 conv's weights (`[cout][cin][3][3]`) transformed for [`winograd_quad`]: `G g Gᵀ` of each
/// input and output channel, laid out `[out block of 16][36 products][input channel of pin][16]`.
/// Written in place (a model's are 270 MB for x4plus: no second copy to fault in).
pub(crate) fn winograd_weights(w: &[f32], cout: usize, cin: usize, pin: usize) -> super::Aligned {
    let len = cout.div_ceil(OUTPUTS) * 36 * pin * OUTPUTS;
    let u = super::Aligned::zeroed(len * 4);
    // SAFETY: `u` holds `len` floats (zeroed, so initialized), aligned, and is a block of its
    // own; the weights are transformed only for the FMA engine, on a CPU that has it.
    unsafe {
        transform_weights(
            w,
            cout,
            cin,
            pin,
            std::slice::from_raw_parts_mut(u.ptr(), len),
        )
    };
    u
}

/// [`winograd_weights`]' arithmetic, 16 outputs side by side (one product's cache line): a
/// model's weights in a tenth of a second, not half a second one by one.
#[target_feature(enable = "avx2,fma")]
fn transform_weights(w: &[f32], cout: usize, cin: usize, pin: usize, u: &mut [f32]) {
    const G: [[f32; 3]; 6] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    for ob in 0..cout.div_ceil(OUTPUTS) {
        let outputs = OUTPUTS.min(cout - ob * OUTPUTS);
        for c in 0..cin {
            // The 3x3 taps of the block's outputs: `g[tap][output]`.
            let mut g = [[0f32; OUTPUTS]; 9];
            for n in 0..outputs {
                let taps = &w[((ob * OUTPUTS + n) * cin + c) * 9..][..9];
                for (tap, &value) in taps.iter().enumerate() {
                    g[tap][n] = value;
                }
            }
            for (i, gi) in G.iter().enumerate() {
                // Row `i` of `G g`.
                let gg: [[f32; OUTPUTS]; 3] = std::array::from_fn(|j| {
                    std::array::from_fn(|n| (0..3).map(|t| gi[t] * g[t * 3 + j][n]).sum())
                });
                for (j, gj) in G.iter().enumerate() {
                    let to = &mut u[((ob * 36 + i * 6 + j) * pin + c) * OUTPUTS..][..OUTPUTS];
                    for (n, to) in to.iter_mut().enumerate() {
                        *to = (0..3).map(|t| gg[t][n] * gj[t]).sum();
                    }
                }
            }
        }
    }
}

/// Eight bf16 values at `from` as fp32.
#[target_feature(enable = "avx2,fma")]
unsafe fn widen8(from: *const u16) -> __m256 {
    // SAFETY: the caller's: 8 u16s at `from`.
    let h = unsafe { _mm_loadu_si128(from.cast()) };
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
}

/// 32 bf16 channels at `from` as fp32 at `to`.
#[target_feature(enable = "avx2,fma")]
unsafe fn widen(from: *const u16, to: *mut f32) {
    for i in 0..4 {
        // SAFETY: the caller's: 32 u16s at `from`, 32 f32s at `to`.
        unsafe { _mm256_storeu_ps(to.add(8 * i), widen8(from.add(8 * i))) };
    }
}

/// `m` (1 to 6) rows of `a` (`cin` floats a row) times `cin` x 16 weights from `wp`, added to
/// the rows of 16 at `to` (`stride` floats apart), or written there (`first`).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn gemm(
    a: *const f32,
    cin: usize,
    wp: *const f32,
    to: *mut f32,
    stride: usize,
    m: usize,
    first: bool,
) {
    // SAFETY: the caller's.
    unsafe {
        match m {
            6 => kernel::<6>(a, cin, wp, to, stride, first),
            5 => kernel::<5>(a, cin, wp, to, stride, first),
            4 => kernel::<4>(a, cin, wp, to, stride, first),
            3 => kernel::<3>(a, cin, wp, to, stride, first),
            2 => kernel::<2>(a, cin, wp, to, stride, first),
            _ => kernel::<1>(a, cin, wp, to, stride, first),
        }
    }
}

/// [`gemm`] of `M` rows in 2 `M` ymm accumulators: two weight registers and a broadcast input,
/// as BLIS's 6x16 sgemm kernel holds them. Not inlined, so that the loop has the registers to
/// itself: each row's pointer and the channel in general registers, every input a broadcast from
/// `row + c` (inlined into its caller's loops, it reloaded `cin` from the stack five times a
/// channel).
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn kernel<const M: usize>(
    a: *const f32,
    cin: usize,
    wp: *const f32,
    to: *mut f32,
    stride: usize,
    first: bool,
) {
    let mut sums = [[_mm256_setzero_ps(); 2]; M];
    let rows: [*const f32; M] = std::array::from_fn(|p| a.wrapping_add(p * cin));
    // SAFETY: the caller's: `a`, the weights and `to` hold what the rows read and write.
    unsafe {
        if !first {
            for (p, sum) in sums.iter_mut().enumerate() {
                sum[0] = _mm256_loadu_ps(to.add(p * stride));
                sum[1] = _mm256_loadu_ps(to.add(p * stride + 8));
            }
        }
        for c in 0..cin {
            let w = wp.add(c * OUTPUTS);
            let w0 = _mm256_loadu_ps(w);
            let w1 = _mm256_loadu_ps(w.add(8));
            for (row, sum) in rows.iter().zip(&mut sums) {
                let b = _mm256_broadcast_ss(&*row.add(c));
                sum[0] = _mm256_fmadd_ps(b, w0, sum[0]);
                sum[1] = _mm256_fmadd_ps(b, w1, sum[1]);
            }
        }
        for (p, sum) in sums.iter().enumerate() {
            _mm256_storeu_ps(to.add(p * stride), sum[0]);
            _mm256_storeu_ps(to.add(p * stride + 8), sum[1]);
        }
    }
}

/// Output pixel `(x, y)`'s outputs `16 ob..16 ob + 16` from their 16 sums at `sums`: the bias,
/// then the conv's `post`; a map's pixel goes to column `step x + px` of the row `written`.
#[target_feature(enable = "avx2,fma")]
unsafe fn epilogue(
    conv: &Conv<'_>,
    ob: usize,
    sums: *const f32,
    (x, y): (usize, usize),
    written: *mut u16,
    step: usize,
    px: usize,
) {
    let Conv {
        layer,
        cols,
        post,
        out,
        trunk,
        ..
    } = *conv;
    let shuffle = &conv.shuffle;
    let first = ob * OUTPUTS;
    // SAFETY: the bias and slopes hold the layer's outputs rounded up to 32; the trunk's buffers
    // hold 64 channels of every pixel, and `out` this pixel's row (the caller's).
    unsafe {
        let bias = layer.bias.as_ptr().add(first);
        let mut v = [
            _mm256_add_ps(_mm256_loadu_ps(sums), _mm256_loadu_ps(bias)),
            _mm256_add_ps(_mm256_loadu_ps(sums.add(8)), _mm256_loadu_ps(bias.add(8))),
        ];
        let (slope, zero) = (_mm256_set1_ps(SLOPE), _mm256_setzero_ps());
        let at = (y * cols + x) * 64 + first;
        match post {
            Post::LRelu => v = v.map(|v| _mm256_max_ps(v, _mm256_mul_ps(v, slope))),
            Post::PRelu => {
                for (i, v) in v.iter_mut().enumerate() {
                    let s = _mm256_loadu_ps(layer.slopes.as_ptr().add(first + 8 * i));
                    *v = _mm256_fmadd_ps(s, _mm256_min_ps(*v, zero), _mm256_max_ps(*v, zero));
                }
            }
            Post::First => {
                for to in [trunk.x, trunk.rrdb, trunk.features] {
                    _mm256_storeu_ps(to.add(at), v[0]);
                    _mm256_storeu_ps(to.add(at + 8), v[1]);
                }
            }
            Post::Rdb | Post::Rrdb => {
                for (i, v) in v.iter_mut().enumerate() {
                    let at = at + 8 * i;
                    *v = _mm256_fmadd_ps(*v, slope, _mm256_loadu_ps(trunk.x.add(at)));
                    if post == Post::Rrdb {
                        *v = _mm256_fmadd_ps(*v, slope, _mm256_loadu_ps(trunk.rrdb.add(at)));
                        _mm256_storeu_ps(trunk.rrdb.add(at), *v);
                    }
                    _mm256_storeu_ps(trunk.x.add(at), *v);
                }
            }
            Post::Body => {
                for (i, v) in v.iter_mut().enumerate() {
                    *v = _mm256_add_ps(*v, _mm256_loadu_ps(trunk.features.add(at + 8 * i)));
                }
            }
            Post::Last => {
                if ob == 0 {
                    let mut values = [0f32; 8];
                    _mm256_storeu_ps(values.as_mut_ptr(), v[0]);
                    for (c, value) in values.iter().take(3).enumerate() {
                        *trunk.out.add((c * trunk.out_rows + y) * cols + x) = *value;
                    }
                }
                return;
            }
            Post::Shuffle => {
                let mut values = [0f32; OUTPUTS];
                _mm256_storeu_ps(values.as_mut_ptr(), v[0]);
                _mm256_storeu_ps(values.as_mut_ptr().add(8), v[1]);
                let s = trunk.scale;
                let (to, from) = (y * s * cols * s + x * s, y * cols + x);
                let places = &shuffle[first.min(shuffle.len())..];
                for (value, &(out_at, in_at)) in values.iter().zip(places) {
                    *trunk.out.add(to + out_at) = value + *trunk.input.add(from + in_at);
                }
                return;
            }
        }
        let to = written.add((step * x + px + 1) * out.stride + first);
        _mm256_storeu_si256(to.cast(), to_bf16(v[0], v[1]));
    }
}

/// Sixteen floats to bf16, rounded to nearest even.
#[target_feature(enable = "avx2,fma")]
fn to_bf16(a: __m256, b: __m256) -> __m256i {
    let round = |v: __m256| {
        let u = _mm256_castps_si256(v);
        let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(u), _mm256_set1_epi32(1));
        let rounded = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd);
        _mm256_srli_epi32::<16>(rounded)
    };
    // packus interleaves the 128-bit lanes: a0 b0 a1 b1, put back in order.
    _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(round(a), round(b)))
}
