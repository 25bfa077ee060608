//! The GGUF container: header, metadata key/values and the tensor table.
//!
//! Everything is read from a byte slice and checked against its length before use, so a
//! damaged or hostile file yields a message rather than a panic or a huge allocation.

use std::collections::HashSet;

/// The magic bytes at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Most dimensions a GGUF tensor may have (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// Deepest nesting of metadata arrays accepted.
const MAX_ARRAY_DEPTH: u32 = 8;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float32`.
    F32(f32),
    /// `float64`.
    F64(f64),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array of values of one type.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as an integer of any sign.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float; f32 values go through their shortest decimal form so that
    /// `1e-5f32` becomes `1e-5`, not `9.999999747378752e-6`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => format!("{v}").parse().ok(),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The element encodings of ggml, by their type id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// 32 weights per block: `f16 d`, 16 bytes of 4-bit values, `w = d * (q - 8)`.
    Q4_0,
    /// 32 weights per block: `f16 d, f16 m`, 16 bytes of 4-bit values, `w = d * q + m`.
    Q4_1,
    /// 32 weights per block: `f16 d`, 32 signed bytes, `w = d * q`.
    Q8_0,
    /// 256-weight super-blocks with 6-bit sub-block scales and mins, 4-bit values.
    Q4K,
    /// 256-weight super-blocks with 6-bit sub-block scales and mins, 5-bit values.
    Q5K,
    /// 256-weight super-blocks with 8-bit sub-block scales, 6-bit values.
    Q6K,
    /// A type ggml knows that lgreg does not dequantise; holds the type id.
    Unsupported(u32),
}

impl GgmlType {
    /// The types lgreg dequantises, for messages.
    pub const SUPPORTED: &str = "F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K";

    /// The type for a ggml type id, or `None` when the id is not a ggml type at all.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            // Q5_0, Q5_1, Q8_1, Q2_K, Q3_K, Q8_K, the IQ family, integer types, TQ1_0/TQ2_0, MXFP4.
            6 | 7 | 9 | 10 | 11 | 15..=29 | 31..=39 => GgmlType::Unsupported(id),
            _ => return None,
        })
    }

    /// The name ggml gives the type.
    pub fn name(self) -> String {
        match self {
            GgmlType::F32 => "F32".into(),
            GgmlType::F16 => "F16".into(),
            GgmlType::BF16 => "BF16".into(),
            GgmlType::Q4_0 => "Q4_0".into(),
            GgmlType::Q4_1 => "Q4_1".into(),
            GgmlType::Q8_0 => "Q8_0".into(),
            GgmlType::Q4K => "Q4_K".into(),
            GgmlType::Q5K => "Q5_K".into(),
            GgmlType::Q6K => "Q6_K".into(),
            GgmlType::Unsupported(id) => {
                let name = match id {
                    6 => "Q5_0",
                    7 => "Q5_1",
                    9 => "Q8_1",
                    10 => "Q2_K",
                    11 => "Q3_K",
                    15 => "Q8_K",
                    24 => "I8",
                    25 => "I16",
                    26 => "I32",
                    27 => "I64",
                    28 => "F64",
                    16 => "IQ2_XXS",
                    17 => "IQ2_XS",
                    18 => "IQ3_XXS",
                    19 => "IQ1_S",
                    20 => "IQ4_NL",
                    21 => "IQ3_S",
                    22 => "IQ2_S",
                    23 => "IQ4_XS",
                    29 => "IQ1_M",
                    34 => "TQ1_0",
                    35 => "TQ2_0",
                    39 => "MXFP4",
                    _ => "a retired type",
                };
                name.into()
            }
        }
    }

    /// `(weights per block, bytes per block)`, for supported types.
    pub fn block(self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Unsupported(_) => return None,
        })
    }
}

/// One entry of the tensor table, with its data range resolved against the file.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// The GGUF (llama.cpp) name.
    pub name: String,
    /// The dimensions as GGUF lists them: innermost first.
    pub dims: Vec<u64>,
    /// The element encoding.
    pub ggml_type: GgmlType,
    /// Number of elements.
    pub numel: u64,
    /// Absolute byte offset of the data in the file.
    pub start: usize,
    /// Byte length of the data.
    pub len: usize,
}

/// A parsed GGUF header: metadata in file order and the tensor table.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The format version (2 or 3).
    pub version: u32,
    /// Metadata keys and values, in file order.
    pub metadata: Vec<(String, Value)>,
    /// The tensors, in file order.
    pub tensors: Vec<RawTensor>,
    /// Absolute offset of the data section.
    pub data_start: usize,
}

impl Parsed {
    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "file ends inside {what}: need {n} bytes at offset {}, but the file is {} bytes",
                self.pos,
                self.bytes.len()
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_item` bytes each, checked against what is left.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize, String> {
        let n = self.u64(what)?;
        let cap = (self.remaining() / min_item.max(1)) as u64;
        if n > cap {
            return Err(format!(
                "{what} is {n}, but only {} bytes remain, room for at most {cap}",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(format!(
                "{what} at offset {at} claims {len} bytes, but only {} bytes remain",
                self.remaining()
            ));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| format!("{what} at offset {at} is not valid UTF-8: {e}"))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value, String> {
        let what = || format!("the value of `{key}`");
        Ok(match ty {
            0 => Value::U8(self.u8(&what())?),
            1 => Value::I8(i8::from_le_bytes(self.array(&what())?)),
            2 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            4 => Value::U32(self.u32(&what())?),
            5 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            7 => match self.u8(&what())? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(format!(
                        "`{key}` is a bool with byte value {b}; expected 0 or 1"
                    ));
                }
            },
            8 => Value::String(self.string(&format!("the string `{key}`"))?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!(
                        "`{key}` nests arrays deeper than the limit of {MAX_ARRAY_DEPTH}"
                    ));
                }
                let elem = self.u32(&what())?;
                let min_item = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    _ => return Err(format!("`{key}` is an array of unknown value type {elem}")),
                };
                let n = self.count(&format!("the length of array `{key}`"), min_item)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(&what())?),
            11 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            _ => {
                return Err(format!(
                    "`{key}` has unknown value type {ty}; known types are 0 to 12"
                ));
            }
        })
    }
}

/// Parse the header, metadata and tensor table of a GGUF file held in `bytes`.
///
/// Errors are reasons for [`crate::Error::Gguf`].
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.array::<4>("the magic")?;
    if &magic != MAGIC {
        return Err(format!(
            "magic is {magic:02x?}, expected `GGUF` ({:02x?})",
            MAGIC
        ));
    }
    let version = c.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(
                "GGUF version 1 is not supported (it predates 64-bit counts); supported versions: 2, 3"
                    .into(),
            );
        }
        v => {
            return Err(format!(
                "GGUF version {v} is not supported; supported versions: 2, 3"
            ));
        }
    }
    // A tensor entry is at least a name length, n_dims, one dim, a type and an offset.
    let n_tensors = c.count("the tensor count", 8 + 4 + 8 + 4 + 8)?;
    // A key/value is at least a key length, a type and one byte.
    let n_kv = c.count("the metadata key count", 8 + 4 + 1)?;

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv);
    let mut keys = HashSet::with_capacity(n_kv);
    for _ in 0..n_kv {
        let key = c.string("a metadata key")?;
        let ty = c.u32(&format!("the type of `{key}`"))?;
        let value = c.value(ty, &key, 0)?;
        if !keys.insert(key.clone()) {
            return Err(format!("metadata key `{key}` appears twice"));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(format!(
                    "`general.alignment` is {v:?}; expected a power of two up to 1048576"
                ));
            }
        },
    };

    struct Entry {
        name: String,
        dims: Vec<u64>,
        type_id: u32,
        offset: u64,
    }
    let mut entries = Vec::with_capacity(n_tensors);
    let mut names = HashSet::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("a tensor name")?;
        let n_dims = c.u32(&format!("the rank of tensor `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions; the limit is {MAX_DIMS}"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&format!("the dimensions of tensor `{name}`"))?);
        }
        let type_id = c.u32(&format!("the type of tensor `{name}`"))?;
        let offset = c.u64(&format!("the offset of tensor `{name}`"))?;
        if !names.insert(name.clone()) {
            return Err(format!("tensor `{name}` appears twice in the tensor table"));
        }
        entries.push(Entry {
            name,
            dims,
            type_id,
            offset,
        });
    }

    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    if data_start > file_len && n_tensors > 0 {
        return Err(format!(
            "the data section would start at offset {data_start}, past the end of the {file_len}-byte file"
        ));
    }

    let mut tensors = Vec::with_capacity(entries.len());
    for e in entries {
        let name = e.name;
        let ggml_type = GgmlType::from_id(e.type_id).ok_or_else(|| {
            format!(
                "tensor `{name}` has unknown ggml type {}; supported: {}",
                e.type_id,
                GgmlType::SUPPORTED
            )
        })?;
        let Some((block_elems, block_bytes)) = ggml_type.block() else {
            return Err(format!(
                "tensor `{name}` has ggml type {} ({}), which lgreg cannot dequantise; supported: {}",
                ggml_type.name(),
                e.type_id,
                GgmlType::SUPPORTED
            ));
        };
        let numel = e
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= (usize::MAX / 4) as u64 && n <= 1 << 40)
            .ok_or_else(|| {
                format!(
                    "tensor `{name}` has dimensions {:?} whose product overflows",
                    e.dims
                )
            })?;
        let inner = e.dims.first().copied().unwrap_or(1);
        if !inner.is_multiple_of(block_elems) {
            return Err(format!(
                "tensor `{name}` has inner dimension {inner}, not a multiple of the {} block size {block_elems}",
                ggml_type.name()
            ));
        }
        let len = numel / block_elems * block_bytes;
        if !e.offset.is_multiple_of(alignment) {
            return Err(format!(
                "tensor `{name}` has data offset {}, not a multiple of the alignment {alignment}",
                e.offset
            ));
        }
        let start = data_start.checked_add(e.offset);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => tensors.push(RawTensor {
                name,
                dims: e.dims,
                ggml_type,
                numel,
                start: start as usize,
                len: len as usize,
            }),
            _ => {
                return Err(format!(
                    "truncated: tensor `{name}` needs {len} bytes at offset {}, but the file is {file_len} bytes",
                    data_start.saturating_add(e.offset)
                ));
            }
        }
    }

    Ok(Parsed {
        version,
        metadata,
        tensors,
        data_start: data_start as usize,
    })
}
