//! Motion between frames as a renderer or an optical-flow tool writes it: a field of pixel
//! offsets read from an OpenEXR pass (by default Blender's `Vector` pass) or a Middlebury
//! `.flo` file, and bilinear warping of an image along it. The groundwork of sequences
//! (issue 16): a frame is initialised from the previous stylised frame warped to it.

use std::path::Path;

use crate::error::{Error, Result};

/// Per pixel (x, y) of a frame, where that pixel is in another frame: (x + dx, y + dy), x to
/// the right, y down, pixel centres at integers.
#[derive(Debug, Clone, PartialEq)]
pub struct Motion {
    pub width: usize,
    pub height: usize,
    pub dx: Vec<f32>,
    pub dy: Vec<f32>,
}

/// Which EXR channels hold the motion, and the sign each enters with.
#[derive(Debug, Clone, PartialEq)]
pub struct ExrMotionChannels {
    pub x: String,
    pub y: String,
    pub x_sign: f32,
    pub y_sign: f32,
}

impl ExrMotionChannels {
    /// Blender's motion to the previous frame: pixel (x, y) of frame t was at
    /// (x + Vector.X, y - Vector.Y) in frame t-1.
    pub fn blender_to_previous() -> Self {
        Self {
            x: "ViewLayer.Vector.X".into(),
            y: "ViewLayer.Vector.Y".into(),
            x_sign: 1.0,
            y_sign: -1.0,
        }
    }

    /// Blender's motion to the next frame: pixel (x, y) of frame t will be at
    /// (x - Vector.Z, y + Vector.W) in frame t+1.
    pub fn blender_to_next() -> Self {
        Self {
            x: "ViewLayer.Vector.Z".into(),
            y: "ViewLayer.Vector.W".into(),
            x_sign: -1.0,
            y_sign: 1.0,
        }
    }
}

fn refuse(name: &str, reason: impl Into<String>) -> Error {
    Error::Image {
        name: name.into(),
        reason: reason.into(),
    }
}

/// Checks every offset is finite.
fn finite(name: &str, motion: Motion) -> Result<Motion> {
    match motion
        .dx
        .iter()
        .chain(&motion.dy)
        .position(|v| !v.is_finite())
    {
        Some(i) => Err(refuse(
            name,
            format!(
                "motion is not finite at pixel ({}, {})",
                i % (motion.width * motion.height) % motion.width,
                i % (motion.width * motion.height) / motion.width
            ),
        )),
        None => Ok(motion),
    }
}

/// Reads motion from the channels `channels` names, in whichever part (layer) of a
/// multipart OpenEXR file holds them. A channel is found by its full name (`part.channel`)
/// or by its name within a part of that prefix.
pub fn read_exr(path: &Path, channels: &ExrMotionChannels) -> Result<Motion> {
    use exr::prelude::{FlatSamples, read_all_flat_layers_from_file};
    let name = path.display().to_string();
    let image = read_all_flat_layers_from_file(path).map_err(|e| refuse(&name, e.to_string()))?;
    let find = |wanted: &str| {
        image.layer_data.iter().find_map(|layer| {
            let part = layer.attributes.layer_name.as_ref().map(|t| t.to_string());
            layer.channel_data.list.iter().find_map(|channel| {
                let own = channel.name.to_string();
                let full = match &part {
                    Some(part) if !own.starts_with(&format!("{part}.")) => format!("{part}.{own}"),
                    _ => own,
                };
                (full == wanted).then(|| {
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
    let missing = |wanted: &str| refuse(&name, format!("no channel {wanted}"));
    let (width, height, x) = find(&channels.x).ok_or_else(|| missing(&channels.x))?;
    let (w2, h2, y) = find(&channels.y).ok_or_else(|| missing(&channels.y))?;
    if (w2, h2) != (width, height) {
        return Err(refuse(&name, "the motion channels differ in size"));
    }
    let motion = Motion {
        width,
        height,
        dx: x.iter().map(|v| v * channels.x_sign).collect(),
        dy: y.iter().map(|v| v * channels.y_sign).collect(),
    };
    finite(&name, motion)
}

/// Middlebury's `.flo` magic number (the bytes "PIEH").
const FLO_MAGIC: f32 = 202021.25;

/// Reads a Middlebury `.flo` file: the flow from its frame to the other, (u, v) per pixel.
pub fn read_flo(bytes: &[u8], name: &str) -> Result<Motion> {
    let word = |i: usize| -> Option<[u8; 4]> { bytes.get(4 * i..4 * i + 4)?.try_into().ok() };
    let header = (word(0), word(1), word(2));
    let (Some(magic), Some(w), Some(h)) = header else {
        return Err(refuse(name, "too short for a .flo header"));
    };
    if f32::from_le_bytes(magic) != FLO_MAGIC {
        return Err(refuse(name, "not a .flo file (bad magic number)"));
    }
    let (width, height) = (i32::from_le_bytes(w), i32::from_le_bytes(h));
    if width <= 0 || height <= 0 || width > 1 << 16 || height > 1 << 16 {
        return Err(refuse(name, format!("bad size {width}x{height}")));
    }
    let (width, height) = (width as usize, height as usize);
    let values = bytes.len().saturating_sub(12) / 4;
    if values != 2 * width * height {
        return Err(refuse(
            name,
            format!(
                "{values} values for {width}x{height} (truncated or padded; expected {})",
                2 * width * height
            ),
        ));
    }
    let flow: Vec<f32> = (0..values)
        .map(|i| word(3 + i).map_or(f32::NAN, f32::from_le_bytes))
        .collect();
    let motion = Motion {
        width,
        height,
        dx: flow.iter().step_by(2).copied().collect(),
        dy: flow.iter().skip(1).step_by(2).copied().collect(),
    };
    finite(name, motion)
}

/// `image` (channel-major planes of `motion`'s size) warped along `motion`: each pixel takes
/// the bilinear sample of `image` where the motion says it is. Pixels whose sample falls
/// outside the image are marked invalid (and take 0).
pub fn warp(image: &[f32], channels: usize, motion: &Motion) -> (Vec<f32>, Vec<bool>) {
    let (w, h) = (motion.width, motion.height);
    let plane = w * h;
    let mut out = vec![0.0; channels * plane];
    let mut valid = vec![false; plane];
    for i in 0..plane {
        let sx = (i % w) as f32 + motion.dx[i];
        let sy = (i / w) as f32 + motion.dy[i];
        if !(sx >= 0.0 && sy >= 0.0 && sx <= (w - 1) as f32 && sy <= (h - 1) as f32) {
            continue;
        }
        valid[i] = true;
        let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        for c in 0..channels {
            let at = |x: usize, y: usize| image[c * plane + y * w + x];
            let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
            let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
            out[c * plane + i] = top * (1.0 - fy) + bottom * fy;
        }
    }
    (out, valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flo(width: i32, height: i32, flow: &[f32]) -> Vec<u8> {
        let mut bytes = FLO_MAGIC.to_le_bytes().to_vec();
        bytes.extend(width.to_le_bytes());
        bytes.extend(height.to_le_bytes());
        bytes.extend(flow.iter().flat_map(|v| v.to_le_bytes()));
        bytes
    }

    #[test]
    fn flo_files_are_read_and_bad_ones_refused() {
        let motion = read_flo(&flo(2, 1, &[1.0, 2.0, -3.0, 0.5]), "m.flo").unwrap();
        assert_eq!((motion.dx, motion.dy), (vec![1.0, -3.0], vec![2.0, 0.5]));
        let truncated = flo(2, 2, &[0.0; 6]);
        assert!(
            read_flo(&truncated, "t.flo")
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let nan = flo(1, 1, &[f32::NAN, 0.0]);
        assert!(
            read_flo(&nan, "n.flo")
                .unwrap_err()
                .to_string()
                .contains("not finite")
        );
        assert!(read_flo(b"PIEX0000", "x.flo").is_err());
    }

    #[test]
    fn warping_moves_pixels_by_the_motion() {
        // A 4x1 ramp; every pixel samples half a pixel to its right.
        let motion = Motion {
            width: 4,
            height: 1,
            dx: vec![0.5; 4],
            dy: vec![0.0; 4],
        };
        let (out, valid) = warp(&[0.0, 10.0, 20.0, 30.0], 1, &motion);
        assert_eq!(valid, [true, true, true, false]);
        assert_eq!(&out[..3], &[5.0, 15.0, 25.0]);
    }
}
