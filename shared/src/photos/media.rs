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
    let bytes = fetch(state, user_id, key).await?;
    decode(key, bytes).await
}

/// Reads one upload's bytes: it exists and is the caller's (`not_found`) and is not over the size
/// limit (`image_too_large`, checked before it is read).
pub async fn fetch(state: &State, user_id: &str, key: &str) -> Result<Vec<u8>, JobError> {
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
    Ok(object
        .body
        .collect()
        .await
        .context("reading an upload's body")?
        .to_vec())
}

/// Decodes an upload [`fetch`] read, off the async threads, upright.
pub async fn decode(key: &str, bytes: Vec<u8>) -> Result<Loaded, JobError> {
    let decoded = tokio::task::spawn_blocking(move || {
        images::decode(&bytes, &upload_limits()).map(|(inspected, image)| (bytes, inspected, image))
    })
    .await
    .context("decoding")?;
    let (bytes, inspected, image) = decoded.map_err(|e| decode_error(key, &e))?;
    Ok(Loaded {
        key: key.to_owned(),
        bytes,
        inspected,
        image,
    })
}

/// What an upload may be when a job decodes it.
pub fn upload_limits() -> Limits {
    Limits {
        max_bytes: MAX_UPLOAD_BYTES,
        ..Limits::default()
    }
}

/// A refused upload, as the job reports it (`invalid_image` / `image_too_large`).
pub fn decode_error(key: &str, error: &images::ImageError) -> JobError {
    JobError::permanent(error.kind(), format!("{key}: {error}"))
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

/// The format a result is stored in: `Auto` keeps the input's format; alpha always gives PNG (as
/// Real-ESRGAN does).
pub fn chosen_format(source: ImageFormat, format: Format, alpha: bool) -> ImageFormat {
    let wanted = match format {
        Format::Auto => source,
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Png => ImageFormat::Png,
        Format::Webp => ImageFormat::WebP,
    };
    match wanted {
        ImageFormat::Jpeg if alpha => ImageFormat::Png,
        ImageFormat::Png | ImageFormat::WebP => wanted,
        _ => ImageFormat::Jpeg,
    }
}

/// Encodes a result in [`chosen_format`]; JPEG and WebP are 8-bit, PNG keeps 16 bits.
pub fn encode(
    image: &DynamicImage,
    source: ImageFormat,
    format: Format,
    quality: u8,
) -> anyhow::Result<(ImageFormat, Vec<u8>)> {
    let alpha = image.color().has_alpha();
    let chosen = chosen_format(source, format, alpha);
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

/// The size of a streamed file's parts: above S3's 5 MiB minimum, and what a file being written
/// holds in memory (one part filling, one queued, one uploading).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// A piece of a file written by [`Parts`].
#[derive(Debug)]
pub enum Part {
    Bytes(Vec<u8>),
    /// The file is whole.
    End {
        sha256: String,
        bytes: u64,
    },
}

/// A file being written on a blocking thread and stored as it is written: every [`PART_BYTES`]
/// go to [`store_parts`]. Dropped without [`Parts::finish`], the upload is aborted.
pub struct Parts {
    sender: tokio::sync::mpsc::Sender<Part>,
    buffer: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
}

/// A writer and the receiving end that [`store_parts`] reads.
pub fn parts() -> (Parts, tokio::sync::mpsc::Receiver<Part>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let parts = Parts {
        sender,
        buffer: Vec::with_capacity(PART_BYTES),
        hasher: Sha256::new(),
        bytes: 0,
    };
    (parts, receiver)
}

impl Parts {
    fn send(&self, part: Part) -> std::io::Result<()> {
        self.sender
            .blocking_send(part)
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }

    /// Sends the rest and says the file is whole.
    pub fn finish(mut self) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.buffer);
        // A file that ends on a part boundary has no empty last part (a file of one part does).
        if !rest.is_empty() || self.bytes == 0 {
            self.send(Part::Bytes(rest))?;
        }
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        self.send(Part::End {
            sha256,
            bytes: self.bytes,
        })
    }
}

impl std::io::Write for Parts {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PART_BYTES {
            let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_BYTES));
            self.send(Part::Bytes(full))?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stores at `key` the file [`Parts`] writes: one PUT when it fits in one part, otherwise a
/// multipart upload whose parts go up while the rest is being made. `Ok(None)` when the writer
/// stopped without finishing (the multipart upload is then aborted: nothing is left behind).
pub async fn store_parts(
    state: &State,
    key: String,
    format: ImageFormat,
    (width, height): (u32, u32),
    mut receiver: tokio::sync::mpsc::Receiver<Part>,
) -> Result<Option<Artifact>, JobError> {
    let artifact = |sha256: String, bytes: u64| Artifact {
        key: key.clone(),
        content_type: content_type(format).to_owned(),
        bytes,
        width,
        height,
        sha256,
    };
    let first = match receiver.recv().await {
        Some(Part::Bytes(bytes)) => bytes,
        Some(Part::End { .. }) => {
            return Err(JobError::Internal(anyhow::anyhow!(
                "a file ended before its first part"
            )));
        }
        None => return Ok(None),
    };
    let second = match receiver.recv().await {
        Some(Part::Bytes(bytes)) => bytes,
        Some(Part::End { .. }) => {
            let stored = store(state, key.clone(), format, first, (width, height)).await?;
            return Ok(Some(stored));
        }
        None => return Ok(None),
    };
    let bucket = bucket(state)?;
    let upload = state
        .s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .content_type(content_type(format))
        .send()
        .await
        .context("starting a multipart upload")?;
    let upload_id = upload
        .upload_id()
        .context("a multipart upload without an id")?
        .to_owned();
    let uploaded = upload_rest(state, &key, &upload_id, [first, second], &mut receiver).await;
    match uploaded {
        Ok(Some((parts, sha256, bytes))) => {
            state
                .s3
                .complete_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .upload_id(&upload_id)
                .multipart_upload(
                    aws_sdk_s3::types::CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .context("completing a multipart upload")?;
            Ok(Some(artifact(sha256, bytes)))
        }
        stopped => {
            // Stopped or failed: the parts are removed, so no half file is left or billed.
            let aborted = state
                .s3
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(err) = aborted {
                tracing::warn!(error = %err, key, "aborting a multipart upload");
            }
            stopped.map(|_| None)
        }
    }
}

/// The parts of a multipart upload, the two already received first; `None` when the writer stopped.
async fn upload_rest(
    state: &State,
    key: &str,
    upload_id: &str,
    first: [Vec<u8>; 2],
    receiver: &mut tokio::sync::mpsc::Receiver<Part>,
) -> Result<Option<(Vec<aws_sdk_s3::types::CompletedPart>, String, u64)>, JobError> {
    let mut done = Vec::new();
    let mut pending: std::collections::VecDeque<Vec<u8>> = first.into();
    loop {
        let Some(bytes) = pending.pop_front() else {
            match receiver.recv().await {
                Some(Part::Bytes(bytes)) => pending.push_back(bytes),
                Some(Part::End { sha256, bytes }) => return Ok(Some((done, sha256, bytes))),
                None => return Ok(None),
            }
            continue;
        };
        let number = i32::try_from(done.len() + 1).context("too many parts")?;
        let part = state
            .s3
            .upload_part()
            .bucket(bucket(state)?)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .context("uploading a part")?;
        done.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .build(),
        );
    }
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
