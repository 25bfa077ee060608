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

/// The first of `keys` that `config` gives, at its top level or under timm's `model_args`.
fn get_usize(config: Option<&Value>, keys: &[&str]) -> Option<usize> {
    let cfg = config?;
    keys.iter()
        .find_map(|k| {
            cfg.get(*k)
                .or_else(|| cfg.get("model_args").and_then(|a| a.get(*k)))
                .and_then(Value::as_u64)
        })
        .map(|v| v as usize)
}

/// A timm checkpoint's `architecture` read as a size name (`vit_tiny_patch16_224.augreg_in21k`
/// without its pretrained tag), when it names a DeiT/ViT size.
fn architecture(config: Option<&Value>) -> Option<crate::config::size::SizeName> {
    let name = config?.get("architecture")?.as_str()?;
    let base = name.split('.').next().unwrap_or(name);
    crate::config::size::parse(base).filter(|s| s.family == Some("vit"))
}

/// The image side timm's `pretrained_cfg.input_size` (`[channels, height, width]`) gives.
fn pretrained_side(config: Option<&Value>) -> Option<usize> {
    let input = config?
        .get("pretrained_cfg")?
        .get("input_size")?
        .as_array()?;
    input.get(1).and_then(Value::as_u64).map(|v| v as usize)
}

/// The image side a vit's position embedding `[1, tokens, width]` implies with patch side
/// `patch`, after the class and distillation tokens the checkpoint has.
fn side_from_positions(tensors: &[TensorInfo], patch: Option<usize>) -> Option<usize> {
    let tokens = shape_of(tensors, &["pos_embed", "position_embeddings"])?
        .get(1)
        .copied()?;
    let has = |suffix: &str| tensors.iter().any(|t| t.name.ends_with(suffix));
    let prefix = usize::from(has("cls_token")) + usize::from(has("dist_token"));
    let grid = tokens.checked_sub(prefix)?;
    let side = (grid as f64).sqrt().round() as usize;
    (side * side == grid && side > 0).then(|| side * patch.unwrap_or(0))
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
        let hidden_from_shape = match family {
            Family::Vit => embed_shape.and_then(|s| s.first().copied()),
            _ => embed_shape.and_then(|s| s.get(1).copied()),
        };
        // A timm architecture name gives the heads of its size, when its width is the
        // tensors' (a name of another width is not this checkpoint's size).
        let named_heads = architecture(config)
            .filter(|n| n.width.is_some() && n.width == hidden_from_shape)
            .and_then(|n| n.heads);
        let heads = get_usize(config, &["num_attention_heads", "num_heads"]).or(named_heads);
        let patch_size = match family {
            Family::Vit => get_usize(config, &["patch_size"])
                .or_else(|| embed_shape.and_then(|s| s.get(2).copied())),
            _ => None,
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
            patch_size,
            image_size: match family {
                // Declared (top level or timm's model_args), else timm's pretrained_cfg,
                // else what the position embedding implies.
                Family::Vit => get_usize(config, &["image_size", "img_size"])
                    .or_else(|| pretrained_side(config))
                    .or_else(|| side_from_positions(tensors, patch_size).filter(|&s| s > 0)),
                _ => get_usize(config, &["image_size", "img_size"]),
            },
        }
    }
}

impl Hyper {
    /// Refuse a vit whose declared image size (config.json or timm's `pretrained_cfg`) does not
    /// fit the grid of its position embedding.
    pub fn check_image_size(&self, tensors: &[TensorInfo]) -> crate::error::Result<()> {
        let (Some(declared), Some(implied)) = (
            self.image_size,
            side_from_positions(tensors, self.patch_size).filter(|&s| s > 0),
        ) else {
            return Ok(());
        };
        if declared == implied {
            return Ok(());
        }
        Err(crate::error::Error::ModelMismatch {
            name: "the position embedding".into(),
            reason: format!(
                "config.json gives image size {declared}, but the position embedding holds a grid for {implied}-pixel images with {}-pixel patches; set `img_size` (or timm's `pretrained_cfg.input_size`) to {implied}",
                self.patch_size.unwrap_or(0)
            ),
        })
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

    fn timm_tensors(width: usize, tokens: usize) -> Vec<TensorInfo> {
        let info = |name: &str, shape: Vec<usize>| TensorInfo {
            name: name.into(),
            dtype: crate::checkpoint::DType::F32,
            shape,
        };
        vec![
            info("patch_embed.proj.weight", vec![width, 3, 16, 16]),
            info("cls_token", vec![1, 1, width]),
            info("pos_embed", vec![1, tokens, width]),
            info("blocks.0.mlp.fc1.weight", vec![4 * width, width]),
        ]
    }

    #[test]
    fn a_timm_hub_config_gives_heads_from_its_name_and_the_image_from_pretrained_cfg() {
        // What timm checkpoints on the Hub carry: the architecture and pretrained_cfg only.
        let config = serde_json::json!({
            "architecture": "vit_tiny_patch16_224.augreg_in21k",
            "num_classes": 10,
            "pretrained_cfg": {"input_size": [3, 112, 112], "num_classes": 10},
        });
        let h = Hyper::resolve(Family::Vit, Some(&config), &timm_tensors(192, 50), 2);
        assert_eq!((h.hidden_size, h.heads), (Some(192), Some(3)));
        assert_eq!((h.patch_size, h.image_size), (Some(16), Some(112)));
        // model_args (timm's own config files) wins over the name.
        let config = serde_json::json!({
            "architecture": "vit_tiny_patch16_224",
            "model_args": {"img_size": 112, "num_heads": 4},
        });
        let h = Hyper::resolve(Family::Vit, Some(&config), &timm_tensors(192, 50), 2);
        assert_eq!((h.heads, h.image_size), (Some(4), Some(112)));
        // Nothing declared: the position embedding's 7×7 grid after the class token.
        let bare = serde_json::json!({"architecture": "vit_custom"});
        let h = Hyper::resolve(Family::Vit, Some(&bare), &timm_tensors(192, 50), 2);
        assert_eq!((h.heads, h.image_size), (None, Some(112)));
        // A name of another width says nothing of this checkpoint's heads.
        let other = serde_json::json!({"architecture": "vit_small_patch16_224"});
        let h = Hyper::resolve(Family::Vit, Some(&other), &timm_tensors(192, 50), 2);
        assert_eq!(h.heads, None);
        // A declared size the position embedding contradicts is refused, naming both.
        let wrong = serde_json::json!({"pretrained_cfg": {"input_size": [3, 224, 224]}});
        let h = Hyper::resolve(Family::Vit, Some(&wrong), &timm_tensors(192, 50), 2);
        let err = h
            .check_image_size(&timm_tensors(192, 50))
            .unwrap_err()
            .to_string();
        assert!(err.contains("224") && err.contains("112"), "{err}");
        assert!(
            Hyper::resolve(Family::Vit, Some(&config), &timm_tensors(192, 50), 2)
                .check_image_size(&timm_tensors(192, 50))
                .is_ok()
        );
    }

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
