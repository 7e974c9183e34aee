//! Checking an uploaded image before any work: the type by its magic bytes, the dimensions from the
//! header alone (a decompression bomb is refused before decoding), then a decode under memory
//! limits. Every refusal is a typed error: `invalid_image` or `image_too_large`.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader};

/// What an image may be.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_side: u32,
    pub max_pixels: u64,
}

impl Default for Limits {
    /// 20 MiB, 12,000 px a side, 40 megapixels.
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            max_side: 12_000,
            max_pixels: 40_000_000,
        }
    }
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
}

impl ImageError {
    /// The job error type.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_image",
            Self::TooLarge(_) => "image_too_large",
        }
    }
}

/// An image's format and size, read from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inspected {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

/// Reads the format and dimensions without decoding pixels, and checks them against `limits`.
pub fn inspect(bytes: &[u8], limits: &Limits) -> Result<Inspected, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Invalid("the file is empty".into()));
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ImageError::TooLarge(format!(
            "the file is over {} bytes",
            limits.max_bytes
        )));
    }
    let format = image::guess_format(bytes)
        .map_err(|_| ImageError::Invalid("not a JPEG, PNG or WebP image".into()))?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP
    ) {
        return Err(ImageError::Invalid(format!(
            "{format:?} images are not supported; send JPEG, PNG or WebP"
        )));
    }
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| match e {
            // The header promises more than the decoder's default limits: a bomb.
            image::ImageError::Limits(_) => {
                ImageError::TooLarge("the image header promises too many pixels".into())
            }
            other => ImageError::Invalid(format!("the image header is unreadable: {other}")),
        })?;
    if width == 0 || height == 0 {
        return Err(ImageError::Invalid("the image has no pixels".into()));
    }
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(ImageError::TooLarge(format!(
            "{width}x{height} is over the limit of {} px a side and {} pixels",
            limits.max_side, limits.max_pixels
        )));
    }
    // Lenient JPEG decoders fill a cut-off scan with grey; a complete JPEG ends its last scan with
    // the end-of-image marker (entropy-coded data is byte-stuffed, so only a real marker reads FF D9).
    if format == ImageFormat::Jpeg {
        let last_scan = bytes
            .windows(2)
            .rposition(|w| w == [0xFF, 0xDA])
            .unwrap_or(0);
        if !bytes[last_scan..].windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err(ImageError::Invalid(
                "the JPEG is truncated (no end-of-image marker)".into(),
            ));
        }
    }
    if format == ImageFormat::Jpeg && jpeg_components(bytes) == Some(4) {
        return Err(ImageError::Invalid(
            "CMYK JPEGs are not supported; save the photo as RGB".into(),
        ));
    }
    Ok(Inspected {
        format,
        width,
        height,
    })
}

/// The component count of a JPEG's frame header (1 gray, 3 YCbCr, 4 CMYK/YCCK), by walking the
/// marker segments up to the first start of frame.
fn jpeg_components(bytes: &[u8]) -> Option<u8> {
    let mut at = 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return None;
        }
        let marker = bytes[at + 1];
        if marker == 0xFF {
            at += 1;
            continue;
        }
        let length = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let start_of_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if start_of_frame {
            return bytes.get(at + 9).copied();
        }
        if marker == 0xDA {
            return None;
        }
        at += 2 + length;
    }
    None
}

/// Inspects, then decodes with the decoder's own allocation capped to what the header promised.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(Inspected, DynamicImage), ImageError> {
    let inspected = inspect(bytes, limits)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), inspected.format);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // Eight bytes a pixel covers 16-bit RGBA; the slack is for decoder buffers.
    decoder_limits.max_alloc =
        Some(u64::from(inspected.width) * u64::from(inspected.height) * 8 + 64 * 1024 * 1024);
    reader.limits(decoder_limits);
    let refused = |e| match e {
        image::ImageError::Limits(_) => {
            ImageError::TooLarge("the image needs more memory than allowed".into())
        }
        other => ImageError::Invalid(format!("the image is truncated or corrupt: {other}")),
    };
    let mut decoder = reader.into_decoder().map_err(refused)?;
    // A camera's EXIF orientation is applied, so the photo is upright before any work.
    let orientation = image::ImageDecoder::orientation(&mut decoder)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(refused)?;
    image.apply_orientation(orientation);
    Ok((inspected, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        }));
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Jpeg).expect("encode");
        out.into_inner()
    }

    #[test]
    fn a_real_image_passes_and_decodes() {
        let bytes = jpeg(64, 48);
        let (inspected, image) = decode(&bytes, &Limits::default()).expect("valid");
        assert_eq!(
            (inspected.format, inspected.width, inspected.height),
            (ImageFormat::Jpeg, 64, 48)
        );
        assert_eq!((image.width(), image.height()), (64, 48));
    }

    #[test]
    fn bad_files_are_invalid_images() {
        let limits = Limits::default();
        let truncated = {
            let bytes = jpeg(64, 48);
            bytes[..bytes.len() / 2].to_vec()
        };
        for (name, bytes) in [
            ("empty", Vec::new()),
            ("text", b"hello, this is not an image".to_vec()),
            ("truncated jpeg", truncated),
            (
                "cmyk jpeg",
                include_bytes!("../../tests/fixtures/images/cmyk.jpg").to_vec(),
            ),
            (
                "animated gif from a camera app",
                include_bytes!("../../tests/fixtures/images/animated.gif").to_vec(),
            ),
            (
                "animated gif",
                b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            ),
        ] {
            let err = decode(&bytes, &limits).expect_err(name);
            assert_eq!(err.kind(), "invalid_image", "{name}: {err}");
        }
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 4x2 JPEG whose EXIF says "rotate 90° clockwise" decodes as 2x4.
        let mut bytes = jpeg(4, 2);
        let exif: &[u8] =
            b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
        let mut segment = vec![0xFF, 0xE1];
        segment.extend(u16::try_from(exif.len() + 2).expect("small").to_be_bytes());
        segment.extend(exif);
        bytes.splice(2..2, segment);
        let (_, image) = decode(&bytes, &Limits::default()).expect("valid");
        assert_eq!((image.width(), image.height()), (2, 4));
    }

    #[test]
    fn a_bomb_is_refused_from_its_header_before_decoding() {
        let err = inspect(
            include_bytes!("../../tests/fixtures/images/bomb-100000.png"),
            &Limits::default(),
        )
        .expect_err("too large");
        assert_eq!(err.kind(), "image_too_large");
        let small = Limits {
            max_bytes: 100,
            ..Limits::default()
        };
        assert_eq!(
            inspect(&jpeg(64, 48), &small).expect_err("bytes").kind(),
            "image_too_large"
        );
    }
}
