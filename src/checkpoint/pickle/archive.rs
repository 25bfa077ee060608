//! The zip container of torch >= 1.6: `<prefix>/data.pkl`, `<prefix>/data/<key>` storages,
//! `<prefix>/byteorder` and `<prefix>/version`.
//!
//! Storages stored uncompressed (torch's default) are served as slices of the mapped file;
//! compressed ones are inflated, size-capped and CRC-checked, on each read.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::vm::{self, Value};
use super::{Location, MapReader, Storages, pickle_err, torch, vm_err};
use crate::checkpoint::mmap::Mapped;
use crate::error::Result;

/// Largest `data.pkl` lgreg will parse.
const MAX_PICKLE: usize = 1 << 30;

/// Parse the archive's data pickle; returns the top object, the storages and big-endianness.
pub(super) fn load(path: &Path, map: &Arc<Mapped>) -> Result<(Value, Storages, bool)> {
    let file_len = map.bytes().len();
    let reader = MapReader {
        map: map.clone(),
        pos: 0,
    };
    let mut archive = ZipArchive::new(reader)
        .map_err(|e| pickle_err(path, format!("not a readable zip archive: {e}")))?;
    let prefix = find_prefix(&archive)
        .ok_or_else(|| pickle_err(path, "the zip archive holds no `<name>/data.pkl`".into()))?;
    let big_endian = match read_small(&mut archive, &format!("{prefix}byteorder")) {
        Ok(None) => false,
        Ok(Some(text)) => match text.trim() {
            "little" => false,
            "big" => true,
            other => {
                return Err(pickle_err(
                    path,
                    format!("`{prefix}byteorder` is `{other}`, expected `little` or `big`"),
                ));
            }
        },
        Err(reason) => return Err(pickle_err(path, reason)),
    };
    let pkl_name = format!("{prefix}data.pkl");
    let len = entry_len(&mut archive, &pkl_name).map_err(|r| pickle_err(path, r))?;
    if len > MAX_PICKLE {
        return Err(pickle_err(
            path,
            format!("`{pkl_name}` is {len} bytes, above the {MAX_PICKLE}-byte limit"),
        ));
    }
    let pkl = read_entry(path, &mut archive, &pkl_name, len)?;
    let (top, _) = vm::load(&pkl, &mut torch::persistent_load).map_err(|e| vm_err(path, e))?;
    Ok((
        top,
        Storages::Zip {
            archive,
            prefix,
            file_len,
        },
        big_endian,
    ))
}

/// The `<prefix>/` of the first `<prefix>/data.pkl` entry (`""` for a bare `data.pkl`).
fn find_prefix(archive: &ZipArchive<MapReader>) -> Option<String> {
    archive.file_names().find_map(|name| {
        let name = name.ok()?;
        let prefix = name.strip_suffix("data.pkl")?;
        let ok = prefix.is_empty()
            || (prefix.ends_with('/') && !prefix[..prefix.len() - 1].contains('/'));
        ok.then(|| prefix.to_string())
    })
}

fn entry_error(name: &str, e: ZipError) -> String {
    match e {
        ZipError::FileNotFound => format!("the archive has no entry `{name}`"),
        other => format!("zip entry `{name}` is unreadable: {other}"),
    }
}

fn entry_len(
    archive: &mut ZipArchive<MapReader>,
    name: &str,
) -> std::result::Result<usize, String> {
    let file = archive.by_name(name).map_err(|e| entry_error(name, e))?;
    usize::try_from(file.size()).map_err(|_| format!("zip entry `{name}` is too large"))
}

/// A short text entry such as `byteorder`; `None` when absent.
fn read_small(
    archive: &mut ZipArchive<MapReader>,
    name: &str,
) -> std::result::Result<Option<String>, String> {
    let file = match archive.by_name(name) {
        Ok(f) => f,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(entry_error(name, e)),
    };
    let mut text = String::new();
    file.take(64)
        .read_to_string(&mut text)
        .map_err(|e| format!("zip entry `{name}` is unreadable: {e}"))?;
    Ok(Some(text))
}

/// Where a storage entry's bytes are: a slice of the file when stored, else the entry name.
pub(super) fn locate(
    archive: &mut ZipArchive<MapReader>,
    name: &str,
    file_len: usize,
) -> std::result::Result<Location, String> {
    let file = archive.by_name(name).map_err(|e| entry_error(name, e))?;
    if file.encrypted() {
        return Err(format!("zip entry `{name}` is encrypted"));
    }
    let len =
        usize::try_from(file.size()).map_err(|_| format!("zip entry `{name}` is too large"))?;
    if file.compression() != CompressionMethod::Stored {
        return Ok(Location::Entry {
            name: name.to_string(),
            len,
        });
    }
    let start = file
        .data_start()
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| format!("zip entry `{name}` has no data offset"))?;
    let fits = start.checked_add(len).is_some_and(|end| end <= file_len);
    if file.compressed_size() != file.size() || !fits {
        return Err(format!(
            "zip entry `{name}` claims {len} bytes at offset {start}, beyond the {file_len}-byte file"
        ));
    }
    Ok(Location::Slice { start, len })
}

/// Inflate one entry, which must hold exactly `len` bytes.
pub(super) fn read_entry(
    path: &Path,
    archive: &mut ZipArchive<MapReader>,
    name: &str,
    len: usize,
) -> Result<Vec<u8>> {
    let file = archive
        .by_name(name)
        .map_err(|e| pickle_err(path, entry_error(name, e)))?;
    let mut out = Vec::with_capacity(len);
    file.take(len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| pickle_err(path, format!("zip entry `{name}` is unreadable: {e}")))?;
    if out.len() != len {
        return Err(pickle_err(
            path,
            format!(
                "zip entry `{name}` holds {} bytes, expected {len}",
                out.len()
            ),
        ));
    }
    Ok(out)
}
