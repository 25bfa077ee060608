//! Reading and writing checkpoints.
//!
//! Every format is read through one lazy interface, [`TensorSource`]: names, dtypes and shapes
//! are known up front, and the bytes of one tensor are produced on demand. safetensors files
//! are memory-mapped and served zero-copy; GGUF tensors are dequantised one at a time; PyTorch
//! pickles are parsed by a restricted unpickler that never runs code.

pub mod dtype;
pub mod gguf;
pub mod memory;
pub mod mmap;
pub mod pickle;
pub mod safetensors;
pub mod seeded;
pub mod sink;
pub mod write;

mod cast;
mod open;

pub use cast::{cast_bytes, decode_into_f32, f32_le_bytes, f32_values, f32_view};
pub use dtype::DType;
pub(crate) use open::read_json_file;
pub use open::{Checkpoint, Format, SideFile, open};
use std::borrow::Cow;

use crate::error::{Error, Result};

/// Name, element type and shape of one stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name in the checkpoint (HF naming after conversion).
    pub name: String,
    /// The element type that [`TensorSource::read`] returns.
    pub dtype: DType,
    /// The shape, outermost dimension first.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of bytes of the raw data.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// A tensor's bytes as they lie in a file: `nbytes` of them from `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The open file.
    pub file: &'a std::fs::File,
    /// The byte offset of the tensor's first byte.
    pub offset: u64,
}

/// A lazy view of the tensors of a checkpoint.
pub trait TensorSource: Send + Sync {
    /// Every tensor, sorted by name.
    fn tensors(&self) -> &[TensorInfo];

    /// The little-endian bytes of one tensor, in the dtype its [`TensorInfo`] names.
    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>>;

    /// Hint that the bytes of `name` will not be read again soon, so memory they occupy (e.g.
    /// mapped pages) can be given back. The default does nothing.
    fn release(&self, _name: &str) {}

    /// The info of one tensor, if present.
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        let all = self.tensors();
        index_of(all, name).ok().map(|i| &all[i])
    }

    /// The info of one tensor, or a [`Error::MissingTensor`].
    fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.info(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })
    }

    /// Like [`TensorSource::release`], for the bytes `range` of tensor `name` only (offsets
    /// into its data). The default does nothing.
    fn release_range(&self, _name: &str, _range: std::ops::Range<usize>) {}

    /// Hint that the bytes `range` of tensor `name` (offsets into its data) are read next, so
    /// that mapped pages can be brought in at once. The default does nothing.
    fn prefetch_range(&self, _name: &str, _range: std::ops::Range<usize>) {}

    /// Where the bytes [`TensorSource::read`] returns for `name` are stored verbatim in a file,
    /// so that a writer can copy them file to file in the kernel. The default is `None`: the
    /// bytes are decoded, cast or computed.
    fn stored_at(&self, _name: &str) -> Option<Stored<'_>> {
        None
    }

    /// The tensor converted to f32 values (floating-point dtypes only).
    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.view_f32(name).map(Cow::into_owned)
    }

    /// The tensor as f32 values (floating-point dtypes only): borrowed without a copy when it
    /// is stored as f32 at an f32 boundary (a memory-mapped safetensors file), else converted.
    fn view_f32(&self, name: &str) -> Result<Cow<'_, [f32]>> {
        let info = self.require(name)?;
        let bytes = self.read(name)?;
        if info.dtype == DType::F32
            && let Cow::Borrowed(stored) = bytes
            && let Some(values) = f32_view(stored)
        {
            return Ok(Cow::Borrowed(values));
        }
        let f32_bytes = cast_bytes(&info.name, info.dtype, DType::F32, &bytes)?;
        Ok(Cow::Owned(f32_values(&f32_bytes)))
    }
}

/// The position of tensor `name` in infos sorted by name, or [`Error::MissingTensor`].
pub(crate) fn index_of(infos: &[TensorInfo], name: &str) -> Result<usize> {
    infos
        .binary_search_by(|t| t.name.as_str().cmp(name))
        .map_err(|_| Error::MissingTensor {
            name: name.to_string(),
        })
}

/// Sort tensor infos by name, the order every [`TensorSource`] returns.
pub(crate) fn sort_infos(infos: &mut [TensorInfo]) {
    infos.sort_by(|a, b| a.name.cmp(&b.name));
}
