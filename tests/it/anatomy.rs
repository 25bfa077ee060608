//! Anatomy of seeded random ViT/DeiT checkpoints in timm and HF layouts, and the fused-qkv
//! mapping between them.

use std::path::Path;

use lgreg::anatomy::{self, Family, Naming, Param, Role};
use lgreg::checkpoint::memory::MemorySource;
use lgreg::checkpoint::write::{WriteOptions, plan_all, write_model};
use lgreg::checkpoint::{self, TensorSource};
use lgreg::progress::Silent;

use crate::support::{json_result, run_str};

/// A small deterministic generator (xorshift) for seeded weights.
struct Rng(u64);

impl Rng {
    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
            })
            .collect()
    }
}

const D: usize = 16;
const LAYERS: usize = 3;
const PATCH: usize = 4;
const TOKENS: usize = 17; // 4x4 patches of a 16x16 image + the class token
const CLASSES: usize = 10;

fn add(src: &mut MemorySource, rng: &mut Rng, name: &str, shape: &[usize]) {
    let n = shape.iter().product();
    src.insert_f32(name, shape, &rng.values(n)).unwrap();
}

/// A DeiT-tiny-shaped timm checkpoint, scaled down.
fn timm_vit(seed: u64) -> MemorySource {
    let mut rng = Rng(seed);
    let mut s = MemorySource::new();
    add(&mut s, &mut rng, "cls_token", &[1, 1, D]);
    add(&mut s, &mut rng, "pos_embed", &[1, TOKENS, D]);
    add(
        &mut s,
        &mut rng,
        "patch_embed.proj.weight",
        &[D, 3, PATCH, PATCH],
    );
    add(&mut s, &mut rng, "patch_embed.proj.bias", &[D]);
    for l in 0..LAYERS {
        let b = format!("blocks.{l}");
        for (stem, shape) in [
            ("norm1.weight", vec![D]),
            ("norm1.bias", vec![D]),
            ("attn.qkv.weight", vec![3 * D, D]),
            ("attn.qkv.bias", vec![3 * D]),
            ("attn.proj.weight", vec![D, D]),
            ("attn.proj.bias", vec![D]),
            ("norm2.weight", vec![D]),
            ("norm2.bias", vec![D]),
            ("mlp.fc1.weight", vec![4 * D, D]),
            ("mlp.fc1.bias", vec![4 * D]),
            ("mlp.fc2.weight", vec![D, 4 * D]),
            ("mlp.fc2.bias", vec![D]),
        ] {
            add(&mut s, &mut rng, &format!("{b}.{stem}"), &shape);
        }
    }
    add(&mut s, &mut rng, "norm.weight", &[D]);
    add(&mut s, &mut rng, "norm.bias", &[D]);
    add(&mut s, &mut rng, "head.weight", &[CLASSES, D]);
    add(&mut s, &mut rng, "head.bias", &[CLASSES]);
    s
}

fn write_dir(dir: &Path, src: &MemorySource, config: &serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    let opts = WriteOptions::default();
    write_model(dir, src, plan_all(src, &opts), &opts, &Silent).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// timm names → HF ViT names, splitting every fused qkv.
fn to_hf(timm: &MemorySource) -> MemorySource {
    let a = anatomy::analyze(None, timm.tensors()).unwrap();
    let mut hf = MemorySource::new();
    for t in timm.tensors() {
        let slot = &a.slots[&t.name];
        let bytes = timm.read(&t.name).unwrap();
        if slot.role == Role::AttnQkv {
            let layer = slot.layer.unwrap();
            let names = anatomy::split_qkv_names("vit.", layer, slot.param);
            let parts = anatomy::split_qkv_rows(&bytes, &t.shape, 4).unwrap();
            let mut shape = t.shape.clone();
            shape[0] /= 3;
            for (name, part) in names.iter().zip(parts) {
                hf.insert(name, t.dtype, &shape, part).unwrap();
            }
            continue;
        }
        let name = match (slot.layer, t.name.as_str()) {
            (Some(_), _) => format!(
                "vit.{}",
                anatomy::rules(Family::Vit)
                    .tensor_name(slot, Naming::Hf)
                    .unwrap()
            ),
            (None, "cls_token") => "vit.embeddings.cls_token".into(),
            (None, "pos_embed") => "vit.embeddings.position_embeddings".into(),
            (None, n) if n.starts_with("patch_embed.proj") => n.replace(
                "patch_embed.proj",
                "vit.embeddings.patch_embeddings.projection",
            ),
            (None, n) if n.starts_with("norm.") => n.replace("norm.", "vit.layernorm."),
            (None, n) => n.replace("head.", "classifier."),
        };
        hf.insert(&name, t.dtype, &t.shape, bytes.into_owned())
            .unwrap();
    }
    hf
}

#[test]
fn timm_vit_is_recognised_from_names_and_config() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("deit");
    let cfg = serde_json::json!({"architecture": "deit_tiny_patch16_224", "num_classes": CLASSES});
    write_dir(&dir, &timm_vit(7), &cfg);
    let r = run_str(root.path(), &["inspect", "--json", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    assert_eq!(j["family"], "vit");
    assert_eq!(j["naming"], "timm");
    assert_eq!(j["layers"], LAYERS);
    assert_eq!(j["hidden_size"], D);
    assert_eq!(j["intermediate_size"], 4 * D);

    let ckpt = checkpoint::open(&dir).unwrap();
    let a = anatomy::analyze(ckpt.config.as_ref(), ckpt.source.tensors()).unwrap();
    assert_eq!(a.hyper.patch_size, Some(PATCH));
    assert_eq!(a.hyper.num_classes, Some(CLASSES));
    assert_eq!(a.layer_tensors(1).len(), 12);
    assert_eq!(a.slots["blocks.2.attn.qkv.bias"].role, Role::AttnQkv);
    assert_eq!(a.slots["blocks.2.attn.qkv.bias"].param, Param::Bias);
    assert_eq!(a.slots["cls_token"].role, Role::ClassToken);
    assert_eq!(a.slots["head.weight"].role, Role::Head);
}

#[test]
fn hf_vit_from_split_qkv_matches_the_timm_original() {
    let timm = timm_vit(11);
    let hf = to_hf(&timm);
    let cfg = serde_json::json!({"model_type": "vit", "architectures": ["ViTForImageClassification"],
        "hidden_size": D, "num_hidden_layers": LAYERS, "num_attention_heads": 2, "intermediate_size": 4 * D,
        "patch_size": PATCH, "image_size": 16});
    let a = anatomy::analyze(Some(&cfg), hf.tensors()).unwrap();
    assert_eq!(
        (a.family, a.naming, a.hyper.layers),
        (Family::Vit, Naming::Hf, LAYERS)
    );
    let q = "vit.encoder.layer.1.attention.attention.query.weight";
    assert_eq!(a.slots[q].role, Role::AttnQ);
    assert_eq!(hf.info(q).unwrap().shape, vec![D, D]);
    // Fusing q, k and v back gives timm's bytes exactly.
    for param in [Param::Weight, Param::Bias] {
        let [qn, kn, vn] = anatomy::split_qkv_names("vit.", 1, param);
        let fused = anatomy::fuse_qkv_rows(
            &hf.read(&qn).unwrap(),
            &hf.read(&kn).unwrap(),
            &hf.read(&vn).unwrap(),
        )
        .unwrap();
        let timm_name = anatomy::fuse_qkv_name(1, param);
        assert_eq!(
            fused,
            timm.read(&timm_name).unwrap().into_owned(),
            "{timm_name}"
        );
    }
    // The same family is found from the names alone, and DeiT's prefix works too.
    let a = anatomy::analyze(None, hf.tensors()).unwrap();
    assert_eq!((a.family, a.naming), (Family::Vit, Naming::Hf));
}

#[test]
fn depth_rewrite_round_trips_through_the_anatomy() {
    let cfg = serde_json::json!({"model_type": "bert", "num_hidden_layers": 6, "hidden_size": 384});
    let out = anatomy::with_depth(&cfg, Naming::Hf, 2);
    assert_eq!(out["num_hidden_layers"], 2);
    assert_eq!(out["hidden_size"], 384);
}

/// The tensors of a DINOv2 checkpoint (`Dinov2Model`), scaled down: LayerScale and a mask token,
/// which no supported family has.
fn dinov2() -> MemorySource {
    let mut rng = Rng(7);
    let mut s = MemorySource::new();
    for (name, shape) in [
        ("embeddings.cls_token", vec![1, 1, D]),
        ("embeddings.mask_token", vec![1, D]),
        ("embeddings.position_embeddings", vec![1, TOKENS, D]),
        (
            "embeddings.patch_embeddings.projection.weight",
            vec![D, 3, PATCH, PATCH],
        ),
        ("embeddings.patch_embeddings.projection.bias", vec![D]),
        ("layernorm.weight", vec![D]),
        ("layernorm.bias", vec![D]),
    ] {
        add(&mut s, &mut rng, name, &shape);
    }
    for (stem, shape) in [
        ("norm1.weight", vec![D]),
        ("attention.attention.query.weight", vec![D, D]),
        ("attention.output.dense.weight", vec![D, D]),
        ("layer_scale1.lambda1", vec![D]),
        ("mlp.fc1.weight", vec![4 * D, D]),
        ("layer_scale2.lambda1", vec![D]),
    ] {
        add(&mut s, &mut rng, &format!("encoder.layer.0.{stem}"), &shape);
    }
    s
}

#[test]
fn an_unsupported_family_is_named_with_the_nearest_supported_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dinov2");
    let config = serde_json::json!({"model_type": "dinov2", "architectures": ["Dinov2Model"]});
    write_dir(&dir, &dinov2(), &config);
    let run = run_str(tmp.path(), &["inspect", dir.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    // What was recognised, what the nearest family reads and lacks.
    assert!(run.stderr.contains("\"dinov2\""), "{}", run.stderr);
    assert!(
        run.stderr.contains("the nearest supported family is `vit`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("it has no place for"), "{}", run.stderr);
    assert!(
        run.stderr.contains("mask_token") || run.stderr.contains("lambda1"),
        "{}",
        run.stderr
    );
}

/// A timm ViT-Tiny of `layers` blocks as the Hub publishes it: timm tensor names and the
/// published `config.json` of `timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k`, which carries
/// only `architecture` and `pretrained_cfg` (no width, heads or image size).
#[test]
fn a_timm_hub_checkpoint_reads_its_size_from_the_name_and_pretrained_cfg() {
    let (d, layers, classes) = (192, 2, 1000);
    let mut rng = Rng(11);
    let mut s = MemorySource::new();
    for (name, shape) in [
        ("cls_token", vec![1, 1, d]),
        ("pos_embed", vec![1, 197, d]),
        ("patch_embed.proj.weight", vec![d, 3, 16, 16]),
        ("patch_embed.proj.bias", vec![d]),
        ("norm.weight", vec![d]),
        ("norm.bias", vec![d]),
        ("head.weight", vec![classes, d]),
        ("head.bias", vec![classes]),
    ] {
        add(&mut s, &mut rng, name, &shape);
    }
    for l in 0..layers {
        for (stem, shape) in [
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attn.qkv.weight", vec![3 * d, d]),
            ("attn.qkv.bias", vec![3 * d]),
            ("attn.proj.weight", vec![d, d]),
            ("attn.proj.bias", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.fc1.weight", vec![4 * d, d]),
            ("mlp.fc1.bias", vec![4 * d]),
            ("mlp.fc2.weight", vec![d, 4 * d]),
            ("mlp.fc2.bias", vec![d]),
        ] {
            add(&mut s, &mut rng, &format!("blocks.{l}.{stem}"), &shape);
        }
    }
    let published: serde_json::Value = serde_json::from_str(include_str!(
        "../data/timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k.config.json"
    ))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vit-tiny");
    write_dir(&dir, &s, &published);
    let ckpt = checkpoint::open(&dir).unwrap();
    let model = lgreg::nn::Model::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    let c = &model.config;
    assert_eq!((c.hidden, c.heads, c.layers), (192, 3, 2));
    assert_eq!((c.image_size, c.patch_size, c.classes), (224, 16, 1000));
    let x = candle_core::Tensor::zeros(
        (1, 3, 224, 224),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let out = model
        .forward(&lgreg::nn::Input::Images(x), lgreg::nn::Mode::Infer, false)
        .unwrap();
    assert_eq!(out.output.dims(), &[1, 1000]);
}
