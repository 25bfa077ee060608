//! A seeded random ViT in timm's layout, written as a model directory (`config.json` and
//! `model.safetensors`), for experiments that train their own ancestor (no plain ViT ships in
//! a package; see FIXTURES.md).
//!
//! Usage: `random_vit OUT IMAGE PATCH CHANNELS WIDTH LAYERS HEADS CLASSES [SEED]`; mean pooling
//! with timm's `fc_norm` (no class token), MLP ratio 4, LayerNorm eps 1e-6.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use lgreg::checkpoint::memory::MemorySource;
use lgreg::checkpoint::write::{WriteOptions, plan_all, write_model};
use lgreg::nn::init::{VitSpec, config_json, random_plain};

fn arg(args: &[String], i: usize, what: &str) -> lgreg::Result<usize> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| lgreg::Error::InvalidValue {
            what: what.into(),
            value: args.get(i).cloned().unwrap_or_default(),
            reason: "usage: random_vit OUT IMAGE PATCH CHANNELS WIDTH LAYERS HEADS CLASSES [SEED]"
                .into(),
        })
}

fn main() -> lgreg::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(args.first().cloned().unwrap_or_default());
    let spec = VitSpec {
        image_size: arg(&args, 1, "IMAGE")?,
        patch_size: arg(&args, 2, "PATCH")?,
        channels: arg(&args, 3, "CHANNELS")?,
        hidden: arg(&args, 4, "WIDTH")?,
        layers: arg(&args, 5, "LAYERS")?,
        heads: arg(&args, 6, "HEADS")?,
        classes: arg(&args, 7, "CLASSES")?,
        class_token: false,
    };
    let seed = if args.len() > 8 {
        arg(&args, 8, "SEED")? as u64
    } else {
        0
    };
    let config = spec.config();
    let plain = random_plain(&config, seed, &candle_core::Device::Cpu)?;
    let mut mem = MemorySource::new();
    for (_, name, var) in plain.store.iter() {
        let values: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
        mem.insert_f32(name, var.dims(), &values)?;
    }
    let opts = WriteOptions::default();
    fs_err::create_dir_all(&out)?;
    write_model(
        &out,
        &mem,
        plan_all(&mem, &opts),
        &opts,
        &lgreg::progress::Silent,
    )?;
    let json = serde_json::to_vec_pretty(&config_json(&config))?;
    lgreg::fsutil::write_atomic(&out.join("config.json"), &json)?;
    println!("{}", out.display());
    Ok(())
}
