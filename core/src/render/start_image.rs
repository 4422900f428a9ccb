//! Where a later frame's optimisation starts: the warped frame it continues from where the
//! motion vouches for a pixel, and elsewhere its content (a chain's frame) or its own still
//! (a keyframe given one), carrying the stylisation's offset from the warped frame in from the
//! held pixels around, so no seam starts where the two meet.

use image::RgbImage;

use crate::image_io::resize_exact;

/// How far, in pixels at the output size, the held pixels' offset reaches into a keyframe's
/// own still: a pixel the consistency test rejects on its own along an edge takes its held
/// neighbours' colours over the still's detail, and from this distance on the still is left
/// as it is. Measured on the orbit shot at 256 px, standard: see `FILLED_KEYFRAME_SHARE`.
pub const STILL_FEATHER: f32 = 4.0;

/// The starting image of a later frame: the warped previous output where certain. Elsewhere
/// (pixels the motion uncovers or leaves unvouched) the content at the output size, carrying
/// the stylisation's offset from the content (`warped - content`) spread in from the nearest
/// held pixels: such pixels start in the shot's stylised colours but with their own structure,
/// where copying the warped image would ghost whatever moved away.
pub(super) fn warm_start(content: &RgbImage, warped: &RgbImage, certainty: &[f32]) -> RgbImage {
    let base = resize_exact(content, warped.width(), warped.height());
    carry_offset(&base, warped, certainty, None)
}

/// The starting image of a keyframe with its own still: the warped frame it continues from
/// where certain, the still elsewhere (where the motion uncovers what that frame never
/// showed, which the still has stylised already, at every scale). Within `STILL_FEATHER` of
/// the held pixels the still carries their offset from it, fading with the distance: a hard
/// switch left the still's pixels as speckles along moving edges.
pub(super) fn start_from_still(still: &RgbImage, warped: &RgbImage, certainty: &[f32]) -> RgbImage {
    carry_offset(still, warped, certainty, Some(STILL_FEATHER))
}

/// `warped` where certain, else `base` plus `warped - base` spread in from the held pixels,
/// in full or (with `reach`) fading from the held pixels' neighbours to nothing at `reach`.
fn carry_offset(
    base: &RgbImage,
    warped: &RgbImage,
    certainty: &[f32],
    reach: Option<f32>,
) -> RgbImage {
    let (width, height) = (warped.width() as usize, warped.height() as usize);
    let held: Vec<bool> = certainty.iter().map(|&c| c >= 0.5).collect();
    let differences = planes(warped)
        .iter()
        .zip(planes(base))
        .map(|(w, b)| w - b)
        .collect::<Vec<f32>>();
    let offset = fill_holes(&differences, &held, width, height);
    // The offset's share per pixel: all of it without a reach.
    let share: Option<Vec<f32>> = reach.map(|reach| {
        distance_to_held(&held, width, height)
            .into_iter()
            .map(|d| ((reach - d) / (reach - 1.0).max(f32::EPSILON)).clamp(0.0, 1.0))
            .collect()
    });
    let plane = width * height;
    let mut start = base.clone();
    for (i, (pixel, kept)) in start.pixels_mut().zip(warped.pixels()).enumerate() {
        if held[i] {
            *pixel = *kept;
        } else {
            for c in 0..3 {
                let carried = offset[c * plane + i];
                let value = pixel[c] as f32 + share.as_ref().map_or(carried, |s| s[i] * carried);
                pixel[c] = value.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    start
}

/// Each pixel's distance in pixels to the nearest held one (0 where held), by the 3-4
/// chamfer's two passes (within 8% of the Euclidean distance); without any held pixel,
/// infinite.
fn distance_to_held(held: &[bool], width: usize, height: usize) -> Vec<f32> {
    let mut d: Vec<f32> = held
        .iter()
        .map(|&h| if h { 0.0 } else { f32::INFINITY })
        .collect();
    let neighbours_before = [
        (-1isize, 0isize, 3.0f32),
        (-1, -1, 4.0),
        (0, -1, 3.0),
        (1, -1, 4.0),
    ];
    for y in 0..height {
        for x in 0..width {
            relax(&mut d, (x, y), (width, height), &neighbours_before);
        }
    }
    let neighbours_after = neighbours_before.map(|(dx, dy, cost)| (-dx, -dy, cost));
    for y in (0..height).rev() {
        for x in (0..width).rev() {
            relax(&mut d, (x, y), (width, height), &neighbours_after);
        }
    }
    d.into_iter().map(|v| v / 3.0).collect()
}

/// One chamfer step: pixel `(x, y)`'s distance lowered to a neighbour's plus the step's cost.
fn relax(
    d: &mut [f32],
    (x, y): (usize, usize),
    (width, height): (usize, usize),
    steps: &[(isize, isize, f32)],
) {
    let i = y * width + x;
    for &(dx, dy, cost) in steps {
        let (nx, ny) = (x as isize + dx, y as isize + dy);
        if nx >= 0 && ny >= 0 && (nx as usize) < width && (ny as usize) < height {
            d[i] = d[i].min(d[ny as usize * width + nx as usize] + cost);
        }
    }
}

/// Channel-major planes with the values where `known` is false filled from the known ones
/// around them (a push-pull pyramid: known values averaged down to coarser levels, holes
/// taking the coarser level's value on the way back up). Without any known value: zeros.
fn fill_holes(values: &[f32], known: &[bool], width: usize, height: usize) -> Vec<f32> {
    let channels = values.len() / (width * height);
    let weights: Vec<f32> = known.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    let sums: Vec<f32> = (0..values.len())
        .map(|i| values[i] * weights[i % (width * height)])
        .collect();
    push_pull(&sums, &weights, width, height, channels)
}

/// One level of the pyramid, from weighted sums and their weights: the mean value per pixel,
/// holes filled from the next coarser level.
fn push_pull(
    sums: &[f32],
    weights: &[f32],
    width: usize,
    height: usize,
    channels: usize,
) -> Vec<f32> {
    let plane = width * height;
    let mut mean = vec![0.0; channels * plane];
    if width <= 1 && height <= 1 {
        for c in 0..channels {
            mean[c] = if weights[0] > 0.0 {
                sums[c] / weights[0]
            } else {
                0.0
            };
        }
        return mean;
    }
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let mut coarse_sums = vec![0.0; channels * cw * ch];
    let mut coarse_weights = vec![0.0; cw * ch];
    for y in 0..height {
        for x in 0..width {
            let (i, j) = (y * width + x, (y / 2) * cw + x / 2);
            coarse_weights[j] += weights[i];
            for c in 0..channels {
                coarse_sums[c * cw * ch + j] += sums[c * plane + i];
            }
        }
    }
    let coarse = push_pull(&coarse_sums, &coarse_weights, cw, ch, channels);
    // Holes take the coarser level sampled bilinearly (pixel centres aligned), so the fill is
    // smooth rather than blocks of the coarse pixels.
    let at = |k: usize, n: usize| ((k as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, (n - 1) as f32);
    for y in 0..height {
        let v = at(y, ch);
        let (y0, fy) = (v.floor() as usize, v.fract());
        let y1 = (y0 + 1).min(ch - 1);
        for x in 0..width {
            let i = y * width + x;
            let u = at(x, cw);
            let (x0, fx) = (u.floor() as usize, u.fract());
            let x1 = (x0 + 1).min(cw - 1);
            for c in 0..channels {
                mean[c * plane + i] = if weights[i] > 0.0 {
                    sums[c * plane + i] / weights[i]
                } else {
                    let q = &coarse[c * cw * ch..(c + 1) * cw * ch];
                    let top = q[y0 * cw + x0] * (1.0 - fx) + q[y0 * cw + x1] * fx;
                    let bottom = q[y1 * cw + x0] * (1.0 - fx) + q[y1 * cw + x1] * fx;
                    top * (1.0 - fy) + bottom * fy
                };
            }
        }
    }
    mean
}

/// An RGB image as three channel-major float planes.
pub(super) fn planes(image: &RgbImage) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = pixel[c] as f32;
        }
    }
    out
}

pub(super) fn from_planes(planes: &[f32], width: usize, height: usize) -> RgbImage {
    let plane = width * height;
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let i = y as usize * width + x as usize;
        image::Rgb([0, 1, 2].map(|c| planes[c * plane + i].round().clamp(0.0, 255.0) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_pixels_start_from_their_content_shifted_as_the_held_ones_are() {
        let content = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(3 * x) as u8, (5 * y) as u8, 90])
        });
        // The previous output, warped: the content shifted by (+40, -20, +7) everywhere.
        let warped = RgbImage::from_fn(40, 30, |x, y| {
            let p = content.get_pixel(x, y);
            image::Rgb([p[0] + 40, p[1].saturating_sub(20), p[2] + 7])
        });
        // A disc the motion uncovered: nothing held there.
        let certainty: Vec<f32> = (0..40 * 30)
            .map(|i| {
                let (x, y) = ((i % 40) as f32 - 20.0, (i / 40) as f32 - 15.0);
                if x * x + y * y < 64.0 { 0.0 } else { 1.0 }
            })
            .collect();
        let start = warm_start(&content, &warped, &certainty);
        for (i, (&c, pixel)) in certainty.iter().zip(start.pixels()).enumerate() {
            let (x, y) = ((i % 40) as u32, (i / 40) as u32);
            if c == 1.0 {
                assert_eq!(pixel, warped.get_pixel(x, y));
            } else {
                let p = content.get_pixel(x, y);
                let expected = [p[0] + 40, p[1].saturating_sub(20), p[2] + 7];
                for k in 0..3 {
                    assert!(
                        pixel[k].abs_diff(expected[k]) <= 1,
                        "({x}, {y}): {pixel:?} vs {expected:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn holes_are_filled_smoothly_from_the_values_around_them() {
        let (w, h) = (64, 48);
        // A ramp with a rectangular hole; values known elsewhere stay as they are.
        let values: Vec<f32> = (0..w * h).map(|i| (i % w) as f32).collect();
        let known: Vec<bool> = (0..w * h)
            .map(|i| !((10..50).contains(&(i % w)) && (12..36).contains(&(i / w))))
            .collect();
        let filled = fill_holes(&values, &known, w, h);
        let mut worst_step: f32 = 0.0;
        for i in 0..w * h {
            if known[i] {
                assert_eq!(filled[i], values[i]);
            } else {
                assert!((0.0..=63.0).contains(&filled[i]), "{}", filled[i]);
                if i % w > 0 {
                    worst_step = worst_step.max((filled[i] - filled[i - 1]).abs());
                }
            }
        }
        // No blocks: neighbouring filled values differ by little more than the ramp's slope.
        assert!(
            worst_step < 2.5,
            "a step of {worst_step} between neighbours"
        );
        assert!(
            fill_holes(&[5.0; 6], &[false; 6], 3, 2)
                .iter()
                .all(|&v| v == 0.0)
        );
    }

    #[test]
    fn a_keyframes_still_takes_the_held_pixels_colours_near_them_and_is_itself_further_in() {
        let still = RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 30]));
        let warped = RgbImage::from_pixel(40, 30, image::Rgb([100, 100, 100]));
        // Held on the left 10 columns, and one lone rejected pixel inside them.
        let certainty: Vec<f32> = (0..40 * 30)
            .map(|i| {
                if i % 40 < 10 && i != 5 * 40 + 5 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let start = start_from_still(&still, &warped, &certainty);
        // The lone pixel is surrounded by held ones: their colours, not a speckle of the still.
        assert_eq!(start.get_pixel(5, 5).0, [100, 100, 100]);
        // Next to the held columns, the held colours; fading to the still by the feather.
        assert_eq!(start.get_pixel(10, 15).0, [100, 100, 100]);
        let halfway = start.get_pixel(11, 15).0[0];
        assert!((110..190).contains(&halfway), "{halfway}");
        for x in (10 + STILL_FEATHER as u32)..40 {
            assert_eq!(start.get_pixel(x, 15).0, [200, 10, 30], "column {x}");
        }
        for x in 0..10 {
            assert_eq!(start.get_pixel(x, 15).0, [100, 100, 100]);
        }
    }

    #[test]
    fn the_distance_to_the_held_pixels_is_close_to_euclidean() {
        let (w, h) = (21, 21);
        let held: Vec<bool> = (0..w * h).map(|i| i == 10 * w + 10).collect();
        let d = distance_to_held(&held, w, h);
        assert_eq!(d[10 * w + 10], 0.0);
        assert_eq!(d[10 * w + 13], 3.0);
        let diagonal = d[14 * w + 14];
        let euclid = (32.0f32).sqrt();
        assert!(
            (diagonal - euclid).abs() / euclid < 0.08,
            "{diagonal} vs {euclid}"
        );
        assert!(
            distance_to_held(&[false; 4], 2, 2)
                .iter()
                .all(|v| v.is_infinite())
        );
    }
}
