//! The heur_vgg gene on disk: a registry gene directory (publishable as it is) with one unit,
//! `gene.safetensors` (the chosen conv blocks as `gene.<k>.{conv,bn}.*`, BatchNorm running
//! statistics included, and the diagonal Fisher of each trainable gene tensor as
//! `fisher.gene.<k>.*` for EWC), and `gene.json`, a registry card whose family is `vgg` with
//! the blocks' shape ([`VggShape`]) as its hyper-parameters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::vgg::{ConvBlock, read_tensors, safetensors_bytes};
use crate::error::{Error, Result};
use crate::fsutil::StagedDir;
use crate::gene::{GENE_JSON, GeneDir, gene_json_bytes};
use crate::registry::manifest::{Family, Fidelity, GeneCard, Recipe};

/// The tensors file of a gene directory (its only unit).
pub const TENSORS_FILE: &str = "gene.safetensors";

/// The card of a gene directory.
pub const CARD_FILE: &str = GENE_JSON;

/// The family name in the card.
pub const FAMILY: &str = "vgg";

/// The recipe name in the card.
pub const RECIPE: &str = "heur-vgg";

/// The gene blocks' shape: the card's `family.hyper_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VggShape {
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
}

/// The registry card of a heur_vgg gene of `shape`, made by the paper's training (`faithful`).
pub fn card(
    shape: &VggShape,
    params: Map<String, Value>,
    diagnostics: Map<String, Value>,
    metrics: Map<String, Value>,
) -> Result<GeneCard> {
    let Value::Object(hyper_parameters) = serde_json::to_value(shape)? else {
        return Err(Error::Algorithm {
            algorithm: "heur".into(),
            reason: "the VGG shape did not serialise as an object".into(),
            fix: "report this as a bug".into(),
        });
    };
    Ok(GeneCard {
        schema_version: crate::registry::manifest::GENE_SCHEMA_VERSION,
        algorithm: "heur".into(),
        fidelity: Fidelity::Faithful,
        recipe: Recipe {
            name: RECIPE.into(),
            version: "1".into(),
            params,
            digest: None,
        },
        ancestor: None,
        family: Family {
            name: FAMILY.into(),
            hyper_parameters,
        },
        roles: BTreeMap::new(),
        diagnostics,
        metrics,
        lgreg_version: env!("CARGO_PKG_VERSION").to_string(),
        created: None,
        derived_from: None,
    })
}

/// A loaded gene.
#[derive(Debug, Clone)]
pub struct VggGene {
    /// Its card.
    pub card: GeneCard,
    /// The blocks' shape, from the card.
    pub shape: VggShape,
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
    card: &GeneCard,
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
    staged.write_file(
        CARD_FILE,
        &gene_json_bytes(card, &[TENSORS_FILE.to_string()])?,
    )?;
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
    let card = GeneDir::read(&dir)?.card;
    if card.family.name != FAMILY || card.algorithm != "heur" {
        return Err(Error::Config {
            path: card_path,
            reason: format!(
                "a {} gene of the {} family, not heur_vgg; `lgreg spawn` grows it",
                card.algorithm, card.family.name
            ),
        });
    }
    let shape: VggShape = serde_json::from_value(Value::Object(
        card.family.hyper_parameters.clone(),
    ))
    .map_err(|e| Error::Config {
        path: card_path.clone(),
        reason: format!("`family.hyper_parameters` is not a VGG gene's shape: {e}"),
    })?;
    let path = dir.join(TENSORS_FILE);
    let tensors = read_tensors(&path, device)?;
    let mut blocks = Vec::new();
    let mut fisher = Vec::new();
    let mut inp = shape.in_channels;
    for (k, &out) in shape.widths.iter().enumerate() {
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
        shape,
        blocks,
        fisher,
    })
}
