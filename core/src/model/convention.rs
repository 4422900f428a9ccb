//! The input space a set of weights expects: channel order, pixel range, mean and std.
//!
//! Converting between 8-bit RGB images and the network's input tensor happens only here,
//! so the engine, the features and the fixtures all agree on one definition.

use image::RgbImage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// How 8-bit pixels map to network input: `x[c] = (pixel[c'] * range / 255 - mean[c]) / std[c]`,
/// with `c'` the RGB channel feeding network channel `c`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputConvention {
    pub channel_order: ChannelOrder,
    /// 255 for Caffe weights (pixels kept in 0..255), 1 for torchvision (0..1).
    pub pixel_range: f32,
    /// Per network channel, in network channel order.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl InputConvention {
    /// The Caffe VGG19 convention of the default weights: BGR, 0..255, mean-subtracted.
    pub fn caffe() -> Self {
        Self {
            channel_order: ChannelOrder::Bgr,
            pixel_range: 255.0,
            mean: [103.939, 116.779, 123.68],
            std: [1.0, 1.0, 1.0],
        }
    }

    /// torchvision's convention: RGB in 0..1, normalised by ImageNet mean and std.
    pub fn torchvision() -> Self {
        Self {
            channel_order: ChannelOrder::Rgb,
            pixel_range: 1.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// The RGB channel (0 = R) that feeds network channel `c`.
    fn source_channel(&self, c: usize) -> usize {
        match self.channel_order {
            ChannelOrder::Rgb => c,
            ChannelOrder::Bgr => 2 - c,
        }
    }

    /// Converts an 8-bit RGB image to a 1x3xHxW input tensor's data (CHW, row-major).
    pub fn to_input(&self, image: &RgbImage) -> InputImage {
        let (width, height) = image.dimensions();
        let plane = (width * height) as usize;
        let mut data = vec![0f32; 3 * plane];
        let scale = self.pixel_range / 255.0;
        for (i, pixel) in image.pixels().enumerate() {
            for c in 0..3 {
                let level = pixel.0[self.source_channel(c)] as f32;
                data[c * plane + i] = (level * scale - self.mean[c]) / self.std[c];
            }
        }
        InputImage {
            height: height as usize,
            width: width as usize,
            data,
        }
    }

    /// `to_input` of display values in full precision (1.0 is the 8-bit 255).
    pub fn to_input_f32(&self, image: &image::Rgb32FImage) -> InputImage {
        let (width, height) = image.dimensions();
        let plane = (width * height) as usize;
        let mut data = vec![0f32; 3 * plane];
        for (i, pixel) in image.pixels().enumerate() {
            for c in 0..3 {
                let value = pixel.0[self.source_channel(c)];
                data[c * plane + i] = (value * self.pixel_range - self.mean[c]) / self.std[c];
            }
        }
        InputImage {
            height: height as usize,
            width: width as usize,
            data,
        }
    }

    /// Converts an input tensor back to 8-bit RGB, rounding and clamping to 0..255.
    pub fn to_rgb(&self, input: &InputImage) -> RgbImage {
        let plane = input.height * input.width;
        let scale = 255.0 / self.pixel_range;
        let mut image = RgbImage::new(input.width as u32, input.height as u32);
        for (i, pixel) in image.pixels_mut().enumerate() {
            for c in 0..3 {
                let value = (input.data[c * plane + i] * self.std[c] + self.mean[c]) * scale;
                pixel.0[self.source_channel(c)] = value.round().clamp(0.0, 255.0) as u8;
            }
        }
        image
    }
}

impl InputConvention {
    /// Converts an input tensor to 16-bit RGB (0..65535 spanning the 8-bit range), rounding
    /// and clamping: the optimiser's result without the 8-bit rounding.
    pub fn to_rgb16(&self, input: &InputImage) -> image::ImageBuffer<image::Rgb<u16>, Vec<u16>> {
        let plane = input.height * input.width;
        let scale = 65535.0 / self.pixel_range;
        let mut image = image::ImageBuffer::new(input.width as u32, input.height as u32);
        for (i, pixel) in image.pixels_mut().enumerate() {
            let pixel: &mut image::Rgb<u16> = pixel;
            for c in 0..3 {
                let value = (input.data[c * plane + i] * self.std[c] + self.mean[c]) * scale;
                pixel.0[self.source_channel(c)] = value.round().clamp(0.0, 65535.0) as u16;
            }
        }
        image
    }
}

/// A single image in network input space: 3 x height x width, channel-major.
#[derive(Debug, Clone, PartialEq)]
pub struct InputImage {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl InputImage {
    pub fn shape(&self) -> (usize, usize, usize, usize) {
        (1, 3, self.height, self.width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caffe_round_trip_is_lossless() {
        let image = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 50, 255]));
        for convention in [InputConvention::caffe(), InputConvention::torchvision()] {
            assert_eq!(convention.to_rgb(&convention.to_input(&image)), image);
        }
        let input = InputConvention::caffe().to_input(&image);
        // Network channel 0 is blue: 255 - 103.939.
        assert_eq!(input.data[0], 255.0f32 - 103.939f32);
    }
}
