//! Style targets as bytes for the shared store: the name they are stored under (a digest of
//! everything that determines them) and a safetensors encoding checked on the way back in.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sha2::{Digest, Sha256};

use super::StyleKey;
use crate::error::{Error, Result};
use crate::model::store::{f32_bytes, le_floats};
use crate::net::Gram;

/// The stored name of `key`'s targets: hex sha256 of its canonical description, so two
/// replicas of one build (same weights, pooling and normalisation) name them alike.
pub fn target_id(key: &StyleKey) -> String {
    hex::encode(Sha256::digest(description(key)))
}

fn description(key: &StyleKey) -> String {
    let layers: Vec<String> = key.layers.iter().map(ToString::to_string).collect();
    format!(
        "image={};side={};layers={};weights={};pooling={:?};gram={}",
        hex::encode(key.image_sha256),
        key.longest_side,
        layers.join(","),
        key.identity.weights,
        key.identity.pooling,
        key.identity.gram_normalisation,
    )
}

fn corrupt(reason: impl std::fmt::Display) -> Error {
    Error::StylePrecompute(format!("stored targets are unusable: {reason}"))
}

/// One float32 tensor per layer, named by its position, with the description as metadata.
pub fn encode(key: &StyleKey, grams: &[Gram]) -> Result<Vec<u8>> {
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = grams
        .iter()
        .enumerate()
        .map(|(k, g)| {
            (
                k.to_string(),
                vec![g.channels, g.channels],
                f32_bytes(&g.data),
            )
        })
        .collect();
    let views = buffers
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(corrupt)?;
    let metadata = HashMap::from([("targets".to_string(), description(key))]);
    safetensors::serialize(views, Some(metadata)).map_err(corrupt)
}

/// The targets in `bytes`, if they are `key`'s: the description matches and every layer's
/// Gram has that layer's channels and finite values.
pub fn decode(key: &StyleKey, bytes: &[u8]) -> Result<Vec<Gram>> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
    let described = metadata.metadata().as_ref().and_then(|m| m.get("targets"));
    if described != Some(&description(key)) {
        return Err(corrupt("they describe another style or network"));
    }
    let tensors = SafeTensors::deserialize(bytes).map_err(corrupt)?;
    if tensors.len() != key.layers.len() {
        return Err(corrupt(format!(
            "{} layers stored, {} expected",
            tensors.len(),
            key.layers.len()
        )));
    }
    key.layers
        .iter()
        .enumerate()
        .map(|(k, layer)| {
            let view = tensors.tensor(&k.to_string()).map_err(corrupt)?;
            let c = layer.channels();
            if view.dtype() != Dtype::F32 || view.shape() != [c, c] {
                return Err(corrupt(format!("{layer} is not F32 {c}x{c}")));
            }
            let data = le_floats(view.data());
            if !data.iter().all(|v| v.is_finite()) {
                return Err(corrupt(format!("{layer} holds non-finite values")));
            }
            Ok(Gram { channels: c, data })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Layer;
    use crate::net::{Pooling, TargetIdentity};

    fn key(side: u32) -> StyleKey {
        StyleKey {
            image_sha256: [7; 32],
            longest_side: side,
            layers: vec![Layer::new(1, 1).unwrap(), Layer::new(2, 1).unwrap()],
            identity: TargetIdentity {
                weights: "w".into(),
                pooling: Pooling::Max,
                gram_normalisation: "chw",
            },
        }
    }

    fn grams() -> Vec<Gram> {
        [64, 128]
            .iter()
            .map(|&c| Gram {
                channels: c,
                data: (0..c * c).map(|v| v as f32 * 0.5 - 3.0).collect(),
            })
            .collect()
    }

    #[test]
    fn targets_come_back_bit_for_bit_for_their_own_key_only() {
        let bytes = encode(&key(256), &grams()).unwrap();
        let back = decode(&key(256), &bytes).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in back.iter().zip(grams()) {
            assert_eq!(a.channels, b.channels);
            assert_eq!(a.data, b.data);
        }
        assert!(decode(&key(512), &bytes).is_err(), "another size's targets");
        assert_ne!(target_id(&key(256)), target_id(&key(512)));
        assert_eq!(target_id(&key(256)), target_id(&key(256)));
    }

    #[test]
    fn damaged_or_mismatched_targets_are_refused() {
        let bytes = encode(&key(256), &grams()).unwrap();
        assert!(
            decode(&key(256), &bytes[..bytes.len() / 2]).is_err(),
            "truncated"
        );
        let mut nan = grams();
        nan[1].data[5] = f32::NAN;
        let bytes = encode(&key(256), &nan).unwrap();
        assert!(decode(&key(256), &bytes).is_err(), "non-finite");
        let mut wrong = grams();
        wrong.swap(0, 1);
        let bytes = encode(&key(256), &wrong).unwrap();
        assert!(decode(&key(256), &bytes).is_err(), "shapes of other layers");
    }
}
