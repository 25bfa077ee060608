//! The legacy (torch < 1.6) stream: five pickles, then the raw storages.
//!
//! Layout: the magic number, the protocol version (1001), a sys-info dict, the data pickle
//! (persistent ids `('storage', type, key, location, numel, view_metadata)`), the list of
//! storage keys, then for each key an 8-byte little-endian element count and the raw bytes.

use std::collections::HashMap;
use std::path::Path;

use super::vm::{self, Value, VmError, bad};
use super::{Location, pickle_err, torch, vm_err};
use crate::checkpoint::DType;
use crate::error::Result;

/// torch's magic number at the start of a legacy checkpoint.
const MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// The only legacy protocol version torch ever wrote.
const PROTOCOL_VERSION: i64 = 1001;

/// Parse a legacy file; returns the top object and where each storage's bytes lie.
pub(super) fn load(path: &Path, bytes: &[u8]) -> Result<(Value, HashMap<String, Location>)> {
    let mut pos = 0usize;
    let header = |pos: &mut usize| -> Result<Value> {
        let mut refuse =
            |_: Value| -> Result<Value, VmError> { Err(bad("persistent id in the legacy header")) };
        let (v, n) = vm::load(&bytes[*pos..], &mut refuse).map_err(|e| vm_err(path, e))?;
        *pos += n;
        Ok(v)
    };
    let magic = header(&mut pos)?;
    if !is_magic(&magic) {
        return Err(pickle_err(
            path,
            "not a zip archive, and the first pickle is not torch's legacy magic number".into(),
        ));
    }
    match header(&mut pos)? {
        Value::Int(PROTOCOL_VERSION) => {}
        other => {
            return Err(pickle_err(
                path,
                format!("legacy protocol version is {other:?}, expected {PROTOCOL_VERSION}"),
            ));
        }
    }
    let _sys_info = header(&mut pos)?;

    let mut dtypes: HashMap<String, DType> = HashMap::new();
    let mut record = |pid: Value| {
        let v = torch::persistent_load(pid)?;
        if let Value::Storage(s) = &v {
            dtypes.entry(s.key.clone()).or_insert(s.dtype);
        }
        Ok(v)
    };
    let (top, n) = vm::load(&bytes[pos..], &mut record).map_err(|e| vm_err(path, e))?;
    pos += n;
    let keys = header(&mut pos)?;
    let keys = keys
        .sequence()
        .ok_or_else(|| pickle_err(path, format!("storage key list is a {}", keys.kind())))?;

    let mut storages = HashMap::new();
    for key in keys {
        let key = match key {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
            other => {
                return Err(pickle_err(
                    path,
                    format!("storage key is a {}, expected a str", other.kind()),
                ));
            }
        };
        let dtype = *dtypes.get(&key).ok_or_else(|| {
            pickle_err(
                path,
                format!("storage `{key}` is listed but no tensor uses it"),
            )
        })?;
        let count = bytes
            .get(pos..pos + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_le_bytes)
            .ok_or_else(|| pickle_err(path, format!("storage `{key}` is cut off at byte {pos}")))?;
        pos += 8;
        let left = bytes.len() - pos;
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dtype.size()))
            .filter(|&len| len <= left)
            .ok_or_else(|| {
                pickle_err(
                    path,
                    format!("storage `{key}` claims {count} elements of {dtype}, but only {left} bytes are left"),
                )
            })?;
        storages.insert(key, Location::Slice { start: pos, len });
        pos += len;
    }
    Ok((top, storages))
}

fn is_magic(v: &Value) -> bool {
    match v {
        Value::BigInt(b) if b.len() <= 16 => {
            let mut buf = [0u8; 16];
            buf[..b.len()].copy_from_slice(b);
            u128::from_le_bytes(buf) == MAGIC
        }
        _ => false,
    }
}
