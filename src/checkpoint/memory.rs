//! Tensors held in memory, for checkpoints that lgreg computes rather than reads.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::{DType, TensorInfo, TensorSource, sort_infos};
use crate::error::{Error, Result};

/// An in-memory [`TensorSource`].
#[derive(Debug, Default, Clone)]
pub struct MemorySource {
    infos: Vec<TensorInfo>,
    data: BTreeMap<String, Vec<u8>>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> MemorySource {
        MemorySource::default()
    }

    /// Add (or replace) a tensor from raw little-endian bytes.
    pub fn insert(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        bytes: Vec<u8>,
    ) -> Result<()> {
        let info = TensorInfo {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        };
        if info.nbytes() != bytes.len() {
            return Err(Error::InvalidValue {
                what: "tensor data".into(),
                value: name.to_string(),
                reason: format!(
                    "{} bytes given, but shape {shape:?} of {dtype} needs {}",
                    bytes.len(),
                    info.nbytes()
                ),
            });
        }
        self.infos.retain(|t| t.name != name);
        self.infos.push(info);
        sort_infos(&mut self.infos);
        self.data.insert(name.to_string(), bytes);
        Ok(())
    }

    /// Add an f32 tensor.
    pub fn insert_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<()> {
        self.insert(name, DType::F32, shape, super::f32_le_bytes(values))
    }
}

impl TensorSource for MemorySource {
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        self.data
            .get(name)
            .map(|b| Cow::Borrowed(b.as_slice()))
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
            })
    }
}
