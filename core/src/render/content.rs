//! A request's content as the optimiser sees it: display values (nominally [0, 1]) at the
//! precision the source had. An 8-bit file stays 8-bit (resized as 8-bit, as it always was);
//! a 16-bit PNG, and an OpenEXR frame through its view, stay float, so they reach the
//! optimiser without being rounded to 8 bits.

use image::{Rgb32FImage, RgbImage};

use crate::image_io::{fit_longest, resize_exact};
use crate::model::{InputConvention, InputImage};

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// 8 bits per channel.
    Rgb8(RgbImage),
    /// Display values in full precision.
    Float(Rgb32FImage),
}

impl From<RgbImage> for Content {
    fn from(image: RgbImage) -> Self {
        Content::Rgb8(image)
    }
}

impl From<Rgb32FImage> for Content {
    fn from(image: Rgb32FImage) -> Self {
        Content::Float(image)
    }
}

impl Content {
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Content::Rgb8(image) => image.dimensions(),
            Content::Float(image) => image.dimensions(),
        }
    }

    pub fn width(&self) -> u32 {
        self.dimensions().0
    }

    pub fn height(&self) -> u32 {
        self.dimensions().1
    }

    /// The content rounded to 8 bits (what warm starts and colour preservation use).
    pub fn to_8bit(&self) -> RgbImage {
        match self {
            Content::Rgb8(image) => image.clone(),
            Content::Float(image) => RgbImage::from_fn(image.width(), image.height(), |x, y| {
                image::Rgb(
                    image
                        .get_pixel(x, y)
                        .0
                        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8),
                )
            }),
        }
    }

    /// Resized to `(width, height)`.
    pub fn resized(&self, width: u32, height: u32) -> Content {
        match self {
            Content::Rgb8(image) => Content::Rgb8(resize_exact(image, width, height)),
            Content::Float(image) if image.dimensions() == (width, height) => self.clone(),
            Content::Float(image) => Content::Float(image::imageops::resize(
                image,
                width,
                height,
                image::imageops::FilterType::Lanczos3,
            )),
        }
    }

    /// Resized so its longest side is `longest`.
    pub fn resized_longest(&self, longest: u32) -> Content {
        let (w, h) = fit_longest(self.width(), self.height(), longest);
        self.resized(w, h)
    }

    /// The network's input for it.
    pub fn to_input(&self, convention: &InputConvention) -> InputImage {
        match self {
            Content::Rgb8(image) => convention.to_input(image),
            Content::Float(image) => convention.to_input_f32(image),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_content_keeps_what_8_bits_would_round_away() {
        let convention = InputConvention::caffe();
        let eight = RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8 * 60, y as u8 * 90, 7]));
        let float = Rgb32FImage::from_fn(4, 2, |x, y| {
            image::Rgb([
                x as f32 * 60.0 / 255.0,
                y as f32 * 90.0 / 255.0,
                7.0 / 255.0,
            ])
        });
        // The same levels give the same input either way.
        let (a, b) = (
            Content::from(eight.clone()).to_input(&convention),
            Content::from(float.clone()).to_input(&convention),
        );
        assert!(
            a.data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| (x - y).abs() < 1e-4)
        );
        // A level between two 8-bit steps survives as float, and rounds when asked.
        let mut finer = float;
        finer.put_pixel(0, 0, image::Rgb([0.3 / 255.0, 0.0, 0.0]));
        let finer = Content::from(finer);
        assert!(finer.to_input(&convention).data[0] != a.data[0]);
        assert_eq!(finer.to_8bit().get_pixel(0, 0).0[0], 0);
        assert_eq!(Content::from(eight).resized_longest(2).dimensions(), (2, 1));
    }
}
