//! `inspect`: what a checkpoint is: family, sizes, parameter count, dtypes and layers.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::anatomy::{self, Family, Naming, Role};
use crate::checkpoint::{self, Format, TensorSource};
use crate::error::Result;

/// The summary `lgreg inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The path inspected.
    pub path: String,
    /// On-disk format of the weights.
    pub format: Format,
    /// Architecture family.
    pub family: Family,
    /// Tensor naming scheme.
    pub naming: Naming,
    /// Number of blocks.
    pub layers: usize,
    /// Model width.
    pub hidden_size: Option<usize>,
    /// Attention heads.
    pub heads: Option<usize>,
    /// Key/value heads.
    pub kv_heads: Option<usize>,
    /// MLP width.
    pub intermediate_size: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: Option<usize>,
    /// Total number of elements over all tensors.
    pub parameters: u64,
    /// Bytes of tensor data as served (dequantised for GGUF).
    pub bytes: u64,
    /// Number of tensors.
    pub tensors: usize,
    /// Tensor count per dtype.
    pub dtypes: BTreeMap<String, usize>,
    /// One entry per block.
    pub per_layer: Vec<LayerSummary>,
    /// Tensors outside the blocks.
    pub globals: Vec<GlobalTensor>,
}

/// One block's totals.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    /// Block index.
    pub index: usize,
    /// Tensors in the block.
    pub tensors: usize,
    /// Elements in the block.
    pub parameters: u64,
    /// Bytes in the block.
    pub bytes: u64,
}

/// A tensor outside the blocks.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalTensor {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its dtype.
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// Inspect the checkpoint at `path` (file or directory, any format).
pub fn inspect(path: &Path) -> Result<Report> {
    let ckpt = checkpoint::open(path)?;
    let source: &dyn TensorSource = ckpt.source.as_ref();
    let anatomy = anatomy::analyze(ckpt.config.as_ref(), source.tensors())?;
    let mut per_layer: Vec<LayerSummary> = (0..anatomy.hyper.layers)
        .map(|index| LayerSummary {
            index,
            tensors: 0,
            parameters: 0,
            bytes: 0,
        })
        .collect();
    let mut dtypes = BTreeMap::new();
    let mut globals = Vec::new();
    for t in source.tensors() {
        *dtypes.entry(t.dtype.to_string()).or_insert(0) += 1;
        let slot = &anatomy.slots[&t.name];
        match slot.layer {
            Some(l) => {
                let s = &mut per_layer[l];
                s.tensors += 1;
                s.parameters += t.numel() as u64;
                s.bytes += t.nbytes() as u64;
            }
            None => globals.push(GlobalTensor {
                name: t.name.clone(),
                role: slot.role,
                dtype: t.dtype.to_string(),
                shape: t.shape.clone(),
            }),
        }
    }
    let h = &anatomy.hyper;
    Ok(Report {
        path: path.display().to_string(),
        format: ckpt.format,
        family: anatomy.family,
        naming: anatomy.naming,
        layers: h.layers,
        hidden_size: h.hidden_size,
        heads: h.heads,
        kv_heads: h.kv_heads,
        intermediate_size: h.intermediate_size,
        vocab_size: h.vocab_size,
        parameters: source.tensors().iter().map(|t| t.numel() as u64).sum(),
        bytes: source.tensors().iter().map(|t| t.nbytes() as u64).sum(),
        tensors: source.tensors().len(),
        dtypes,
        per_layer,
        globals,
    })
}
