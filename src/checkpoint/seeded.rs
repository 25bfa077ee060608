//! Seeded stand-ins for published llama-family checkpoints, laid out exactly as their shard
//! index publishes them.
//!
//! The tensor names and their shard files come from a published `model.safetensors.index.json`;
//! the shapes come from the published `config.json`, and their total must reproduce the index's
//! `total_size` to the byte, so a stand-in cannot drift from the real layout. The values are
//! drawn when a tensor is read (a [`TensorSource`] that holds nothing), in parallel chunks whose
//! streams depend only on the seed, the tensor's name and the chunk's position, so that the same
//! seed gives the same bytes on every machine and thread count. A 13.5 GB Llama-2-7B stand-in is
//! written with about one tensor in memory.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use serde_json::Value;

use super::write::{Planned, Written, plan_one, write_shards};
use super::{DType, TensorInfo, TensorSource, cast_bytes, f32_le_bytes, sort_infos};
use crate::error::{Error, Result};
use crate::nn::init::{Rng, name_hash};
use crate::progress::Reporter;

/// Values drawn per parallel chunk (each chunk has its own stream).
const CHUNK: usize = 1 << 16;

/// Half-width of the uniform draw for weight matrices: the standard deviation of HF's
/// `initializer_range` 0.02 (`0.02 · √3`).
const WEIGHT_HALF_WIDTH: f32 = 0.034_641;

/// Half-width of the uniform draw around 1 for norm weights.
const NORM_HALF_WIDTH: f32 = 0.1;

/// A [`TensorSource`] that draws each tensor from a seed when it is read.
#[derive(Debug, Clone)]
pub struct SeededSource {
    infos: Vec<TensorInfo>,
    seed: u64,
    rope_theta: f64,
}

impl SeededSource {
    /// A source of `infos`, drawn from `seed`; `rotary_emb.inv_freq` tensors hold the real
    /// frequencies for `rope_theta`.
    pub fn new(mut infos: Vec<TensorInfo>, seed: u64, rope_theta: f64) -> SeededSource {
        sort_infos(&mut infos);
        SeededSource {
            infos,
            seed,
            rope_theta,
        }
    }

    fn draw(&self, info: &TensorInfo) -> Result<Vec<u8>> {
        if info.name.ends_with("rotary_emb.inv_freq") {
            let half = info.numel();
            let inv: Vec<f32> = (0..half)
                .map(|i| (1.0 / self.rope_theta.powf(i as f64 / half as f64)) as f32)
                .collect();
            return Ok(
                cast_bytes(&info.name, DType::F32, info.dtype, &f32_le_bytes(&inv))?.into_owned(),
            );
        }
        let (centre, half_width) = if info.name.ends_with("norm.weight") {
            (1.0, NORM_HALF_WIDTH)
        } else {
            (0.0, WEIGHT_HALF_WIDTH)
        };
        let name_key = name_hash(&info.name);
        let width = info.dtype.size();
        let mut out = vec![0u8; info.nbytes()];
        out.par_chunks_mut(CHUNK * width).enumerate().try_for_each(
            |(chunk, bytes)| -> Result<()> {
                let stream = Rng::stream_seed(
                    self.seed,
                    &[
                        (name_key, 0xA24B_AED4_963E_E407),
                        (chunk as u64 + 1, 0x9FB2_1C65_1E98_DF25),
                    ],
                );
                let mut rng = Rng::new(stream);
                let values: Vec<f32> = (0..bytes.len() / width)
                    .map(|_| centre + half_width * (2.0 * rng.uniform() as f32 - 1.0))
                    .collect();
                let raw = f32_le_bytes(&values);
                let cast = cast_bytes(&info.name, DType::F32, info.dtype, &raw)?;
                bytes.copy_from_slice(&cast);
                Ok(())
            },
        )?;
        Ok(out)
    }
}

impl TensorSource for SeededSource {
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let info = self.require(name)?;
        Ok(Cow::Owned(self.draw(info)?))
    }
}

/// A published llama-family checkpoint's layout: its config, and each shard's tensors.
#[derive(Debug, Clone)]
pub struct PublishedLayout {
    /// `config.json`, with `num_hidden_layers` set to the layers kept.
    pub config: Value,
    /// Shard file name → the tensors it holds, in the index's shard order.
    pub shards: BTreeMap<String, Vec<TensorInfo>>,
}

impl PublishedLayout {
    /// The layout of the published `config` and shard `index`, keeping the first `layers`
    /// layers (all when `None`). Weights are `dtype`; `rotary_emb.inv_freq` tensors stay F32.
    /// With every layer kept, the sizes must add up to the index's `total_size`.
    pub fn llama(
        config: &Value,
        index: &Value,
        layers: Option<usize>,
        dtype: DType,
    ) -> Result<PublishedLayout> {
        let dims = LlamaDims::read(config)?;
        let kept = layers.unwrap_or(dims.layers);
        if kept == 0 || kept > dims.layers {
            return Err(Error::InvalidValue {
                what: "layers to keep".into(),
                value: kept.to_string(),
                reason: format!(
                    "the published model has {} layers; keep 1 to {}",
                    dims.layers, dims.layers
                ),
            });
        }
        let weight_map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| index_error("it has no weight_map object"))?;
        let mut shards: BTreeMap<String, Vec<TensorInfo>> = BTreeMap::new();
        let mut total = 0u64;
        for (name, file) in weight_map {
            let file = file
                .as_str()
                .ok_or_else(|| index_error(&format!("the file of {name} is not a string")))?;
            let info = dims.tensor(name, dtype)?;
            total += info.nbytes() as u64;
            if layer_of(name).is_none_or(|l| l < kept) {
                shards.entry(file.to_string()).or_default().push(info);
            }
        }
        let published = index
            .pointer("/metadata/total_size")
            .and_then(Value::as_u64);
        if dtype == DType::F16 && published.is_some_and(|p| p != total) {
            return Err(index_error(&format!(
                "its total_size is {published:?} but the config's shapes give {total} bytes"
            )));
        }
        let mut config = config.clone();
        config["num_hidden_layers"] = Value::from(kept);
        Ok(PublishedLayout { config, shards })
    }

    /// Every tensor of every shard.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        self.shards.values().flatten().cloned().collect()
    }

    /// Write the layout with values drawn from `seed` into `dir`: `config.json`, the shards
    /// under their published names, and the index.
    pub fn write(&self, dir: &Path, seed: u64, reporter: &dyn Reporter) -> Result<Written> {
        let theta = self
            .config
            .get("rope_theta")
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0);
        let source = SeededSource::new(self.tensors(), seed, theta);
        let opts = Default::default();
        let shards: Vec<(String, Vec<Planned>)> = self
            .shards
            .iter()
            .map(|(file, infos)| {
                let plan = infos.iter().map(|t| plan_one(t, &t.name, &opts)).collect();
                (file.clone(), plan)
            })
            .collect();
        let written = write_shards(dir, &source, shards, reporter)?;
        let mut bytes = serde_json::to_vec_pretty(&self.config)?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(&dir.join("config.json"), &bytes)?;
        let tokenizer = serde_json::to_vec(&stand_in_tokenizer())?;
        crate::fsutil::write_atomic(&dir.join("tokenizer.json"), &tokenizer)?;
        Ok(written)
    }
}

/// A character-level `tokenizer.json` for a stand-in, so that the verbs that read text
/// (heur, pool, auto, eval) can run on it: every printable ASCII character is one token after
/// `<unk>`, `<s>` and `</s>`, everything else is `<unk>`. It is not the published tokenizer
/// (a 32,000-piece SentencePiece BPE), whose vocabulary is not part of the test data; its ids
/// all lie below any llama vocabulary size.
pub fn stand_in_tokenizer() -> Value {
    let mut vocab = serde_json::Map::new();
    for (id, special) in ["<unk>", "<s>", "</s>"].into_iter().enumerate() {
        vocab.insert(special.into(), Value::from(id));
    }
    for c in (0x20u8..0x7f).map(char::from) {
        let id = vocab.len();
        vocab.insert(c.to_string(), Value::from(id));
    }
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Split",
            "pattern": { "Regex": "." },
            "behavior": "Isolated",
            "invert": false
        },
        "post_processor": null,
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "<unk>" }
    })
}

fn index_error(reason: &str) -> Error {
    Error::InvalidValue {
        what: "shard index".into(),
        value: "model.safetensors.index.json".into(),
        reason: reason.into(),
    }
}

/// The layer number of a `model.layers.N.` tensor.
fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("model.layers.")?;
    rest.split('.').next()?.parse().ok()
}

/// The sizes a llama `config.json` gives.
#[derive(Debug, Clone, Copy)]
struct LlamaDims {
    layers: usize,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
}

impl LlamaDims {
    fn read(config: &Value) -> Result<LlamaDims> {
        let get = |key: &str| {
            config
                .get(key)
                .and_then(Value::as_u64)
                .filter(|v| *v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| Error::InvalidValue {
                    what: "config.json".into(),
                    value: key.into(),
                    reason: "a llama config needs it as a positive integer".into(),
                })
        };
        let (hidden, heads) = (get("hidden_size")?, get("num_attention_heads")?);
        Ok(LlamaDims {
            layers: get("num_hidden_layers")?,
            hidden,
            intermediate: get("intermediate_size")?,
            heads,
            kv_heads: get("num_key_value_heads").unwrap_or(heads),
            head_dim: get("head_dim").unwrap_or(hidden / heads),
            vocab: get("vocab_size")?,
        })
    }

    /// The info of one published tensor name.
    fn tensor(&self, name: &str, dtype: DType) -> Result<TensorInfo> {
        let (d, i, hd) = (self.hidden, self.intermediate, self.head_dim);
        let suffix = name.rsplit_once("layers.").map_or(name, |(_, rest)| {
            rest.split_once('.').map_or(rest, |(_, s)| s)
        });
        let (shape, dtype) = match suffix {
            "model.embed_tokens.weight" | "lm_head.weight" => (vec![self.vocab, d], dtype),
            "model.norm.weight" | "input_layernorm.weight" | "post_attention_layernorm.weight" => {
                (vec![d], dtype)
            }
            "self_attn.q_proj.weight" => (vec![self.heads * hd, d], dtype),
            "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => {
                (vec![self.kv_heads * hd, d], dtype)
            }
            "self_attn.o_proj.weight" => (vec![d, self.heads * hd], dtype),
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => (vec![i, d], dtype),
            "mlp.down_proj.weight" => (vec![d, i], dtype),
            "self_attn.rotary_emb.inv_freq" => (vec![hd / 2], DType::F32),
            _ => {
                return Err(index_error(&format!(
                    "{name} is not a llama tensor this generator knows"
                )));
            }
        };
        Ok(TensorInfo {
            name: name.to_string(),
            dtype,
            shape,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = include_str!("../../tests/data/meta-llama--Llama-2-7b-hf.config.json");
    const INDEX: &str =
        include_str!("../../tests/data/meta-llama--Llama-2-7b-hf.model.safetensors.index.json");

    fn layout(layers: Option<usize>) -> Result<PublishedLayout> {
        let config: Value = serde_json::from_str(CONFIG)?;
        let index: Value = serde_json::from_str(INDEX)?;
        PublishedLayout::llama(&config, &index, layers, DType::F16)
    }

    fn shard_bytes(layout: &PublishedLayout, file: &str) -> u64 {
        layout.shards[file].iter().map(|t| t.nbytes() as u64).sum()
    }

    #[test]
    fn llama_2_7b_layout_matches_the_published_index() {
        let full = layout(None).unwrap();
        assert_eq!(full.tensors().len(), 323);
        let first = "model-00001-of-00002.safetensors";
        let second = "model-00002-of-00002.safetensors";
        assert_eq!(
            shard_bytes(&full, first) + shard_bytes(&full, second),
            13_476_839_424
        );
        let embed = full.shards[first]
            .iter()
            .find(|t| t.name == "model.embed_tokens.weight")
            .unwrap();
        assert_eq!(
            (embed.shape.as_slice(), embed.dtype),
            (&[32000, 4096][..], DType::F16)
        );
        let inv = full.shards[first]
            .iter()
            .find(|t| t.name == "model.layers.0.self_attn.rotary_emb.inv_freq")
            .unwrap();
        assert_eq!((inv.shape.as_slice(), inv.dtype), (&[64][..], DType::F32));
        assert!(
            full.shards[second]
                .iter()
                .any(|t| t.name == "lm_head.weight")
        );
    }

    #[test]
    fn truncated_layout_keeps_the_first_layers_in_their_shards() {
        let four = layout(Some(4)).unwrap();
        assert_eq!(four.config["num_hidden_layers"], 4);
        assert_eq!(four.tensors().len(), 4 * 10 + 3);
        assert!(
            four.tensors()
                .iter()
                .all(|t| layer_of(&t.name).is_none_or(|l| l < 4))
        );
        let err = layout(Some(33)).unwrap_err().to_string();
        assert!(err.contains("keep 1 to 32"), "{err}");
    }

    #[test]
    fn a_wrong_total_size_or_unknown_tensor_is_refused() {
        let config: Value = serde_json::from_str(CONFIG).unwrap();
        let mut index: Value = serde_json::from_str(INDEX).unwrap();
        index["metadata"]["total_size"] = Value::from(1);
        let err = PublishedLayout::llama(&config, &index, None, DType::F16).unwrap_err();
        assert!(err.to_string().contains("total_size"), "{err}");
        index["weight_map"]["model.mystery.weight"] = Value::from("x.safetensors");
        let err = PublishedLayout::llama(&config, &index, None, DType::F16).unwrap_err();
        assert!(err.to_string().contains("model.mystery.weight"), "{err}");
    }

    #[test]
    fn the_stand_in_tokenizer_reads_text_one_character_a_token() {
        let bytes = serde_json::to_vec(&stand_in_tokenizer()).unwrap();
        let tok = crate::train::text::Tokenizer::from_bytes(&bytes, Path::new("t")).unwrap();
        let ids = tok.encode("To be, or", false).unwrap();
        assert_eq!(ids.len(), 9);
        assert_eq!(ids[0], 3 + u32::from(b'T' - 0x20));
        assert!(ids.iter().all(|&id| id < 3 + 95));
    }

    #[test]
    fn draws_are_seeded_per_name_and_in_range() {
        let infos = vec![
            TensorInfo {
                name: "a.weight".into(),
                dtype: DType::F32,
                shape: vec![3, CHUNK + 5],
            },
            TensorInfo {
                name: "b.norm.weight".into(),
                dtype: DType::F32,
                shape: vec![7],
            },
            TensorInfo {
                name: "l.rotary_emb.inv_freq".into(),
                dtype: DType::F32,
                shape: vec![4],
            },
        ];
        let source = SeededSource::new(infos.clone(), 5, 10_000.0);
        let again = SeededSource::new(infos, 5, 10_000.0);
        let a = source.read_f32("a.weight").unwrap();
        assert_eq!(a, again.read_f32("a.weight").unwrap());
        assert!(a.iter().all(|v| v.abs() <= WEIGHT_HALF_WIDTH));
        assert!(a[..CHUNK] != a[CHUNK..2 * CHUNK], "chunks share a stream");
        let norm = source.read_f32("b.norm.weight").unwrap();
        assert!(norm.iter().all(|v| (v - 1.0).abs() <= NORM_HALF_WIDTH));
        let inv = source.read_f32("l.rotary_emb.inv_freq").unwrap();
        assert_eq!(inv, vec![1.0, 0.1, 0.01, 0.001]);
    }
}
