//! Hyper-parameters: read from `config.json`, filled in from tensor shapes where the config is
//! silent, and written back with a new depth or width.

use serde::Serialize;
use serde_json::Value;

use super::{Family, Naming};
use crate::checkpoint::TensorInfo;

/// The sizes that describe a transformer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Hyper {
    /// Number of blocks.
    pub layers: usize,
    /// Model width.
    pub hidden_size: Option<usize>,
    /// Attention heads.
    pub heads: Option<usize>,
    /// Key/value heads (GQA); equal to `heads` without GQA.
    pub kv_heads: Option<usize>,
    /// MLP width.
    pub intermediate_size: Option<usize>,
    /// Vocabulary size (text models).
    pub vocab_size: Option<usize>,
    /// Number of output classes (classifiers).
    pub num_classes: Option<usize>,
    /// Patch size (vision models).
    pub patch_size: Option<usize>,
    /// Image size (vision models).
    pub image_size: Option<usize>,
}

fn get_usize(config: Option<&Value>, keys: &[&str]) -> Option<usize> {
    let cfg = config?;
    keys.iter()
        .find_map(|k| cfg.get(*k).and_then(Value::as_u64))
        .map(|v| v as usize)
}

fn shape_of<'a>(tensors: &'a [TensorInfo], suffixes: &[&str]) -> Option<&'a [usize]> {
    tensors
        .iter()
        .find(|t| suffixes.iter().any(|s| t.name.ends_with(s)))
        .map(|t| t.shape.as_slice())
}

impl Hyper {
    /// Resolve the sizes of a `family` checkpoint with `layers` blocks.
    pub fn resolve(
        family: Family,
        config: Option<&Value>,
        tensors: &[TensorInfo],
        layers: usize,
    ) -> Hyper {
        let (embed, mlp_up) = match family {
            Family::Llama => ("embed_tokens.weight", "mlp.up_proj.weight"),
            Family::Bert => ("word_embeddings.weight", "intermediate.dense.weight"),
            Family::Vit => ("patch_embed.proj.weight", "mlp.fc1.weight"),
        };
        let embed_shape = shape_of(tensors, &[embed, "patch_embeddings.projection.weight"]);
        let up_shape = shape_of(tensors, &[mlp_up, "intermediate.dense.weight"]);
        let heads = get_usize(config, &["num_attention_heads", "num_heads"]);
        let hidden_from_shape = match family {
            Family::Vit => embed_shape.and_then(|s| s.first().copied()),
            _ => embed_shape.and_then(|s| s.get(1).copied()),
        };
        Hyper {
            layers,
            hidden_size: get_usize(config, &["hidden_size", "embed_dim", "d_model"])
                .or(hidden_from_shape),
            heads,
            kv_heads: get_usize(config, &["num_key_value_heads"]).or(heads),
            intermediate_size: get_usize(config, &["intermediate_size"])
                .or_else(|| up_shape.and_then(|s| s.first().copied())),
            vocab_size: match family {
                Family::Vit => None,
                _ => get_usize(config, &["vocab_size"])
                    .or_else(|| embed_shape.and_then(|s| s.first().copied())),
            },
            num_classes: get_usize(config, &["num_classes", "num_labels"]),
            patch_size: match family {
                Family::Vit => get_usize(config, &["patch_size"])
                    .or_else(|| embed_shape.and_then(|s| s.get(2).copied())),
                _ => None,
            },
            image_size: get_usize(config, &["image_size", "img_size"]),
        }
    }
}

/// New sizes for a config; `None` keeps the old value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resize {
    /// Number of blocks.
    pub layers: Option<usize>,
    /// Model width.
    pub hidden_size: Option<usize>,
    /// MLP width.
    pub intermediate_size: Option<usize>,
    /// Attention heads.
    pub heads: Option<usize>,
    /// Key/value heads (HF naming only).
    pub kv_heads: Option<usize>,
}

/// `config` with its depth set to `layers`, in the key its naming uses.
pub fn with_depth(config: &Value, naming: Naming, layers: usize) -> Value {
    resized(
        config,
        naming,
        &Resize {
            layers: Some(layers),
            ..Resize::default()
        },
    )
}

/// `config` with new sizes, in the keys its naming uses; every other key is kept, in order.
///
/// HF configs carry `num_hidden_layers`, `hidden_size`, `intermediate_size`,
/// `num_attention_heads` and `num_key_value_heads`; timm configs carry `depth`, `embed_dim`,
/// `num_heads` and `mlp_ratio` (top level, and under `model_args` when present).
pub fn resized(config: &Value, naming: Naming, resize: &Resize) -> Value {
    let mut out = config.clone();
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    match naming {
        Naming::Hf => {
            let pairs = [
                ("num_hidden_layers", resize.layers),
                ("hidden_size", resize.hidden_size),
                ("intermediate_size", resize.intermediate_size),
                ("num_attention_heads", resize.heads),
                ("num_key_value_heads", resize.kv_heads),
            ];
            set_all(map, &pairs);
        }
        Naming::Timm => {
            let hidden = resize.hidden_size.or_else(|| {
                map.get("embed_dim")
                    .and_then(Value::as_u64)
                    .map(|v| v as usize)
            });
            let ratio = match (resize.intermediate_size, hidden) {
                (Some(i), Some(h)) if h > 0 => Some(i as f64 / h as f64),
                _ => None,
            };
            let pairs = [
                ("depth", resize.layers.map(Value::from)),
                ("embed_dim", resize.hidden_size.map(Value::from)),
                ("num_heads", resize.heads.map(Value::from)),
                ("mlp_ratio", ratio.map(Value::from)),
            ];
            for (key, value) in &pairs {
                if let Some(v) = value {
                    map.insert((*key).into(), v.clone());
                    if let Some(args) = map.get_mut("model_args").and_then(Value::as_object_mut) {
                        args.insert((*key).into(), v.clone());
                    }
                }
            }
        }
    }
    out
}

fn set_all(map: &mut serde_json::Map<String, Value>, pairs: &[(&str, Option<usize>)]) {
    for (key, value) in pairs {
        if let Some(v) = value {
            map.insert((*key).into(), Value::from(*v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_rewrite_keeps_other_keys_in_order() {
        let cfg: Value = serde_json::from_str(
            r#"{"model_type":"llama","num_hidden_layers":30,"hidden_size":576}"#,
        )
        .unwrap();
        let out = with_depth(&cfg, Naming::Hf, 6);
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"model_type":"llama","num_hidden_layers":6,"hidden_size":576}"#
        );
    }

    #[test]
    fn timm_depth_goes_into_model_args() {
        let cfg: Value = serde_json::from_str(
            r#"{"architecture":"deit_tiny_patch16_224","model_args":{"depth":12}}"#,
        )
        .unwrap();
        let out = with_depth(&cfg, Naming::Timm, 4);
        assert_eq!(out["depth"], 4);
        assert_eq!(out["model_args"]["depth"], 4);
    }

    #[test]
    fn width_rewrite() {
        let cfg: Value = serde_json::from_str(
            r#"{"model_type":"bert","hidden_size":384,"intermediate_size":1536,"num_attention_heads":12}"#,
        )
        .unwrap();
        let resize = Resize {
            hidden_size: Some(192),
            intermediate_size: Some(768),
            heads: Some(6),
            ..Resize::default()
        };
        let out = resized(&cfg, Naming::Hf, &resize);
        assert_eq!(out["hidden_size"], 192);
        assert_eq!(out["intermediate_size"], 768);
        assert_eq!(out["num_attention_heads"], 6);
        let timm: Value =
            serde_json::from_str(r#"{"embed_dim":192,"model_args":{"embed_dim":192}}"#).unwrap();
        let out = resized(
            &timm,
            Naming::Timm,
            &Resize {
                hidden_size: Some(96),
                intermediate_size: Some(384),
                ..Resize::default()
            },
        );
        assert_eq!(out["model_args"]["embed_dim"], 96);
        assert_eq!(out["mlp_ratio"], 4.0);
    }
}
