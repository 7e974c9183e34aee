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
    let (inspected, mut decoder) = checked_decoder(bytes, limits)?;
    // A camera's EXIF orientation is applied, so the photo is upright before any work.
    let orientation = image::ImageDecoder::orientation(&mut decoder)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(refused)?;
    image.apply_orientation(orientation);
    Ok((inspected, image))
}

/// Pixels decoded by [`decode_reusing`]: 8-bit RGB in the caller's buffer, or any other colour
/// type as an image of its own.
pub enum Decoded<'a> {
    Rgb8(image::ImageBuffer<image::Rgb<u8>, &'a [u8]>),
    Other(DynamicImage),
}

/// An image read once and thrown away (best-cut's scoring): decoded as [`decode`] does, but 8-bit
/// RGB (every colour camera JPEG) goes into `scratch`, which keeps its memory from one image to
/// the next, so a run of photos does not map, fault in and zero a fresh buffer each (12 MP is
/// 36 MB). The EXIF orientation is not applied; the size returned is the upright one.
pub fn decode_reusing<'a>(
    bytes: &[u8],
    limits: &Limits,
    scratch: &'a mut Vec<u8>,
) -> Result<(Inspected, (u32, u32), Decoded<'a>), ImageError> {
    use image::ImageDecoder as _;
    use image::metadata::Orientation;
    let (inspected, mut decoder) = checked_decoder(bytes, limits)?;
    let (width, height) = decoder.dimensions();
    let upright = match decoder.orientation().unwrap_or(Orientation::NoTransforms) {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    };
    if decoder.color_type() != image::ColorType::Rgb8 {
        let image = DynamicImage::from_decoder(decoder).map_err(refused)?;
        return Ok((inspected, upright, Decoded::Other(image)));
    }
    // The decoder's dimensions are the header's, which `inspect` held to the limits.
    let needed = usize::try_from(decoder.total_bytes())
        .map_err(|_| ImageError::TooLarge("the image needs more memory than allowed".into()))?;
    if scratch.len() < needed {
        scratch.resize(needed, 0);
    }
    let pixels = &mut scratch[..needed];
    decoder.read_image(pixels).map_err(refused)?;
    let rgb = image::ImageBuffer::from_raw(width, height, &scratch[..needed])
        .ok_or_else(|| ImageError::Invalid("the decoder returned too few pixels".into()))?;
    Ok((inspected, upright, Decoded::Rgb8(rgb)))
}

/// Inspects, then opens a decoder whose own allocation is capped to what the header promised.
fn checked_decoder<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<(Inspected, impl image::ImageDecoder + 'a), ImageError> {
    let inspected = inspect(bytes, limits)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), inspected.format);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // Eight bytes a pixel covers 16-bit RGBA; the slack is for decoder buffers.
    decoder_limits.max_alloc =
        Some(u64::from(inspected.width) * u64::from(inspected.height) * 8 + 64 * 1024 * 1024);
    reader.limits(decoder_limits);
    let decoder = reader.into_decoder().map_err(refused)?;
    Ok((inspected, decoder))
}

fn refused(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Limits(_) => {
            ImageError::TooLarge("the image needs more memory than allowed".into())
        }
        other => ImageError::Invalid(format!("the image is truncated or corrupt: {other}")),
    }
}

/// How a streamed image is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// PNG at image's default compression (fast, adaptive filters), 8 or 16 bits.
    Png,
    /// Baseline JPEG (4:4:4 from quality 90, 4:2:0 below), 8 bits, gray or RGB.
    Jpeg { quality: u8 },
}

/// The pixels of a streamed image: `channels` samples a pixel (1 gray, 2 gray and alpha, 3 RGB,
/// 4 RGBA), each 8 or 16 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub sixteen: bool,
}

/// Whole rows of a streamed image, top to bottom.
#[derive(Clone, Copy, Debug)]
pub enum Rows<'a> {
    Eight(&'a [u8]),
    Sixteen(&'a [u16]),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Eight(s) => s.len(),
            Self::Sixteen(s) => s.len(),
        }
    }
}

/// Hands rows over; an error stops the producer.
pub type Put<'a> = dyn FnMut(Rows<'_>) -> anyhow::Result<()> + 'a;

/// Encodes an image while `produce` makes it: `produce` hands its rows to the given `put` in
/// order, and the encoded bytes go to `out` as they are ready, so memory holds a few rows and
/// never the image. `Ok(false)` when `produce` stopped early (returned `Ok(false)`); what was
/// written to `out` is then a truncated file. Every row must be handed over exactly once.
pub fn write_rows(
    out: &mut (dyn std::io::Write + Send),
    encoding: Encoding,
    layout: Layout,
    produce: impl FnOnce(&mut Put<'_>) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    use anyhow::{Context as _, bail};
    use std::io::Write as _;
    let row_len = layout.width as usize * usize::from(layout.channels);
    let expected = row_len * layout.height as usize;
    if layout.width == 0 || layout.height == 0 || !(1..=4).contains(&layout.channels) {
        bail!(
            "cannot encode a {}x{} image of {} channels",
            layout.width,
            layout.height,
            layout.channels
        );
    }
    let mut written = 0usize;
    let mut check = |rows: &Rows<'_>| {
        written += rows.len();
        if !rows.len().is_multiple_of(row_len) || written > expected {
            bail!(
                "rows of the wrong length for a {}x{} image",
                layout.width,
                layout.height
            );
        }
        anyhow::Ok(())
    };
    let finished = match encoding {
        Encoding::Png => {
            let mut encoder = png::Encoder::new(&mut *out, layout.width, layout.height);
            encoder.set_color(match layout.channels {
                1 => png::ColorType::Grayscale,
                2 => png::ColorType::GrayscaleAlpha,
                3 => png::ColorType::Rgb,
                _ => png::ColorType::Rgba,
            });
            encoder.set_depth(if layout.sixteen {
                png::BitDepth::Sixteen
            } else {
                png::BitDepth::Eight
            });
            // image's own default (fdeflate's fast mode); Balanced (zlib level 6) took 4x as long
            // on an 8192x8192 upscale (29.7 s against 7.3 s, the model included).
            encoder.set_compression(png::Compression::Fast);
            let mut header = encoder.write_header().context("writing a PNG header")?;
            let mut stream = header.stream_writer().context("writing a PNG")?;
            let mut big_endian = Vec::new();
            let finished = produce(&mut |rows| {
                check(&rows)?;
                match rows {
                    Rows::Eight(samples) => stream.write_all(samples)?,
                    Rows::Sixteen(samples) => {
                        big_endian.clear();
                        big_endian.extend(samples.iter().flat_map(|v| v.to_be_bytes()));
                        stream.write_all(&big_endian)?;
                    }
                }
                Ok(())
            })?;
            if finished {
                stream.finish().context("ending a PNG")?;
            }
            finished
        }
        Encoding::Jpeg { quality } => {
            if layout.sixteen || !matches!(layout.channels, 1 | 3) {
                bail!("JPEG takes 8-bit gray or RGB");
            }
            let (Ok(width), Ok(height)) =
                (u16::try_from(layout.width), u16::try_from(layout.height))
            else {
                bail!("JPEG is at most 65,535 pixels a side");
            };
            jpeg::write(out, quality, width, height, layout.channels, |put| {
                produce(&mut |rows| {
                    check(&rows)?;
                    match rows {
                        Rows::Eight(samples) => put(samples),
                        Rows::Sixteen(_) => bail!("JPEG takes 8-bit rows"),
                    }
                })
            })?
        }
    };
    if finished && written != expected {
        bail!(
            "the image ended after {} of {} rows",
            written / row_len,
            layout.height
        );
    }
    Ok(finished)
}

/// The JPEG side of [`write_rows`]: `jpeg-encoder` pulls rows as it encodes, so it runs on its own
/// thread and the producer's rows reach it through a one-slot channel, in slices of a few rows.
mod jpeg {
    use std::cell::RefCell;
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    use anyhow::{Context as _, anyhow};
    use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, rgb_to_ycbcr};

    /// Rows are sent in slices of at most this many bytes.
    const SLICE: usize = 1 << 20;

    struct Pulled {
        width: u16,
        height: u16,
        channels: usize,
        rows: mpsc::Receiver<Vec<u8>>,
        /// The slice being read and the image row its first row is.
        slice: RefCell<(Vec<u8>, usize)>,
        /// Set when the producer stopped before the last row.
        stopped: Arc<AtomicBool>,
    }

    impl ImageBuffer for Pulled {
        fn get_jpeg_color_type(&self) -> JpegColorType {
            if self.channels == 1 {
                JpegColorType::Luma
            } else {
                JpegColorType::Ycbcr
            }
        }

        fn width(&self) -> u16 {
            self.width
        }

        fn height(&self) -> u16 {
            self.height
        }

        fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
            let row_len = usize::from(self.width) * self.channels;
            let y = usize::from(y);
            let mut slice = self.slice.borrow_mut();
            // The encoder asks for rows in order (repeating the last to fill its final block).
            while y >= slice.1 + slice.0.len() / row_len && !self.stopped.load(Ordering::Relaxed) {
                let next = slice.1 + slice.0.len() / row_len;
                match self.rows.recv() {
                    Ok(rows) => *slice = (rows, next),
                    Err(_) => self.stopped.store(true, Ordering::Relaxed),
                }
            }
            if self.stopped.load(Ordering::Relaxed) {
                // The writer refuses every byte from now on; the encoder ends at its next write.
                for buffer in buffers.iter_mut().take(self.channels) {
                    buffer.extend(std::iter::repeat_n(0, usize::from(self.width)));
                }
                return;
            }
            let at = (y - slice.1) * row_len;
            let row = &slice.0[at..at + row_len];
            if self.channels == 1 {
                buffers[0].extend_from_slice(row);
                return;
            }
            for px in row.chunks_exact(3) {
                let (luma, cb, cr) = rgb_to_ycbcr(px[0], px[1], px[2]);
                buffers[0].push(luma);
                buffers[1].push(cb);
                buffers[2].push(cr);
            }
        }
    }

    /// Passes bytes on until the producer has stopped.
    struct Until<'a> {
        out: &'a mut (dyn Write + Send),
        stopped: Arc<AtomicBool>,
    }

    impl Write for Until<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.stopped.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("the image was not finished"));
            }
            self.out.write(bytes)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.out.flush()
        }
    }

    pub(super) fn write(
        out: &mut (dyn Write + Send),
        quality: u8,
        width: u16,
        height: u16,
        channels: u8,
        produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> anyhow::Result<()>) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        let stopped = Arc::new(AtomicBool::new(false));
        let (sender, rows) = mpsc::sync_channel::<Vec<u8>>(1);
        let row_len = usize::from(width) * usize::from(channels);
        let per_slice = (SLICE / row_len).max(1) * row_len;
        std::thread::scope(|scope| {
            let image = Pulled {
                width,
                height,
                channels: usize::from(channels),
                rows,
                slice: RefCell::new((Vec::new(), 0)),
                stopped: stopped.clone(),
            };
            let sink = Until {
                out,
                stopped: stopped.clone(),
            };
            let encoder =
                scope.spawn(move || Encoder::new(sink, quality.clamp(1, 100)).encode_image(image));
            let produced = produce(&mut |samples: &[u8]| {
                for slice in samples.chunks(per_slice) {
                    sender
                        .send(slice.to_vec())
                        .map_err(|_| anyhow!("the JPEG encoder stopped"))?;
                }
                Ok(())
            });
            drop(sender);
            let encoded = encoder
                .join()
                .map_err(|_| anyhow!("the JPEG encoder panicked"))?;
            match produced {
                Ok(true) => {
                    encoded.context("encoding a JPEG")?;
                    Ok(true)
                }
                Ok(false) => Ok(false),
                // The encoder failed first (its output refused a write): its error is the cause.
                Err(_) if encoded.is_err() && !stopped.load(Ordering::Relaxed) => {
                    encoded.context("encoding a JPEG")?;
                    Ok(false)
                }
                Err(err) => Err(err),
            }
        })
    }
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
        // Decoded for scoring, the pixels stay as stored; the upright size is still 2x4.
        let mut scratch = Vec::new();
        let (inspected, upright, decoded) =
            decode_reusing(&bytes, &Limits::default(), &mut scratch).expect("valid");
        assert_eq!((inspected.width, inspected.height, upright), (4, 2, (2, 4)));
        assert!(matches!(decoded, Decoded::Rgb8(rgb) if rgb.dimensions() == (4, 2)));
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

    /// Writes `image` through [`write_rows`] in bands of `band` rows.
    fn streamed(image: &DynamicImage, encoding: Encoding, band: u32) -> anyhow::Result<Vec<u8>> {
        let layout = Layout {
            width: image.width(),
            height: image.height(),
            channels: image.color().channel_count(),
            sixteen: image.color().bytes_per_pixel() / image.color().channel_count() > 1,
        };
        let row = (layout.width * u32::from(layout.channels)) as usize;
        let mut out = Vec::new();
        write_rows(&mut out, encoding, layout, |put| {
            if layout.sixteen {
                let samples: Vec<u16> = match image {
                    DynamicImage::ImageRgb16(b) => b.as_raw().clone(),
                    DynamicImage::ImageLuma16(b) => b.as_raw().clone(),
                    _ => unreachable!(),
                };
                for rows in samples.chunks(row * band as usize) {
                    put(Rows::Sixteen(rows))?;
                }
            } else {
                for rows in image.as_bytes().chunks(row * band as usize) {
                    put(Rows::Eight(rows))?;
                }
            }
            Ok(true)
        })?;
        Ok(out)
    }

    fn rgb8(width: u32, height: u32) -> Layout {
        Layout {
            width,
            height,
            channels: 3,
            sixteen: false,
        }
    }

    fn pattern(width: u32, height: u32) -> image::RgbImage {
        image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8])
        })
    }

    #[test]
    fn streamed_pngs_decode_to_the_same_pixels_in_every_layout() {
        let rgb = pattern(37, 29);
        let images = [
            DynamicImage::ImageRgb8(rgb.clone()),
            DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(rgb.clone()).to_rgba8()),
            DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb.clone()).to_luma8()),
            DynamicImage::ImageLumaA8(DynamicImage::ImageRgb8(rgb.clone()).to_luma_alpha8()),
            DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(37, 29, |x, y| {
                image::Rgb([(x * 1777) as u16, (y * 2011) as u16, 65535])
            })),
        ];
        for image in images {
            for band in [1, 8, 29] {
                let bytes = streamed(&image, Encoding::Png, band).expect("png");
                let back =
                    image::load_from_memory_with_format(&bytes, ImageFormat::Png).expect("decodes");
                assert_eq!(back, image, "{:?} in bands of {band}", image.color());
            }
        }
    }

    #[test]
    fn streamed_jpegs_match_the_whole_image_encoder() {
        for image in [
            DynamicImage::ImageRgb8(pattern(301, 77)),
            DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(pattern(64, 9)).to_luma8()),
        ] {
            let bytes = streamed(&image, Encoding::Jpeg { quality: 92 }, 5).expect("jpeg");
            let mut whole = Vec::new();
            jpeg_encoder::Encoder::new(&mut whole, 92)
                .encode(
                    image.as_bytes(),
                    u16::try_from(image.width()).expect("small"),
                    u16::try_from(image.height()).expect("small"),
                    if image.color().has_color() {
                        jpeg_encoder::ColorType::Rgb
                    } else {
                        jpeg_encoder::ColorType::Luma
                    },
                )
                .expect("whole");
            assert_eq!(bytes, whole, "{:?}", image.color());
            let back = image::load_from_memory(&bytes).expect("decodes");
            assert_eq!(
                (back.width(), back.height()),
                (image.width(), image.height())
            );
        }
    }

    #[test]
    fn a_producer_that_stops_or_errs_stops_the_encoder() {
        let image = pattern(64, 64);
        let layout = rgb8(64, 64);
        for encoding in [Encoding::Png, Encoding::Jpeg { quality: 80 }] {
            let mut out = Vec::new();
            let finished = write_rows(&mut out, encoding, layout, |put| {
                put(Rows::Eight(&image.as_raw()[..64 * 3 * 16]))?;
                Ok(false)
            })
            .expect("stopped");
            assert!(!finished, "{encoding:?}");
            let err = write_rows(&mut Vec::new(), encoding, layout, |put| {
                put(Rows::Eight(&image.as_raw()[..64 * 3 * 16]))?;
                anyhow::bail!("the model failed")
            })
            .expect_err("failed");
            assert_eq!(err.to_string(), "the model failed", "{encoding:?}");
            let short = write_rows(&mut Vec::new(), encoding, layout, |put| {
                put(Rows::Eight(&image.as_raw()[..64 * 3 * 16]))?;
                Ok(true)
            });
            assert!(short.is_err(), "{encoding:?}: 16 of 64 rows accepted");
            let ragged = write_rows(&mut Vec::new(), encoding, layout, |put| {
                put(Rows::Eight(&image.as_raw()[..100]))?;
                Ok(true)
            });
            assert!(ragged.is_err(), "{encoding:?}: a part of a row accepted");
        }
    }

    #[test]
    fn a_failing_output_stops_the_jpeg_encoder_with_its_error() {
        struct Full;
        impl std::io::Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("the upload stopped"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let image = pattern(640, 480);
        let layout = rgb8(640, 480);
        let err = write_rows(&mut Full, Encoding::Jpeg { quality: 90 }, layout, |put| {
            for rows in image.as_raw().chunks(640 * 3 * 16) {
                put(Rows::Eight(rows))?;
            }
            Ok(true)
        })
        .expect_err("refused");
        assert!(format!("{err:#}").contains("the upload stopped"), "{err:#}");
    }
}
