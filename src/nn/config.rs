//! The sizes and options a forward pass needs, resolved from `config.json` and the tensors.

use serde::Serialize;
use serde_json::Value;

use crate::anatomy::{Anatomy, Family};
use crate::error::{Error, Result};

/// How a vision model reduces its tokens to one vector before the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The class token's output.
    Cls,
    /// The mean over the patch tokens.
    Mean,
}

/// Everything the model code needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// The family.
    pub family: Family,
    /// Number of blocks.
    pub layers: usize,
    /// Model width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (GQA; equal to `heads` without it).
    pub kv_heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Norm epsilon.
    pub norm_eps: f64,
    /// Vocabulary size (text models; 0 for vision).
    pub vocab: usize,
    /// RoPE base (llama).
    pub rope_theta: f64,
    /// Whether the LM head reuses the token embedding (llama).
    pub tied_head: bool,
    /// Image side in pixels (vit).
    pub image_size: usize,
    /// Patch side in pixels (vit).
    pub patch_size: usize,
    /// Input channels (vit).
    pub channels: usize,
    /// Output classes (vit).
    pub classes: usize,
    /// Whether a class token is prepended (vit).
    pub class_token: bool,
    /// Pooling before the head (vit).
    pub pooling: Pooling,
    /// Whether the final norm comes after pooling (timm `fc_norm`) rather than before (vit).
    pub norm_after_pool: bool,
    /// A Learngene Pool descendant stitched from a narrower front instance: its sizes.
    pub front: Option<Front>,
    /// The first row of the position table (bert): 0 for BERT, `pad_token_id + 1` for
    /// RoBERTa, whose positions count from after the padding index.
    pub position_offset: usize,
    /// RoPE frequency scaling from `config.json`'s `rope_scaling` (llama).
    pub rope_scaling: Option<RopeScaling>,
}

/// How a llama's RoPE frequencies are scaled for a longer context (`rope_scaling`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum RopeScaling {
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `llama3` (Llama 3.1 and later): low frequencies divided by `factor`, high ones kept, the
    /// band between blended, with wavelength bounds from the original context length.
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pre-trained on.
        original: f64,
    },
}

impl RopeScaling {
    /// `config.json`'s `rope_scaling`, if any; a kind lgreg does not apply is refused by name.
    fn read(config: Option<&Value>) -> Result<Option<RopeScaling>> {
        let Some(entry) = config
            .and_then(|c| c.get("rope_scaling"))
            .filter(|v| !v.is_null())
        else {
            return Ok(None);
        };
        let kind = entry
            .get("rope_type")
            .or_else(|| entry.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let field = |key: &str| {
            entry
                .get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| Error::ModelMismatch {
                    name: format!("rope_scaling.{key}"),
                    reason: format!("config.json's `{kind}` RoPE scaling needs it as a number"),
                })
        };
        match kind {
            "default" => Ok(None),
            "linear" => Ok(Some(RopeScaling::Linear {
                factor: field("factor")?,
            })),
            "llama3" => Ok(Some(RopeScaling::Llama3 {
                factor: field("factor")?,
                low_freq_factor: field("low_freq_factor")?,
                high_freq_factor: field("high_freq_factor")?,
                original: field("original_max_position_embeddings")?,
            })),
            other => Err(Error::ModelMismatch {
                name: "rope_scaling".into(),
                reason: format!(
                    "RoPE scaling `{other}` is not applied by lgreg (it applies `linear` and `llama3`); its outputs would be wrong"
                ),
            }),
        }
    }

    /// The scaled inverse frequency of one RoPE pair whose unscaled value is `inv`.
    pub fn apply(self, inv: f64) -> f64 {
        match self {
            RopeScaling::Linear { factor } => inv / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original,
            } => {
                let wavelength = 2.0 * std::f64::consts::PI / inv;
                if wavelength < original / high_freq_factor {
                    inv
                } else if wavelength > original / low_freq_factor {
                    inv / factor
                } else {
                    let smooth = (original / wavelength - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * inv / factor + smooth * inv
                }
            }
        }
    }
}

/// The narrower front of a stitched Learngene Pool descendant: the embeddings and the first
/// `blocks` blocks have this width (their heads follow [`ModelConfig::heads_at`]), and the
/// stitch after block `blocks - 1` maps it to the model's width. `config.json` carries it as
/// `lgreg_front` (`num_layers`, `hidden_size`, `intermediate_size`); `transformers` does not
/// read it, so only lgreg runs such a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Front {
    /// Blocks at the front width.
    pub blocks: usize,
    /// The front width.
    pub hidden: usize,
    /// The front MLP width.
    pub intermediate: usize,
}

impl Front {
    /// The `lgreg_front` entry of `config`, if it has one.
    fn read(config: Option<&Value>) -> Result<Option<Front>> {
        let Some(entry) = config.and_then(|c| c.get("lgreg_front")) else {
            return Ok(None);
        };
        let field = |key: &str| {
            entry
                .get(key)
                .and_then(Value::as_u64)
                .filter(|v| *v > 0)
                .ok_or_else(|| Error::ModelMismatch {
                    name: format!("lgreg_front.{key}"),
                    reason: "config.json's stitched front needs it as a positive integer".into(),
                })
        };
        Ok(Some(Front {
            blocks: field("num_layers")? as usize,
            hidden: field("hidden_size")? as usize,
            intermediate: field("intermediate_size")? as usize,
        }))
    }

    /// Its `config.json` entry.
    pub fn to_json(self) -> Value {
        serde_json::json!({
            "num_layers": self.blocks,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
        })
    }
}

fn num(config: Option<&Value>, keys: &[&str]) -> Option<f64> {
    let cfg = config?;
    keys.iter().find_map(|k| {
        cfg.get(*k)
            .or_else(|| cfg.get("model_args").and_then(|a| a.get(*k)))
            .and_then(Value::as_f64)
    })
}

fn need(what: &str, value: Option<usize>) -> Result<usize> {
    value
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::ModelMismatch {
            name: what.to_string(),
            reason: "config.json does not give it and the tensors do not show it".into(),
        })
}

/// RoBERTa's first position row, `pad_token_id + 1` (2 in every published RoBERTa); 0 otherwise.
fn position_offset(family: Family, config: Option<&Value>) -> usize {
    let roberta = family == Family::Bert
        && config
            .and_then(|c| c.get("model_type"))
            .and_then(Value::as_str)
            == Some("roberta");
    if !roberta {
        return 0;
    }
    num(config, &["pad_token_id"]).map_or(2, |p| p as usize + 1)
}

impl ModelConfig {
    /// Resolve the config of a checkpoint with `anatomy` and `config.json` contents `config`.
    pub fn resolve(anatomy: &Anatomy, config: Option<&Value>) -> Result<ModelConfig> {
        let h = &anatomy.hyper;
        let as_usize = |keys: &[&str]| num(config, keys).map(|v| v as usize);
        // A stitched descendant's first tensors are its front's: its own sizes are config.json's.
        let front = Front::read(config)?;
        let declared = |keys: &[&str], seen: Option<usize>| match front {
            Some(_) => as_usize(keys).or(seen),
            None => seen.or(as_usize(keys)),
        };
        let hidden = need(
            "hidden_size",
            declared(&["hidden_size", "embed_dim"], h.hidden_size),
        )?;
        let heads = need(
            "num_attention_heads",
            declared(&["num_attention_heads", "num_heads"], h.heads),
        )?;
        let family = anatomy.family;
        let has = |role| anatomy.slots.values().any(|s| s.role == role);
        let names = |frag: &str| anatomy.slots.keys().any(|n| n.contains(frag));
        let default_eps = match family {
            Family::Llama => 1e-5,
            Family::Vit => 1e-6,
            Family::Bert => 1e-12,
        };
        let class_token = has(crate::anatomy::Role::ClassToken);
        let pooling = match config
            .and_then(|c| c.get("global_pool"))
            .and_then(Value::as_str)
        {
            Some("token") => Pooling::Cls,
            Some(_) => Pooling::Mean,
            None if class_token => Pooling::Cls,
            None => Pooling::Mean,
        };
        let mlp_ratio = num(config, &["mlp_ratio"]).unwrap_or(4.0);
        Ok(ModelConfig {
            family,
            layers: anatomy.hyper.layers,
            hidden,
            heads,
            kv_heads: h.kv_heads.unwrap_or(heads),
            intermediate: match front {
                Some(_) => as_usize(&["intermediate_size"]),
                None => h.intermediate_size,
            }
            .unwrap_or((hidden as f64 * mlp_ratio) as usize),
            norm_eps: num(config, &["rms_norm_eps", "layer_norm_eps", "norm_eps"])
                .unwrap_or(default_eps),
            vocab: h.vocab_size.unwrap_or(0),
            rope_theta: num(config, &["rope_theta"]).unwrap_or(10_000.0),
            tied_head: family == Family::Llama && !has(crate::anatomy::Role::Head),
            image_size: h.image_size.unwrap_or(224),
            patch_size: h.patch_size.unwrap_or(16),
            channels: as_usize(&["num_channels", "in_chans"]).unwrap_or(3),
            classes: h.num_classes.unwrap_or(0),
            class_token,
            pooling,
            norm_after_pool: names("fc_norm"),
            front,
            position_offset: position_offset(family, config),
            rope_scaling: RopeScaling::read(config)?,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// The sizes that hold for block `layer` (`None`: the embeddings): the front's in the
    /// front of a stitched descendant, the model's elsewhere.
    pub fn sized_at(&self, layer: Option<usize>) -> ModelConfig {
        let Some(front) = self.front else {
            return self.clone();
        };
        if layer.is_some_and(|l| l >= front.blocks) {
            return self.clone();
        }
        let (heads, kv_heads) = self.heads_at(front.hidden);
        ModelConfig {
            hidden: front.hidden,
            intermediate: front.intermediate,
            heads,
            kv_heads,
            ..self.clone()
        }
    }

    /// The attention heads and key/value heads of a block whose residual stream is `width`
    /// wide: the head width and the query-per-key grouping stay the model's, so a block at
    /// the model's width has its heads, and a block of a narrower instance before a stitch
    /// (Learngene Pool) has proportionally fewer.
    pub fn heads_at(&self, width: usize) -> (usize, usize) {
        if width == self.hidden {
            return (self.heads, self.kv_heads);
        }
        let heads = (width / self.head_dim().max(1)).max(1);
        let group = (self.heads / self.kv_heads.max(1)).max(1);
        (heads, (heads / group).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3.2 1B's published `rope_scaling` (meta-llama/Llama-3.2-1B config.json).
    fn llama3() -> Value {
        serde_json::json!({"rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
            "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
            "rope_type": "llama3"}, "rope_theta": 500000.0})
    }

    #[test]
    fn llama3_rope_scaling_keeps_high_frequencies_and_divides_low_ones() {
        let s = RopeScaling::read(Some(&llama3())).unwrap().unwrap();
        let (theta, head_dim) = (500_000.0_f64, 64.0);
        let mut kept = 0;
        let mut divided = 0;
        let mut blended = 0;
        for i in 0..32 {
            let inv = 1.0 / theta.powf(2.0 * f64::from(i) / head_dim);
            let wavelength = 2.0 * std::f64::consts::PI / inv;
            let got = s.apply(inv);
            // Bounds from the original context: 8192 / 4 = 2048 and 8192 / 1 = 8192.
            if wavelength < 2048.0 {
                assert_eq!(got, inv);
                kept += 1;
            } else if wavelength > 8192.0 {
                assert!((got - inv / 32.0).abs() <= 1e-15 * inv);
                divided += 1;
            } else {
                assert!(got < inv && got > inv / 32.0, "{i}: {got} of {inv}");
                blended += 1;
            }
        }
        assert!(
            kept > 0 && divided > 0 && blended > 0,
            "{kept} {divided} {blended}"
        );
        let linear = serde_json::json!({"rope_scaling": {"type": "linear", "factor": 2.0}});
        let l = RopeScaling::read(Some(&linear)).unwrap().unwrap();
        assert_eq!(l.apply(0.5), 0.25);
        let yarn = serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
        let err = RopeScaling::read(Some(&yarn)).unwrap_err().to_string();
        assert!(err.contains("yarn") && err.contains("llama3"), "{err}");
        assert_eq!(
            RopeScaling::read(Some(&serde_json::json!({"rope_scaling": null}))).unwrap(),
            None
        );
        // A llama3 entry without one of its numbers names it.
        let short = serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}});
        let err = RopeScaling::read(Some(&short)).unwrap_err().to_string();
        assert!(err.contains("rope_scaling.low_freq_factor"), "{err}");
    }
}
