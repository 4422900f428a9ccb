//! A deliberately small pickle reader for PyTorch checkpoints.
//!
//! It runs only the opcodes that `torch.save` emits for a state dict and resolves only a
//! whitelist of globals (tensor rebuild, storages, OrderedDict); anything else is refused,
//! so a checkpoint can never make us execute or construct arbitrary objects.

use std::collections::HashMap;

/// A value on the pickle stack, restricted to what state dicts contain.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// Integers wider than 64 bits (the legacy format's magic number), little-endian bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A resolved, whitelisted global (`module.name`).
    Global(String),
    /// A persistent id (`BINPERSID`): the storage reference tuple.
    Persistent(Box<Value>),
    /// A tensor rebuilt by `torch._utils._rebuild_tensor_v2`.
    Tensor(TensorRef),
}

/// Where a tensor's data lives: a storage key plus offset, shape and strides in elements.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage_key: String,
    pub storage_type: StorageType,
    pub storage_numel: usize,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&dim, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if dim > 1 && stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    Float,
    Byte,
}

impl StorageType {
    pub fn element_size(self) -> usize {
        match self {
            StorageType::Float => 4,
            StorageType::Byte => 1,
        }
    }
}

const ALLOWED_GLOBALS: [&str; 5] = [
    "torch._utils._rebuild_tensor_v2",
    "torch.FloatStorage",
    "torch.ByteStorage",
    "collections.OrderedDict",
    "torch._utils._rebuild_parameter",
];

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

/// Runs one pickle from the start of `data`; returns the unpickled value and the number of
/// bytes it occupied (a legacy torch file is several pickles back to back).
pub fn load(data: &[u8]) -> Result<(Value, usize), String> {
    let mut machine = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let value = machine.run()?;
    Ok((value, machine.pos))
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle truncated inside a GLOBAL")?;
        let text = std::str::from_utf8(&rest[..end]).map_err(|_| "GLOBAL name is not UTF-8")?;
        self.pos += end + 1;
        Ok(text.to_string())
    }

    fn utf8(&mut self, len: usize) -> Result<Value, String> {
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| "string is not UTF-8")?;
        Ok(Value::Str(text.to_string()))
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("pickle MARK missing")?;
        if mark > self.stack.len() {
            return Err("pickle MARK beyond the stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn memo_get(&self, key: u32) -> Result<Value, String> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("pickle memo key {key} missing"))
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let value = self
            .stack
            .last()
            .ok_or("pickle PUT on an empty stack")?
            .clone();
        self.memo.insert(key, value);
        Ok(())
    }

    fn global(&mut self, module: String, name: String) -> Result<(), String> {
        let full = format!("{module}.{name}");
        if !ALLOWED_GLOBALS.contains(&full.as_str()) {
            return Err(format!("refusing pickle global `{full}`"));
        }
        self.stack.push(Value::Global(full));
        Ok(())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let version = self.u8()?;
                    if version > 5 {
                        return Err(format!("unsupported pickle protocol {version}"));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("pickle stack underflow in TUPLEn".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'q' => {
                    let key = self.u8()? as u32;
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = self.u32()?;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u32;
                    self.memo_put(key)?;
                }
                b'h' => {
                    let key = self.u8()? as u32;
                    let value = self.memo_get(key)?;
                    self.stack.push(value);
                }
                b'j' => {
                    let key = self.u32()?;
                    let value = self.memo_get(key)?;
                    self.stack.push(value);
                }
                b'X' => {
                    let len = self.u32()? as usize;
                    let value = self.utf8(len)?;
                    self.stack.push(value);
                }
                0x8c => {
                    let len = self.u8()? as usize;
                    let value = self.utf8(len)?;
                    self.stack.push(value);
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let len = self.u8()? as usize;
                    let bytes = self.take(len)?.to_vec();
                    self.stack.push(long_value(bytes));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(raw)));
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => self.global(module, name)?,
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(Value::Persistent(Box::new(pid)));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = reduce(callable, args)?;
                    self.stack.push(value);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    match self.top()? {
                        Value::Dict(items) => items.push((key, value)),
                        _ => return Err("SETITEM on a non-dict".into()),
                    }
                }
                b'u' => {
                    let flat = self.pop_mark()?;
                    if flat.len() % 2 != 0 {
                        return Err("SETITEMS with an odd number of items".into());
                    }
                    let mut pairs = Vec::with_capacity(flat.len() / 2);
                    let mut it = flat.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    match self.top()? {
                        Value::Dict(items) => items.extend(pairs),
                        _ => return Err("SETITEMS on a non-dict".into()),
                    }
                }
                b'a' => {
                    let value = self.pop()?;
                    match self.top()? {
                        Value::List(items) => items.push(value),
                        _ => return Err("APPEND on a non-list".into()),
                    }
                }
                b'e' => {
                    let values = self.pop_mark()?;
                    match self.top()? {
                        Value::List(items) => items.extend(values),
                        _ => return Err("APPENDS on a non-list".into()),
                    }
                }
                b'b' => {
                    // BUILD sets attributes (a state dict's `_metadata`); tensors need none.
                    self.pop()?;
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {}",
                        self.pos - 1
                    ));
                }
            }
        }
    }
}

fn long_value(bytes: Vec<u8>) -> Value {
    if bytes.len() <= 8 {
        let mut raw = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
            [0xffu8; 8]
        } else {
            [0u8; 8]
        };
        raw[..bytes.len()].copy_from_slice(&bytes);
        Value::Int(i64::from_le_bytes(raw))
    } else {
        Value::BigInt(bytes)
    }
}

fn as_usize(value: &Value, what: &str) -> Result<usize, String> {
    match value {
        Value::Int(v) if *v >= 0 => Ok(*v as usize),
        other => Err(format!(
            "{what}: expected a non-negative int, found {other:?}"
        )),
    }
}

fn as_usizes(value: &Value, what: &str) -> Result<Vec<usize>, String> {
    match value {
        Value::Tuple(items) => items.iter().map(|v| as_usize(v, what)).collect(),
        other => Err(format!("{what}: expected a tuple, found {other:?}")),
    }
}

fn reduce(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(name) = callable else {
        return Err("REDUCE on something that is not a whitelisted global".into());
    };
    let Value::Tuple(args) = args else {
        return Err(format!("{name}: arguments are not a tuple"));
    };
    match name.as_str() {
        "collections.OrderedDict" if args.is_empty() => Ok(Value::Dict(Vec::new())),
        "torch._utils._rebuild_parameter" => args
            .into_iter()
            .next()
            .filter(|v| matches!(v, Value::Tensor(_)))
            .ok_or_else(|| "_rebuild_parameter without a tensor".to_string()),
        "torch._utils._rebuild_tensor_v2" => rebuild_tensor(&args).map(Value::Tensor),
        _ => Err(format!(
            "refusing to call `{name}` with {} arguments",
            args.len()
        )),
    }
}

fn rebuild_tensor(args: &[Value]) -> Result<TensorRef, String> {
    if args.len() < 4 {
        return Err("_rebuild_tensor_v2 needs storage, offset, size, stride".into());
    }
    let Value::Persistent(pid) = &args[0] else {
        return Err("_rebuild_tensor_v2: storage is not a persistent id".into());
    };
    let Value::Tuple(pid) = pid.as_ref() else {
        return Err("persistent id is not a tuple".into());
    };
    // Zip checkpoints use 5 fields; the legacy format adds a 6th (view metadata, None).
    let [
        Value::Str(kind),
        Value::Global(storage),
        Value::Str(key),
        _location,
        numel,
        view @ ..,
    ] = pid.as_slice()
    else {
        return Err(format!("unexpected persistent id {pid:?}"));
    };
    if !matches!(view, [] | [Value::None]) {
        return Err("storage views are not supported".into());
    }
    if kind != "storage" {
        return Err(format!("unexpected persistent id kind `{kind}`"));
    }
    let storage_type = match storage.as_str() {
        "torch.FloatStorage" => StorageType::Float,
        "torch.ByteStorage" => StorageType::Byte,
        other => return Err(format!("unsupported storage type `{other}`")),
    };
    let tensor = TensorRef {
        storage_key: key.clone(),
        storage_type,
        storage_numel: as_usize(numel, "storage size")?,
        offset: as_usize(&args[1], "storage offset")?,
        shape: as_usizes(&args[2], "tensor size")?,
        stride: as_usizes(&args[3], "tensor stride")?,
    };
    if tensor.shape.len() != tensor.stride.len() {
        return Err("tensor size and stride differ in rank".into());
    }
    let end = tensor
        .offset
        .checked_add(tensor.numel())
        .ok_or("tensor extent overflows")?;
    if !tensor.is_contiguous() || end > tensor.storage_numel {
        return Err(format!(
            "tensor in storage {} is not a contiguous slice of it",
            tensor.storage_key
        ));
    }
    Ok(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unlisted_globals() {
        // GLOBAL 'os system', then STOP.
        let data = b"\x80\x02cos\nsystem\nq\x00.";
        let err = load(data).unwrap_err();
        assert!(err.contains("os.system"), "{err}");
    }

    #[test]
    fn refuses_unknown_opcodes_and_truncation() {
        assert!(load(b"\x80\x02V").unwrap_err().contains("opcode"));
        assert!(
            load(b"\x80\x02X\xff\x00\x00\x00ab")
                .unwrap_err()
                .contains("truncated")
        );
    }

    #[test]
    fn reads_dicts_ints_and_long_magic() {
        // {'a': 1001, 'b': True}
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aM\xe9\x03X\x01\x00\x00\x00b\x88u.";
        let (value, used) = load(data).unwrap();
        assert_eq!(used, data.len());
        assert_eq!(
            value,
            Value::Dict(vec![
                (Value::Str("a".into()), Value::Int(1001)),
                (Value::Str("b".into()), Value::Bool(true)),
            ])
        );
        let (magic, _) = load(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
        assert_eq!(
            magic,
            Value::BigInt(vec![
                0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19
            ])
        );
    }
}
