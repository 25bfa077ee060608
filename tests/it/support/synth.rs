//! Small synthetic ancestors written with lgreg's own writer, for tests that need exact,
//! known layer values.

use std::path::Path;

use lgreg::checkpoint::memory::MemorySource;
use lgreg::checkpoint::write::{WriteOptions, plan_all, write_model};
use lgreg::nn::ModelConfig;
use lgreg::nn::init::{config_json, layout};

/// A tiny llama config: width 32, 2 heads, 1 kv head, MLP 64, vocabulary 50.
pub fn tiny_llama(layers: usize) -> ModelConfig {
    ModelConfig {
        family: lgreg::anatomy::Family::Llama,
        layers,
        hidden: 32,
        heads: 2,
        kv_heads: 1,
        intermediate: 64,
        norm_eps: 1e-5,
        vocab: 50,
        rope_theta: 10_000.0,
        tied_head: false,
        image_size: 0,
        patch_size: 0,
        channels: 0,
        classes: 0,
        class_token: false,
        pooling: lgreg::nn::Pooling::Mean,
        norm_after_pool: false,
        front: None,
        position_offset: 0,
        rope_scaling: None,
    }
}

/// Write a model of config `c` into `dir` (`config.json` + `model.safetensors`); tensor
/// values come from `value(name, layer, index)`.
pub fn write_model_dir(
    dir: &Path,
    c: &ModelConfig,
    value: impl Fn(&str, Option<usize>, usize) -> f32,
) {
    std::fs::create_dir_all(dir).unwrap();
    let mut mem = MemorySource::new();
    for (slot, name, shape) in layout(c) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| value(&name, slot.layer, i)).collect();
        mem.insert_f32(&name, &shape, &values).unwrap();
    }
    write_tensors_dir(dir, &mem, &config_json(c));
}

/// A deterministic pseudo-random value in [-0.5, 0.5) for (name, layer, index).
pub fn hashed(name: &str, layer: Option<usize>, i: usize) -> f32 {
    let mut h: u64 = 1469598103934665603;
    for b in name
        .bytes()
        .chain(layer.unwrap_or(999).to_le_bytes())
        .chain(i.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(1099511628211);
    }
    (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

/// Write the tensors of `mem` and `config` as a model directory at `dir`.
pub fn write_tensors_dir(dir: &Path, mem: &MemorySource, config: &serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    let opts = WriteOptions::default();
    write_model(
        dir,
        mem,
        plan_all(mem, &opts),
        &opts,
        &lgreg::progress::Silent,
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}
