//! The vit family: timm ViT/DeiT naming (`blocks.N.attn.qkv`) and HF ViT/DeiT naming
//! (`vit.encoder.layer.N.attention.attention.query`), with the mapping between timm's fused
//! qkv projection and HF's separate q, k and v.

use super::table::Table;
use super::{Family, FamilyRules, Naming, Param, Role, Slot, config_says};

/// Vision transformers.
#[derive(Debug)]
pub(crate) struct Vit;

const TIMM: Table = Table {
    prefixes: &[],
    layer_prefix: "blocks",
    layer: &[
        ("norm1", Role::AttnNorm),
        ("attn.qkv", Role::AttnQkv),
        ("attn.proj", Role::AttnO),
        ("norm2", Role::MlpNorm),
        ("mlp.fc1", Role::MlpUp),
        ("mlp.fc2", Role::MlpDown),
    ],
    global: &[
        ("cls_token", Role::ClassToken),
        ("dist_token", Role::DistToken),
        ("pos_embed", Role::PositionEmbedding),
        ("patch_embed.proj", Role::PatchEmbedding),
        ("norm", Role::FinalNorm),
        ("fc_norm", Role::FinalNorm),
        ("head", Role::Head),
        ("head_dist", Role::Head),
    ],
};

const HF: Table = Table {
    prefixes: &["vit.", "deit."],
    layer_prefix: "encoder.layer",
    layer: &[
        ("layernorm_before", Role::AttnNorm),
        ("attention.attention.query", Role::AttnQ),
        ("attention.attention.key", Role::AttnK),
        ("attention.attention.value", Role::AttnV),
        ("attention.output.dense", Role::AttnO),
        ("layernorm_after", Role::MlpNorm),
        ("intermediate.dense", Role::MlpUp),
        ("output.dense", Role::MlpDown),
    ],
    global: &[
        ("embeddings.cls_token", Role::ClassToken),
        ("embeddings.distillation_token", Role::DistToken),
        ("embeddings.position_embeddings", Role::PositionEmbedding),
        (
            "embeddings.patch_embeddings.projection",
            Role::PatchEmbedding,
        ),
        ("layernorm", Role::FinalNorm),
        ("pooler.dense", Role::Pooler),
        ("classifier", Role::Head),
        ("cls_classifier", Role::Head),
        ("distillation_classifier", Role::Head),
    ],
};

impl FamilyRules for Vit {
    fn family(&self) -> Family {
        Family::Vit
    }

    fn name(&self) -> &'static str {
        "vit"
    }

    fn matches_config(&self, config: &serde_json::Value) -> bool {
        config_says(config, &["vit", "deit"], &["ViT", "DeiT"])
            || config
                .get("architecture")
                .and_then(|a| a.as_str())
                .is_some_and(|a| {
                    // timm's config.json: {"architecture": "deit_tiny_patch16_224", ...}
                    a.starts_with("vit_") || a.starts_with("deit_")
                })
    }

    fn detect_names(&self, names: &[&str]) -> Option<Naming> {
        if TIMM.recognises(names) {
            Some(Naming::Timm)
        } else if HF.recognises(names) {
            Some(Naming::Hf)
        } else {
            None
        }
    }

    fn classify(&self, name: &str, naming: Naming) -> Option<Slot> {
        table(naming).classify(name)
    }

    fn tensor_name(&self, slot: &Slot, naming: Naming) -> Option<String> {
        table(naming).layer_name("", slot)
    }
}

fn table(naming: Naming) -> &'static Table {
    match naming {
        Naming::Timm => &TIMM,
        Naming::Hf => &HF,
    }
}

/// The HF q, k and v names (with `prefix`, e.g. `vit.`) for timm's fused qkv tensor of `layer`.
///
/// timm stores `[3·D, D]` with the q rows first, then k, then v; splitting the rows in three
/// equal parts gives HF's `query`, `key` and `value`.
pub fn split_qkv_names(prefix: &str, layer: usize, param: Param) -> [String; 3] {
    [Role::AttnQ, Role::AttnK, Role::AttnV].map(|role| {
        let slot = Slot {
            layer: Some(layer),
            role,
            param,
        };
        let name = HF.layer_name("", &slot).unwrap_or_default();
        format!("{prefix}{name}")
    })
}

/// The timm fused qkv name for `layer`.
pub fn fuse_qkv_name(layer: usize, param: Param) -> String {
    let slot = Slot {
        layer: Some(layer),
        role: Role::AttnQkv,
        param,
    };
    TIMM.layer_name("", &slot).unwrap_or_default()
}

/// Split the bytes of timm's fused qkv tensor (`[3·D, ...]`, row-major) into q, k and v.
///
/// Returns `None` when the first dimension is not a multiple of 3 or the byte count does not
/// match the shape.
pub fn split_qkv_rows(bytes: &[u8], shape: &[usize], elem_size: usize) -> Option<[Vec<u8>; 3]> {
    let rows = *shape.first()?;
    let numel: usize = shape.iter().product();
    if rows % 3 != 0 || bytes.len() != numel * elem_size {
        return None;
    }
    let part = bytes.len() / 3;
    Some([0, 1, 2].map(|i| bytes[i * part..(i + 1) * part].to_vec()))
}

/// Fuse separate q, k and v tensors of equal size into timm's qkv layout (rows stacked).
pub fn fuse_qkv_rows(q: &[u8], k: &[u8], v: &[u8]) -> Option<Vec<u8>> {
    if q.len() != k.len() || q.len() != v.len() {
        return None;
    }
    Some([q, k, v].concat())
}
