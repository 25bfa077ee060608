//! The heur_vgg gene on disk: a directory with `gene.safetensors` (the chosen conv blocks as
//! `gene.<k>.{conv,bn}.*`, BatchNorm running statistics included, and the diagonal Fisher of
//! each trainable gene tensor as `fisher.gene.<k>.*` for EWC) and `gene.json`, its card.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::vgg::{ConvBlock, read_tensors, safetensors_bytes};
use crate::error::{Error, Result};
use crate::fsutil::StagedDir;

/// The tensors file of a gene directory.
pub const TENSORS_FILE: &str = "gene.safetensors";

/// The card of a gene directory.
pub const CARD_FILE: &str = "gene.json";

/// What `gene.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VggGeneCard {
    /// `heur`.
    pub algorithm: String,
    /// `vgg`.
    pub family: String,
    /// `faithful`: made by the paper's training.
    pub fidelity: String,
    /// The ancestor's conv blocks the gene holds, ascending.
    pub source_layers: Vec<usize>,
    /// The gene blocks' output widths.
    pub widths: Vec<usize>,
    /// Channels into the first gene block.
    pub in_channels: usize,
    /// The map's side at the first gene block in the ancestor.
    pub input_side: usize,
    /// Image channels and side of the ancestor.
    pub image: [usize; 2],
    /// BatchNorm's ε and momentum.
    pub bn: [f64; 2],
    /// Everything else: the criterion, the data, the run config, metrics and the loss curve.
    pub diagnostics: Value,
}

/// A loaded gene.
#[derive(Debug, Clone)]
pub struct VggGene {
    /// Its card.
    pub card: VggGeneCard,
    /// The blocks, in order.
    pub blocks: Vec<ConvBlock>,
    /// The Fisher of each trainable tensor, by its name in a block (`conv.weight`, ...), per block.
    pub fisher: Vec<BTreeMap<String, Tensor>>,
}

fn gene_prefix(k: usize) -> String {
    format!("gene.{k}")
}

/// The trainable tensor names within a block.
pub const TRAINABLE: [&str; 4] = ["conv.weight", "conv.bias", "bn.weight", "bn.bias"];

/// Write a gene directory at `dir` (staged, fsynced, renamed into place).
pub fn write(
    dir: &Path,
    card: &VggGeneCard,
    blocks: &[&ConvBlock],
    fisher: &[BTreeMap<String, Tensor>],
) -> Result<PathBuf> {
    let mut tensors = BTreeMap::new();
    for (k, block) in blocks.iter().enumerate() {
        tensors.extend(block.tensors(&gene_prefix(k)));
        for (name, f) in fisher.get(k).into_iter().flatten() {
            tensors.insert(format!("fisher.{}.{name}", gene_prefix(k)), f.clone());
        }
    }
    let staged = StagedDir::new(dir, true)?;
    staged.write_file(TENSORS_FILE, &safetensors_bytes(&tensors)?)?;
    staged.write_file(CARD_FILE, &serde_json::to_vec_pretty(card)?)?;
    staged.commit()
}

/// Read the gene at `dir`: a gene directory, or an ancestor run directory holding `gene/`.
pub fn read(dir: &Path, device: &Device) -> Result<VggGene> {
    let dir = if dir.join(CARD_FILE).is_file() {
        dir.to_path_buf()
    } else {
        dir.join("gene")
    };
    let card_path = dir.join(CARD_FILE);
    if !card_path.is_file() {
        return Err(Error::NotFound { path: card_path });
    }
    let card: VggGeneCard =
        serde_json::from_slice(&fs_err::read(&card_path)?).map_err(|e| Error::Config {
            path: card_path.clone(),
            reason: format!("not a heur_vgg gene card: {e}"),
        })?;
    if card.family != "vgg" || card.algorithm != "heur" {
        return Err(Error::Config {
            path: card_path,
            reason: format!("a {}_{} gene, not heur_vgg", card.algorithm, card.family),
        });
    }
    let path = dir.join(TENSORS_FILE);
    let tensors = read_tensors(&path, device)?;
    let mut blocks = Vec::new();
    let mut fisher = Vec::new();
    let mut inp = card.in_channels;
    for (k, &out) in card.widths.iter().enumerate() {
        let prefix = gene_prefix(k);
        blocks.push(ConvBlock::from_tensors(&tensors, &prefix, inp, out, &path)?);
        let f: BTreeMap<String, Tensor> = TRAINABLE
            .iter()
            .filter_map(|name| {
                tensors
                    .get(&format!("fisher.{prefix}.{name}"))
                    .map(|t| (name.to_string(), t.clone()))
            })
            .collect();
        fisher.push(f);
        inp = out;
    }
    Ok(VggGene {
        card,
        blocks,
        fisher,
    })
}
