//! What a frame carries around its stylisation unchanged: its alpha (an RGBA PNG's, or the
//! `A` beside an OpenEXR frame's colour) and, when asked (`keep_passes`), every other layer,
//! channel and header attribute of an OpenEXR frame. The stylised colour replaces the
//! source's; alpha is copied bit for bit; OpenEXR colour is premultiplied again by it; where
//! the source is fully transparent its pixel comes back as it went in.

use std::io::Cursor;

use exr::meta::attribute::SampleType;
use exr::prelude::{
    AnyChannel, AnyChannels, FlatSamples, Image, ReadChannels, ReadLayers, WritableImage, f16,
};

use crate::decode_limits::MAX_DECODED_BYTES;
use crate::error::{Error, Result};
use crate::exr_file::{self, ExrFile, full_name};
use crate::image_io::Encoding;

/// A frame's source, kept to give back what the stylisation does not touch.
#[derive(Debug, Clone)]
pub struct Passthrough {
    source: Vec<u8>,
    /// How errors name the source (a file, or a request field).
    name: String,
    keep_passes: bool,
}

/// Where a request says what: the fields (or flags) errors name.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// The output format (`--out`, `options.format`).
    pub output: &'a str,
    /// The keep-passes switch (`--keep-passes`, `options.keep_passes`).
    pub keep_passes: &'a str,
    /// The output size (`--size`, `options.size`).
    pub size: &'a str,
}

/// A source's alpha at its own size, as the source holds it.
enum Alpha {
    /// A PNG's straight alpha, in 16 bits (an 8-bit value v as v * 257, which is exact), and
    /// whether the source had 16 bits.
    Png { values: Vec<u16>, sixteen: bool },
    /// An OpenEXR frame's alpha (colour is premultiplied by it).
    Exr(Vec<f32>),
    /// Either, resized to another size than the source's.
    Resized(Vec<f32>),
}

impl Alpha {
    /// Straight alpha in [0, 1].
    fn unit(&self, i: usize) -> f32 {
        match self {
            Alpha::Png { values, .. } => values[i] as f32 / 65535.0,
            Alpha::Exr(values) | Alpha::Resized(values) => values[i],
        }
    }

    /// Every value, straight, in [0, 1].
    fn units(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.unit(i)).collect()
    }

    fn len(&self) -> usize {
        match self {
            Alpha::Png { values, .. } => values.len(),
            Alpha::Exr(values) | Alpha::Resized(values) => values.len(),
        }
    }

    fn transparent(&self, i: usize) -> bool {
        self.unit(i) <= 0.0
    }
}

impl Passthrough {
    /// What `source` carries past the stylisation, for an output in `encoding` at `output`
    /// (width, height); `None` when there is nothing (no alpha, no passes asked for).
    /// Refused before any work: passes from content that is not OpenEXR or into an output
    /// that is not, or at another size than the source's; alpha into JPEG.
    pub fn of(
        source: &[u8],
        name: &str,
        keep_passes: bool,
        encoding: Encoding,
        output: (u32, u32),
        fields: Fields<'_>,
    ) -> Result<Option<Self>> {
        let exr = if exr_file::is_exr(source) {
            Some(ExrFile::open(source, name)?)
        } else {
            None
        };
        if keep_passes {
            let Some(file) = &exr else {
                return Err(Error::invalid(
                    fields.keep_passes,
                    format!("{name} is not OpenEXR: only an OpenEXR frame has passes to keep"),
                ));
            };
            if !matches!(encoding, Encoding::Exr(_)) {
                return Err(Error::invalid(
                    fields.output,
                    "passes are kept in an OpenEXR output: ask for OpenEXR",
                ));
            }
            if file.dimensions() != output {
                let (w, h) = file.dimensions();
                return Err(Error::invalid(
                    fields.size,
                    format!(
                        "the output would be {}x{}, the frame is {w}x{h}: passes are kept at \
                         the frame's own size (set the size to {})",
                        output.0,
                        output.1,
                        w.max(h)
                    ),
                ));
            }
        }
        let has_alpha = match &exr {
            Some(file) => file.alpha_channel().is_some(),
            None => raster_has_alpha(source),
        };
        if has_alpha && matches!(encoding, Encoding::Jpeg { .. }) {
            return Err(Error::invalid(
                fields.output,
                format!("{name} has alpha, which JPEG cannot hold: ask for PNG or OpenEXR"),
            ));
        }
        Ok((has_alpha || keep_passes).then(|| Self {
            source: source.to_vec(),
            name: name.to_string(),
            keep_passes,
        }))
    }

    /// The stylised output (`encoded`, as `encoding` wrote it) with the source's alpha, and
    /// its passes when they are kept.
    pub fn apply(&self, encoded: Vec<u8>, encoding: Encoding) -> Result<Vec<u8>> {
        match encoding {
            Encoding::Exr(_) => self.onto_exr(&encoded),
            Encoding::Png | Encoding::Png16 => self.onto_png(&encoded),
            Encoding::Jpeg { .. } => Ok(encoded),
        }
    }

    fn refuse(&self, reason: impl Into<String>) -> Error {
        Error::Image {
            name: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// An RGBA PNG: the stylised colour, the source's alpha (in 16 bits when the output or
    /// the source has them), and the source's colour where it is fully transparent.
    fn onto_png(&self, encoded: &[u8]) -> Result<Vec<u8>> {
        // The source is decoded once: for its alpha, and a raster's for its colour too.
        let (alpha, size, source_colour) = if exr_file::is_exr(&self.source) {
            let file = ExrFile::open(&self.source, &self.name)?;
            let Some(channel) = file.alpha_channel() else {
                return Ok(encoded.to_vec());
            };
            let mut read = file.read(&[&channel])?;
            let size = (read.width as u32, read.height as u32);
            (Alpha::Exr(read.planes.remove(0)), size, None)
        } else {
            let decoded =
                image::load_from_memory(&self.source).map_err(|e| self.refuse(e.to_string()))?;
            let Some(alpha) = raster_alpha(&decoded) else {
                return Ok(encoded.to_vec());
            };
            let size = (decoded.width(), decoded.height());
            (alpha, size, Some(decoded.into_rgba16()))
        };
        let styled = image::load_from_memory(encoded).map_err(|e| self.refuse(e.to_string()))?;
        let out_sixteen = styled.color().bytes_per_pixel() > styled.color().channel_count();
        let (w, h) = (styled.width(), styled.height());
        let alpha = resample(alpha, size, (w, h));
        let source_colour = source_colour.filter(|_| size == (w, h));
        let mut rgba = styled.into_rgba16();
        for (i, pixel) in rgba.pixels_mut().enumerate() {
            if let (true, Some(source)) = (alpha.transparent(i), &source_colour) {
                let (x, y) = (i as u32 % w, i as u32 / w);
                *pixel = *source.get_pixel(x, y);
            }
            pixel.0[3] = match &alpha {
                Alpha::Png { values, .. } => values[i],
                Alpha::Exr(values) | Alpha::Resized(values) => {
                    (values[i].clamp(0.0, 1.0) * 65535.0).round() as u16
                }
            };
        }
        let sixteen = out_sixteen || matches!(alpha, Alpha::Png { sixteen: true, .. });
        let image = if sixteen {
            image::DynamicImage::ImageRgba16(rgba)
        } else {
            image::DynamicImage::ImageRgba8(image::DynamicImage::ImageRgba16(rgba).into_rgba8())
        };
        let mut out = Cursor::new(Vec::new());
        image
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| self.refuse(e.to_string()))?;
        Ok(out.into_inner())
    }

    /// An OpenEXR output: the stylised colour premultiplied by the source's alpha (the
    /// source's own colour where it is fully transparent), with the alpha, and every other
    /// layer, channel and attribute of the source when passes are kept.
    fn onto_exr(&self, encoded: &[u8]) -> Result<Vec<u8>> {
        let styled = exr_file::decode_channels(encoded, "output", &["R", "G", "B"])?;
        let (w, h) = (styled.width as u32, styled.height as u32);
        let mut colour = styled.planes;
        // The alpha channel as the output carries it, in its own sample type.
        let mut alpha_samples = None;
        if exr_file::is_exr(&self.source) {
            let file = ExrFile::open(&self.source, &self.name)?;
            if let Some(channel) = file.alpha_channel() {
                // Colour and alpha in one pass over their part.
                let [r, g, b] = file.colour_channels()?;
                let mut read = file.read(&[&r, &g, &b, &channel])?;
                let size = (read.width as u32, read.height as u32);
                let alpha = resample(
                    Alpha::Exr(read.planes.pop().unwrap_or_default()),
                    size,
                    (w, h),
                );
                let source = (size == (w, h)).then_some(&read.planes[..]);
                premultiply(&mut colour, &alpha, source);
                alpha_samples = Some(match (&alpha, file.sample_type(&channel)) {
                    (Alpha::Exr(values), Some(kind)) => samples_as(kind, values),
                    (other, _) => half(&other.units()),
                });
            }
        } else {
            let decoded =
                image::load_from_memory(&self.source).map_err(|e| self.refuse(e.to_string()))?;
            if let Some(alpha) = raster_alpha(&decoded) {
                let size = (decoded.width(), decoded.height());
                let alpha = resample(alpha, size, (w, h));
                premultiply(&mut colour, &alpha, None);
                alpha_samples = Some(half(&alpha.units()));
            }
        }
        if self.keep_passes {
            return self.with_passes(&colour);
        }
        let mut channels: Vec<AnyChannel<FlatSamples>> = ["R", "G", "B"]
            .iter()
            .zip(&colour)
            .map(|(name, plane)| AnyChannel::new(*name, half(plane)))
            .collect();
        channels.extend(alpha_samples.map(|samples| AnyChannel::new("A", samples)));
        let single = Image::from_channels(
            (w as usize, h as usize),
            AnyChannels::sort(channels.into_iter().collect()),
        );
        self.written(&Image::from_layers(
            single.attributes,
            vec![single.layer_data],
        ))
    }

    /// Every layer, channel and attribute of the source, decoded.
    fn read_whole(&self, file: &ExrFile<'_>) -> Result<FlatImage> {
        let (w, h) = file.dimensions();
        let channels = file.channel_names().len() as u64;
        if w as u64 * h as u64 * 4 * channels > MAX_DECODED_BYTES {
            return Err(self.refuse(format!(
                "{w}x{h} x {channels} channels is more than {MAX_DECODED_BYTES} bytes decoded"
            )));
        }
        exr::prelude::read()
            .no_deep_data()
            .largest_resolution_level()
            .all_channels()
            .all_layers()
            .all_attributes()
            .non_parallel()
            .from_buffered(Cursor::new(&self.source))
            .map_err(|e| self.refuse(e.to_string()))
    }

    /// The source file with its colour channels replaced by `colour`, each in its own sample
    /// type; everything else as it was.
    fn with_passes(&self, colour: &[Vec<f32>]) -> Result<Vec<u8>> {
        let file = ExrFile::open(&self.source, &self.name)?;
        let mut image = self.read_whole(&file)?;
        let names = file.colour_channels()?;
        for layer in &mut image.layer_data {
            let part = layer.attributes.layer_name.as_ref().map(|t| t.to_string());
            for channel in &mut layer.channel_data.list {
                let full = full_name(part.as_deref(), channel.name.to_string());
                let Some(c) = names.iter().position(|n| *n == full) else {
                    continue;
                };
                let kind = match channel.sample_data {
                    FlatSamples::F16(_) => SampleType::F16,
                    FlatSamples::F32(_) => SampleType::F32,
                    FlatSamples::U32(_) => {
                        return Err(self.refuse(format!("colour channel {full} holds integers")));
                    }
                };
                channel.sample_data = samples_as(kind, &colour[c]);
            }
        }
        self.written(&image)
    }

    /// `image` as an OpenEXR file's bytes.
    fn written(&self, image: &FlatImage) -> Result<Vec<u8>> {
        let mut out = Cursor::new(Vec::new());
        image
            .write()
            .non_parallel()
            .to_buffered(&mut out)
            .map_err(|e| self.refuse(e.to_string()))?;
        Ok(out.into_inner())
    }
}

/// An OpenEXR image of any layers and channels, as read and written here.
type FlatImage = Image<exr::image::Layers<AnyChannels<FlatSamples>>>;

/// `colour` (straight) premultiplied by `alpha`; where alpha is zero, `source`'s colour (as
/// stored) when the source is at the output's size, else zero.
fn premultiply(colour: &mut [Vec<f32>], alpha: &Alpha, source: Option<&[Vec<f32>]>) {
    for i in 0..alpha.len() {
        let a = alpha.unit(i);
        for (c, plane) in colour.iter_mut().enumerate() {
            plane[i] = match source {
                Some(source) if alpha.transparent(i) => source[c][i],
                _ => plane[i] * a,
            };
        }
    }
}

/// Half-float samples of `plane`.
fn half(plane: &[f32]) -> FlatSamples {
    FlatSamples::F16(plane.iter().map(|&v| f16::from_f32(v)).collect())
}

/// `plane` as samples of `kind` (values read from samples of that kind come back bit for bit).
fn samples_as(kind: SampleType, plane: &[f32]) -> FlatSamples {
    match kind {
        SampleType::F16 => half(plane),
        SampleType::F32 => FlatSamples::F32(plane.to_vec()),
        SampleType::U32 => FlatSamples::U32(plane.iter().map(|&v| v as u32).collect()),
    }
}

/// A raster's straight alpha, if it has an alpha channel.
fn raster_alpha(decoded: &image::DynamicImage) -> Option<Alpha> {
    if !decoded.color().has_alpha() {
        return None;
    }
    let sixteen = decoded.color().bytes_per_pixel() > decoded.color().channel_count();
    let values = decoded.to_rgba16().pixels().map(|p| p.0[3]).collect();
    Some(Alpha::Png { values, sixteen })
}

/// Whether a PNG (or other raster) declares an alpha channel, read from its header.
fn raster_has_alpha(bytes: &[u8]) -> bool {
    use image::ImageDecoder;
    image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|reader| reader.into_decoder().ok())
        .is_some_and(|decoder| decoder.color_type().has_alpha())
}

/// `alpha` at `to`: itself at its own size, else resized (bilinear) as float.
fn resample(alpha: Alpha, from: (u32, u32), to: (u32, u32)) -> Alpha {
    if from == to {
        return alpha;
    }
    let values = alpha.units();
    let plane = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(from.0, from.1, values)
        .unwrap_or_default();
    let resized =
        image::imageops::resize(&plane, to.0, to.1, image::imageops::FilterType::Triangle);
    Alpha::Resized(resized.into_raw())
}
