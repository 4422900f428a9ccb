//! The project's own weights file: float32 safetensors with the input convention in its
//! metadata, written by `stylize weights fetch` and read at startup.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::convention::{ChannelOrder, InputConvention};
use super::layers::Layer;
use super::{ConvParams, Vgg19Weights};
use crate::error::{Error, Result};

const FORMAT_KEY: &str = "stylize.format";
const FORMAT_VALUE: &str = "vgg19-features-v1";

fn tensor_name(layer: Layer, part: &str) -> String {
    format!("conv{}_{}.{part}", layer.block(), layer.index())
}

fn join(values: &[f32; 3]) -> String {
    values.map(|v| v.to_string()).join(",")
}

fn parse_triple(text: &str) -> Option<[f32; 3]> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse().ok())
        .collect::<Option<_>>()?;
    values.try_into().ok()
}

pub fn is_stylize_safetensors(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes).is_ok_and(|(_, meta)| {
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get(FORMAT_KEY))
            .is_some_and(|v| v == FORMAT_VALUE)
    })
}

/// Reads little-endian float32 data of a safetensors view, checking its dtype and shape.
pub(crate) fn f32_tensor(
    tensors: &SafeTensors,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, String> {
    let view = tensors
        .tensor(name)
        .map_err(|_| format!("tensor {name} missing"))?;
    if view.dtype() != Dtype::F32 || view.shape() != shape {
        return Err(format!(
            "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
            view.dtype(),
            view.shape()
        ));
    }
    Ok(le_floats(view.data()))
}

pub fn from_safetensors(bytes: &[u8]) -> Result<Vgg19Weights, String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let field = |key: &str| {
        meta.get(&format!("stylize.{key}"))
            .ok_or_else(|| format!("metadata stylize.{key} missing"))
    };
    let channel_order = match field("channel_order")?.as_str() {
        "bgr" => ChannelOrder::Bgr,
        "rgb" => ChannelOrder::Rgb,
        other => return Err(format!("unknown channel order `{other}`")),
    };
    let convention = InputConvention {
        channel_order,
        pixel_range: field("pixel_range")?
            .parse()
            .map_err(|_| "bad pixel_range")?,
        mean: parse_triple(field("mean")?).ok_or("bad mean")?,
        std: parse_triple(field("std")?).ok_or("bad std")?,
    };
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let convs = Layer::all()
        .map(|layer| {
            let (out, inp) = (layer.channels(), layer.in_channels());
            Ok(ConvParams {
                weight: f32_tensor(&tensors, &tensor_name(layer, "weight"), &[out, inp, 3, 3])?,
                bias: f32_tensor(&tensors, &tensor_name(layer, "bias"), &[out])?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Vgg19Weights {
        convs,
        convention,
        source: field("source")?.clone(),
    })
}

/// Float32 values as little-endian bytes (safetensors' and PyTorch's storage layout).
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian float32 bytes as values; a trailing partial value is ignored.
pub fn le_floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Writes weights as float32 safetensors with the convention in the metadata, atomically
/// (a temporary file renamed into place, so a reader never sees half a file).
pub fn save(weights: &Vgg19Weights, path: &Path) -> Result<()> {
    let c = &weights.convention;
    let metadata: HashMap<String, String> = [
        (FORMAT_KEY, FORMAT_VALUE.to_string()),
        (
            "stylize.channel_order",
            match c.channel_order {
                ChannelOrder::Bgr => "bgr".to_string(),
                ChannelOrder::Rgb => "rgb".to_string(),
            },
        ),
        ("stylize.pixel_range", c.pixel_range.to_string()),
        ("stylize.mean", join(&c.mean)),
        ("stylize.std", join(&c.std)),
        ("stylize.source", weights.source.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let mut buffers = Vec::new();
    for (layer, conv) in Layer::all().zip(&weights.convs) {
        let (out, inp) = (layer.channels(), layer.in_channels());
        buffers.push((
            tensor_name(layer, "weight"),
            vec![out, inp, 3, 3],
            f32_bytes(&conv.weight),
        ));
        buffers.push((tensor_name(layer, "bias"), vec![out], f32_bytes(&conv.bias)));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("weights", e.to_string()))?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::invalid("weights", e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let partial = path.with_extension(format!("partial.{}", std::process::id()));
    std::fs::write(&partial, bytes).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}
