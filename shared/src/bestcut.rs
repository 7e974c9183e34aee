//! Best-cut: the sharpest of several photos, by PetCam's measure, computed exactly as OpenCV does:
//! `cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()` — OpenCV's fixed-point
//! BT.601 gray, the 3x3 Laplacian with reflect-101 borders, and the population variance. The sums
//! are exact integers, so the score is exact up to the final division.

use image::{DynamicImage, ImageBuffer, Rgb};

use crate::images::{self, Decoded, ImageError, Inspected, Limits};

/// OpenCV's 8-bit RGB → gray: BT.601 weights in 15-bit fixed point (as OpenCV 4 computes it;
/// checked pixel for pixel against `cv2.cvtColor`), rounded.
pub fn gray(image: &DynamicImage) -> (Vec<u8>, usize, usize) {
    let rgb = image.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    (gray_bytes(rgb.as_raw()), width, height)
}

/// Reflect-101 (`gfedcb|abcdefgh|gfedcba`), as OpenCV's default border.
fn reflect101(index: isize, len: usize) -> usize {
    let len = len as isize;
    if len == 1 {
        return 0;
    }
    let mut i = index;
    if i < 0 {
        i = -i;
    }
    if i >= len {
        i = 2 * (len - 1) - i;
    }
    i as usize
}

/// The variance of the 3x3 Laplacian of an 8-bit gray image (row-major, `width` x `height`).
pub fn laplacian_variance(gray: &[u8], width: usize, height: usize) -> f64 {
    if width == 0 || height == 0 || gray.len() != width * height {
        return 0.0;
    }
    let mut sum: i128 = 0;
    let mut sum_sq: i128 = 0;
    for y in 0..height {
        let up = reflect101(y as isize - 1, height) * width;
        let row = y * width;
        let down = reflect101(y as isize + 1, height) * width;
        for x in 0..width {
            let left = reflect101(x as isize - 1, width);
            let right = reflect101(x as isize + 1, width);
            let value = i64::from(gray[up + x])
                + i64::from(gray[down + x])
                + i64::from(gray[row + left])
                + i64::from(gray[row + right])
                - 4 * i64::from(gray[row + x]);
            sum += i128::from(value);
            sum_sq += i128::from(value * value);
        }
    }
    variance(sum, sum_sq, width * height)
}

/// PetCam's sharpness of an image: the same exact integer sums as [`gray`] followed by
/// [`laplacian_variance`], in one pass over the RGB rows (three gray rows live at a time) and on
/// every core, in bands of rows.
pub fn sharpness(image: &DynamicImage) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    match image.as_rgb8() {
        Some(rgb) => sharpness_of_rgb(rgb, threads),
        None => sharpness_of_rgb(&image.to_rgb8(), threads),
    }
}

/// [`sharpness`] of 8-bit RGB pixels, in bands of rows on up to `threads` threads (one: the
/// calling thread alone, for a caller that scores several photos at once).
pub fn sharpness_of_rgb<C>(rgb: &ImageBuffer<Rgb<u8>, C>, threads: usize) -> f64
where
    C: std::ops::Deref<Target = [u8]>,
{
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    let raw: &[u8] = rgb.as_raw();
    let raw = &raw[..width * height * 3];
    if width < 2 || height < 2 {
        return laplacian_variance(&gray_bytes(raw), width, height);
    }
    let threads = threads.clamp(1, height.div_ceil(64));
    let band = height.div_ceil(threads);
    // The loops below are plain Rust; pulp compiles them once more for AVX2 (and picks that copy
    // when the CPU has it), where the portable build may only assume SSE2.
    let sums = |rows: std::ops::Range<usize>| {
        pulp::Arch::new().dispatch(|| band_sums(raw, width, height, rows))
    };
    let (sum, sum_sq) = if threads == 1 {
        sums(0..height)
    } else {
        std::thread::scope(|scope| {
            let bands: Vec<_> = (0..threads)
                .map(|t| {
                    let rows = t * band..((t + 1) * band).min(height);
                    scope.spawn(move || sums(rows))
                })
                .collect();
            bands
                .into_iter()
                .map(|b| b.join().unwrap_or((0, 0)))
                .fold((0i64, 0i64), |(s, q), (bs, bq)| (s + bs, q + bq))
        })
    };
    variance(i128::from(sum), i128::from(sum_sq), width * height)
}

/// Reads and scores one encoded photo on the calling thread, decoding into `scratch` (kept from
/// one photo to the next). The EXIF orientation is not applied: the Laplacian's kernel and its
/// mirrored border are the same under every rotation and flip, so the score is too.
pub fn score_encoded(
    bytes: &[u8],
    limits: &Limits,
    scratch: &mut Vec<u8>,
) -> Result<(Inspected, (u32, u32), f64), ImageError> {
    let (inspected, upright, decoded) = images::decode_reusing(bytes, limits, scratch)?;
    let score = match decoded {
        Decoded::Rgb8(rgb) => sharpness_of_rgb(&rgb, 1),
        Decoded::Other(image) => sharpness_of_rgb(&image.to_rgb8(), 1),
    };
    Ok((inspected, upright, score))
}

/// Var = (n·Σx² − (Σx)²) / n², exact in integers until this division.
fn variance(sum: i128, sum_sq: i128, pixels: usize) -> f64 {
    let n = pixels as i128;
    ((n * sum_sq - sum * sum) as f64) / ((n * n) as f64)
}

/// OpenCV's gray of one packed RGB pixel, as [`gray`] computes it.
#[inline(always)]
fn gray_of(p: &[u8]) -> i32 {
    let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
    (r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15
}

/// The gray of packed RGB, a byte a pixel (it fits: the weights sum to 1 << 15).
fn gray_bytes(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3).map(|p| gray_of(p) as u8).collect()
}

/// One gray row of packed RGB. Gray fits in i16, and so does the Laplacian of three such rows
/// (|value| ≤ 1020), which lets the vector loops work on 16-bit lanes.
#[inline(always)]
fn gray_row(rgb: &[u8], out: &mut [i16]) {
    for (g, p) in out.iter_mut().zip(rgb.chunks_exact(3)) {
        *g = gray_of(p) as i16;
    }
}

/// Pixels summed in 32 bits before they are added to the 64-bit totals: 2,048 squares of at most
/// 1020² stay under 2³¹.
const CHUNK: usize = 2048;

/// Σ and Σ² of the Laplacian along the middle row of three (each at least 2 wide).
#[inline(always)]
fn row_sums(up: &[i16], mid: &[i16], down: &[i16]) -> (i64, i64) {
    let width = mid.len();
    let at = |x: usize, left: usize, right: usize| {
        i32::from(up[x]) + i32::from(down[x]) + i32::from(mid[left]) + i32::from(mid[right])
            - 4 * i32::from(mid[x])
    };
    // The edges mirror (reflect-101); the interior needs no index arithmetic.
    let first = at(0, 1, 1);
    let last = at(width - 1, width - 2, width - 2);
    let (mut sum, mut sum_sq) = (
        i64::from(first) + i64::from(last),
        i64::from(first * first) + i64::from(last * last),
    );
    let inner = 1..width - 1;
    let (up, down) = (&up[inner.clone()], &down[inner.clone()]);
    let (left, centre, right) = (&mid[..width - 2], &mid[inner], &mid[2..]);
    let mut start = 0;
    while start < centre.len() {
        let end = (start + CHUNK).min(centre.len());
        let (mut s, mut q) = (0i32, 0i32);
        for ((((u, d), l), c), r) in up[start..end]
            .iter()
            .zip(&down[start..end])
            .zip(&left[start..end])
            .zip(&centre[start..end])
            .zip(&right[start..end])
        {
            let v = i32::from(u + d + l + r - 4 * c);
            s += v;
            q += v * v;
        }
        sum += i64::from(s);
        sum_sq += i64::from(q);
        start = end;
    }
    (sum, sum_sq)
}

/// Σ and Σ² of the Laplacian over `rows` (width and height at least 2). One pixel adds at most
/// 1.04e6 to Σ²: i64 holds any image the decoder accepts (40 MP).
#[inline(always)]
fn band_sums(rgb: &[u8], width: usize, height: usize, rows: std::ops::Range<usize>) -> (i64, i64) {
    let stride = width * 3;
    let row_of = |y: usize, out: &mut Vec<i16>| gray_row(&rgb[y * stride..(y + 1) * stride], out);
    let reflect = |y: isize| reflect101(y, height);
    let (mut up, mut mid, mut down) = (vec![0; width], vec![0; width], vec![0; width]);
    let (mut sum, mut sum_sq) = (0i64, 0i64);
    for y in rows.clone() {
        if y == rows.start {
            row_of(reflect(y as isize - 1), &mut up);
            row_of(y, &mut mid);
        } else {
            // Roll the window down one row: the old middle is the new top.
            std::mem::swap(&mut up, &mut mid);
            std::mem::swap(&mut mid, &mut down);
        }
        row_of(reflect(y as isize + 1), &mut down);
        let (s, q) = row_sums(&up, &mid, &down);
        sum += s;
        sum_sq += q;
    }
    (sum, sum_sq)
}

/// The index of the sharpest image and every score, in input order. Ties go to the first.
pub fn best_cut(images: &[DynamicImage]) -> Option<(usize, Vec<f64>)> {
    let scores: Vec<f64> = images.iter().map(sharpness).collect();
    let best = scores
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, &s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((i, s)),
        })?;
    Some((best.0, scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect101_mirrors_without_repeating_the_edge() {
        assert_eq!(reflect101(-1, 5), 1);
        assert_eq!(reflect101(5, 5), 3);
        assert_eq!(reflect101(2, 5), 2);
        assert_eq!(reflect101(-1, 1), 0);
    }

    #[test]
    fn the_fused_pass_gives_the_exact_scores_of_the_two_step_one() {
        let mut seed = 0x9E37_79B9_u32;
        for (width, height) in [(2, 2), (3, 2), (2, 7), (17, 5), (64, 130), (301, 257)] {
            let rgb = image::RgbImage::from_fn(width, height, |_, _| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                image::Rgb([seed as u8, (seed >> 8) as u8, (seed >> 16) as u8])
            });
            let image = DynamicImage::ImageRgb8(rgb);
            let (gray, w, h) = gray(&image);
            assert_eq!(
                sharpness(&image),
                laplacian_variance(&gray, w, h),
                "{width}x{height}"
            );
        }
    }

    /// Random 8-bit RGB, the same for the same seed.
    fn noise(width: u32, height: u32, mut seed: u32) -> image::RgbImage {
        image::RgbImage::from_fn(width, height, |_, _| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            image::Rgb([seed as u8, (seed >> 8) as u8, (seed >> 16) as u8])
        })
    }

    #[test]
    fn rows_wider_than_a_chunk_at_the_largest_laplacian_stay_exact() {
        // A black and white checkerboard: |Laplacian| = 1020 at every pixel, the most a square
        // can add, over rows of several 2,048-pixel chunks and a short last one.
        let board = image::RgbImage::from_fn(5000, 3, |x, y| {
            image::Rgb([if (x + y) % 2 == 0 { 255 } else { 0 }; 3])
        });
        let image = DynamicImage::ImageRgb8(board);
        let (pixels, w, h) = gray(&image);
        let expected = laplacian_variance(&pixels, w, h);
        assert!(expected > 1e6, "{expected}");
        assert_eq!(sharpness(&image), expected);
        let image = DynamicImage::ImageRgb8(noise(4099, 9, 7));
        let (pixels, w, h) = gray(&image);
        assert_eq!(sharpness(&image), laplacian_variance(&pixels, w, h));
    }

    #[test]
    fn the_score_is_the_same_in_every_orientation() {
        // Why best-cut may score a photo before its EXIF orientation is applied.
        let image = DynamicImage::ImageRgb8(noise(37, 23, 3));
        let score = sharpness(&image);
        for turned in [
            image.rotate90(),
            image.rotate180(),
            image.rotate270(),
            image.fliph(),
            image.flipv(),
            image.rotate90().fliph(),
        ] {
            assert_eq!(sharpness(&turned), score);
        }
    }

    #[test]
    fn an_encoded_photo_scores_as_its_decoded_image_in_a_reused_buffer() {
        let encode = |image: &DynamicImage, format| {
            let mut bytes = std::io::Cursor::new(Vec::new());
            image.write_to(&mut bytes, format).expect("encode");
            bytes.into_inner()
        };
        let large = DynamicImage::ImageRgb8(noise(300, 200, 11));
        let small = DynamicImage::ImageRgb8(noise(40, 30, 5));
        let gray_alpha =
            DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_fn(50, 60, |x, y| {
                image::LumaA([(x * 7 + y * 13) as u8, 200])
            }));
        let photos = [
            encode(&large, image::ImageFormat::Jpeg),
            encode(&small, image::ImageFormat::Png),
            encode(&gray_alpha, image::ImageFormat::Png),
            encode(&large, image::ImageFormat::Png),
        ];
        let mut buffer = Vec::new();
        for bytes in &photos {
            let decoded = image::load_from_memory(bytes).expect("decode");
            let (inspected, upright, score) =
                score_encoded(bytes, &Limits::default(), &mut buffer).expect("score");
            assert_eq!((inspected.width, inspected.height), upright);
            assert_eq!(upright, (decoded.width(), decoded.height()));
            assert_eq!(score, sharpness(&decoded));
        }
        // The buffer grew to the largest photo and was kept.
        assert!(buffer.len() >= 300 * 200 * 3);
        let refused = score_encoded(b"not an image", &Limits::default(), &mut buffer);
        assert!(
            matches!(refused, Err(ImageError::Invalid(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_flat_image_has_no_sharpness() {
        assert_eq!(laplacian_variance(&[7; 12], 4, 3), 0.0);
    }
}
