//! How steady a delivered shot is, as issue 30 measures it and independently of what the
//! optimiser held: the warping error between consecutive delivered frames along the
//! renderer's motion, counting the pixels whose motion lands inside the previous frame and
//! passes Ruder's forward–backward test (`motion::consistent`).

use image::RgbImage;

use crate::motion::{Motion, consistent, warp};

/// The mean over counted pixels, averaged over the three channels, of the squared
/// difference in 8-bit levels between `current` and `previous` warped to it along
/// `to_previous` (the current frame's motion to the previous one), a pixel counting when its
/// motion lands inside the previous frame and agrees with `previous_to_next` (the previous
/// frame's motion to this one) read there. Motions of another size than the images are
/// resized to them. `None` when no pixel counts.
pub fn warping_error(
    current: &RgbImage,
    previous: &RgbImage,
    to_previous: &Motion,
    previous_to_next: &Motion,
) -> Option<f64> {
    let (w, h) = (current.width() as usize, current.height() as usize);
    let backward = to_previous.resized(w, h);
    let forward = previous_to_next.resized(w, h);
    let plane = w * h;
    let mut planes = vec![0.0f32; 3 * plane];
    for (i, pixel) in previous.pixels().enumerate().take(plane) {
        for c in 0..3 {
            planes[c * plane + i] = pixel[c] as f32;
        }
    }
    let (warped, inside) = warp(&planes, 3, &backward);
    let agrees = consistent(&backward, &forward);
    let mut sum = 0.0;
    let mut count = 0usize;
    for (i, pixel) in current.pixels().enumerate() {
        if inside[i] && agrees[i] {
            let squares: f64 = (0..3)
                .map(|c| (pixel[c] as f64 - warped[c * plane + i] as f64).powi(2))
                .sum();
            sum += squares / 3.0;
            count += 1;
        }
    }
    (count > 0).then(|| sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn still(dx: f32) -> Motion {
        Motion {
            width: 8,
            height: 4,
            dx: vec![dx; 32],
            dy: vec![0.0; 32],
        }
    }

    #[test]
    fn a_frame_that_moved_with_its_motion_has_no_error_and_a_changed_one_does() {
        // A horizontal ramp moved one pixel right: frame t at x is frame t-1 at x - 1.
        let previous = RgbImage::from_fn(8, 4, |x, _| image::Rgb([(20 * x) as u8; 3]));
        let current = RgbImage::from_fn(8, 4, |x, _| {
            image::Rgb([(20 * x.saturating_sub(1)) as u8; 3])
        });
        let (back, forth) = (still(-1.0), still(1.0));
        assert_eq!(warping_error(&current, &previous, &back, &forth), Some(0.0));
        // One channel of one counted pixel off by 6: 36 / 3 over the 28 counted pixels
        // (the left column's motion leaves the previous frame).
        let mut changed = current.clone();
        changed.get_pixel_mut(4, 2)[1] += 6;
        let error = warping_error(&changed, &previous, &back, &forth).unwrap();
        assert!((error - 12.0 / 28.0).abs() < 1e-9, "{error}");
        // Motion the previous frame's does not confirm counts nothing.
        assert_eq!(warping_error(&current, &previous, &back, &still(3.0)), None);
    }
}
