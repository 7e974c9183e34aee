//! Photo files in S3: reading an upload with every check before any work, encoding results, and
//! storing artifacts under the owner's `photos/` prefix.

use std::io::Cursor;

use anyhow::Context as _;
use aws_sdk_s3::primitives::ByteStream;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ImageFormat};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

use crate::images::{self, Inspected, Limits};
use crate::jobs::executor::JobError;
use crate::media::{MAX_UPLOAD_BYTES, bucket, upload_size};
use crate::photos::kinds::Format;
use crate::state::State;

/// How much of an upload is read to find its dimensions: JPEG puts its frame header after EXIF,
/// ICC and XMP segments, which fit in this in practice.
const HEADER_BYTES: u64 = 512 * 1024;

/// An upload's format and dimensions from its first bytes (a ranged read, nothing decoded):
/// `Ok(None)` when it is missing, not the owner's, or its header is not readable there (the
/// worker then decides); an error when it is over the per-image limits.
pub async fn header(
    state: &State,
    user_id: &str,
    key: &str,
) -> Result<Option<Inspected>, crate::error::ApiError> {
    if !crate::media::owns(user_id, key) {
        return Ok(None);
    }
    let object = state
        .s3
        .get_object()
        .bucket(bucket(state)?)
        .key(key)
        .range(format!("bytes=0-{}", HEADER_BYTES - 1))
        .send()
        .await;
    let object = match object {
        Ok(object) => object,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(err) => {
            return Err(crate::error::ApiError::Internal(
                anyhow::Error::new(err).context("reading an upload's header"),
            ));
        }
    };
    let bytes = object
        .body
        .collect()
        .await
        .context("reading an upload's header")?
        .to_vec();
    let limits = Limits {
        max_bytes: HEADER_BYTES,
        ..Limits::default()
    };
    match images::inspect(&bytes, &limits) {
        Ok(inspected) => Ok(Some(inspected)),
        Err(images::ImageError::TooLarge(message)) => Err(crate::error::ApiError::invalid(
            "upload_keys",
            format!("{key}: {message}"),
        )),
        Err(_) => Ok(None),
    }
}

/// A stored file of a photo.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Artifact {
    pub key: String,
    pub content_type: String,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    pub sha256: String,
}

/// A checked, decoded upload.
pub struct Loaded {
    pub key: String,
    pub bytes: Vec<u8>,
    pub inspected: Inspected,
    /// Upright (EXIF orientation applied).
    pub image: DynamicImage,
}

/// Reads and checks one upload: it exists and is the caller's (`not_found`), is not over the size
/// limit (`image_too_large`, before it is read), is an image by its magic bytes, and decodes within
/// the pixel limits (`invalid_image` / `image_too_large`).
pub async fn load(state: &State, user_id: &str, key: &str) -> Result<Loaded, JobError> {
    let missing = || JobError::permanent("not_found", format!("no upload {key}"));
    let size = upload_size(state, user_id, key)
        .await?
        .ok_or_else(missing)?;
    if size > MAX_UPLOAD_BYTES {
        return Err(JobError::permanent(
            "image_too_large",
            format!("{key} is over {MAX_UPLOAD_BYTES} bytes"),
        ));
    }
    let object = state
        .s3
        .get_object()
        .bucket(bucket(state)?)
        .key(key)
        .send()
        .await
        .context("reading an upload")?;
    let bytes = object
        .body
        .collect()
        .await
        .context("reading an upload's body")?
        .to_vec();
    let limits = Limits {
        max_bytes: MAX_UPLOAD_BYTES,
        ..Limits::default()
    };
    let decoded = tokio::task::spawn_blocking(move || {
        images::decode(&bytes, &limits).map(|(inspected, image)| (bytes, inspected, image))
    })
    .await
    .context("decoding")?;
    let (bytes, inspected, image) =
        decoded.map_err(|e| JobError::permanent(e.kind(), format!("{key}: {e}")))?;
    Ok(Loaded {
        key: key.to_owned(),
        bytes,
        inspected,
        image,
    })
}

fn content_type(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "image/png",
        ImageFormat::WebP => "image/webp",
        _ => "image/jpeg",
    }
}

fn extension(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        _ => "jpg",
    }
}

/// Encodes a result. `Auto` keeps the input's format; alpha always gives PNG (as Real-ESRGAN
/// does); JPEG and WebP are 8-bit, PNG keeps 16 bits.
pub fn encode(
    image: &DynamicImage,
    source: ImageFormat,
    format: Format,
    quality: u8,
) -> anyhow::Result<(ImageFormat, Vec<u8>)> {
    let wanted = match format {
        Format::Auto => source,
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Png => ImageFormat::Png,
        Format::Webp => ImageFormat::WebP,
    };
    let alpha = image.color().has_alpha();
    let chosen = if alpha && wanted == ImageFormat::Jpeg {
        ImageFormat::Png
    } else {
        wanted
    };
    let mut out = Cursor::new(Vec::new());
    match chosen {
        ImageFormat::Png => image.write_with_encoder(PngEncoder::new(&mut out))?,
        ImageFormat::WebP => {
            let eight = if alpha {
                DynamicImage::ImageRgba8(image.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(image.to_rgb8())
            };
            eight.write_with_encoder(WebPEncoder::new_lossless(&mut out))?;
        }
        _ => {
            let eight = if image.color().has_color() {
                DynamicImage::ImageRgb8(image.to_rgb8())
            } else {
                DynamicImage::ImageLuma8(image.to_luma8())
            };
            eight.write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality))?;
        }
    }
    Ok((chosen, out.into_inner()))
}

/// The key of a photo's file.
pub fn photo_key(user_id: &str, photo_id: &str, variant: &str, format: ImageFormat) -> String {
    format!(
        "photos/{user_id}/{photo_id}/{variant}.{}",
        extension(format)
    )
}

/// The prefix of every file of a photo.
pub fn photo_prefix(user_id: &str, photo_id: &str) -> String {
    crate::media::output_prefix(crate::media::Outputs::Photos, user_id, photo_id)
}

/// Stores `bytes` at `key` and describes it.
pub async fn store(
    state: &State,
    key: String,
    format: ImageFormat,
    bytes: Vec<u8>,
    (width, height): (u32, u32),
) -> Result<Artifact, JobError> {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let length = bytes.len() as u64;
    state
        .s3
        .put_object()
        .bucket(bucket(state)?)
        .key(&key)
        .content_type(content_type(format))
        .metadata("sha256", &sha256)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .context("storing a photo file")?;
    Ok(Artifact {
        key,
        content_type: content_type(format).to_owned(),
        bytes: length,
        width,
        height,
        sha256,
    })
}

/// Keeps the original upload's bytes as the photo's `original` (uploads expire after 7 days).
pub async fn keep_original(
    state: &State,
    user_id: &str,
    photo_id: &str,
    format: ImageFormat,
    bytes: Vec<u8>,
    size: (u32, u32),
) -> Result<Artifact, JobError> {
    let key = photo_key(user_id, photo_id, "original", format);
    store(state, key, format, bytes, size).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_forces_png_and_jpeg_drops_to_eight_bits() {
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::new(4, 4));
        let (format, _) = encode(&rgba, ImageFormat::Jpeg, Format::Auto, 90).expect("encode");
        assert_eq!(format, ImageFormat::Png);
        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::new(4, 4));
        let (format, bytes) = encode(&deep, ImageFormat::Png, Format::Jpeg, 90).expect("encode");
        assert_eq!(format, ImageFormat::Jpeg);
        assert_eq!(
            image::guess_format(&bytes).expect("format"),
            ImageFormat::Jpeg
        );
        let (format, bytes) = encode(&deep, ImageFormat::Png, Format::Auto, 90).expect("encode");
        assert_eq!(format, ImageFormat::Png);
        let back = image::load_from_memory(&bytes).expect("decode");
        assert!(matches!(back, DynamicImage::ImageRgb16(_)));
    }
}
