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
pub mod write;

mod cast;
mod open;

pub use cast::cast_bytes;
pub use dtype::DType;
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

    /// The tensor converted to f32 values (floating-point dtypes only).
    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.require(name)?;
        let bytes = self.read(name)?;
        let f32_bytes = cast_bytes(&info.name, info.dtype, DType::F32, &bytes)?;
        Ok(f32_bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
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
