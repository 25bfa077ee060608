//! `lgreg extract` and `lgreg spawn` end to end: sws layouts, descendants of real ancestors at
//! two depths, determinism, registry records, and requests that must be refused.

use std::path::{Path, PathBuf};

use lgreg::checkpoint::open;
use lgreg::nn::{Input, Mode, Model};
use serde_json::Value;

use crate::support::gene::snapshot;
use crate::support::synth::{hashed, tiny_llama, write_model_dir};
use crate::support::{Run, Tmpfs, json_result, run_str};

fn ok(home: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json", "--no-progress"];
    all.extend_from_slice(args);
    let run = run_str(home, &all);
    assert_eq!(run.code, 0, "lgreg {args:?}: {}", run.stderr);
    json_result(&run)
}

fn fails(home: &Path, args: &[&str]) -> Run {
    let run = run_str(home, args);
    assert_eq!(
        run.code, 1,
        "lgreg {args:?} should fail with exit 1: {run:?}"
    );
    assert!(run.stderr.contains("hint:"), "no hint: {}", run.stderr);
    run
}

fn registry(home: &Path) -> PathBuf {
    home.join("lgreg-home/registry")
}

fn tensor(dir: &Path, name: &str) -> Vec<f32> {
    open(dir).unwrap().source.read_f32(name).unwrap()
}

fn q_proj(layer: usize) -> String {
    format!("model.layers.{layer}.self_attn.q_proj.weight")
}

/// Load a descendant with lgreg's engine, check its config against its tensors, run it.
fn load_and_run(dir: &Path, layers: usize) {
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], layers, "{}", dir.display());
    let ckpt = open(dir).unwrap();
    let model = Model::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.config.layers, layers);
    let ids =
        candle_core::Tensor::new(&[[1u32, 5, 9, 2, 7, 3]], &candle_core::Device::Cpu).unwrap();
    let mask =
        candle_core::Tensor::ones((1, 6), candle_core::DType::U32, &candle_core::Device::Cpu)
            .unwrap();
    let out = model
        .forward(
            &Input::Tokens {
                ids,
                mask: Some(mask),
            },
            Mode::Infer,
            false,
        )
        .unwrap()
        .output;
    let values: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    assert!(
        values.iter().all(|v| v.is_finite()),
        "non-finite output from {}",
        dir.display()
    );
}

/// A tiny synthetic llama ancestor of `layers` layers in `home/anc`, with a gene `name`
/// extracted from it by `algo`.
fn tiny_gene(home: &Path, layers: usize, algo: &str, name: &str) -> (PathBuf, Value) {
    let ancestor = home.join("anc");
    if !ancestor.exists() {
        write_model_dir(&ancestor, &tiny_llama(layers), hashed);
    }
    let gene = ok(
        home,
        &[
            "extract",
            "--algo",
            algo,
            ancestor.to_str().unwrap(),
            "--name",
            name,
        ],
    );
    (ancestor, gene)
}

#[test]
fn sws_gene_of_a_16_layer_ancestor_gives_the_published_12_layer_layout() {
    let home = tempfile::tempdir().unwrap();
    let ancestor = home.path().join("anc16");
    write_model_dir(&ancestor, &tiny_llama(16), hashed);
    let gene = ok(
        home.path(),
        &[
            "extract",
            "--algo",
            "sws",
            ancestor.to_str().unwrap(),
            "--name",
            "anc-sws",
        ],
    );
    assert_eq!(
        gene["diagnostics"]["stage_lengths"],
        serde_json::json!([3, 3, 4, 3, 3])
    );
    assert_eq!(gene["fidelity"], "approximate");
    let out = home.path().join("d12");
    ok(
        home.path(),
        &[
            "spawn",
            "anc-sws",
            "--layers",
            "12",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let middles = [1, 4, 7, 11, 14];
    let layout = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4];
    for (i, stage) in layout.iter().enumerate() {
        assert_eq!(
            tensor(&out, &q_proj(i)),
            tensor(&ancestor, &q_proj(middles[*stage])),
            "layer {i}"
        );
    }
    load_and_run(&out, 12);

    // Fewer layers than stages needs --stages; a 0 drops a stage.
    let err = fails(
        home.path(),
        &["spawn", "anc-sws", "--layers", "4", "-o", "x"],
    );
    assert!(err.stderr.contains("--stages"), "{}", err.stderr);
    let d4 = home.path().join("d4");
    ok(
        home.path(),
        &[
            "spawn",
            "anc-sws",
            "--layers",
            "4",
            "--stages",
            "1,1,0,1,1",
            "-o",
            d4.to_str().unwrap(),
        ],
    );
    assert_eq!(tensor(&d4, &q_proj(2)), tensor(&ancestor, &q_proj(11)));
    let err = fails(
        home.path(),
        &[
            "spawn", "anc-sws", "--layers", "12", "--stages", "3,3,3,3", "-o", "y",
        ],
    );
    assert!(err.stderr.contains("add up to"), "{}", err.stderr);
}

#[test]
fn spawn_is_deterministic_and_recorded_under_its_gene() {
    let home = tempfile::tempdir().unwrap();
    let (ancestor, gene) = tiny_gene(home.path(), 8, "tleg", "tiny-tleg");
    let r2 = gene["diagnostics"]["r2"].as_object().unwrap();
    assert!(
        r2.values()
            .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())),
        "{r2:?}"
    );
    let (a, b) = (home.path().join("a"), home.path().join("b"));
    let first = ok(
        home.path(),
        &[
            "spawn",
            "tiny-tleg:0.1.0",
            "--layers",
            "5",
            "--seed",
            "3",
            "-o",
            a.to_str().unwrap(),
        ],
    );
    let second = ok(
        home.path(),
        &[
            "spawn",
            "tiny-tleg",
            "--layers",
            "5",
            "--seed",
            "3",
            "-o",
            b.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    assert_eq!(first["record"], "tiny-tleg-l5-s3:0.1.0");
    assert_eq!(first["record_digest"], second["record_digest"]);
    let lineage = ok(home.path(), &["lineage", "tiny-tleg:0.1.0"]);
    let children: Vec<&str> = lineage["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["digest"].as_str().unwrap())
        .collect();
    assert!(
        children.contains(&first["record_digest"].as_str().unwrap()),
        "{lineage}"
    );
    let readme = std::fs::read_to_string(a.join("README.md")).unwrap();
    assert!(
        readme.contains(gene["digest"].as_str().unwrap()),
        "{readme}"
    );
    ok(home.path(), &["verify"]);

    // A random baseline keeps the shapes and inherits nothing.
    let r = home.path().join("r");
    ok(
        home.path(),
        &[
            "spawn",
            "tiny-tleg",
            "--layers",
            "5",
            "--random-baseline",
            "-o",
            r.to_str().unwrap(),
        ],
    );
    let embed = "model.embed_tokens.weight";
    assert_eq!(tensor(&r, embed).len(), tensor(&ancestor, embed).len());
    assert_ne!(tensor(&r, embed), tensor(&ancestor, embed));
    load_and_run(&r, 5);

    // The random-layers control keeps the gene's globals and draws its layers.
    let rl = home.path().join("rl");
    ok(
        home.path(),
        &[
            "spawn",
            "tiny-tleg",
            "--layers",
            "5",
            "--random-layers",
            "-o",
            rl.to_str().unwrap(),
        ],
    );
    assert_eq!(tensor(&rl, embed), tensor(&ancestor, embed));
    let q = "model.layers.0.self_attn.q_proj.weight";
    assert_eq!(
        tensor(&rl, q),
        tensor(&r, q),
        "the same seed draws the same layers"
    );
    assert_ne!(tensor(&rl, q), tensor(&a, q));
    let readme = std::fs::read_to_string(rl.join("README.md")).unwrap();
    assert!(
        readme.contains("inherits the gene's embeddings"),
        "{readme}"
    );
    load_and_run(&rl, 5);
}

#[test]
fn bad_spawn_requests_are_refused_and_change_nothing() {
    let home = tempfile::tempdir().unwrap();
    let (ancestor, _) = tiny_gene(home.path(), 6, "tleg", "t");
    tiny_gene(home.path(), 6, "sws", "s");
    let before = snapshot(&registry(home.path()));
    let out = home.path().join("out");
    let o = out.to_str().unwrap();
    let err = fails(home.path(), &["spawn", "t", "--layers", "0", "-o", o]);
    assert!(err.stderr.contains("--layers"), "{}", err.stderr);
    let err = fails(
        home.path(),
        &[
            "spawn", "t", "--layers", "4", "--stages", "1,1,1,1", "-o", o,
        ],
    );
    assert!(
        err.stderr.contains("`--stages` is an option of sws genes"),
        "{}",
        err.stderr
    );
    let err = fails(
        home.path(),
        &["spawn", "s", "--layers", "6", "--front", "a", "-o", o],
    );
    assert!(err.stderr.contains("`--front`"), "{}", err.stderr);
    let err = fails(home.path(), &["spawn", "nope", "--layers", "4", "-o", o]);
    assert!(err.stderr.contains("nope"), "{}", err.stderr);
    let err = fails(
        home.path(),
        &["extract", "--algo", "tlge", ancestor.to_str().unwrap()],
    );
    assert!(err.stderr.contains("did you mean `tleg`"), "{}", err.stderr);
    assert!(!out.exists());
    assert_eq!(snapshot(&registry(home.path())), before);
    std::fs::create_dir(&out).unwrap();
    let err = fails(home.path(), &["spawn", "t", "--layers", "4", "-o", o]);
    assert!(err.stderr.contains("already exists"), "{}", err.stderr);
    assert_eq!(snapshot(&registry(home.path())), before);
}

#[test]
fn sws_and_tleg_descendants_of_smollm2_at_two_depths() {
    let home = tempfile::tempdir().unwrap();
    let smol = crate::engine::smollm2_f32();
    for algo in ["sws", "tleg"] {
        let gene = ok(
            home.path(),
            &["extract", "--algo", algo, smol.to_str().unwrap()],
        );
        let reference = gene["reference"].as_str().unwrap();
        assert!(reference.starts_with("smollm2-f32-"), "{reference}");
        for layers in [6, 9] {
            let out = home.path().join(format!("{algo}-{layers}"));
            let spawned = ok(
                home.path(),
                &[
                    "spawn",
                    reference,
                    "--layers",
                    &layers.to_string(),
                    "-o",
                    out.to_str().unwrap(),
                ],
            );
            let ppl = spawned["smoke"]["perplexity"].as_f64().unwrap();
            assert!(ppl.is_finite() && ppl > 1.0, "{spawned}");
            assert!(out.join("tokenizer.json").is_file());
            load_and_run(&out, layers);
        }
    }
}

#[test]
fn sws_and_tleg_descendants_of_minilm_at_two_depths() {
    let home = tempfile::tempdir().unwrap();
    let minilm = crate::support::minilm_dir();
    for algo in ["sws", "tleg"] {
        let gene = ok(
            home.path(),
            &[
                "extract",
                "--algo",
                algo,
                minilm.to_str().unwrap(),
                "--name",
                &format!("minilm-{algo}"),
            ],
        );
        for layers in [5, 8] {
            let out = home.path().join(format!("{algo}-{layers}"));
            let spawned = ok(
                home.path(),
                &[
                    "spawn",
                    gene["reference"].as_str().unwrap(),
                    "--layers",
                    &layers.to_string(),
                    "-o",
                    out.to_str().unwrap(),
                ],
            );
            let sims = spawned["smoke"]["similarities"].as_array().unwrap();
            assert_eq!(sims.len(), 3, "{spawned}");
            assert!(out.join("vocab.txt").is_file());
            load_and_run(&out, layers);
        }
    }
}

#[test]
fn a_corrupt_gene_unit_fails_spawn_and_leaves_nothing() {
    let home = tempfile::tempdir().unwrap();
    tiny_gene(home.path(), 4, "tleg", "t");
    let (hex, blob) = unit_blob(home.path(), "t", "tleg.slope.safetensors");
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&blob, bytes).unwrap();
    let out = home.path().join("out");
    let err = fails(
        home.path(),
        &["spawn", "t", "--layers", "3", "-o", out.to_str().unwrap()],
    );
    assert!(err.stderr.contains(&hex), "{}", err.stderr);
    assert!(!out.exists());
    let names: Vec<String> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".lgreg-tmp")),
        "{names:?}"
    );
    let ls = run_str(home.path(), &["ls"]);
    assert!(!ls.stdout.contains("t-l3-s0"), "{}", ls.stdout);
}

/// The blob of the unit `title` of gene `reference`.
fn unit_blob(home: &Path, reference: &str, title: &str) -> (String, PathBuf) {
    let show = ok(home, &["show", reference]);
    let unit = show["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["title"] == title)
        .unwrap();
    let hex = unit["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = registry(home).join("blobs/sha256").join(&hex);
    (hex, blob)
}

/// `spawn t --layers 3 -o OUT --seed SEED`.
fn spawn_args<'a>(out: &'a Path, seed: &'a str) -> Vec<&'a str> {
    vec![
        "spawn",
        "t",
        "--layers",
        "3",
        "-o",
        out.to_str().unwrap(),
        "--seed",
        seed,
    ]
}

#[test]
fn a_unit_changed_after_its_seal_is_hashed_again_and_refused() {
    let home = tempfile::tempdir().unwrap();
    tiny_gene(home.path(), 4, "tleg", "t");
    let (hex, blob) = unit_blob(home.path(), "t", "tleg.slope.safetensors");
    let seal = registry(home.path()).join(".lgreg/seals").join(&hex);
    // A fresh blob is not sealed (its change time is too recent); once settled, a full hash
    // seals it and the next spawn trusts the seal.
    let first = home.path().join("first");
    ok(
        home.path(),
        &["spawn", "t", "--layers", "3", "-o", first.to_str().unwrap()],
    );
    assert!(!seal.exists());
    std::thread::sleep(lgreg::registry::seal::SETTLE + std::time::Duration::from_millis(100));
    ok(home.path(), &spawn_args(&home.path().join("second"), "1"));
    assert!(seal.exists());

    // Flip a byte in place and put the modification time back: the change time still moves,
    // so the seal no longer matches and spawn hashes the unit and refuses it.
    let mtime = std::fs::metadata(&blob).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let file = std::fs::OpenOptions::new().write(true).open(&blob).unwrap();
    std::io::Write::write_all(&mut &file, &bytes).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let out = home.path().join("out");
    let err = fails(home.path(), &spawn_args(&out, "2"));
    assert!(err.stderr.contains(&hex), "{}", err.stderr);
    assert!(!out.exists());
    assert!(!seal.exists(), "a failed hash drops the seal");
    let verify = run_str(home.path(), &["verify"]);
    assert_eq!(verify.code, 1, "{verify:?}");
}

#[test]
fn gene_side_files_cannot_leave_or_overwrite_the_descendant() {
    let home = tempfile::tempdir().unwrap();
    tiny_gene(home.path(), 4, "tleg", "t");
    let exported = home.path().join("exported");
    ok(
        home.path(),
        &["export", "t", "-o", exported.to_str().unwrap()],
    );
    let gene_json = exported.join("gene.json");
    let mut card: Value = serde_json::from_slice(&std::fs::read(&gene_json).unwrap()).unwrap();
    card["units"]
        .as_array_mut()
        .unwrap()
        .push("files.safetensors".into());
    std::fs::write(&gene_json, serde_json::to_vec(&card).unwrap()).unwrap();
    for (i, bad) in ["../escaped.txt", "config.json"].iter().enumerate() {
        let header =
            serde_json::json!({ *bad: {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]} });
        std::fs::write(
            exported.join("files.safetensors"),
            crate::support::safetensors_bytes(&header, b"hi"),
        )
        .unwrap();
        let name = format!("evil{i}");
        ok(
            home.path(),
            &[
                "publish",
                exported.to_str().unwrap(),
                "--name",
                &name,
                "--version",
                "0.1.0",
            ],
        );
        let out = home.path().join(format!("out{i}"));
        let err = fails(
            home.path(),
            &["spawn", &name, "--layers", "2", "-o", out.to_str().unwrap()],
        );
        assert!(err.stderr.contains(bad), "{}", err.stderr);
        assert!(!out.exists());
    }
    assert!(!home.path().join("escaped.txt").exists());
}

#[test]
fn a_killed_writers_staging_directory_is_removed_by_the_next_spawn() {
    let home = tempfile::tempdir().unwrap();
    tiny_gene(home.path(), 4, "tleg", "t");
    let parent = home.path().join("outputs");
    std::fs::create_dir_all(&parent).unwrap();
    // A process that has exited stands for a spawn killed mid-write.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = parent.join(format!(".lgreg-tmp-{dead}-x1y2z3"));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors"), vec![0u8; 4096]).unwrap();
    // A staging directory of a live process (this test) is left alone.
    let live = parent.join(format!(".lgreg-tmp-{}-a1b2c3", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    let out = parent.join("d3");
    ok(
        home.path(),
        &["spawn", "t", "--layers", "3", "-o", out.to_str().unwrap()],
    );
    assert!(out.join("model.safetensors").is_file());
    assert!(
        !stale.exists(),
        "the dead writer's staging directory is gone"
    );
    assert!(live.exists(), "a live writer's staging directory stays");
    let left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn spawn_onto_a_full_disk_fails_at_once_and_leaves_nothing() {
    let home = tempfile::tempdir().unwrap();
    tiny_gene(home.path(), 4, "tleg", "t");
    let small = home.path().join("small");
    // 20 layers of the tiny model are about 750 KB of weights: more than this disk holds.
    let Some(tmpfs) = Tmpfs::mount(&small, "256k") else {
        return;
    };
    let out = small.join("d20");
    let run = run_str(
        home.path(),
        &["spawn", "t", "--layers", "20", "-o", out.to_str().unwrap()],
    );
    let left = crate::support::listing(&small);
    drop(tmpfs);
    assert_eq!(run.code, 2, "{run:?}");
    let file = out.join("model.safetensors");
    assert!(
        run.stderr.contains(&format!(
            "no space left on the device while writing `{}`",
            file.display()
        )),
        "the error names the output file: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: free some space"),
        "{}",
        run.stderr
    );
    assert!(
        left.is_empty(),
        "nothing is left on the full disk: {left:?}"
    );
    let ls = run_str(home.path(), &["ls"]);
    assert!(!ls.stdout.contains("t-l20-s0"), "{}", ls.stdout);
}

#[test]
fn spawn_onto_another_file_system_writes_the_same_bytes() {
    // The gene units live on this disk; a tmpfs output makes the in-kernel copy refuse
    // (EXDEV), so spawn falls back to writing the bytes itself, with the same result.
    let home = tempfile::tempdir().unwrap();
    tiny_gene(home.path(), 6, "sws", "t");
    let here = home.path().join("here");
    ok(home.path(), &spawn_args_at(&here, "7"));
    let other = home.path().join("other");
    let Some(tmpfs) = Tmpfs::mount(&other, "16m") else {
        return;
    };
    let there = other.join("d7");
    let run = run_str(home.path(), &spawn_args_at(&there, "7"));
    let bytes = std::fs::read(there.join("model.safetensors"));
    drop(tmpfs);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        bytes.unwrap(),
        std::fs::read(here.join("model.safetensors")).unwrap()
    );
}

/// `spawn t --layers LAYERS -o OUT` (sws genes have no random parts, so every such spawn of
/// one gene writes the same weights).
fn spawn_args_at<'a>(out: &'a Path, layers: &'a str) -> Vec<&'a str> {
    vec![
        "spawn",
        "t",
        "--layers",
        layers,
        "-o",
        out.to_str().unwrap(),
    ]
}
