//! The allow-list of pickle globals and what "calling" each one means.
//!
//! Nothing here runs code from the checkpoint: each allowed global is a tag, and applying it
//! to arguments builds a plain value (a tensor view, a dict, bytes). Tensor rebuilds only
//! record the storage, offset, shape and stride; bytes are read later, on demand.

use std::rc::Rc;

use super::vm::{Value, VmResult, bad};
use crate::checkpoint::DType;

/// A global the restricted unpickler accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state`.
    RebuildParameterWithState,
    /// `torch._tensor._rebuild_from_type_v2`.
    RebuildFromTypeV2,
    /// `torch.Tensor` or `torch.nn.parameter.Parameter`, as an argument of the above.
    TensorClass,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// A `torch.*Storage` class with its element type.
    StorageType(DType),
    /// A `torch.float32`-style dtype object.
    Dtype(DType),
    /// `torch.Size`.
    Size,
    /// `builtins.set` / `builtins.frozenset`.
    Set,
    /// `builtins.slice`.
    Slice,
    /// `builtins.bytearray`.
    ByteArray,
    /// `_codecs.encode`, which protocol 2 uses to pickle `bytes`.
    CodecsEncode,
}

/// Look a global up in the allow-list; `None` means refuse it.
pub(crate) fn resolve_global(module: &str, name: &str) -> Option<Global> {
    use Global::*;
    Some(match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor") => RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => RebuildFromTypeV2,
        ("torch", "Tensor") | ("torch.nn.parameter", "Parameter") => TensorClass,
        ("collections", "OrderedDict") => OrderedDict,
        ("torch", "Size") => Size,
        ("builtins" | "__builtin__", "set" | "frozenset") => Set,
        ("builtins" | "__builtin__", "slice") => Slice,
        ("builtins" | "__builtin__", "bytearray") => ByteArray,
        ("_codecs", "encode") => CodecsEncode,
        ("torch" | "torch.storage", "UntypedStorage") => StorageType(DType::U8),
        ("torch", storage) if storage.ends_with("Storage") => StorageType(storage_dtype(storage)?),
        ("torch", dtype) => Dtype(dtype_object(dtype)?),
        _ => return None,
    })
}

fn storage_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "DoubleStorage" => DType::F64,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}

fn dtype_object(name: &str) -> Option<DType> {
    Some(match name {
        "float32" | "float" => DType::F32,
        "float16" | "half" => DType::F16,
        "bfloat16" => DType::BF16,
        "float64" | "double" => DType::F64,
        "int64" | "long" => DType::I64,
        "int32" | "int" => DType::I32,
        "int16" | "short" => DType::I16,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "bool" => DType::Bool,
        _ => return None,
    })
}

/// A storage named by a persistent id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageRef {
    /// The key of the storage's bytes (zip entry `data/<key>` or legacy storage key).
    pub key: String,
    /// Element type of the storage.
    pub dtype: DType,
    /// Offset in elements into the keyed bytes (legacy storage views; 0 otherwise).
    pub base: usize,
}

/// A tensor: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorMeta {
    /// The storage the view reads.
    pub storage: Rc<StorageRef>,
    /// Offset in elements from the start of the storage.
    pub offset: usize,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Stride of each dimension, in elements.
    pub stride: Vec<usize>,
}

/// Interpret `('storage', storage_type, key, location, numel[, view_metadata])`.
///
/// The 5-tuple is the zip format's; legacy files add `view_metadata`, which is `None` or
/// `(view_key, offset, view_size)` for a view into the keyed storage.
pub(crate) fn persistent_load(pid: Value) -> VmResult<Value> {
    let items = pid.sequence().ok_or_else(|| {
        bad(format!(
            "persistent id is a {}, expected a tuple",
            pid.kind()
        ))
    })?;
    match items.first() {
        Some(Value::Str(s)) if s == "storage" => {}
        _ => return Err(bad("persistent id does not start with `storage`")),
    }
    if items.len() != 5 && items.len() != 6 {
        return Err(bad(format!(
            "storage persistent id has {} items, expected 5 or 6",
            items.len()
        )));
    }
    let dtype = match &items[1] {
        Value::Global(Global::StorageType(d)) => *d,
        Value::Global(Global::Dtype(d)) => *d,
        other => {
            return Err(bad(format!(
                "storage type is a {}, expected a `torch.*Storage` class",
                other.kind()
            )));
        }
    };
    let key = key_string(&items[2])?;
    let mut base = 0;
    if let Some(view) = items.get(5) {
        match view {
            Value::None => {}
            other => {
                let parts = other
                    .sequence()
                    .ok_or_else(|| bad("storage view metadata is not a tuple"))?;
                match parts.as_slice() {
                    [_, offset, _] => base = as_usize(offset, "storage view offset")?,
                    _ => return Err(bad("storage view metadata is not (key, offset, size)")),
                }
            }
        }
    }
    Ok(Value::Storage(Rc::new(StorageRef { key, dtype, base })))
}

fn key_string(v: &Value) -> VmResult<String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(bad(format!(
            "storage key is a {}, expected a str",
            other.kind()
        ))),
    }
}

/// The value of an integer argument that must be non-negative.
pub(crate) fn as_usize(v: &Value, what: &str) -> VmResult<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i)
            .map_err(|_| bad(format!("{what} is {i}, expected a non-negative integer"))),
        other => Err(bad(format!(
            "{what} is a {}, expected an int",
            other.kind()
        ))),
    }
}

fn usize_list(v: &Value, what: &str) -> VmResult<Vec<usize>> {
    let items = v
        .sequence()
        .ok_or_else(|| bad(format!("{what} is a {}, expected a tuple", v.kind())))?;
    items.iter().map(|x| as_usize(x, what)).collect()
}

/// Apply an allowed global to its arguments, building a value without running anything.
pub(crate) fn call(g: Global, args: Vec<Value>) -> VmResult<Value> {
    match g {
        Global::RebuildTensorV2 | Global::RebuildTensor => rebuild_tensor(&args),
        Global::RebuildParameter | Global::RebuildParameterWithState => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => Err(bad("`_rebuild_parameter` expects a tensor first")),
        },
        Global::RebuildFromTypeV2 => match args.as_slice() {
            [Value::Global(func), _, inner, ..] => {
                let inner = inner
                    .sequence()
                    .ok_or_else(|| bad("`_rebuild_from_type_v2` arguments are not a tuple"))?;
                call(*func, inner)
            }
            _ => Err(bad(
                "`_rebuild_from_type_v2` expects (func, type, args, state)",
            )),
        },
        Global::OrderedDict => match args.as_slice() {
            [] => Ok(Value::new_dict(Vec::new())),
            [items] => {
                let items = items
                    .sequence()
                    .ok_or_else(|| bad("`OrderedDict` argument is not a list of pairs"))?;
                let mut pairs = Vec::with_capacity(items.len());
                for item in items {
                    match item.sequence().as_deref() {
                        Some([k, v]) => pairs.push((k.clone(), v.clone())),
                        _ => return Err(bad("`OrderedDict` item is not a (key, value) pair")),
                    }
                }
                Ok(Value::new_dict(pairs))
            }
            _ => Err(bad(format!(
                "`OrderedDict` called with {} arguments, expected 0 or 1",
                args.len()
            ))),
        },
        Global::Size => match args.as_slice() {
            [] => Ok(Value::Tuple(Rc::new(Vec::new()))),
            [dims] => {
                Ok(Value::Tuple(Rc::new(dims.sequence().ok_or_else(|| {
                    bad("`torch.Size` argument is not a tuple")
                })?)))
            }
            _ => Err(bad("`torch.Size` expects one tuple")),
        },
        Global::Set => match args.as_slice() {
            [] => Ok(Value::new_set(Vec::new())),
            [Value::Set(s)] => Ok(Value::new_set(s.borrow().clone())),
            [items] => Ok(Value::new_set(
                items
                    .sequence()
                    .ok_or_else(|| bad("`set` argument is not a sequence"))?,
            )),
            _ => Err(bad("`set` expects at most one argument")),
        },
        Global::Slice => Ok(Value::Opaque("slice")),
        Global::ByteArray => match args.as_slice() {
            [] => Ok(Value::Bytes(Vec::new())),
            [Value::Bytes(b)] => Ok(Value::Bytes(b.clone())),
            _ => Err(bad("`bytearray` expects bytes")),
        },
        Global::CodecsEncode => codecs_encode(&args),
        Global::TensorClass | Global::StorageType(_) | Global::Dtype(_) => Err(bad(format!(
            "`{g:?}` is allowed as a value but cannot be called"
        ))),
    }
}

/// `_codecs.encode(text, encoding)` for the encodings pickle uses for `bytes`.
fn codecs_encode(args: &[Value]) -> VmResult<Value> {
    let (text, encoding) = match args {
        [Value::Str(t)] => (t, "utf-8"),
        [Value::Str(t), Value::Str(e)] => (t, e.as_str()),
        _ => return Err(bad("`_codecs.encode` expects (str, encoding)")),
    };
    match encoding.to_ascii_lowercase().as_str() {
        "latin1" | "latin-1" | "iso-8859-1" => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .map(Value::Bytes)
            .ok_or_else(|| bad("`_codecs.encode` text is not latin-1")),
        "utf-8" | "utf8" => Ok(Value::Bytes(text.as_bytes().to_vec())),
        other => Err(bad(format!(
            "`_codecs.encode` encoding `{other}` is not supported (latin1 or utf-8)"
        ))),
    }
}

/// `_rebuild_tensor[_v2](storage, storage_offset, size, stride, ...)`.
fn rebuild_tensor(args: &[Value]) -> VmResult<Value> {
    let [storage, offset, size, stride, ..] = args else {
        return Err(bad(format!(
            "`_rebuild_tensor_v2` got {} arguments, expected at least 4",
            args.len()
        )));
    };
    let storage = match storage {
        Value::Storage(s) => s.clone(),
        other => {
            return Err(bad(format!(
                "tensor storage is a {}, expected a storage",
                other.kind()
            )));
        }
    };
    let offset = as_usize(offset, "tensor storage offset")?;
    let shape = usize_list(size, "tensor size")?;
    let stride = usize_list(stride, "tensor stride")?;
    if shape.len() != stride.len() {
        return Err(bad(format!(
            "tensor size {shape:?} and stride {stride:?} differ in rank"
        )));
    }
    Ok(Value::Tensor(Rc::new(TensorMeta {
        storage,
        offset,
        shape,
        stride,
    })))
}
