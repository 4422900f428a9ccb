//! OpenEXR files through the `exr` crate: named channels read from whichever part of a
//! multipart file holds them (as renderers write passes), decoding only the parts that hold
//! the channels asked for, and half-float RGB written.

use std::io::Cursor;
use std::path::Path;

use exr::meta::MetaData;

use crate::colour::View;
use crate::colour::view::{cct_decode, cct_encode, srgb_decode, srgb_encode};
use crate::decode_limits::{MAX_DECODED_BYTES, MAX_DIMENSION};
use crate::error::{Error, Result};

fn refuse(name: &str, reason: impl Into<String>) -> Error {
    Error::Image {
        name: name.into(),
        reason: reason.into(),
    }
}

/// Channels read from one file, all of one size.
#[derive(Debug, Clone)]
pub struct Channels {
    pub width: usize,
    pub height: usize,
    /// One row-major plane per requested channel, in the order asked for.
    pub planes: Vec<Vec<f32>>,
}

/// A channel's name as requests give it: `part.channel` in a named part (unless the channel
/// already carries the part's prefix, as Blender writes them), else the channel's own.
pub(crate) fn full_name(part: Option<&str>, own: String) -> String {
    match part {
        Some(part) if !own.starts_with(&format!("{part}.")) => format!("{part}.{own}"),
        _ => own,
    }
}

/// Whether `bytes` start like an OpenEXR file.
pub fn is_exr(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x76, 0x2f, 0x31, 0x01])
}

/// An OpenEXR file whose headers have been read: its channels' names and sizes are known,
/// and `read` decodes just the parts holding the channels asked for. A renderer's frame
/// (beauty, depth, motion, ... one part each) is read once for all the channels a caller
/// needs, and parts nobody asked for are never decompressed.
pub struct ExrFile<'b> {
    bytes: &'b [u8],
    name: String,
    meta: MetaData,
}

impl<'b> ExrFile<'b> {
    /// Reads the headers of a file's bytes; `name` names the file in errors.
    pub fn open(bytes: &'b [u8], name: &str) -> Result<Self> {
        let meta = MetaData::read_from_buffered(Cursor::new(bytes), false)
            .map_err(|e| refuse(name, e.to_string()))?;
        if meta.headers.is_empty() {
            return Err(refuse(name, "no part"));
        }
        Ok(Self {
            bytes,
            name: name.into(),
            meta,
        })
    }

    fn refuse(&self, reason: impl Into<String>) -> Error {
        refuse(&self.name, reason)
    }

    /// The name errors give the file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Width and height of the part whose colour `rgb` decodes, else of the largest part:
    /// what decoding the file as an image allocates, whatever size its first part claims.
    pub fn dimensions(&self) -> (u32, u32) {
        let colour = self
            .colour_channels()
            .ok()
            .and_then(|[red, _, _]| self.size_of(&red));
        let (width, height) = colour.unwrap_or_else(|| {
            self.meta
                .headers
                .iter()
                .map(|h| (h.layer_size.width(), h.layer_size.height()))
                .max_by_key(|&(w, h)| w as u64 * h as u64)
                .unwrap_or((0, 0))
        });
        (width as u32, height as u32)
    }

    /// Width and height of the part holding `channel` (a full name), if there is one.
    pub fn size_of(&self, channel: &str) -> Option<(usize, usize)> {
        let (part, _, _) = self.channels().find(|(_, _, name)| name == channel)?;
        let size = self.meta.headers[part].layer_size;
        Some((size.width(), size.height()))
    }

    /// (part, channel within the part, full name) of every channel, part by part.
    fn channels(&self) -> impl Iterator<Item = (usize, usize, String)> + '_ {
        self.meta
            .headers
            .iter()
            .enumerate()
            .flat_map(|(part, header)| {
                let part_name = header
                    .own_attributes
                    .layer_name
                    .as_ref()
                    .map(|t| t.to_string());
                header
                    .channels
                    .list
                    .iter()
                    .enumerate()
                    .map(move |(index, channel)| {
                        let name = full_name(part_name.as_deref(), channel.name.to_string());
                        (part, index, name)
                    })
            })
    }

    /// The names of every channel in the file (`part.channel` for multipart files).
    pub fn channel_names(&self) -> Vec<String> {
        self.channels().map(|(_, _, name)| name).collect()
    }

    /// The sample type of the channel of this full name, if there is one.
    pub fn sample_type(&self, channel: &str) -> Option<exr::meta::attribute::SampleType> {
        let (part, index, _) = self.channels().find(|(_, _, name)| name == channel)?;
        Some(self.meta.headers[part].channels.list[index].sample_type)
    }

    /// Whether the file holds a channel of this full name.
    pub fn has_channel(&self, wanted: &str) -> bool {
        self.channels().any(|(_, _, name)| name == wanted)
    }

    /// Decodes the channels `wanted` names (full names, as `channel_names` gives them), in
    /// that order. Only the parts holding them are decompressed, at their full resolution.
    /// A missing or subsampled channel, channels of different sizes, a size beyond the
    /// decoder's limits or a damaged file is refused naming the file.
    pub fn read(&self, wanted: &[&str]) -> Result<Channels> {
        use exr::block::UncompressedBlock;
        use exr::block::chunk::CompressedBlock;
        use exr::block::reader::ChunksReader;
        use exr::math::Vec2;
        let mut located = Vec::with_capacity(wanted.len());
        for &channel in wanted {
            let found = self.channels().find(|(_, _, name)| name == channel);
            let (part, index, _) =
                found.ok_or_else(|| self.refuse(format!("no channel {channel}")))?;
            located.push((part, index));
        }
        let Some(&(first, _)) = located.first() else {
            return Err(self.refuse("no channel asked for"));
        };
        let size = self.meta.headers[first].layer_size;
        for (&(part, index), &channel) in located.iter().zip(wanted) {
            let header = &self.meta.headers[part];
            if header.layer_size != size {
                return Err(self.refuse("the channels differ in size"));
            }
            if header.deep {
                return Err(self.refuse(format!("channel {channel} holds deep data")));
            }
            if header.channels.list[index].sampling != Vec2(1, 1) {
                return Err(self.refuse(format!("channel {channel} is subsampled")));
            }
        }
        let (width, height) = (size.width(), size.height());
        let decoded_bytes = (width as u64) * (height as u64) * 4 * wanted.len() as u64;
        let side = MAX_DIMENSION as usize;
        if width == 0 || height == 0 || width > side || height > side {
            return Err(self.refuse(format!("bad size {width}x{height}")));
        }
        if decoded_bytes > MAX_DECODED_BYTES {
            return Err(self.refuse(format!(
                "{width}x{height} x {} channels is more than {MAX_DECODED_BYTES} bytes decoded",
                wanted.len()
            )));
        }
        let mut planes = vec![vec![0f32; width * height]; wanted.len()];
        let damaged = |e: exr::error::Error| self.refuse(e.to_string());
        // Every chunk is read, so a cut-off file is refused whichever part it cuts; only the
        // parts holding wanted channels are decompressed.
        let chunks = exr::block::read(Cursor::new(self.bytes), false)
            .and_then(|reader| reader.all_chunks(false))
            .map_err(damaged)?;
        let meta = chunks.meta_data().clone();
        for chunk in chunks {
            let chunk = chunk.map_err(damaged)?;
            let largest = match &chunk.compressed_block {
                CompressedBlock::Tile(tile) => tile.coordinates.level_index == Vec2(0, 0),
                _ => true,
            };
            if !largest || !located.iter().any(|l| l.0 == chunk.layer_index) {
                continue;
            }
            let block =
                UncompressedBlock::decompress_chunk(chunk, &meta, false).map_err(damaged)?;
            let channels = &meta.headers[block.index.layer].channels;
            for line in block.lines(channels) {
                let at = (line.location.layer, line.location.channel);
                let start = line.location.position.y() * width + line.location.position.x();
                let span = start..start + line.location.sample_count;
                for (plane, _) in located.iter().enumerate().filter(|(_, l)| **l == at) {
                    let row = planes[plane]
                        .get_mut(span.clone())
                        .ok_or_else(|| self.refuse("a line lies outside its part"))?;
                    read_line(line, channels.list[at.1].sample_type, row).map_err(damaged)?;
                }
            }
        }
        Ok(Channels {
            width,
            height,
            planes,
        })
    }

    /// The colour channels: `R`, `G`, `B` of the first part whose name has `Combined` (a
    /// Blender beauty pass), else of the first part that has all three.
    pub fn colour_channels(&self) -> Result<[String; 3]> {
        let names = self.channel_names();
        colour_channels(&names)
            .ok_or_else(|| self.refuse(format!("no R, G, B channels among {names:?}")))
    }

    /// The alpha channel beside the colour (`A` with the colour's prefix), if there is one.
    pub fn alpha_channel(&self) -> Option<String> {
        let [red, _, _] = self.colour_channels().ok()?;
        let alpha = format!("{}A", red.strip_suffix('R')?);
        self.has_channel(&alpha).then_some(alpha)
    }

    /// The colour planes (`colour_channels`), decoded and straight: OpenEXR colour is
    /// premultiplied by its alpha, so where alpha is above zero it is divided out (where it
    /// is zero the colour is left as it is).
    fn colour(&self) -> Result<Channels> {
        let [red, green, blue] = self.colour_channels()?;
        let Some(alpha) = self.alpha_channel() else {
            return self.read(&[&red, &green, &blue]);
        };
        let mut channels = self.read(&[&red, &green, &blue, &alpha])?;
        channels.straighten(3);
        channels.planes.pop();
        Ok(channels)
    }

    /// The colour as 8-bit RGB through `transfer`.
    pub fn rgb(&self, transfer: Transfer) -> Result<image::RgbImage> {
        FrameView::from(transfer).rgb8(self)
    }

    /// The colour as display values in full precision through `transfer`.
    pub fn display(&self, transfer: Transfer) -> Result<image::Rgb32FImage> {
        Ok(self
            .colour()?
            .display_with(0, |linear| linear.map(|v| transfer.encode(v))))
    }

    /// The colour as display values through `view` (any view: a studio's LUT too).
    pub fn display_through(&self, view: &View) -> Result<image::Rgb32FImage> {
        let view = FrameView::Studio(view.clone());
        Ok(self.colour()?.display_with(0, |linear| view.encode(linear)))
    }
}

/// One line's samples as f32, whatever the channel's sample type.
fn read_line(
    line: exr::block::lines::LineRef<'_>,
    sample_type: exr::meta::attribute::SampleType,
    row: &mut [f32],
) -> exr::error::UnitResult {
    use exr::meta::attribute::SampleType;
    match sample_type {
        SampleType::F32 => line.read_samples_into_slice(row)?,
        SampleType::F16 => {
            for (value, sample) in row.iter_mut().zip(line.read_samples::<exr::prelude::f16>()) {
                *value = sample?.to_f32();
            }
        }
        SampleType::U32 => {
            for (value, sample) in row.iter_mut().zip(line.read_samples::<u32>()) {
                *value = sample? as f32;
            }
        }
    }
    Ok(())
}

impl Channels {
    /// Divides planes 0, 1 and 2 (colour, premultiplied as OpenEXR stores it) by plane
    /// `alpha` where it is above zero; where it is zero the colour is left as it is.
    pub fn straighten(&mut self, alpha: usize) {
        let (colour, rest) = self.planes.split_at_mut(3);
        let Some(alpha) = rest.get(alpha.wrapping_sub(3)) else {
            return;
        };
        for plane in colour {
            for (value, &a) in plane.iter_mut().zip(alpha) {
                if a > 0.0 {
                    *value /= a;
                }
            }
        }
    }

    /// Planes `first`, `first + 1` and `first + 2` as display values in full precision, each
    /// pixel's three values through `encode`.
    pub fn display_with(
        &self,
        first: usize,
        encode: impl Fn([f32; 3]) -> [f32; 3],
    ) -> image::Rgb32FImage {
        let planes = &self.planes[first..first + 3];
        image::Rgb32FImage::from_fn(self.width as u32, self.height as u32, |x, y| {
            let i = y as usize * self.width + x as usize;
            image::Rgb(encode([0, 1, 2].map(|c| planes[c][i])))
        })
    }
}

/// Reads the channels `wanted` names from a file's bytes (see `ExrFile::read`).
pub fn decode_channels(bytes: &[u8], name: &str, wanted: &[&str]) -> Result<Channels> {
    ExrFile::open(bytes, name)?.read(wanted)
}

/// Width and height of the file's first part, from its header.
pub fn dimensions(bytes: &[u8], name: &str) -> Result<(u32, u32)> {
    Ok(ExrFile::open(bytes, name)?.dimensions())
}

/// Whether the file at `path` holds a channel of this name (full or within its part).
pub fn has_channel(path: &Path, channel: &str) -> bool {
    let name = path.display().to_string();
    std::fs::read(path)
        .ok()
        .and_then(|bytes| Some(ExrFile::open(&bytes, &name).ok()?.has_channel(channel)))
        .unwrap_or(false)
}

/// An OpenEXR image's colour as 8-bit RGB through `transfer`.
pub fn decode_rgb(bytes: &[u8], name: &str, transfer: Transfer) -> Result<image::RgbImage> {
    ExrFile::open(bytes, name)?.rgb(transfer)
}

/// Writes three row-major planes as a half-float RGB file's bytes.
pub fn encode_rgb_half(width: usize, height: usize, rgb: [&[f32]; 3]) -> Result<Vec<u8>> {
    use exr::prelude::{Image, SpecificChannels, Vec2, WritableImage, f16};
    let at = |c: usize, x: usize, y: usize| f16::from_f32(rgb[c][y * width + x]);
    let channels = SpecificChannels::rgb(|Vec2(x, y)| (at(0, x, y), at(1, x, y), at(2, x, y)));
    let mut out = std::io::Cursor::new(Vec::new());
    Image::from_channels((width, height), channels)
        .write()
        .non_parallel()
        .to_buffered(&mut out)
        .map_err(|e| refuse("output", e.to_string()))?;
    Ok(out.into_inner())
}

/// How an OpenEXR frame's values become the display values VGG sees, and back: the view
/// (docs/colour.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transfer {
    /// Scene-linear through the sRGB curve: light above 1.0 is clipped to 1.0 (and comes back
    /// at 1.0).
    #[default]
    SceneLinear,
    /// Scene-linear through ACEScct's logarithmic curve: display values in [0, 1] cover light
    /// up to 222, so highlights are stylised and come back above 1.0. The default for
    /// scene-linear OpenEXR.
    SceneLinearLog,
    /// Already display-referred: values in [0, 1] taken as they are.
    DisplayReferred,
}

/// How a shot's frames become display values and its OpenEXR outputs return: a built-in
/// transfer, or a studio's view (a LUT pair). One for the whole shot: its frames are held to
/// each other through it.
#[derive(Debug, Clone)]
pub enum FrameView {
    Builtin(Transfer),
    Studio(View),
}

impl From<Transfer> for FrameView {
    fn from(transfer: Transfer) -> Self {
        FrameView::Builtin(transfer)
    }
}

impl FrameView {
    /// A file's (straight) colour to display values in [0, 1].
    pub fn encode(&self, rgb: [f32; 3]) -> [f32; 3] {
        match self {
            FrameView::Builtin(transfer) => rgb.map(|v| transfer.encode(v)),
            FrameView::Studio(view) => {
                let finite = rgb.map(|v| if v.is_finite() { v } else { 0.0 });
                view.encode(finite).map(|v| v.clamp(0.0, 1.0))
            }
        }
    }

    /// The built-in transfer an OpenEXR output names (a studio view's output returns through
    /// `studio` instead).
    pub fn transfer(&self) -> Transfer {
        match self {
            FrameView::Builtin(transfer) => *transfer,
            FrameView::Studio(_) => Transfer::default(),
        }
    }

    /// The studio's view, if this is one.
    pub fn studio(&self) -> Option<&View> {
        match self {
            FrameView::Builtin(_) => None,
            FrameView::Studio(view) => Some(view),
        }
    }

    /// An OpenEXR frame's colour (`file`) as 8-bit display values: how a shot's delivered
    /// frame is read back to continue the chain from.
    pub fn rgb8(&self, file: &ExrFile) -> Result<image::RgbImage> {
        let display = file.colour()?.display_with(0, |linear| self.encode(linear));
        Ok(image::RgbImage::from_fn(
            display.width(),
            display.height(),
            |x, y| image::Rgb(display.get_pixel(x, y).0.map(|v| (v * 255.0).round() as u8)),
        ))
    }
}

/// The scene-linear values ACEScct's [0, 1] holds.
const LOG_FLOOR: f32 = -0.006_917;
const LOG_PEAK: f32 = 222.860_9;

impl Transfer {
    /// The view a request names (`srgb`, `acescct`, `display`); errors name `field`.
    pub fn named(field: &str, name: &str) -> Result<Self> {
        match name {
            "srgb" => Ok(Transfer::SceneLinear),
            "acescct" => Ok(Transfer::SceneLinearLog),
            "display" => Ok(Transfer::DisplayReferred),
            other => Err(Error::invalid(
                field,
                format!("`{other}` is not a view (srgb, acescct or display)"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transfer::SceneLinear => "srgb",
            Transfer::SceneLinearLog => "acescct",
            Transfer::DisplayReferred => "display",
        }
    }

    /// The view for content in `bytes` when none is named: ACEScct for OpenEXR (scene-linear,
    /// with highlights), sRGB otherwise (where it only matters for an OpenEXR output).
    pub fn default_for(bytes: &[u8]) -> Self {
        if is_exr(bytes) {
            Transfer::SceneLinearLog
        } else {
            Transfer::SceneLinear
        }
    }

    /// A file's value to a display value.
    pub fn encode(self, linear: f32) -> f32 {
        let finite = if linear.is_finite() { linear } else { 0.0 };
        match self {
            Transfer::DisplayReferred => finite.clamp(0.0, 1.0),
            Transfer::SceneLinear => srgb_encode(finite.clamp(0.0, 1.0)),
            Transfer::SceneLinearLog => {
                cct_encode(finite.clamp(LOG_FLOOR, LOG_PEAK)).clamp(0.0, 1.0)
            }
        }
    }

    /// A display value back to the file's.
    pub fn decode(self, display: f32) -> f32 {
        match self {
            Transfer::DisplayReferred => display,
            Transfer::SceneLinear => srgb_decode(display),
            Transfer::SceneLinearLog => cct_decode(display),
        }
    }
}

/// The colour channels of a file: `R`, `G`, `B` of the first part whose name has
/// `Combined` (a Blender beauty pass), else of the first part that has all three.
fn colour_channels(names: &[String]) -> Option<[String; 3]> {
    let prefixes = names.iter().filter_map(|n| {
        let prefix = n.strip_suffix('R')?;
        let all = ['G', 'B']
            .iter()
            .all(|c| names.contains(&format!("{prefix}{c}")));
        all.then(|| prefix.to_string())
    });
    let prefixes: Vec<String> = prefixes.collect();
    let chosen = prefixes
        .iter()
        .find(|p| p.contains("Combined"))
        .or(prefixes.first())?;
    Some(['R', 'G', 'B'].map(|c| format!("{chosen}{c}")))
}

/// A 16-bit image of display values as half-float OpenEXR through the inverse of `transfer`:
/// what an OpenEXR output holds (scene-linear for frames that came in scene-linear; above
/// 1.0 through the log view).
pub fn encode_display16(
    image: &image::ImageBuffer<image::Rgb<u16>, Vec<u16>>,
    transfer: Transfer,
) -> Result<Vec<u8>> {
    encode_display16_with(image, |display| display.map(|v| transfer.decode(v)))
}

/// A 16-bit image of display values as half-float OpenEXR through `view`'s inverse.
pub fn encode_display16_through(
    image: &image::ImageBuffer<image::Rgb<u16>, Vec<u16>>,
    view: &View,
) -> Result<Vec<u8>> {
    encode_display16_with(image, |display| view.decode(display))
}

/// A 16-bit image of display values as half-float OpenEXR, each pixel's three values back
/// to the file's through `decode`.
fn encode_display16_with(
    image: &image::ImageBuffer<image::Rgb<u16>, Vec<u16>>,
    decode: impl Fn([f32; 3]) -> [f32; 3],
) -> Result<Vec<u8>> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut planes: [Vec<f32>; 3] = std::array::from_fn(|_| Vec::with_capacity(w * h));
    for p in image.pixels() {
        let linear = decode(p.0.map(|v| v as f32 / 65535.0));
        for (plane, value) in planes.iter_mut().zip(linear) {
            plane.push(value);
        }
    }
    encode_rgb_half(w, h, [&planes[0], &planes[1], &planes[2]])
}

/// An 8-bit image as half-float OpenEXR, the inverse of `transfer` (scene-linear for frames
/// that came in scene-linear).
pub fn encode_rgb(image: &image::RgbImage, transfer: Transfer) -> Result<Vec<u8>> {
    let planes: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            image
                .pixels()
                .map(|p| transfer.decode(p[c] as f32 / 255.0))
                .collect()
        })
        .collect();
    let (w, h) = (image.width() as usize, image.height() as usize);
    encode_rgb_half(w, h, [&planes[0], &planes[1], &planes[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_8_bit_level_survives_a_half_float_round_trip() {
        let image = image::RgbImage::from_fn(256, 3, |x, y| {
            image::Rgb([x as u8, (255 - x) as u8, (x * y) as u8])
        });
        for transfer in [
            Transfer::SceneLinear,
            Transfer::SceneLinearLog,
            Transfer::DisplayReferred,
        ] {
            let bytes = encode_rgb(&image, transfer).unwrap();
            assert!(is_exr(&bytes));
            assert_eq!(decode_rgb(&bytes, "round trip", transfer).unwrap(), image);
        }
    }

    #[test]
    fn a_header_claiming_more_than_the_decoder_may_allocate_is_refused_before_decoding() {
        let bytes = encode_rgb(&image::RgbImage::new(4, 4), Transfer::SceneLinear).unwrap();
        // The data window (xMin, yMin, xMax, yMax) widened to 16384 x 16384: three float
        // planes of that would take 3 GiB.
        let tag = b"dataWindow\0box2i\0";
        let at = bytes.windows(tag.len()).position(|w| w == tag).unwrap() + tag.len() + 4;
        let mut claimed = bytes.clone();
        for (k, value) in [0i32, 0, 16_383, 16_383].into_iter().enumerate() {
            claimed[at + 4 * k..at + 4 * k + 4].copy_from_slice(&value.to_le_bytes());
        }
        let file = ExrFile::open(&claimed, "claimed.exr").unwrap();
        assert_eq!(file.dimensions(), (16_384, 16_384));
        let error = file.rgb(Transfer::SceneLinear).unwrap_err().to_string();
        assert!(
            error.contains("claimed.exr") && error.contains("bytes decoded"),
            "{error}"
        );
    }

    #[test]
    fn the_srgb_transfer_matches_its_definition() {
        let t = Transfer::SceneLinear;
        assert_eq!(t.encode(0.0), 0.0);
        assert!((t.encode(0.18) - 0.461_356).abs() < 1e-5);
        assert!((t.encode(1.0) - 1.0).abs() < 1e-6);
        assert_eq!(t.encode(7.5), t.encode(1.0));
        assert_eq!(t.encode(f32::NAN), 0.0);
        assert!((t.decode(t.encode(0.18)) - 0.18).abs() < 1e-6);
    }

    #[test]
    fn damaged_files_and_missing_colour_are_refused_by_name() {
        let image = image::RgbImage::new(4, 4);
        let bytes = encode_rgb(&image, Transfer::SceneLinear).unwrap();
        let truncated = &bytes[..bytes.len() / 2];
        let error = decode_rgb(truncated, "cut.exr", Transfer::SceneLinear).unwrap_err();
        assert!(error.to_string().contains("cut.exr"), "{error}");
        assert!(colour_channels(&["A".into(), "Z".into()]).is_none());
        assert_eq!(
            colour_channels(&[
                "V.X".into(),
                "L.Combined.R".into(),
                "L.Combined.G".into(),
                "L.Combined.B".into()
            ]),
            Some([
                "L.Combined.R".into(),
                "L.Combined.G".into(),
                "L.Combined.B".into()
            ])
        );
    }
}
