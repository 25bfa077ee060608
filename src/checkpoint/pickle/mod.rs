//! PyTorch checkpoints (`.bin`, `.pt`, `.pth`) read without executing code.
//!
//! Both containers are supported: the zip archive of torch >= 1.6 (`archive`) and the legacy
//! stream of pickles of older versions (`legacy`). Either way the data pickle is parsed by the
//! restricted unpickler in `vm`, which accepts only the globals listed in `torch`. Opening
//! records, for every tensor of the state dict, its storage, offset, shape and stride; the bytes
//! of one tensor are produced by [`TensorSource::read`] on demand: zero-copy from the
//! memory-mapped file when the tensor is contiguous and stored uncompressed, gathered into a
//! fresh buffer when it is a strided view.

mod archive;
mod legacy;
mod torch;
mod vm;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use super::mmap::Mapped;
use super::{TensorInfo, TensorSource};
use crate::error::{Error, Result};
use torch::TensorMeta;
use vm::{Value, VmError};

/// Largest tensor lgreg materialises from an overlapping view (e.g. stride 0, from `expand`)
/// when it is larger than its storage; views that do not overlap are always allowed.
const MAX_EXPANDED: usize = 256 << 20;

/// Where the bytes of one storage live.
#[derive(Debug, Clone)]
enum Location {
    /// A byte range of the mapped file (legacy data, or a zip entry stored uncompressed).
    Slice {
        /// First byte in the file.
        start: usize,
        /// Length in bytes.
        len: usize,
    },
    /// A compressed zip entry, inflated on each read.
    Entry {
        /// Full entry name in the archive.
        name: String,
        /// Uncompressed length in bytes.
        len: usize,
    },
}

impl Location {
    fn len(&self) -> usize {
        match self {
            Location::Slice { len, .. } | Location::Entry { len, .. } => *len,
        }
    }
}

/// How one tensor is laid out in its storage.
#[derive(Debug, Clone)]
struct Layout {
    /// Index into [`PickleFile::storages`].
    storage: usize,
    /// Offset of the first element, in elements.
    offset: usize,
    /// Stride of each dimension, in elements.
    stride: Vec<usize>,
}

/// A PyTorch checkpoint read without executing code.
#[derive(Debug)]
pub struct PickleFile {
    path: PathBuf,
    map: Arc<Mapped>,
    archive: Option<zip::ZipArchive<MapReader>>,
    big_endian: bool,
    storages: Vec<Location>,
    infos: Vec<TensorInfo>,
    /// Parallel to `infos`.
    layouts: Vec<Layout>,
}

impl PickleFile {
    /// Open a `.bin`/`.pt`/`.pth` checkpoint, zip or legacy.
    pub fn open(path: &Path) -> Result<PickleFile> {
        let map = Arc::new(Mapped::open(path)?);
        let (top, mut storages, big_endian) = if map.bytes().starts_with(b"PK") {
            let (top, storages, big_endian) = archive::load(path, &map)?;
            (top, storages, big_endian)
        } else {
            let (top, storages) = legacy::load(path, map.bytes())?;
            (top, Storages::Legacy(storages), false)
        };
        let found = discover(&top).map_err(|reason| pickle_err(path, reason))?;
        drop(top);
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut locations = Vec::new();
        let mut infos = Vec::with_capacity(found.len());
        let mut layouts = Vec::with_capacity(found.len());
        for (name, meta) in found {
            let key = &meta.storage.key;
            let storage = match index.get(key) {
                Some(&i) => i,
                None => {
                    let loc = storages
                        .locate(key)
                        .map_err(|reason| pickle_err(path, format!("tensor `{name}`: {reason}")))?;
                    locations.push(loc);
                    index.insert(key.clone(), locations.len() - 1);
                    locations.len() - 1
                }
            };
            let info = TensorInfo {
                name,
                dtype: meta.storage.dtype,
                shape: meta.shape.clone(),
            };
            let offset = meta.storage.base.checked_add(meta.offset);
            let offset = offset
                .filter(|&o| fits(o, &info, &meta.stride, locations[storage].len()))
                .ok_or_else(|| {
                    pickle_err(
                        path,
                        format!(
                            "tensor `{}` (offset {}, shape {:?}, stride {:?}, {}) reads past the end of its {}-byte storage `{key}`",
                            info.name,
                            meta.offset,
                            meta.shape,
                            meta.stride,
                            info.dtype,
                            locations[storage].len()
                        ),
                    )
                })?;
            let len = locations[storage].len();
            if info.numel().saturating_mul(info.dtype.size()) > len.max(MAX_EXPANDED) {
                return Err(pickle_err(
                    path,
                    format!(
                        "tensor `{}` (shape {:?}, stride {:?}) repeats its {len}-byte storage into more than {MAX_EXPANDED} bytes",
                        info.name, info.shape, meta.stride
                    ),
                ));
            }
            infos.push(info);
            layouts.push(Layout {
                storage,
                offset,
                stride: meta.stride.clone(),
            });
        }
        let archive = match storages {
            Storages::Zip { archive, .. } => Some(archive),
            Storages::Legacy(_) => None,
        };
        Ok(PickleFile {
            path: path.to_path_buf(),
            map,
            archive,
            big_endian,
            storages: locations,
            infos,
            layouts,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn storage_bytes(&self, loc: &Location) -> Result<Cow<'_, [u8]>> {
        match loc {
            Location::Slice { start, len } => start
                .checked_add(*len)
                .and_then(|end| self.map.bytes().get(*start..end))
                .map(Cow::Borrowed)
                .ok_or_else(|| {
                    pickle_err(&self.path, format!("storage at byte {start} is cut off"))
                }),
            Location::Entry { name, len } => {
                let mut archive = self.archive.clone().ok_or_else(|| {
                    pickle_err(&self.path, "zip storage outside an archive".into())
                })?;
                archive::read_entry(&self.path, &mut archive, name, *len).map(Cow::Owned)
            }
        }
    }
}

/// True when every element of the view lies inside `len` bytes.
fn fits(offset: usize, info: &TensorInfo, stride: &[usize], len: usize) -> bool {
    if info.shape.contains(&0) {
        return true;
    }
    let mut last = Some(offset);
    for (&dim, &st) in info.shape.iter().zip(stride) {
        last = last.and_then(|l| (dim - 1).checked_mul(st).and_then(|x| l.checked_add(x)));
    }
    let numel = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let end = last
        .and_then(|l| l.checked_add(1))
        .and_then(|e| e.checked_mul(info.dtype.size()));
    matches!((end, numel), (Some(end), Some(_)) if end <= len)
}

/// The storages of a parsed checkpoint, found by key.
enum Storages {
    /// Entries `<prefix>data/<key>` of a zip archive.
    Zip {
        archive: zip::ZipArchive<MapReader>,
        prefix: String,
        file_len: usize,
    },
    /// Byte ranges of a legacy file.
    Legacy(HashMap<String, Location>),
}

impl Storages {
    fn locate(&mut self, key: &str) -> std::result::Result<Location, String> {
        match self {
            Storages::Zip {
                archive,
                prefix,
                file_len,
            } => archive::locate(archive, &format!("{prefix}data/{key}"), *file_len),
            Storages::Legacy(map) => map
                .get(key)
                .cloned()
                .ok_or_else(|| format!("storage `{key}` is not in the file")),
        }
    }
}

/// Find the state dict: the top-level dict, or one under `state_dict` or `model`.
fn discover(top: &Value) -> std::result::Result<Vec<(String, Rc<TensorMeta>)>, String> {
    let Value::Dict(dict) = top else {
        return Err(format!(
            "the top-level object is a {}, expected a dict of tensors",
            top.kind()
        ));
    };
    let direct = tensors_in(&dict.borrow());
    if !direct.is_empty() {
        return Ok(direct);
    }
    for wanted in ["state_dict", "model"] {
        let inner = dict.borrow().iter().rev().find_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Dict(d)) if k == wanted => Some(d.clone()),
            _ => None,
        });
        if let Some(inner) = inner {
            let found = tensors_in(&inner.borrow());
            if !found.is_empty() {
                return Ok(found);
            }
        }
    }
    Err("no tensors at the top level or under `state_dict` or `model`".into())
}

/// The tensor entries of a dict with string keys, sorted by name; later duplicates win.
fn tensors_in(items: &[(Value, Value)]) -> Vec<(String, Rc<TensorMeta>)> {
    let mut out = BTreeMap::new();
    for (k, v) in items {
        if let (Value::Str(name), Value::Tensor(t)) = (k, v) {
            out.insert(name.clone(), t.clone());
        }
    }
    out.into_iter().collect()
}

fn pickle_err(path: &Path, reason: String) -> Error {
    Error::Pickle {
        path: path.to_path_buf(),
        reason,
    }
}

fn vm_err(path: &Path, e: VmError) -> Error {
    match e {
        VmError::Forbidden(global) => Error::ForbiddenGlobal {
            path: path.to_path_buf(),
            global,
        },
        VmError::Malformed(reason) => pickle_err(path, reason),
    }
}

/// True when the strides describe a row-major contiguous layout.
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&dim, &st) in shape.iter().zip(stride).rev() {
        if dim != 1 && st != expect {
            return false;
        }
        expect = expect.saturating_mul(dim);
    }
    true
}

/// Copy a strided view into a contiguous buffer (bounds were checked at open).
fn gather(
    src: &[u8],
    es: usize,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> Option<Vec<u8>> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * es);
    if numel == 0 {
        return Some(out);
    }
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    loop {
        let elem = offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(src.get(elem * es..(elem + 1) * es)?);
        let mut d = rank;
        loop {
            if d == 0 {
                return Some(out);
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

impl TensorSource for PickleFile {
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let i = self
            .infos
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .map_err(|_| Error::MissingTensor {
                name: name.to_string(),
            })?;
        let (info, lay) = (&self.infos[i], &self.layouts[i]);
        let es = info.dtype.size();
        let storage = self.storage_bytes(&self.storages[lay.storage])?;
        let cut = || {
            pickle_err(
                &self.path,
                format!("tensor `{name}` reads past its storage"),
            )
        };
        let mut bytes: Cow<'_, [u8]> = if is_contiguous(&info.shape, &lay.stride) {
            let range = lay.offset * es..(lay.offset + info.numel()) * es;
            match storage {
                Cow::Borrowed(b) => Cow::Borrowed(b.get(range).ok_or_else(cut)?),
                Cow::Owned(v) => Cow::Owned(v.get(range).ok_or_else(cut)?.to_vec()),
            }
        } else {
            Cow::Owned(gather(&storage, es, lay.offset, &info.shape, &lay.stride).ok_or_else(cut)?)
        };
        if self.big_endian && es > 1 {
            for chunk in bytes.to_mut().chunks_exact_mut(es) {
                chunk.reverse();
            }
        }
        Ok(bytes)
    }
}

/// A `Read + Seek` cursor over the shared memory map, so the zip reader can own it.
#[derive(Debug, Clone)]
struct MapReader {
    map: Arc<Mapped>,
    pos: u64,
}

impl Read for MapReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let bytes = self.map.bytes();
        let start = usize::try_from(self.pos)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for MapReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let len = self.map.bytes().len() as u64;
        let next = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = next.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests;
