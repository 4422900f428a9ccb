//! Motion between frames as a renderer or an optical-flow tool writes it: a field of pixel
//! offsets read from an OpenEXR pass (by default Blender's `Vector` pass) or a Middlebury
//! `.flo` file, and bilinear warping of an image along it. The groundwork of sequences
//! (issue 16): a frame is initialised from the previous stylised frame warped to it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::exr_file::{Channels, ExrFile, FrameView};

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
    match motion.non_finite() {
        Some(reason) => Err(refuse(name, reason)),
        None => Ok(motion),
    }
}

/// Reads motion from the channels `channels` names, in whichever part (layer) of a
/// multipart OpenEXR file holds them.
pub fn read_exr(path: &Path, channels: &ExrMotionChannels) -> Result<Motion> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| refuse(&name, e.to_string()))?;
    decode_exr(&bytes, &name, channels, None)
}

/// `read_exr` on a file's bytes; `name` names it in errors. With `frame` (width, height), a
/// motion of another size is refused from the headers, before anything is decompressed.
pub fn decode_exr(
    bytes: &[u8],
    name: &str,
    channels: &ExrMotionChannels,
    frame: Option<(usize, usize)>,
) -> Result<Motion> {
    let file = ExrFile::open(bytes, name)?;
    if let Some((width, height)) = frame {
        for channel in [&channels.x, &channels.y] {
            if let Some(size) = file.size_of(channel) {
                fits_frame(name, size, (width, height))?;
            }
        }
    }
    let mut read = file.read(&[&channels.x, &channels.y])?;
    take_motion(&mut read, 0, channels, name)
}

/// A frame's colour and motions from its one OpenEXR file, as renderers write them, in a
/// single pass over the file: the colour (straight) through `view` at full precision, and each motion asked for
/// (`None` where that one is not wanted or comes from elsewhere).
pub fn read_exr_frame<const N: usize>(
    file: &ExrFile,
    view: &FrameView,
    motions: [Option<&ExrMotionChannels>; N],
) -> Result<(image::Rgb32FImage, [Option<Motion>; N])> {
    let colour = file.colour_channels()?;
    let alpha = file.alpha_channel();
    let mut wanted: Vec<&str> = colour.iter().map(String::as_str).collect();
    wanted.extend(alpha.as_deref());
    for channels in motions.iter().flatten() {
        wanted.extend([channels.x.as_str(), channels.y.as_str()]);
    }
    let mut read = file.read(&wanted)?;
    if alpha.is_some() {
        read.straighten(3);
    }
    let image = read.display_with(0, |linear| view.encode(linear));
    let mut next_plane = 3 + alpha.is_some() as usize;
    let mut taken = [const { None }; N];
    for (slot, channels) in taken.iter_mut().zip(motions) {
        if let Some(channels) = channels {
            *slot = Some(take_motion(&mut read, next_plane, channels, file.name())?);
            next_plane += 2;
        }
    }
    Ok((image, taken))
}

/// The first of the motion's channels the file lacks, if any.
pub fn missing_channel<'c>(file: &ExrFile, channels: &'c ExrMotionChannels) -> Option<&'c str> {
    [&channels.x, &channels.y]
        .into_iter()
        .find(|channel| !file.has_channel(channel))
        .map(String::as_str)
}

/// Planes `first` and `first + 1` of `read`, moved out and signed as `channels` says.
fn take_motion(
    read: &mut Channels,
    first: usize,
    channels: &ExrMotionChannels,
    name: &str,
) -> Result<Motion> {
    let (width, height) = (read.width, read.height);
    let mut plane = |k: usize, sign: f32| {
        let mut values = std::mem::take(&mut read.planes[first + k]);
        values.iter_mut().for_each(|v| *v *= sign);
        values
    };
    let dx = plane(0, channels.x_sign);
    let dy = plane(1, channels.y_sign);
    finite(
        name,
        Motion {
            width,
            height,
            dx,
            dy,
        },
    )
}

/// Refuses a motion file of `size` for a frame of another size, from its header.
fn fits_frame(name: &str, size: (usize, usize), frame: (usize, usize)) -> Result<()> {
    if size == frame {
        return Ok(());
    }
    Err(refuse(
        name,
        format!(
            "{}x{}, the frame {}x{}: the motion has one offset per pixel",
            size.0, size.1, frame.0, frame.1
        ),
    ))
}

/// Middlebury's `.flo` magic number (the bytes "PIEH").
const FLO_MAGIC: f32 = 202021.25;

/// Reads a Middlebury `.flo` file: the flow from its frame to the other, (u, v) per pixel.
/// With a `frame` size, a file of another size is refused from its header.
pub fn read_flo(bytes: &[u8], name: &str, frame: Option<(usize, usize)>) -> Result<Motion> {
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
    if let Some(frame) = frame {
        fits_frame(name, (width, height), frame)?;
    }
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

impl Motion {
    /// No motion: every pixel of a `width` x `height` frame stays where it is (a frame
    /// continued from a draft of itself).
    pub fn still(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            dx: vec![0.0; width * height],
            dy: vec![0.0; width * height],
        }
    }

    /// Checks the field has `width` x `height` finite offsets, naming `field` (a request field
    /// such as `frames[3].motion_to_previous`).
    pub fn check(&self, field: &str, width: usize, height: usize) -> Result<()> {
        if (self.width, self.height) != (width, height) {
            return Err(Error::invalid(
                field,
                format!(
                    "motion is {}x{}, the frame {width}x{height}",
                    self.width, self.height
                ),
            ));
        }
        let plane = width * height;
        if self.dx.len() != plane || self.dy.len() != plane {
            return Err(Error::invalid(
                field,
                format!(
                    "{} and {} offsets for {width}x{height} pixels",
                    self.dx.len(),
                    self.dy.len()
                ),
            ));
        }
        if let Some(reason) = self.non_finite() {
            return Err(Error::invalid(field, reason));
        }
        Ok(())
    }

    /// Where the first non-finite offset is, said as an error's reason.
    fn non_finite(&self) -> Option<String> {
        let plane = self.width * self.height;
        let i = self
            .dx
            .iter()
            .chain(&self.dy)
            .position(|v| !v.is_finite())?
            % plane;
        Some(format!(
            "motion is not finite at pixel ({}, {})",
            i % self.width,
            i / self.width
        ))
    }

    /// The same motion on a `width` x `height` grid: sampled bilinearly at the corresponding
    /// points and measured in the new grid's pixels.
    pub fn resized(&self, width: usize, height: usize) -> Motion {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let (sx, sy) = (
            self.width as f32 / width as f32,
            self.height as f32 / height as f32,
        );
        let mut planes = self.dx.clone();
        planes.extend_from_slice(&self.dy);
        let mut dx = Vec::with_capacity(width * height);
        let mut dy = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                // Pixel centres line up: centre x of the new grid is (x + 0.5) * sx - 0.5.
                let at = (
                    ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (self.width - 1) as f32),
                    ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (self.height - 1) as f32),
                );
                let [u, v] = sample(&planes, self.width, self.height, at);
                dx.push(u / sx);
                dy.push(v / sy);
            }
        }
        Motion {
            width,
            height,
            dx,
            dy,
        }
    }
}

/// Plane `c` of channel-major `planes` (each `w` x `h`), bilinearly at `(x, y)` inside the grid.
fn bilinear(planes: &[f32], w: usize, h: usize, (x, y): (f32, f32), c: usize) -> f32 {
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |x: usize, y: usize| planes[c * w * h + y * w + x];
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Plane `c` of channel-major `planes` at `(x, y)` inside the grid, by Catmull-Rom's cubic
/// (edges clamped): it keeps a resampled image's detail where bilinear blurs it.
fn catmull_rom(planes: &[f32], w: usize, h: usize, (x, y): (f32, f32), c: usize) -> f32 {
    let weights = |t: f32| {
        let (t2, t3) = (t * t, t * t * t);
        [
            0.5 * (-t3 + 2.0 * t2 - t),
            0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
            0.5 * (-3.0 * t3 + 4.0 * t2 + t),
            0.5 * (t3 - t2),
        ]
    };
    let (x0, y0) = (x.floor(), y.floor());
    let (wx, wy) = (weights(x - x0), weights(y - y0));
    let clamp = |v: f32, n: usize| (v.max(0.0) as usize).min(n - 1);
    let plane = &planes[c * w * h..(c + 1) * w * h];
    let mut sum = 0.0;
    for (j, wy) in wy.iter().enumerate() {
        let row = clamp(y0 + j as f32 - 1.0, h) * w;
        for (i, wx) in wx.iter().enumerate() {
            sum += wy * wx * plane[row + clamp(x0 + i as f32 - 1.0, w)];
        }
    }
    sum
}

/// Both planes of a two-plane field at `at`.
fn sample(planes: &[f32], w: usize, h: usize, at: (f32, f32)) -> [f32; 2] {
    [0, 1].map(|c| bilinear(planes, w, h, at, c))
}

/// Ruder et al.'s forward–backward consistency of a frame's motion to the previous frame
/// (`backward`) with the previous frame's motion to this one (`forward`, read where
/// `backward` points): a pixel is consistent when following one and then the other comes
/// back near where it started, `|f + b|² <= 0.01 (|f|² + |b|²) + 0.5`. Pixels pointing
/// outside the previous frame are not. Ruder's second test, refusing pixels on motion
/// boundaries (`|∇b|² > 0.01 |b|² + 0.002`), is left out: under a moving camera the motion's
/// gradient is large across whole surfaces, and the test let a fifth of an orbiting shot's
/// pixels go unheld every frame (its warping error 59.83 with it, 35.18 without: issue 30).
pub fn consistent(backward: &Motion, forward: &Motion) -> Vec<bool> {
    let (w, h) = (backward.width, backward.height);
    let mut planes = forward.dx.clone();
    planes.extend_from_slice(&forward.dy);
    (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let (bx, by) = (backward.dx[i], backward.dy[i]);
            let (px, py) = (x as f32 + bx, y as f32 + by);
            if !(px >= 0.0 && py >= 0.0 && px <= (w - 1) as f32 && py <= (h - 1) as f32) {
                return false;
            }
            let [fx, fy] = sample(&planes, w, h, (px, py));
            let round_trip = (fx + bx).powi(2) + (fy + by).powi(2);
            round_trip <= 0.01 * (fx * fx + fy * fy + bx * bx + by * by) + 0.5
        })
        .collect()
}

/// Motion across two steps: where each pixel of frame a is in frame c, from its motion to
/// frame b (`first`) and frame b's motion to c (`then`, read where `first` lands), both of
/// one size. A pixel whose path leaves frame b is sent outside frame c, so nothing warped
/// along the result vouches for it.
pub fn compose(first: &Motion, then: &Motion) -> Motion {
    let (w, h) = (first.width, first.height);
    let mut planes = then.dx.clone();
    planes.extend_from_slice(&then.dy);
    let mut composed = Motion {
        width: w,
        height: h,
        dx: Vec::with_capacity(w * h),
        dy: Vec::with_capacity(w * h),
    };
    for i in 0..w * h {
        let (x, y) = ((i % w) as f32, (i / w) as f32);
        let (bx, by) = (x + first.dx[i], y + first.dy[i]);
        let inside = bx >= 0.0 && by >= 0.0 && bx <= (w - 1) as f32 && by <= (h - 1) as f32;
        let [u, v] = if inside {
            sample(&planes, w, h, (bx, by))
        } else {
            // Far past the frame's left edge, whatever the later steps add.
            [-(x + 2.0 * w as f32) - first.dx[i], 0.0]
        };
        composed.dx.push(first.dx[i] + u);
        composed.dy.push(first.dy[i] + v);
    }
    composed
}

/// `image` (channel-major planes of `motion`'s size) warped along `motion`: each pixel takes
/// the bilinear sample of `image` where the motion says it is. Pixels whose sample falls
/// outside the image are marked invalid (and take 0).
pub fn warp(image: &[f32], channels: usize, motion: &Motion) -> (Vec<f32>, Vec<bool>) {
    warp_by(image, channels, motion, bilinear)
}

/// `warp` sampling by Catmull-Rom's cubic instead: what a shot carries from frame to frame.
/// Each frame starts from the one before it resampled, so a bilinear warp's blur compounds
/// over a moving camera's shot (strokes 4 pixels apart keep 0.25 of their contrast after
/// four half-pixel warps bilinearly, 0.61 by the cubic).
pub fn warp_cubic(image: &[f32], channels: usize, motion: &Motion) -> (Vec<f32>, Vec<bool>) {
    warp_by(image, channels, motion, catmull_rom)
}

/// Samples plane `c` of channel-major planes (each `w` x `h`) at a point inside the grid.
type Sampler = fn(&[f32], usize, usize, (f32, f32), usize) -> f32;

fn warp_by(
    image: &[f32],
    channels: usize,
    motion: &Motion,
    sample: Sampler,
) -> (Vec<f32>, Vec<bool>) {
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
        for c in 0..channels {
            out[c * plane + i] = sample(image, w, h, (sx, sy), c);
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
        let motion = read_flo(&flo(2, 1, &[1.0, 2.0, -3.0, 0.5]), "m.flo", None).unwrap();
        assert_eq!((motion.dx, motion.dy), (vec![1.0, -3.0], vec![2.0, 0.5]));
        let other_size = read_flo(&flo(2, 1, &[0.0; 4]), "o.flo", Some((4, 4))).unwrap_err();
        assert!(
            other_size.to_string().contains("2x1, the frame 4x4"),
            "{other_size}"
        );
        let truncated = flo(2, 2, &[0.0; 6]);
        assert!(
            read_flo(&truncated, "t.flo", None)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let nan = flo(1, 1, &[f32::NAN, 0.0]);
        assert!(
            read_flo(&nan, "n.flo", None)
                .unwrap_err()
                .to_string()
                .contains("not finite")
        );
        assert!(read_flo(b"PIEX0000", "x.flo", None).is_err());
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

    #[test]
    fn composed_motion_follows_both_steps_and_drops_paths_that_leave() {
        let shift = |dx: f32, dy: f32| Motion {
            width: 8,
            height: 6,
            dx: vec![dx; 48],
            dy: vec![dy; 48],
        };
        // One pixel right and half down, then two pixels right and one up.
        let both = compose(&shift(1.0, 0.5), &shift(2.0, -1.0));
        let i = 2 * 8 + 1;
        assert_eq!((both.dx[i], both.dy[i]), (3.0, -0.5));
        // Pixel (7, 2) leaves the middle frame on the first step: nothing vouches for it,
        // however the second step would have brought it back.
        let back = compose(&shift(1.0, 0.0), &shift(-3.0, 0.0));
        let (x, i) = (7.0, 2 * 8 + 7);
        assert!(x + back.dx[i] < 0.0, "{}", back.dx[i]);
        let (_, inside) = warp(&[0.0; 48], 1, &back);
        assert!(!inside[i] && inside[2 * 8 + 6]);
        // Once outside, a further step keeps it outside.
        let again = compose(&back, &shift(20.0, 0.0));
        assert!(x + again.dx[i] < 0.0);
    }

    #[test]
    fn the_cubic_warp_keeps_detail_the_bilinear_blurs() {
        let (w, h) = (64, 1);
        let shift = |dx: f32| Motion {
            width: w,
            height: h,
            dx: vec![dx; w],
            dy: vec![0.0; w],
        };
        // A stroke pattern of period 4 pixels, shifted half a pixel four times over.
        let strokes: Vec<f32> = (0..w)
            .map(|x| 128.0 + 100.0 * (std::f32::consts::FRAC_PI_2 * x as f32 + 0.3).sin())
            .collect();
        let contrast = |image: &[f32]| {
            let middle = &image[16..48];
            let mean = middle.iter().sum::<f32>() / middle.len() as f32;
            (middle.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / middle.len() as f32).sqrt()
        };
        type Warp = fn(&[f32], usize, &Motion) -> (Vec<f32>, Vec<bool>);
        let after_four = |resample: Warp| {
            let mut image = strokes.clone();
            for dx in [0.5, -0.5, 0.5, -0.5] {
                image = resample(&image, 1, &shift(dx)).0;
            }
            contrast(&image) / contrast(&strokes)
        };
        let (bilinear, cubic) = (after_four(warp), after_four(warp_cubic));
        // cos(pi/4)^4 = 0.25 bilinearly; (10/8 cos(pi/4))^4 = 0.61 by the cubic.
        assert!((bilinear - 0.25).abs() < 0.01, "{bilinear}");
        assert!((cubic - 0.61).abs() < 0.01, "{cubic}");
        // Whole-pixel shifts and flat regions come through exactly.
        let (moved, _) = warp_cubic(&strokes, 1, &shift(1.0));
        assert_eq!(moved[10], strokes[11]);
        let (flat, _) = warp_cubic(&[42.0; 64], 1, &shift(0.3));
        assert!(flat[..63].iter().all(|&v| (v - 42.0).abs() < 1e-4));
    }
}
