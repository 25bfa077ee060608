//! `MODE: faithful` for tleg and sws: the aux net distilled from a teacher, its gene, its
//! descendants, kill and resume, and bad configs. Tiny vit teachers on synthetic images keep it
//! within CI's budget.

use std::path::{Path, PathBuf};

use lgreg::nn::init::VitSpec;
use serde_json::Value;

use crate::support::synth::{hashed, write_model_dir};
use crate::support::{json_result, run_str, s, shipped};

/// The tiny vit every test here distils from: 16×16 RGB, patch 4, width 32, 2 heads, 5 classes.
fn vit_spec(layers: usize) -> VitSpec {
    VitSpec {
        image_size: 16,
        patch_size: 4,
        channels: 3,
        hidden: 32,
        layers,
        heads: 2,
        classes: 5,
        class_token: true,
    }
}

/// A seeded teacher of `layers` blocks with values from `value`.
fn teacher(dir: &Path, layers: usize) -> PathBuf {
    let c = vit_spec(layers).config();
    write_model_dir(dir, &c, |name, layer, i| {
        let v = hashed(name, layer, i);
        if name.contains("norm") && name.ends_with("weight") {
            1.0 + 0.1 * v
        } else {
            0.2 * v
        }
    });
    dir.to_path_buf()
}

/// `n` seeded 16×16 RGB images per class in folders `c0` … `c4`.
fn images(dir: &Path, n: usize) -> PathBuf {
    let mut rng = lgreg::nn::init::Rng::new(5);
    for c in 0..5 {
        let class_dir = dir.join(format!("c{c}"));
        std::fs::create_dir_all(&class_dir).unwrap();
        for i in 0..n {
            let pixels: Vec<u8> = (0..16 * 16 * 3)
                .map(|p| ((p % 3 == c % 3) as u8) * 120 + (rng.uniform() * 100.0) as u8)
                .collect();
            let img = image::RgbImage::from_raw(16, 16, pixels).unwrap();
            img.save(class_dir.join(format!("{i}.png"))).unwrap();
        }
    }
    dir.to_path_buf()
}

/// The arguments of a faithful `train` of `method` (`tleg` or `sws`) into `out`.
fn train_args(
    method: &str,
    teacher: &Path,
    data: &Path,
    out: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--json",
        "--config",
        &shipped(&format!("ancestor_{method}_vit.yaml")),
        "--set",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    for set in [
        format!("GENE.ANCESTOR_MODEL_PATH={}", s(teacher)),
        format!("DATASET.PATH={}", s(data)),
        format!("OUTPUT_DIR={}", s(out)),
        format!("GENE.NAME=tiny-{method}"),
        "TRAIN.STEPS=6".into(),
        "TRAIN.BATCH_SIZE=8".into(),
        "TRAIN.LR=0.002".into(),
        "TRAIN.WARMUP_EPOCHS=0".into(),
        "TRAIN.SAVE_EVERY=1".into(),
        "DATASET.VAL_FRACTION=0.2".into(),
        "MODEL.TYPE=aux_vit_custom".into(),
    ] {
        args.push(set);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn ok(home: &Path, args: &[String]) -> Value {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_str(home, &refs);
    assert_eq!(run.code, 0, "{args:?}\n{}", run.stderr);
    json_result(&run)
}

#[test]
fn a_tleg_aux_net_is_distilled_published_and_spawned() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 8);
    let out = home.join("runs/tleg");
    let trained = ok(home, &train_args("tleg", &t, &data, &out, &[]));
    eprintln!("{trained:#}");
    assert_eq!(trained["gene"]["fidelity"], "faithful", "{trained}");
}
