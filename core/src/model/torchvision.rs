//! torchvision-layout VGG19 weights (`features.N.weight` / `features.N.bias`), from a
//! `.pth` zip checkpoint or a `.safetensors` file. RGB input, 0..1, ImageNet mean/std.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use safetensors::SafeTensors;

use super::convention::InputConvention;
use super::layers::Layer;
use super::pickle::{self, StorageType, TensorRef, Value};
use super::store::f32_tensor;
use super::{ConvParams, Vgg19Weights};

/// Index of a convolution in torchvision's `features` Sequential (ReLUs and pools between).
pub fn features_index(layer: Layer) -> usize {
    2 * layer.conv_position() + (layer.block() - 1)
}

fn convention_source(source: &str) -> (InputConvention, String) {
    (
        InputConvention::torchvision(),
        format!("torchvision-vgg19:{source}"),
    )
}

fn weights_from(
    mut fetch: impl FnMut(&str, &[usize]) -> Result<Vec<f32>, String>,
    source: &str,
) -> Result<Vgg19Weights, String> {
    let convs = Layer::all()
        .map(|layer| {
            let n = features_index(layer);
            let (out, inp) = (layer.channels(), layer.in_channels());
            Ok(ConvParams {
                weight: fetch(&format!("features.{n}.weight"), &[out, inp, 3, 3])?,
                bias: fetch(&format!("features.{n}.bias"), &[out])?,
            })
        })
        .collect::<Result<_, String>>()?;
    let (convention, source) = convention_source(source);
    Ok(Vgg19Weights {
        convs,
        convention,
        source,
    })
}

pub fn from_safetensors(bytes: &[u8]) -> Result<Vgg19Weights, String> {
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a VGG19 checkpoint this program reads ({e})"))?;
    weights_from(
        |name, shape| f32_tensor(&tensors, name, shape),
        "safetensors",
    )
}

/// Reads a zip-format `torch.save` state dict (`archive/data.pkl` + `archive/data/KEY`).
pub fn from_pth(bytes: &[u8]) -> Result<Vgg19Weights, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let pickle_name = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or("zip holds no data.pkl: not a torch checkpoint")?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    let mut read = |name: &str, limit: u64| -> Result<Vec<u8>, String> {
        let entry = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        let mut data = Vec::new();
        entry
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| e.to_string())?;
        Ok(data)
    };
    let (object, _) = pickle::load(&read(&pickle_name, 1 << 24)?)?;
    let Value::Dict(entries) = object else {
        return Err("the checkpoint is not a state dict".into());
    };
    let tensors: HashMap<String, TensorRef> = entries
        .into_iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k, t)),
            _ => None,
        })
        .collect();
    weights_from(
        |name, shape| {
            let t = tensors
                .get(name)
                .ok_or_else(|| format!("tensor {name} missing"))?;
            if t.storage_type != StorageType::Float || t.shape != shape {
                return Err(format!(
                    "tensor {name} is {:?} {:?}, expected float {shape:?}",
                    t.storage_type, t.shape
                ));
            }
            let data = read(
                &format!("{prefix}data/{}", t.storage_key),
                (t.storage_numel * 4) as u64,
            )?;
            let slice = data
                .get(t.offset * 4..(t.offset + t.numel()) * 4)
                .ok_or_else(|| format!("{name}: storage too short"))?;
            Ok(super::store::le_floats(slice))
        },
        "pth",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_indices_match_torchvision() {
        let indices: Vec<usize> = Layer::all().map(features_index).collect();
        assert_eq!(
            indices,
            [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
        );
    }
}
