//! Best-cut: the sharpest of several photos, by PetCam's measure, computed exactly as OpenCV does:
//! `cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()` — OpenCV's fixed-point
//! BT.601 gray, the 3x3 Laplacian with reflect-101 borders, and the population variance. The sums
//! are exact integers, so the score is exact up to the final division.

use image::DynamicImage;

/// OpenCV's 8-bit RGB → gray: BT.601 weights in 15-bit fixed point (as OpenCV 4 computes it;
/// checked pixel for pixel against `cv2.cvtColor`), rounded.
pub fn gray(image: &DynamicImage) -> (Vec<u8>, usize, usize) {
    let rgb = image.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    let gray = rgb
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            // Fits in u8: the weights sum to 1 << 15.
            ((r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15) as u8
        })
        .collect();
    (gray, width, height)
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
    let converted;
    let rgb = match image.as_rgb8() {
        Some(rgb) => rgb,
        None => {
            converted = image.to_rgb8();
            &converted
        }
    };
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width < 2 || height < 2 {
        let (gray, width, height) = gray(image);
        return laplacian_variance(&gray, width, height);
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(height.div_ceil(64));
    let band = height.div_ceil(threads);
    let raw = rgb.as_raw();
    let (sum, sum_sq) = std::thread::scope(|scope| {
        let bands: Vec<_> = (0..threads)
            .map(|t| {
                let rows = t * band..((t + 1) * band).min(height);
                scope.spawn(move || band_sums(raw, width, height, rows))
            })
            .collect();
        bands
            .into_iter()
            .map(|b| b.join().unwrap_or((0, 0)))
            .fold((0i64, 0i64), |(s, q), (bs, bq)| (s + bs, q + bq))
    });
    variance(i128::from(sum), i128::from(sum_sq), width * height)
}

/// Var = (n·Σx² − (Σx)²) / n², exact in integers until this division.
fn variance(sum: i128, sum_sq: i128, pixels: usize) -> f64 {
    let n = pixels as i128;
    ((n * sum_sq - sum * sum) as f64) / ((n * n) as f64)
}

/// One gray row of packed RGB, as [`gray`] computes it.
fn gray_row(rgb: &[u8], out: &mut [i32]) {
    for (g, p) in out.iter_mut().zip(rgb.chunks_exact(3)) {
        let (r, gr, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
        *g = (r * 9798 + gr * 19235 + b * 3735 + (1 << 14)) >> 15;
    }
}

/// Σ and Σ² of the Laplacian over `rows` (width and height at least 2). |value| ≤ 2040, so one
/// pixel adds at most 4.2e6 to Σ²: i64 holds any image the decoder accepts (40 MP).
fn band_sums(rgb: &[u8], width: usize, height: usize, rows: std::ops::Range<usize>) -> (i64, i64) {
    let stride = width * 3;
    let row_of = |y: usize, out: &mut Vec<i32>| gray_row(&rgb[y * stride..(y + 1) * stride], out);
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
        let at = |x: usize, left: usize, right: usize| {
            up[x] + down[x] + mid[left] + mid[right] - 4 * mid[x]
        };
        // The edges mirror (reflect-101); the interior needs no index arithmetic.
        let first = at(0, 1, 1);
        let last = at(width - 1, width - 2, width - 2);
        let (mut s, mut q) = (
            i64::from(first) + i64::from(last),
            i64::from(first * first) + i64::from(last * last),
        );
        for ((u, d), w3) in up[1..width - 1]
            .iter()
            .zip(&down[1..width - 1])
            .zip(mid.windows(3))
        {
            let v = u + d + w3[0] + w3[2] - 4 * w3[1];
            s += i64::from(v);
            q += i64::from(v * v);
        }
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

    #[test]
    fn a_flat_image_has_no_sharpness() {
        assert_eq!(laplacian_variance(&[7; 12], 4, 3), 0.0);
    }
}
