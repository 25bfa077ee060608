//! Seeded random models: every tensor a family needs, named as its checkpoints name it, with
//! timm/HF-style initialisation (truncated normal σ = 0.02, zero biases, unit norms).
//!
//! The generator is a local SplitMix64 so the same seed gives the same weights on every
//! machine and candle version.

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use super::config::{ModelConfig, Pooling};
use super::model::Model;
use super::param::{Plain, Store, global, slot};
use crate::anatomy::{Family, Naming, Param, Role, Slot, rules};
use crate::error::Result;

/// A small deterministic random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The seed of an independent stream of `seed`: `seed` xor each `key · multiplier`. Each
    /// caller keeps its own odd multipliers (so the streams of runs already made stay the same);
    /// a key counts from 1 where 0 is a possible value, so no stream equals the plain seed.
    pub fn stream_seed(seed: u64, keys: &[(u64, u64)]) -> u64 {
        keys.iter().fold(seed, |s, &(key, multiplier)| {
            s ^ key.wrapping_mul(multiplier)
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Normal with standard deviation `std`, truncated to ±2σ.
    pub fn trunc_normal(&mut self, std: f64) -> f32 {
        loop {
            let z = self.normal();
            if z.abs() <= 2.0 {
                return (z * std) as f32;
            }
        }
    }

    /// Shuffle `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// FNV-1a of a tensor name: the key of the random stream a tensor is drawn from, so that each
/// tensor's values depend on its name and not on what else a model holds.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Maximum positions of a random bert.
const BERT_POSITIONS: usize = 64;

/// Every tensor a family's model needs under `c`: slot, name and shape.
pub fn layout(c: &ModelConfig) -> Vec<(Slot, String, Vec<usize>)> {
    let (d, i) = (c.hidden, c.intermediate);
    let hd = c.head_dim();
    let w = Param::Weight;
    let b = Param::Bias;
    let mut globals: Vec<(Slot, &str, Vec<usize>)> = Vec::new();
    let mut layer: Vec<(Role, Param, Vec<usize>)> = Vec::new();
    let naming = match c.family {
        Family::Vit => Naming::Timm,
        _ => Naming::Hf,
    };
    match c.family {
        Family::Llama => {
            globals.push((
                global(Role::TokenEmbedding, w),
                "model.embed_tokens.weight",
                vec![c.vocab, d],
            ));
            globals.push((global(Role::FinalNorm, w), "model.norm.weight", vec![d]));
            if !c.tied_head {
                globals.push((global(Role::Head, w), "lm_head.weight", vec![c.vocab, d]));
            }
            layer.extend([
                (Role::AttnNorm, w, vec![d]),
                (Role::AttnQ, w, vec![c.heads * hd, d]),
                (Role::AttnK, w, vec![c.kv_heads * hd, d]),
                (Role::AttnV, w, vec![c.kv_heads * hd, d]),
                (Role::AttnO, w, vec![d, c.heads * hd]),
                (Role::MlpNorm, w, vec![d]),
                (Role::MlpGate, w, vec![i, d]),
                (Role::MlpUp, w, vec![i, d]),
                (Role::MlpDown, w, vec![d, i]),
            ]);
        }
        Family::Bert => {
            globals.extend([
                (
                    global(Role::TokenEmbedding, w),
                    "embeddings.word_embeddings.weight",
                    vec![c.vocab, d],
                ),
                (
                    global(Role::PositionEmbedding, w),
                    "embeddings.position_embeddings.weight",
                    vec![BERT_POSITIONS + c.position_offset, d],
                ),
                (
                    global(Role::TokenTypeEmbedding, w),
                    "embeddings.token_type_embeddings.weight",
                    // RoBERTa has one token type.
                    vec![if c.position_offset > 0 { 1 } else { 2 }, d],
                ),
                (
                    global(Role::EmbeddingNorm, w),
                    "embeddings.LayerNorm.weight",
                    vec![d],
                ),
                (
                    global(Role::EmbeddingNorm, b),
                    "embeddings.LayerNorm.bias",
                    vec![d],
                ),
            ]);
            for (role, rows, cols) in [
                (Role::AttnQ, d, d),
                (Role::AttnK, d, d),
                (Role::AttnV, d, d),
                (Role::AttnO, d, d),
                (Role::MlpUp, i, d),
                (Role::MlpDown, d, i),
            ] {
                layer.push((role, w, vec![rows, cols]));
                layer.push((role, b, vec![rows]));
            }
            for role in [Role::AttnNorm, Role::MlpNorm] {
                layer.push((role, w, vec![d]));
                layer.push((role, b, vec![d]));
            }
        }
        Family::Vit => {
            let side = c.image_size / c.patch_size.max(1);
            let tokens = side * side + usize::from(c.class_token);
            let norm = if c.norm_after_pool { "fc_norm" } else { "norm" };
            globals.extend([
                (
                    global(Role::PatchEmbedding, w),
                    "patch_embed.proj.weight",
                    vec![d, c.channels, c.patch_size, c.patch_size],
                ),
                (
                    global(Role::PatchEmbedding, b),
                    "patch_embed.proj.bias",
                    vec![d],
                ),
                (
                    global(Role::PositionEmbedding, w),
                    "pos_embed",
                    vec![1, tokens, d],
                ),
                (global(Role::Head, w), "head.weight", vec![c.classes, d]),
                (global(Role::Head, b), "head.bias", vec![c.classes]),
            ]);
            if c.class_token {
                globals.push((global(Role::ClassToken, w), "cls_token", vec![1, 1, d]));
            }
            let norm_names = [format!("{norm}.weight"), format!("{norm}.bias")];
            let mut out: Vec<(Slot, String, Vec<usize>)> = globals
                .into_iter()
                .map(|(s, n, sh)| (s, n.to_string(), sh))
                .collect();
            out.push((global(Role::FinalNorm, w), norm_names[0].clone(), vec![d]));
            out.push((global(Role::FinalNorm, b), norm_names[1].clone(), vec![d]));
            for (role, rows, cols) in [
                (Role::AttnQkv, 3 * d, d),
                (Role::AttnO, d, d),
                (Role::MlpUp, i, d),
                (Role::MlpDown, d, i),
            ] {
                layer.push((role, w, vec![rows, cols]));
                layer.push((role, b, vec![rows]));
            }
            for role in [Role::AttnNorm, Role::MlpNorm] {
                layer.push((role, w, vec![d]));
                layer.push((role, b, vec![d]));
            }
            return with_layers(c, out, &layer, naming);
        }
    }
    let out = globals
        .into_iter()
        .map(|(s, n, sh)| (s, n.to_string(), sh))
        .collect();
    with_layers(c, out, &layer, naming)
}

fn with_layers(
    c: &ModelConfig,
    mut out: Vec<(Slot, String, Vec<usize>)>,
    layer: &[(Role, Param, Vec<usize>)],
    naming: Naming,
) -> Vec<(Slot, String, Vec<usize>)> {
    let r = rules(c.family);
    for l in 0..c.layers {
        for (role, param, shape) in layer {
            let s = slot(l, *role, *param);
            let name = r.tensor_name(&s, naming).unwrap_or_default();
            out.push((s, name, shape.clone()));
        }
    }
    out
}

/// A model of config `c` with seeded random plain weights.
pub fn random(c: &ModelConfig, seed: u64, device: &Device) -> Result<Model> {
    Ok(Model::new(
        c.clone(),
        Box::new(random_plain(c, seed, device)?),
        device.clone(),
    ))
}

/// Fresh values for a tensor of `n` elements: norm scales 1, biases 0, every other weight
/// truncated-normal with σ = 0.02 (timm's and `transformers`' default).
pub fn init_values(role: Role, param: Param, n: usize, rng: &mut Rng) -> Vec<f32> {
    let is_norm = matches!(
        role,
        Role::AttnNorm | Role::MlpNorm | Role::FinalNorm | Role::EmbeddingNorm
    );
    match (is_norm, param) {
        (true, Param::Weight) => vec![1.0; n],
        (_, Param::Bias) => vec![0.0; n],
        _ => (0..n).map(|_| rng.trunc_normal(0.02)).collect(),
    }
}

/// Seeded random plain weights for config `c`.
pub fn random_plain(c: &ModelConfig, seed: u64, device: &Device) -> Result<Plain> {
    let mut rng = Rng::new(seed);
    let mut store = Store::new();
    for (s, name, shape) in layout(c) {
        let n: usize = shape.iter().product();
        let values = init_values(s.role, s.param, n, &mut rng);
        store.insert(s, &name, &Tensor::from_vec(values, shape, device)?)?;
    }
    Ok(Plain { store })
}

/// A `config.json` that describes `c` (HF keys for llama and bert, timm keys for vit), with
/// `lgreg_front` for a stitched descendant's narrower front.
pub fn config_json(c: &ModelConfig) -> Value {
    let mut json = family_config_json(c);
    if let (Some(front), Value::Object(map)) = (c.front, &mut json) {
        map.insert("lgreg_front".into(), front.to_json());
    }
    json
}

fn family_config_json(c: &ModelConfig) -> Value {
    match c.family {
        Family::Llama => json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": c.hidden,
            "intermediate_size": c.intermediate,
            "num_hidden_layers": c.layers,
            "num_attention_heads": c.heads,
            "num_key_value_heads": c.kv_heads,
            "vocab_size": c.vocab,
            "rms_norm_eps": c.norm_eps,
            "rope_theta": c.rope_theta,
            "tie_word_embeddings": c.tied_head,
            "max_position_embeddings": 2048,
        }),
        Family::Bert => {
            // RoBERTa: positions from pad_token_id + 1, one token type.
            let roberta = c.position_offset > 0;
            let mut config = json!({
                "architectures": [if roberta { "RobertaModel" } else { "BertModel" }],
                "model_type": if roberta { "roberta" } else { "bert" },
                "hidden_size": c.hidden,
                "intermediate_size": c.intermediate,
                "num_hidden_layers": c.layers,
                "num_attention_heads": c.heads,
                "vocab_size": c.vocab,
                "layer_norm_eps": c.norm_eps,
                "max_position_embeddings": BERT_POSITIONS + c.position_offset,
                "type_vocab_size": if roberta { 1 } else { 2 },
                "hidden_act": "gelu",
            });
            if roberta {
                config["pad_token_id"] = Value::from(c.position_offset - 1);
            }
            config
        }
        Family::Vit => json!({
            "architecture": format!("vit_custom_patch{}_{}", c.patch_size, c.image_size),
            "img_size": c.image_size,
            "patch_size": c.patch_size,
            "in_chans": c.channels,
            "num_classes": c.classes,
            "embed_dim": c.hidden,
            "depth": c.layers,
            "num_heads": c.heads,
            "mlp_ratio": c.intermediate as f64 / c.hidden.max(1) as f64,
            "class_token": c.class_token,
            "global_pool": match c.pooling { Pooling::Cls => "token", Pooling::Mean => "avg" },
            "layer_norm_eps": c.norm_eps,
        }),
    }
}

/// The sizes of a vit in timm's DeiT layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitSpec {
    /// Image side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Input channels.
    pub channels: usize,
    /// Width.
    pub hidden: usize,
    /// Blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Output classes.
    pub classes: usize,
    /// Class token (pooling on it) or none (mean pooling and `fc_norm`).
    pub class_token: bool,
}

impl VitSpec {
    /// The model config, with MLP ratio 4 and LayerNorm eps 1e-6.
    pub fn config(&self) -> ModelConfig {
        ModelConfig {
            family: Family::Vit,
            layers: self.layers,
            hidden: self.hidden,
            heads: self.heads,
            kv_heads: self.heads,
            intermediate: 4 * self.hidden,
            norm_eps: 1e-6,
            vocab: 0,
            rope_theta: 10_000.0,
            tied_head: false,
            image_size: self.image_size,
            patch_size: self.patch_size,
            channels: self.channels,
            classes: self.classes,
            class_token: self.class_token,
            pooling: if self.class_token {
                Pooling::Cls
            } else {
                Pooling::Mean
            },
            norm_after_pool: !self.class_token,
            front: None,
            position_offset: 0,
            rope_scaling: None,
        }
    }
}
