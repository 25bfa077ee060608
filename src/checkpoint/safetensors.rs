//! Strict, zero-copy reading of one safetensors file.
//!
//! The header is validated before any tensor is served: its length must fit the file and a
//! size cap, it must be UTF-8 JSON, every dtype must be known, every tensor's byte range must
//! match its shape, and the ranges must tile the data section exactly (no gaps, no overlaps),
//! as the reference implementation requires.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::mmap::Mapped;
use super::{DType, TensorInfo, TensorSource, index_of};
use crate::error::{Error, Result};

/// Largest header lgreg accepts (the reference implementation's limit).
pub const MAX_HEADER_SIZE: u64 = 100_000_000;

/// A memory-mapped safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: Mapped,
    data_start: usize,
    infos: Vec<TensorInfo>,
    /// Byte range in the data section, parallel to `infos`.
    ranges: Vec<(usize, usize)>,
    metadata: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

impl SafetensorsFile {
    /// Map and validate `path`.
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let map = Mapped::open(path)?;
        let (data_start, mut entries, metadata) = parse_header(path, map.bytes())?;
        let data_len = map.bytes().len() - data_start;
        check_ranges(path, &mut entries, data_len)?;
        let mut pairs: Vec<(TensorInfo, (usize, usize))> = entries;
        pairs.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let ranges = pairs.iter().map(|p| p.1).collect();
        let infos: Vec<TensorInfo> = pairs.into_iter().map(|p| p.0).collect();
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map,
            data_start,
            infos,
            ranges,
            metadata,
        })
    }

    /// The `__metadata__` map of the header.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

type Entries = Vec<(TensorInfo, (usize, usize))>;

fn invalid(path: &Path, reason: String) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        reason,
    }
}

/// Parse and check the header; returns where the data section starts.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<(usize, Entries, BTreeMap<String, String>)> {
    if bytes.len() < 8 {
        return Err(invalid(
            path,
            format!(
                "file is {} bytes, too short for the 8-byte header length",
                bytes.len()
            ),
        ));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let header_len = u64::from_le_bytes(len8);
    if header_len > MAX_HEADER_SIZE {
        return Err(invalid(
            path,
            format!("header length {header_len} exceeds the {MAX_HEADER_SIZE}-byte limit"),
        ));
    }
    let available = bytes.len() as u64 - 8;
    if header_len > available {
        return Err(invalid(
            path,
            format!(
                "header length {header_len} runs past the end of the file ({available} bytes follow); the file is truncated"
            ),
        ));
    }
    let header = &bytes[8..8 + header_len as usize];
    let text = std::str::from_utf8(header)
        .map_err(|e| invalid(path, format!("header is not UTF-8 ({e})")))?;
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| invalid(path, format!("header is not a JSON object ({e})")))?;
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        if name == "__metadata__" {
            metadata = serde_json::from_value(value)
                .map_err(|e| invalid(path, format!("`__metadata__` is not a string map ({e})")))?;
            continue;
        }
        entries.push(parse_entry(path, name, value)?);
    }
    Ok((8 + header_len as usize, entries, metadata))
}

fn parse_entry(
    path: &Path,
    name: String,
    value: serde_json::Value,
) -> Result<(TensorInfo, (usize, usize))> {
    let raw: RawEntry = serde_json::from_value(value)
        .map_err(|e| invalid(path, format!("entry `{name}` is malformed ({e})")))?;
    let dtype = DType::from_safetensors_name(&raw.dtype).ok_or_else(|| {
        invalid(
            path,
            format!("tensor `{name}` has unknown dtype `{}`", raw.dtype),
        )
    })?;
    let numel = raw
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| {
            invalid(
                path,
                format!("tensor `{name}` shape {:?} overflows", raw.shape),
            )
        })?;
    let (begin, end) = raw.data_offsets;
    if end < begin || end - begin != numel {
        return Err(invalid(
            path,
            format!(
                "tensor `{name}` has data_offsets [{begin}, {end}] but shape {:?} of {} needs {numel} bytes",
                raw.shape, raw.dtype
            ),
        ));
    }
    let info = TensorInfo {
        name,
        dtype,
        shape: raw.shape,
    };
    Ok((info, (begin, end)))
}

/// The ranges must tile `[0, data_len)` exactly.
fn check_ranges(path: &Path, entries: &mut Entries, data_len: usize) -> Result<()> {
    entries.sort_by_key(|e| e.1);
    let mut cursor = 0usize;
    for (info, (begin, end)) in entries.iter() {
        if *begin != cursor {
            let what = if *begin < cursor {
                "overlaps the previous tensor"
            } else {
                "leaves a gap before it"
            };
            return Err(invalid(
                path,
                format!(
                    "tensor `{}` starts at offset {begin}, which {what} (expected {cursor})",
                    info.name
                ),
            ));
        }
        if *end > data_len {
            return Err(invalid(
                path,
                format!(
                    "tensor `{}` ends at offset {end}, past the {data_len}-byte data section; the file is truncated",
                    info.name
                ),
            ));
        }
        cursor = *end;
    }
    if cursor != data_len {
        return Err(invalid(
            path,
            format!("the data section is {data_len} bytes but the tensors cover {cursor}"),
        ));
    }
    Ok(())
}

impl SafetensorsFile {
    /// The absolute byte range of tensor `name` in the file.
    fn file_range(&self, name: &str) -> Result<std::ops::Range<usize>> {
        let i = index_of(&self.infos, name)?;
        let (begin, end) = self.ranges[i];
        Ok(self.data_start + begin..self.data_start + end)
    }

    /// The absolute byte range of the bytes `range` of tensor `name`, cut to the tensor.
    fn part_range(
        &self,
        name: &str,
        range: std::ops::Range<usize>,
    ) -> Result<std::ops::Range<usize>> {
        let whole = self.file_range(name)?;
        let end = whole.start.saturating_add(range.end).min(whole.end);
        Ok(whole.start.saturating_add(range.start).min(end)..end)
    }
}

impl TensorSource for SafetensorsFile {
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let range = self.file_range(name)?;
        Ok(Cow::Borrowed(&self.map.bytes()[range]))
    }

    fn release(&self, name: &str) {
        if let Ok(range) = self.file_range(name) {
            self.map.release(range);
        }
    }

    fn release_range(&self, name: &str, range: std::ops::Range<usize>) {
        if let Ok(part) = self.part_range(name, range) {
            self.map.release(part);
        }
    }

    fn prefetch_range(&self, name: &str, range: std::ops::Range<usize>) {
        if let Ok(part) = self.part_range(name, range) {
            self.map.prefetch(part);
        }
    }

    fn stored_at(&self, name: &str) -> Option<super::Stored<'_>> {
        let range = self.file_range(name).ok()?;
        Some(super::Stored {
            file: self.map.file(),
            offset: range.start as u64,
        })
    }
}
