//! Model anatomy: which family a checkpoint belongs to, its layers, and the role of every
//! tensor.
//!
//! Algorithms never name a family's tensors; they ask this module for blocks and roles. Each
//! family lives in its own file and implements [`FamilyRules`]; [`FAMILIES`] lists them all.

mod bert;
mod config;
mod llama;
mod table;
mod vit;

use std::collections::BTreeMap;

use serde::Serialize;

pub use config::{Hyper, Resize, resized, with_depth};
pub use vit::{fuse_qkv_name, fuse_qkv_rows, split_qkv_names, split_qkv_rows};

use crate::checkpoint::TensorInfo;
use crate::error::{Error, Result};

/// An architecture family lgreg understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Decoder-only Llama/Mistral/SmolLM.
    Llama,
    /// Vision transformers (ViT/DeiT), timm or HF naming.
    Vit,
    /// BERT-style post-norm encoders.
    Bert,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(rules(*self).name())
    }
}

/// Tensor naming scheme inside a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// Hugging Face `transformers` names.
    Hf,
    /// timm names (`blocks.N.attn.qkv.weight`).
    Timm,
}

/// What a tensor does in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Token embedding table.
    TokenEmbedding,
    /// Learned position embedding.
    PositionEmbedding,
    /// BERT token-type (segment) embedding.
    TokenTypeEmbedding,
    /// ViT patch projection.
    PatchEmbedding,
    /// ViT class token.
    ClassToken,
    /// ViT distillation token (DeiT).
    DistToken,
    /// Norm applied to embeddings.
    EmbeddingNorm,
    /// Attention query projection.
    AttnQ,
    /// Attention key projection.
    AttnK,
    /// Attention value projection.
    AttnV,
    /// Fused query/key/value projection (timm).
    AttnQkv,
    /// Attention output projection.
    AttnO,
    /// Norm before (pre-norm) or after (post-norm) attention.
    AttnNorm,
    /// SwiGLU gate projection.
    MlpGate,
    /// MLP up projection (`fc1`, `intermediate`).
    MlpUp,
    /// MLP down projection (`fc2`, `output`).
    MlpDown,
    /// Norm before or after the MLP.
    MlpNorm,
    /// Final norm.
    FinalNorm,
    /// Output head (LM head or classifier).
    Head,
    /// BERT pooler.
    Pooler,
    /// A buffer (e.g. BERT `position_ids`), not a parameter to learn.
    Buffer,
    /// A linear stitch layer applied to the hidden states after a block (Learngene Pool
    /// descendants), named `lgreg_stitch.N.{weight,bias}` in every family.
    Stitch,
}

impl Role {
    /// Whether a global tensor of this role runs after the blocks (the final norm and the
    /// head): a stitched Learngene Pool descendant takes these from its end instance and the
    /// rest of its globals from its front.
    pub fn after_blocks(self) -> bool {
        matches!(self, Role::FinalNorm | Role::Head)
    }
}

/// Whether a tensor is a weight or a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Param {
    /// A weight (or a table, token, scale).
    Weight,
    /// A bias.
    Bias,
}

/// The classification of one tensor name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Slot {
    /// The layer index for per-layer tensors.
    pub layer: Option<usize>,
    /// The role.
    pub role: Role,
    /// Weight or bias.
    pub param: Param,
}

/// One family's naming rules.
pub trait FamilyRules: Sync {
    /// The family.
    fn family(&self) -> Family;
    /// Its lowercase name.
    fn name(&self) -> &'static str;
    /// Whether `config.json` says this family (`model_type`, `architectures`).
    fn matches_config(&self, config: &serde_json::Value) -> bool;
    /// Whether the tensor names look like this family, and in which naming.
    fn detect_names(&self, names: &[&str]) -> Option<Naming>;
    /// The role of one tensor name, or `None` for a name this family does not know.
    fn classify(&self, name: &str, naming: Naming) -> Option<Slot>;
    /// The canonical name of a (layer, role, param) in a naming, for writers.
    fn tensor_name(&self, slot: &Slot, naming: Naming) -> Option<String>;
}

/// Every family lgreg knows, in detection order.
pub const FAMILIES: &[&dyn FamilyRules] = &[&llama::Llama, &vit::Vit, &bert::Bert];

/// The rules of one family.
pub fn rules(family: Family) -> &'static dyn FamilyRules {
    match family {
        Family::Llama => &llama::Llama,
        Family::Vit => &vit::Vit,
        Family::Bert => &bert::Bert,
    }
}

fn known_families() -> String {
    FAMILIES
        .iter()
        .map(|f| format!("`{}`", f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tensors of `names` that `rules` in `naming` cannot place.
fn unread<'n>(rules: &dyn FamilyRules, naming: Naming, names: &[&'n str]) -> Vec<&'n str> {
    names
        .iter()
        .filter(|n| stitch_slot(n).is_none() && rules.classify(n, naming).is_none())
        .copied()
        .collect()
}

/// The supported family and naming that place the most of `names`, described for an error:
/// how many tensors it reads and which it does not.
fn nearest_family(names: &[&str]) -> String {
    let best = FAMILIES
        .iter()
        .flat_map(|f| [Naming::Hf, Naming::Timm].map(|n| (*f, n)))
        .map(|(f, n)| (f, n, unread(f, n, names)))
        .min_by_key(|(_, _, missing)| missing.len());
    match best {
        Some((f, naming, missing)) if missing.len() < names.len() => {
            let examples: Vec<String> = missing.iter().take(3).map(|m| format!("`{m}`")).collect();
            format!(
                "; the nearest supported family is `{}` ({naming:?} names), which reads {} of the {} tensors{}",
                f.name(),
                names.len() - missing.len(),
                names.len(),
                if examples.is_empty() {
                    String::new()
                } else {
                    format!("; it has no place for {}", examples.join(", "))
                }
            )
        }
        _ => "; no supported family reads any of its tensors".into(),
    }
}

/// A checkpoint's anatomy.
#[derive(Debug, Clone, Serialize)]
pub struct Anatomy {
    /// The family.
    pub family: Family,
    /// The naming scheme of the tensors.
    pub naming: Naming,
    /// Hyper-parameters from `config.json` (or inferred from shapes).
    pub hyper: Hyper,
    /// Every tensor's slot, by name.
    pub slots: BTreeMap<String, Slot>,
}

impl Anatomy {
    /// Tensor names of layer `layer`, in name order.
    pub fn layer_tensors(&self, layer: usize) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|(_, s)| s.layer == Some(layer))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Tensor names that belong to no layer (embeddings, final norm, head, pooler).
    pub fn global_tensors(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|(_, s)| s.layer.is_none())
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// Work out the family, layers and roles of a checkpoint from its config and tensor names.
pub fn analyze(config: Option<&serde_json::Value>, tensors: &[TensorInfo]) -> Result<Anatomy> {
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let (rules, naming) = detect(config, &names)?;
    let mut slots = BTreeMap::new();
    let mut unknown = Vec::new();
    for name in &names {
        match stitch_slot(name).or_else(|| rules.classify(name, naming)) {
            Some(slot) => {
                slots.insert(name.to_string(), slot);
            }
            None => unknown.push(*name),
        }
    }
    if !unknown.is_empty() {
        let examples: Vec<String> = unknown.iter().take(3).map(|u| format!("`{u}`")).collect();
        return Err(Error::UnknownFamily {
            seen: format!(
                "{} of its {} tensors do not fit the `{}` family, e.g. {}",
                unknown.len(),
                names.len(),
                rules.name(),
                examples.join(", ")
            ),
            known: known_families(),
        });
    }
    let layers = slots
        .values()
        .filter_map(|s| s.layer)
        .max()
        .map_or(0, |m| m + 1);
    let hyper = Hyper::resolve(rules.family(), config, tensors, layers);
    hyper.check_image_size(tensors)?;
    Ok(Anatomy {
        family: rules.family(),
        naming,
        hyper,
        slots,
    })
}

fn detect(
    config: Option<&serde_json::Value>,
    names: &[&str],
) -> Result<(&'static dyn FamilyRules, Naming)> {
    if let Some(cfg) = config {
        if let Some(rules) = FAMILIES.iter().find(|f| f.matches_config(cfg)) {
            let naming = rules.detect_names(names).unwrap_or(Naming::Hf);
            return Ok((*rules, naming));
        }
        if cfg.get("model_type").is_some() || cfg.get("architectures").is_some() {
            return Err(Error::UnknownFamily {
                seen: format!(
                    "config.json says model_type {} and architectures {}{}",
                    cfg.get("model_type").unwrap_or(&serde_json::Value::Null),
                    cfg.get("architectures").unwrap_or(&serde_json::Value::Null),
                    nearest_family(names)
                ),
                known: known_families(),
            });
        }
    }
    for rules in FAMILIES {
        if let Some(naming) = rules.detect_names(names) {
            return Ok((*rules, naming));
        }
    }
    Err(Error::UnknownFamily {
        seen: format!(
            "no config.json family and no recognisable tensor names (first: `{}`){}",
            names.first().copied().unwrap_or("<none>"),
            nearest_family(names)
        ),
        known: known_families(),
    })
}

/// The prefix of stitch-layer tensors, the same in every family and naming.
pub const STITCH_PREFIX: &str = "lgreg_stitch";

/// The slot of a stitch-layer tensor name (`lgreg_stitch.N.weight`), if it is one.
pub fn stitch_slot(name: &str) -> Option<Slot> {
    let rest = name.strip_prefix(STITCH_PREFIX)?.strip_prefix('.')?;
    let (index, tail) = rest.split_once('.')?;
    let param = match tail {
        "weight" => Param::Weight,
        "bias" => Param::Bias,
        _ => return None,
    };
    Some(Slot {
        layer: Some(index.parse().ok()?),
        role: Role::Stitch,
        param,
    })
}

/// The name of a slot in a family's naming: stitch layers get [`STITCH_PREFIX`] names, every
/// other per-layer slot the family's own name.
pub fn slot_name(family: Family, slot: &Slot, naming: Naming) -> Option<String> {
    if slot.role == Role::Stitch {
        let layer = slot.layer?;
        return Some(format!(
            "{STITCH_PREFIX}.{layer}.{}",
            param_suffix(slot.param)
        ));
    }
    rules(family).tensor_name(slot, naming)
}

/// Split `prefix.N.rest` into `(N, rest)` when `name` starts with `prefix.`.
pub(crate) fn layer_suffix<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('.')?;
    let (index, tail) = rest.split_once('.')?;
    Some((index.parse().ok()?, tail))
}

/// Split a trailing `.weight`/`.bias` off a name.
pub(crate) fn split_param(name: &str) -> Option<(&str, Param)> {
    if let Some(stem) = name.strip_suffix(".weight") {
        Some((stem, Param::Weight))
    } else {
        name.strip_suffix(".bias").map(|stem| (stem, Param::Bias))
    }
}

/// The suffix for a param.
pub(crate) fn param_suffix(param: Param) -> &'static str {
    match param {
        Param::Weight => "weight",
        Param::Bias => "bias",
    }
}

/// Whether `config` names `model_type` in `types` or an architecture containing one of `archs`.
pub(crate) fn config_says(config: &serde_json::Value, types: &[&str], archs: &[&str]) -> bool {
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if types.contains(&model_type) {
        return true;
    }
    config
        .get("architectures")
        .and_then(|v| v.as_array())
        .is_some_and(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .any(|arch| archs.iter().any(|p| arch.starts_with(p)))
        })
}
