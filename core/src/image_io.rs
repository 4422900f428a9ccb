//! Images at the edges: decoding untrusted bytes under limits, encoding PNG/JPEG, resizing
//! (8-bit images and input-space tensors), and luminance-only colour transfer.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader, RgbImage, imageops::FilterType};

use crate::error::{Error, Result};
use crate::exr_file::{self, FrameView, Transfer};
use crate::model::InputImage;
use crate::render::Content;

pub use crate::decode_limits::{MAX_DECODED_BYTES, MAX_DIMENSION};

fn image_error(name: &str, reason: impl std::fmt::Display) -> Error {
    Error::Image {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// Decodes PNG or JPEG (8- or 16-bit) or OpenEXR (scene-linear) bytes to 8-bit RGB,
/// refusing oversized or empty images before allocating. `name` names the source in errors
/// (a path or a request field).
pub fn decode(bytes: &[u8], name: &str) -> Result<RgbImage> {
    decode_with(bytes, name, Transfer::SceneLinear)
}

/// `decode`, with OpenEXR values read through `transfer`.
pub fn decode_with(bytes: &[u8], name: &str, transfer: Transfer) -> Result<RgbImage> {
    decode_viewed(bytes, name, &transfer.into())
}

/// `decode`, with OpenEXR values read through `view` (a built-in transfer or a studio's
/// view): how a shot's delivered frame is read back to continue the chain from.
pub fn decode_viewed(bytes: &[u8], name: &str, view: &FrameView) -> Result<RgbImage> {
    if exr_file::is_exr(bytes) {
        return view.rgb8(&exr_file::ExrFile::open(bytes, name)?);
    }
    Ok(decode_raster(bytes, name)?.into_rgb8())
}

/// A PNG or JPEG file decoded as it is, within the decoder's limits.
fn decode_raster(bytes: &[u8], name: &str) -> Result<DynamicImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_error(name, e))?;
    match reader.format() {
        None => return Err(image_error(name, "not a PNG, JPEG or OpenEXR image")),
        // The JPEG decoder fills a cut-off file with grey rather than failing.
        Some(ImageFormat::Jpeg) if !jpeg_complete(bytes) => {
            return Err(image_error(name, "truncated JPEG (no end-of-image marker)"));
        }
        Some(_) => {}
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| image_error(name, e))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(image_error(name, "image has zero width or height"));
    }
    Ok(decoded)
}

/// Whether a JPEG file ends with its end-of-image marker (trailing padding aside).
fn jpeg_complete(bytes: &[u8]) -> bool {
    let end = bytes
        .iter()
        .rposition(|&b| b != 0 && !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// A greyscale mask image (any bit depth) as one value in [0, 1] per pixel, row-major. Its
/// size is read from the header and checked against `frame` (width, height) before anything
/// is decoded: a small file can claim a huge image.
pub fn decode_mask(bytes: &[u8], name: &str, frame: (u32, u32)) -> Result<Vec<f32>> {
    let (width, height) = dimensions(bytes, name)?;
    if (width, height) != frame {
        return Err(image_error(
            name,
            format!(
                "{width}x{height}, the frame {}x{}: a mask has one value per pixel",
                frame.0, frame.1
            ),
        ));
    }
    let decoded = image::load_from_memory(bytes)
        .map_err(|e| image_error(name, format!("not a greyscale image: {e}")))?;
    Ok(decoded
        .into_luma16()
        .pixels()
        .map(|p| f32::from(p[0]) / 65535.0)
        .collect())
}

/// Decodes content at the precision its source has: OpenEXR as display values through
/// `transfer`, 16-bit PNG as float, 8-bit images as they are.
pub fn decode_content_with(bytes: &[u8], name: &str, transfer: Transfer) -> Result<Content> {
    if exr_file::is_exr(bytes) {
        let file = exr_file::ExrFile::open(bytes, name)?;
        return Ok(Content::Float(file.display(transfer)?));
    }
    let decoded = decode_raster(bytes, name)?;
    if decoded.color().bytes_per_pixel() > decoded.color().channel_count() {
        // More than 8 bits a channel (16-bit PNG): kept whole.
        return Ok(Content::Float(decoded.into_rgb32f()));
    }
    Ok(Content::Rgb8(decoded.into_rgb8()))
}

/// `decode_content_with` of a request field, after `check_pixels`.
pub fn decode_content_field(
    bytes: &[u8],
    field: &str,
    max_pixels: u64,
    transfer: Transfer,
) -> Result<Content> {
    check_pixels(bytes, field, max_pixels)?;
    decode_content_with(bytes, field, transfer).map_err(|e| in_field(field, e))
}

/// Decodes the image a request field carries after checking its header against
/// `max_pixels`; errors name `field` (`INVALID_ARGUMENT` on the wire, a flag in the CLI).
pub fn decode_field(
    bytes: &[u8],
    field: &str,
    max_pixels: u64,
    transfer: Transfer,
) -> Result<RgbImage> {
    check_pixels(bytes, field, max_pixels)?;
    decode_with(bytes, field, transfer).map_err(|e| in_field(field, e))
}

/// Refuses an empty image, or one whose header gives more than `max_pixels`, before
/// anything is decoded.
pub fn check_pixels(bytes: &[u8], field: &str, max_pixels: u64) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::invalid(field, "no image bytes"));
    }
    let (width, height) = dimensions(bytes, field)?;
    if width as u64 * height as u64 > max_pixels {
        return Err(Error::invalid(
            field,
            format!("{width}x{height} exceeds the limit of {max_pixels} pixels"),
        ));
    }
    Ok(())
}

/// A decoding error as the field's own (`InvalidOption` naming `field`).
pub fn in_field(field: &str, error: Error) -> Error {
    match error {
        Error::Image { reason, .. } => Error::invalid(field, reason),
        other => other,
    }
}

/// Width and height from the image header, without decoding the pixels.
pub fn dimensions(bytes: &[u8], name: &str) -> Result<(u32, u32)> {
    if exr_file::is_exr(bytes) {
        return exr_file::dimensions(bytes, name);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_error(name, e))?;
    if reader.format().is_none() {
        return Err(image_error(name, "not a PNG, JPEG or OpenEXR image"));
    }
    reader.into_dimensions().map_err(|e| image_error(name, e))
}

/// Reads and decodes an image file.
pub fn load(path: &Path) -> Result<RgbImage> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| image_error(&name, e))?;
    decode(&bytes, &name)
}

/// 16 bits per channel RGB.
pub type Rgb16Image = image::ImageBuffer<image::Rgb<u16>, Vec<u16>>;

/// An 8-bit image at 16 bits per channel (each level times 257).
pub fn widen(image: &RgbImage) -> Rgb16Image {
    Rgb16Image::from_fn(image.width(), image.height(), |x, y| {
        image::Rgb(image.get_pixel(x, y).0.map(|v| u16::from(v) * 257))
    })
}

/// A finished image as every encoding takes it: 8-bit pixels, and the 16-bit ones a 16-bit
/// PNG writes.
#[derive(Clone, Copy)]
pub struct Delivered<'a> {
    pub image: &'a RgbImage,
    pub deep: &'a Rgb16Image,
}

impl Delivered<'_> {
    pub fn encode(self, encoding: Encoding) -> Result<Vec<u8>> {
        match encoding {
            Encoding::Png16 => {
                let mut out = Cursor::new(Vec::new());
                self.deep
                    .write_to(&mut out, ImageFormat::Png)
                    .map_err(|e| image_error("output", e))?;
                Ok(out.into_inner())
            }
            // OpenEXR from the unrounded result, back through the view.
            Encoding::Exr(transfer) => exr_file::encode_display16(self.deep, transfer),
            other => encode(self.image, other),
        }
    }

    /// `encode`, an OpenEXR output returning through `view`'s inverse when there is one (a
    /// studio's view) rather than the built-in view `encoding` names.
    pub fn encode_through(
        self,
        encoding: Encoding,
        view: Option<&crate::colour::View>,
    ) -> Result<Vec<u8>> {
        match (view, encoding) {
            (Some(view), Encoding::Exr(_)) => exr_file::encode_display16_through(self.deep, view),
            _ => self.encode(encoding),
        }
    }

    /// Encodes as `encoding` and writes the file.
    pub fn save(self, path: &Path, encoding: Encoding) -> Result<()> {
        let bytes = self.encode(encoding)?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }
}

/// Output encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Png,
    /// PNG with 16 bits per channel, from the optimiser's unrounded result.
    Png16,
    Jpeg {
        quality: u8,
    },
    /// Half-float OpenEXR through the inverse of the view (scene-linear for `SceneLinear*`).
    Exr(Transfer),
}

impl Encoding {
    /// Picks the encoding from a file extension (`png`, `jpg`, `jpeg`).
    /// The 16-bit variant of PNG when `deep` (other encodings are unchanged).
    pub fn deepened(self, deep: bool) -> Self {
        match self {
            Encoding::Png if deep => Encoding::Png16,
            other => other,
        }
    }

    /// An OpenEXR output through `transfer` (other encodings are unchanged).
    pub fn through(self, transfer: Transfer) -> Self {
        match self {
            Encoding::Exr(_) => Encoding::Exr(transfer),
            other => other,
        }
    }

    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(Encoding::Png),
            Some("jpg" | "jpeg") => Ok(Encoding::Jpeg { quality: 95 }),
            Some("exr") => Ok(Encoding::Exr(Transfer::default())),
            _ => Err(Error::invalid(
                "out",
                format!(
                    "{}: the extension must be .png, .jpg, .jpeg or .exr",
                    path.display()
                ),
            )),
        }
    }
}

pub fn encode(image: &RgbImage, encoding: Encoding) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    let result = match encoding {
        Encoding::Png | Encoding::Png16 => image.write_to(&mut out, ImageFormat::Png),
        Encoding::Jpeg { quality } => {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            DynamicImage::ImageRgb8(image.clone()).write_with_encoder(encoder)
        }
        Encoding::Exr(transfer) => return exr_file::encode_rgb(image, transfer),
    };
    result.map_err(|e| image_error("output", e))?;
    Ok(out.into_inner())
}

/// Encodes by the path's extension and writes the file.
pub fn save(image: &RgbImage, path: &Path) -> Result<()> {
    let bytes = encode(image, Encoding::from_path(path)?)?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Size with the longer side equal to `longest`, keeping the aspect ratio (each side >= 1).
pub fn fit_longest(width: u32, height: u32, longest: u32) -> (u32, u32) {
    let scale = longest as f64 / width.max(height) as f64;
    let side = |v: u32| ((v as f64 * scale).round() as u32).max(1);
    (side(width), side(height))
}

/// Resizes so the longer side is `longest` (Lanczos); returns a copy when already there.
pub fn resize_longest(image: &RgbImage, longest: u32) -> RgbImage {
    let (w, h) = fit_longest(image.width(), image.height(), longest);
    resize_exact(image, w, h)
}

pub fn resize_exact(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        return image.clone();
    }
    image::imageops::resize(image, width, height, FilterType::Lanczos3)
}

/// Bilinear resize of an input-space image (half-pixel centres, like PyTorch's
/// `interpolate(mode="bilinear", align_corners=False)`); values are not clamped.
pub fn resize_input(input: &InputImage, height: usize, width: usize) -> InputImage {
    let (h0, w0) = (input.height, input.width);
    let source = |out: usize, len_out: usize, len_in: usize| {
        let pos = ((out as f64 + 0.5) * len_in as f64 / len_out as f64 - 0.5).max(0.0);
        let lo = (pos.floor() as usize).min(len_in - 1);
        let hi = (lo + 1).min(len_in - 1);
        (lo, hi, (pos - lo as f64) as f32)
    };
    let rows: Vec<_> = (0..height).map(|i| source(i, height, h0)).collect();
    let cols: Vec<_> = (0..width).map(|j| source(j, width, w0)).collect();
    let mut data = Vec::with_capacity(3 * height * width);
    for c in 0..3 {
        let plane = &input.data[c * h0 * w0..(c + 1) * h0 * w0];
        for &(r0, r1, fr) in &rows {
            for &(c0, c1, fc) in &cols {
                let top = plane[r0 * w0 + c0] * (1.0 - fc) + plane[r0 * w0 + c1] * fc;
                let bottom = plane[r1 * w0 + c0] * (1.0 - fc) + plane[r1 * w0 + c1] * fc;
                data.push(top * (1.0 - fr) + bottom * fr);
            }
        }
    }
    InputImage {
        height,
        width,
        data,
    }
}

fn to_yuv(p: [u8; 3]) -> [f32; 3] {
    let [r, g, b] = p.map(f32::from);
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    [y, 0.492 * (b - y), 0.877 * (r - y)]
}

fn from_yuv([y, u, v]: [f32; 3]) -> [u8; 3] {
    let r = y + v / 0.877;
    let b = y + u / 0.492;
    let g = (y - 0.299 * r - 0.114 * b) / 0.587;
    [r, g, b].map(|c| c.round().clamp(0.0, 255.0) as u8)
}

/// Keeps the luminance (Y) of `styled` and the chroma (U, V) of `content`, so only the
/// style's textures transfer, not its colours. `content` is resized to `styled` first.
pub fn transfer_luminance(styled: &RgbImage, content: &RgbImage) -> RgbImage {
    let content = resize_exact(content, styled.width(), styled.height());
    RgbImage::from_fn(styled.width(), styled.height(), |x, y| {
        let [luma, _, _] = to_yuv(styled.get_pixel(x, y).0);
        let [_, u, v] = to_yuv(content.get_pixel(x, y).0);
        image::Rgb(from_yuv([luma, u, v]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuv_round_trip_is_within_one_level() {
        for p in [[0u8, 0, 0], [255, 255, 255], [12, 200, 99], [250, 3, 128]] {
            let back = from_yuv(to_yuv(p));
            for c in 0..3 {
                assert!(
                    (back[c] as i32 - p[c] as i32).abs() <= 1,
                    "{p:?} -> {back:?}"
                );
            }
        }
    }

    #[test]
    fn luminance_transfer_keeps_content_chroma() {
        let styled = RgbImage::from_pixel(4, 4, image::Rgb([150, 150, 150]));
        let content = RgbImage::from_pixel(4, 4, image::Rgb([120, 90, 80]));
        let out = transfer_luminance(&styled, &content);
        let [y, u, v] = to_yuv(out.get_pixel(1, 1).0);
        let [_, cu, cv] = to_yuv([120, 90, 80]);
        assert!((y - 150.0).abs() < 1.5);
        assert!((u - cu).abs() < 1.5 && (v - cv).abs() < 1.5);
    }

    #[test]
    fn bilinear_resize_preserves_constants_and_corners() {
        let input = InputImage {
            height: 2,
            width: 3,
            data: (0..18)
                .map(|i| if i < 6 { -50.0 } else { i as f32 })
                .collect(),
        };
        let out = resize_input(&input, 4, 6);
        assert!(out.data[..24].iter().all(|&v| v == -50.0));
        assert_eq!(out.data[24], 6.0);
    }

    #[test]
    fn rejects_garbage_and_empty_input() {
        assert!(decode(b"definitely not an image", "x").is_err());
        assert!(decode(&[], "x").is_err());
    }
}
