//! VGG19's layer naming and topology (Caffe/jcjohnson `reluB_C` names).
//!
//! Owns the fixed shape of the network: which convolutions exist, their channel counts,
//! where the pools sit. It knows nothing about weights or tensors.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Number of convolutions in each of the five blocks.
pub const BLOCK_SIZES: [usize; 5] = [2, 2, 4, 4, 4];
/// Output channels of every convolution in each block.
pub const BLOCK_CHANNELS: [usize; 5] = [64, 128, 256, 512, 512];
/// Number of 3x3 convolutions in VGG19's feature stack.
pub const CONV_COUNT: usize = 16;

/// One ReLU tap point, `relu{block}_{index}`, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Layer {
    block: u8,
    index: u8,
}

impl Layer {
    /// Builds a layer from its 1-based block and index, checking they exist in VGG19.
    pub fn new(block: usize, index: usize) -> Result<Self, Error> {
        if !(1..=5).contains(&block) || index == 0 || index > BLOCK_SIZES[block - 1] {
            return Err(Error::UnknownLayer(format!("relu{block}_{index}")));
        }
        Ok(Self {
            block: block as u8,
            index: index as u8,
        })
    }

    /// Position of this layer's convolution in the 16-conv stack (0-based).
    pub fn conv_position(self) -> usize {
        let before: usize = BLOCK_SIZES[..self.block as usize - 1].iter().sum();
        before + self.index as usize - 1
    }

    /// The layer whose convolution sits at `position` in the stack.
    pub fn at_position(position: usize) -> Self {
        let mut rest = position;
        for (block, &size) in BLOCK_SIZES.iter().enumerate() {
            if rest < size {
                return Self {
                    block: block as u8 + 1,
                    index: rest as u8 + 1,
                };
            }
            rest -= size;
        }
        panic!("conv position {position} is outside VGG19's {CONV_COUNT} convolutions")
    }

    pub fn block(self) -> usize {
        self.block as usize
    }

    pub fn index(self) -> usize {
        self.index as usize
    }

    /// Output channels of this layer.
    pub fn channels(self) -> usize {
        BLOCK_CHANNELS[self.block as usize - 1]
    }

    /// Input channels of this layer's convolution.
    pub fn in_channels(self) -> usize {
        match (self.block, self.index) {
            (1, 1) => 3,
            (b, 1) => BLOCK_CHANNELS[b as usize - 2],
            (b, _) => BLOCK_CHANNELS[b as usize - 1],
        }
    }

    /// True when a 2x2 pool precedes this layer's convolution (conv2_1 .. conv5_1).
    pub fn pooled_before(self) -> bool {
        self.index == 1 && self.block > 1
    }

    /// Spatial size of this layer's output for an input of `height` x `width`
    /// (floor-mode pooling drops an odd edge row/column).
    pub fn output_size(self, height: usize, width: usize) -> (usize, usize) {
        let halvings = self.block as u32 - 1;
        (height >> halvings, width >> halvings)
    }

    /// All 16 layers in network order.
    pub fn all() -> impl Iterator<Item = Layer> {
        (0..CONV_COUNT).map(Layer::at_position)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "relu{}_{}", self.block, self.index)
    }
}

impl FromStr for Layer {
    type Err = Error;

    /// Exactly a canonical name (`relu1_1` .. `relu5_4`): no spaces, signs or leading zeros.
    fn from_str(name: &str) -> Result<Self, Error> {
        Layer::all()
            .find(|layer| layer.to_string() == name)
            .ok_or_else(|| Error::UnknownLayer(crate::error::quoted(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_positions_are_dense() {
        let all: Vec<Layer> = Layer::all().collect();
        assert_eq!(all.len(), CONV_COUNT);
        for (position, layer) in all.iter().enumerate() {
            assert_eq!(layer.conv_position(), position);
            assert_eq!(layer.to_string().parse::<Layer>().unwrap(), *layer);
        }
        assert_eq!(all[15].to_string(), "relu5_4");
        assert_eq!("relu4_2".parse::<Layer>().unwrap().conv_position(), 9);
    }

    #[test]
    fn names_are_parsed_strictly() {
        for loose in [
            " relu1_1 ",
            "relu+1_1",
            "relu01_01",
            "relu1_1\n",
            "RELU1_1",
            "relu1-1",
        ] {
            assert!(loose.parse::<Layer>().is_err(), "{loose:?} was accepted");
        }
    }

    #[test]
    fn rejects_names_outside_vgg19() {
        for bad in [
            "relu6_1", "relu1_3", "relu0_1", "conv1_1", "relu1", "relu1_x", "",
        ] {
            assert!(bad.parse::<Layer>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn channels_and_sizes_follow_the_topology() {
        let l = "relu3_1".parse::<Layer>().unwrap();
        assert_eq!((l.in_channels(), l.channels()), (128, 256));
        assert!(l.pooled_before());
        assert_eq!(
            "relu5_1".parse::<Layer>().unwrap().output_size(40, 56),
            (2, 3)
        );
    }
}
