//! Import an official TLEG checkpoint (the authors' `checkpoint.pth` with the state dict under
//! `model`, or the same tensors as safetensors) as a faithful gene.
//!
//! The authors' auxiliary network keeps one shared block whose every parameter is a pair
//! `blocks.block.<sub>.instances.0.<param>_base` (B) and `…_ilayer` (A), where
//! `blocks.0.<sub>.<param>` is the timm name of the same tensor in layer 0. B goes to
//! [`BASE_UNIT`] and A to [`SLOPE_UNIT`] under those layer-0 names. The globals keep their timm
//! names, except that the final norm becomes `fc_norm`, as the authors' `gene_tranfer` does:
//! descendants are timm ViTs without a class token that mean-pool the tokens and then
//! normalise them. Two departures from `gene_tranfer`: its projection takes qkv's B (the shapes
//! differ, so every tensor takes its own B here), and it copies the head only for ImageNet
//! descendants, while the gene always carries it (a descendant for another task replaces it).

use serde_json::Value;

use super::{BASE_UNIT, SLOPE_UNIT};
use crate::algorithm::ancestor::Key;
use crate::algorithm::builder::{GLOBALS_UNIT, GeneBuilder};
use crate::algorithm::{Imported, Lineage};
use crate::anatomy::{Family, Hyper, Naming, Param, Role, rules};
use crate::checkpoint::{Checkpoint, TensorInfo};
use crate::error::{Error, Result};
use crate::nn::init::config_json;
use crate::nn::{ModelConfig, Pooling};
use crate::registry::manifest::Fidelity;

/// The prefix of the shared block's tensors in an official checkpoint.
const SHARED: &str = "blocks.block.";
/// Between the sub-module and the parameter: the one instance of the shared block.
const INSTANCE: &str = ".instances.0.";
/// The suffix of the intercepts B.
const BASE: &str = "_base";
/// The suffix of the slopes A.
const SLOPE: &str = "_ilayer";
/// The timm prefix of layer 0, which the shared block's tensors are named after.
const LAYER0: &str = "blocks.0.";
/// The aux-net's final norm (before pooling) and the descendants' norm after pooling.
const FINAL_NORM: (&str, &str) = ("norm.", "fc_norm.");
/// Depth of the authors' auxiliary networks.
const AUX_DEPTH: usize = 12;
/// Head width of the DeiT-style models TLEG uses (Ti 3, S 6, B 12 heads), for the head count
/// when no `config.json` gives it.
const HEAD_DIM: usize = 64;

fn bad(reason: String) -> Error {
    Error::Algorithm {
        algorithm: "tleg".into(),
        reason,
        fix: "pass the `checkpoint.pth` (or its safetensors copy) saved by the official TLEG code, unchanged".into(),
    }
}

/// Whether `ckpt` holds an official TLEG gene: shared-block tensors with `_base` or `_ilayer`.
pub(super) fn is_official(ckpt: &Checkpoint) -> bool {
    ckpt.source
        .tensors()
        .iter()
        .any(|t| t.name.starts_with(SHARED) && (t.name.ends_with(BASE) || t.name.ends_with(SLOPE)))
}

/// Where each official tensor goes: `(name in the unit, official name, role)`.
#[derive(Debug, Default)]
struct Mapping {
    base: Vec<(String, String, Key)>,
    slope: Vec<(String, String, Key)>,
    globals: Vec<(String, String, Key)>,
}

/// The layer-0 timm name and key of a shared-block tensor, and whether it is a slope.
fn shared(name: &str) -> Option<(String, Key, bool)> {
    let (sub, tail) = name.strip_prefix(SHARED)?.split_once(INSTANCE)?;
    let (param, is_slope) = match tail.strip_suffix(BASE) {
        Some(p) => (p, false),
        None => (tail.strip_suffix(SLOPE)?, true),
    };
    let timm = format!("{LAYER0}{sub}.{param}");
    let slot = rules(Family::Vit)
        .classify(&timm, Naming::Timm)
        .filter(|s| s.layer == Some(0))?;
    Some((timm, (slot.role, slot.param), is_slope))
}

/// The descendant's name and key of a global tensor.
fn global(name: &str) -> Option<(String, Key)> {
    let slot = rules(Family::Vit)
        .classify(name, Naming::Timm)
        .filter(|s| s.layer.is_none())?;
    let renamed = match name.strip_prefix(FINAL_NORM.0) {
        Some(rest) => format!("{}{rest}", FINAL_NORM.1),
        None => name.to_string(),
    };
    Some((renamed, (slot.role, slot.param)))
}

fn map(tensors: &[TensorInfo]) -> Result<Mapping> {
    let mut m = Mapping::default();
    for t in tensors {
        if let Some((unit_name, key, is_slope)) = shared(&t.name) {
            let entry = (unit_name, t.name.clone(), key);
            if is_slope {
                m.slope.push(entry);
            } else {
                m.base.push(entry);
            }
        } else if let Some((unit_name, key)) = global(&t.name) {
            m.globals.push((unit_name, t.name.clone(), key));
        } else {
            return Err(bad(format!(
                "`{}` is neither a shared-block tensor \
                 (`{SHARED}<sub>{INSTANCE}<param>{BASE}` or `…{SLOPE}`) nor a timm ViT global",
                t.name
            )));
        }
    }
    Ok(m)
}

/// Every B has an A of the same shape, and the other way round.
fn check_pairs(ckpt: &Checkpoint, m: &Mapping) -> Result<()> {
    let shape = |from: &str| ckpt.source.require(from).map(|i| i.shape.clone());
    for (mine, theirs, kind) in [(&m.base, &m.slope, SLOPE), (&m.slope, &m.base, BASE)] {
        for (name, from, _) in mine {
            let other = theirs
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| bad(format!("`{from}` has no `{kind}` partner")))?;
            if shape(from)? != shape(&other.1)? {
                return Err(bad(format!(
                    "`{from}` has shape {:?} but `{}` has {:?}",
                    shape(from)?,
                    other.1,
                    shape(&other.1)?
                )));
            }
        }
    }
    if m.base.is_empty() {
        return Err(bad("the checkpoint has no shared-block tensors".into()));
    }
    Ok(())
}

/// The shape of the first tensor with `key` among `entries`.
fn shape_of(ckpt: &Checkpoint, entries: &[(String, String, Key)], key: Key) -> Option<Vec<usize>> {
    let (_, from, _) = entries.iter().find(|(_, _, k)| *k == key)?;
    ckpt.source.info(from).map(|i| i.shape.clone())
}

/// The descendants' model config: a timm ViT without class token, mean pooling, `fc_norm`.
fn descendant_config(ckpt: &Checkpoint, m: &Mapping) -> Result<ModelConfig> {
    let need = |what: &str, v: Option<usize>| {
        v.filter(|v| *v > 0)
            .ok_or_else(|| bad(format!("the checkpoint does not show the {what}")))
    };
    let patch = shape_of(ckpt, &m.globals, (Role::PatchEmbedding, Param::Weight));
    let patch = patch.as_deref().unwrap_or(&[]);
    let hidden = need("width (patch_embed)", patch.first().copied())?;
    let patch_size = need("patch size (patch_embed)", patch.get(2).copied())?;
    let up = shape_of(ckpt, &m.base, (Role::MlpUp, Param::Weight));
    let intermediate = need("MLP width", up.and_then(|s| s.first().copied()))?;
    let class_token = m.globals.iter().any(|(_, _, k)| k.0 == Role::ClassToken);
    let pos = shape_of(ckpt, &m.globals, (Role::PositionEmbedding, Param::Weight));
    let tokens = need(
        "token count (pos_embed)",
        pos.and_then(|s| s.get(1).copied()),
    )?;
    let grid = tokens - usize::from(class_token);
    let side = (grid as f64).sqrt().round() as usize;
    if side * side != grid {
        return Err(bad(format!(
            "pos_embed has {grid} patch positions, not a square grid"
        )));
    }
    let heads = ckpt
        .config
        .as_ref()
        .and_then(|c| {
            ["num_heads", "num_attention_heads"]
                .iter()
                .find_map(|k| c.get(*k).and_then(Value::as_u64))
        })
        .map_or((hidden / HEAD_DIM).max(1), |h| h as usize);
    if heads == 0 || hidden % heads != 0 {
        return Err(bad(format!(
            "width {hidden} does not split into {heads} heads"
        )));
    }
    let head = shape_of(ckpt, &m.globals, (Role::Head, Param::Weight));
    Ok(ModelConfig {
        family: Family::Vit,
        layers: AUX_DEPTH,
        hidden,
        heads,
        kv_heads: heads,
        intermediate,
        norm_eps: 1e-6,
        vocab: 0,
        rope_theta: 10_000.0,
        tied_head: false,
        image_size: side * patch_size,
        patch_size,
        channels: patch.get(1).copied().unwrap_or(3),
        classes: head.and_then(|s| s.first().copied()).unwrap_or(0),
        class_token,
        pooling: Pooling::Mean,
        norm_after_pool: true,
        front: None,
        position_offset: 0,
        rope_scaling: None,
    })
}

/// The gene of an official TLEG checkpoint.
pub(super) fn import(ckpt: &Checkpoint) -> Result<Imported> {
    let m = map(ckpt.source.tensors())?;
    check_pairs(ckpt, &m)?;
    let c = descendant_config(ckpt, &m)?;
    let config = config_json(&c);
    let mut gene = GeneBuilder::new()?;
    gene.fidelity = Some(Fidelity::Faithful);
    let source = ckpt.source.as_ref();
    gene.copy_renamed(GLOBALS_UNIT, source, &m.globals)?;
    gene.copy_renamed(BASE_UNIT, source, &m.base)?;
    gene.copy_renamed(SLOPE_UNIT, source, &m.slope)?;
    gene.diagnostic("imported", "official TLEG checkpoint")?;
    gene.diagnostic("aux_depth", AUX_DEPTH)?;
    gene.diagnostic("heads", c.heads)?;
    gene.diagnostic("grid", super::GRID)?;
    let hyper = Hyper::resolve(Family::Vit, Some(&config), &[], AUX_DEPTH);
    Ok(Imported {
        gene,
        lineage: Lineage {
            family: Family::Vit,
            naming: Naming::Timm,
            hyper,
            config: Some(config),
        },
    })
}
