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
    let n = (width * height) as i128;
    // Var = (n·Σx² − (Σx)²) / n², exact in integers until this division.
    ((n * sum_sq - sum * sum) as f64) / ((n * n) as f64)
}

/// PetCam's sharpness of an image.
pub fn sharpness(image: &DynamicImage) -> f64 {
    let (gray, width, height) = gray(image);
    laplacian_variance(&gray, width, height)
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
    fn a_flat_image_has_no_sharpness() {
        assert_eq!(laplacian_variance(&[7; 12], 4, 3), 0.0);
    }
}
