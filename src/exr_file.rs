//! OpenEXR files through the `exr` crate: named channels read from whichever part of a
//! multipart file holds them (as renderers write passes), and half-float RGB written.

use std::path::Path;

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
fn full_name(part: Option<&str>, own: String) -> String {
    match part {
        Some(part) if !own.starts_with(&format!("{part}.")) => format!("{part}.{own}"),
        _ => own,
    }
}

/// Whether `bytes` start like an OpenEXR file.
pub fn is_exr(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x76, 0x2f, 0x31, 0x01])
}

/// Reads the channels `wanted` names from a file's bytes. A channel is found by its full name
/// (`part.channel`) or by its name within a part of that prefix; a missing channel, channels
/// of different sizes, or a damaged file is refused naming the file (`name`).
pub fn decode_channels(bytes: &[u8], name: &str, wanted: &[&str]) -> Result<Channels> {
    use exr::prelude::{FlatSamples, ReadChannels, ReadLayers};
    let image = exr::prelude::read()
        .no_deep_data()
        .largest_resolution_level()
        .all_channels()
        .all_layers()
        .all_attributes()
        .non_parallel()
        .from_buffered(std::io::Cursor::new(bytes))
        .map_err(|e| refuse(name, e.to_string()))?;
    let find = |wanted: &str| {
        image.layer_data.iter().find_map(|layer| {
            let part = layer.attributes.layer_name.as_ref().map(|t| t.to_string());
            layer.channel_data.list.iter().find_map(|channel| {
                (full_name(part.as_deref(), channel.name.to_string()) == wanted).then(|| {
                    let values: Vec<f32> = match &channel.sample_data {
                        FlatSamples::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
                        FlatSamples::F32(v) => v.clone(),
                        FlatSamples::U32(v) => v.iter().map(|&u| u as f32).collect(),
                    };
                    (layer.size.width(), layer.size.height(), values)
                })
            })
        })
    };
    let mut size = None;
    let mut planes = Vec::with_capacity(wanted.len());
    for &channel in wanted {
        let (width, height, values) =
            find(channel).ok_or_else(|| refuse(name, format!("no channel {channel}")))?;
        match size {
            Some(size) if size != (width, height) => {
                return Err(refuse(name, "the channels differ in size"));
            }
            _ => size = Some((width, height)),
        }
        planes.push(values);
    }
    let (width, height) = size.ok_or_else(|| refuse(name, "no channel asked for"))?;
    Ok(Channels {
        width,
        height,
        planes,
    })
}

/// Width and height of the file's first part, from its header.
pub fn dimensions(bytes: &[u8], name: &str) -> Result<(u32, u32)> {
    let meta = exr::meta::MetaData::read_from_buffered(std::io::Cursor::new(bytes), false)
        .map_err(|e| refuse(name, e.to_string()))?;
    let size = meta
        .headers
        .first()
        .map(|h| h.layer_size)
        .ok_or_else(|| refuse(name, "no part"))?;
    Ok((size.width() as u32, size.height() as u32))
}

/// The names of every channel in the file (`part.channel` for multipart files).
pub fn channel_names(bytes: &[u8], name: &str) -> Result<Vec<String>> {
    let meta = exr::meta::MetaData::read_from_buffered(std::io::Cursor::new(bytes), false)
        .map_err(|e| refuse(name, e.to_string()))?;
    Ok(meta
        .headers
        .iter()
        .flat_map(|header| {
            let part = header
                .own_attributes
                .layer_name
                .as_ref()
                .map(|t| t.to_string());
            header
                .channels
                .list
                .iter()
                .map(move |channel| full_name(part.as_deref(), channel.name.to_string()))
        })
        .collect())
}

/// Whether the file at `path` holds a channel of this name (full or within its part).
pub fn has_channel(path: &Path, channel: &str) -> bool {
    let name = path.display().to_string();
    std::fs::read(path)
        .ok()
        .and_then(|bytes| channel_names(&bytes, &name).ok())
        .is_some_and(|names| names.iter().any(|n| n == channel))
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

/// How an OpenEXR frame's values become the display-referred pixels VGG sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transfer {
    /// Scene-linear (a renderer's beauty pass): encoded with the sRGB transfer function.
    #[default]
    SceneLinear,
    /// Already display-referred: values in [0, 1] taken as they are.
    DisplayReferred,
}

impl Transfer {
    fn encode(self, linear: f32) -> f32 {
        let v = if linear.is_finite() {
            linear.clamp(0.0, 1.0)
        } else {
            0.0
        };
        match self {
            Transfer::DisplayReferred => v,
            Transfer::SceneLinear if v <= 0.003_130_8 => 12.92 * v,
            Transfer::SceneLinear => 1.055 * v.powf(1.0 / 2.4) - 0.055,
        }
    }

    fn decode(self, display: f32) -> f32 {
        match self {
            Transfer::DisplayReferred => display,
            Transfer::SceneLinear if display <= 0.040_45 => display / 12.92,
            Transfer::SceneLinear => ((display + 0.055) / 1.055).powf(2.4),
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

/// An OpenEXR image's colour as 8-bit RGB through `transfer`.
pub fn decode_rgb(bytes: &[u8], name: &str, transfer: Transfer) -> Result<image::RgbImage> {
    let names = channel_names(bytes, name)?;
    let wanted = colour_channels(&names)
        .ok_or_else(|| refuse(name, format!("no R, G, B channels among {names:?}")))?;
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let read = decode_channels(bytes, name, &wanted)?;
    let (w, h) = (read.width, read.height);
    if w == 0 || h == 0 || w > 1 << 14 || h > 1 << 14 {
        return Err(refuse(name, format!("bad size {w}x{h}")));
    }
    Ok(image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb([0, 1, 2].map(|c| (transfer.encode(read.planes[c][i]) * 255.0).round() as u8))
    }))
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
        for transfer in [Transfer::SceneLinear, Transfer::DisplayReferred] {
            let bytes = encode_rgb(&image, transfer).unwrap();
            assert!(is_exr(&bytes));
            assert_eq!(decode_rgb(&bytes, "round trip", transfer).unwrap(), image);
        }
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
