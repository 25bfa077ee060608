//! `convert` and `inspect` on the real all-MiniLM-L6-v2 fixture.

use std::path::Path;

use lgreg::checkpoint;

use crate::support::{json_result, minilm_dir, run, run_str};

fn os(p: &Path) -> &std::ffi::OsStr {
    p.as_os_str()
}

#[test]
fn inspect_minilm_reports_bert() {
    let home = tempfile::tempdir().unwrap();
    let r = run(
        home.path(),
        &[
            os(Path::new("inspect")),
            "--json".as_ref(),
            os(&minilm_dir()),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    assert_eq!(j["family"], "bert");
    assert_eq!(j["layers"], 6);
    assert_eq!(j["hidden_size"], 384);
    assert_eq!(j["heads"], 12);
    assert_eq!(j["parameters"], 22_713_728);
    assert_eq!(j["per_layer"].as_array().unwrap().len(), 6);
}

#[test]
fn inspect_text_goes_to_stdout_only() {
    let home = tempfile::tempdir().unwrap();
    let r = run(home.path(), &[os(Path::new("inspect")), os(&minilm_dir())]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("bert"), "{}", r.stdout);
    assert!(r.stdout.contains("22713728"), "{}", r.stdout);
    assert!(r.stderr.is_empty(), "stderr: {}", r.stderr);
}

/// Max relative error allowed by bf16 rounding (8 bits of mantissa: half an ulp is 2^-8).
const BF16_REL: f32 = 1.0 / 256.0;

#[test]
fn bf16_round_trip_stays_within_rounding() {
    let home = tempfile::tempdir().unwrap();
    let bf16 = home.path().join("bf16");
    let back = home.path().join("back");
    let r = run(
        home.path(),
        &[
            "convert".as_ref(),
            os(&minilm_dir()),
            os(&bf16),
            "--dtype".as_ref(),
            "bf16".as_ref(),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(
        home.path(),
        &[
            "convert".as_ref(),
            os(&bf16),
            os(&back),
            "--dtype".as_ref(),
            "f32".as_ref(),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let orig = checkpoint::open(&minilm_dir()).unwrap();
    let round = checkpoint::open(&back).unwrap();
    assert_eq!(orig.source.tensors(), round.source.tensors());
    let mut checked = 0;
    for t in orig.source.tensors() {
        if !t.dtype.is_float() {
            assert_eq!(
                orig.source.read(&t.name).unwrap(),
                round.source.read(&t.name).unwrap()
            );
            continue;
        }
        let a = orig.source.read_f32(&t.name).unwrap();
        let b = round.source.read_f32(&t.name).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= x.abs() * BF16_REL + f32::MIN_POSITIVE,
                "{}: {x} vs {y}",
                t.name
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 103);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bf16.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "bfloat16");
}

#[test]
fn three_shards_and_back_are_lossless_and_deterministic() {
    let home = tempfile::tempdir().unwrap();
    // 90.9 MB of tensors in shards of at most 45 MB gives three: the small embeddings, the 46.9 MB word
    // embeddings alone (above the limit), and the encoder with the pooler.
    let sharded = home.path().join("sharded");
    let r = run(
        home.path(),
        &[
            "convert".as_ref(),
            os(&minilm_dir()),
            os(&sharded),
            "--shard-size".as_ref(),
            "45MB".as_ref(),
            "--json".as_ref(),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let files = json_result(&r)["weight_files"].as_array().unwrap().len();
    assert_eq!(files, 3);
    assert!(sharded.join("model.safetensors.index.json").is_file());
    assert!(sharded.join("tokenizer.json").is_file());

    let single_a = home.path().join("a");
    let single_b = home.path().join("b");
    assert_eq!(
        run(
            home.path(),
            &["convert".as_ref(), os(&sharded), os(&single_a)]
        )
        .code,
        0
    );
    assert_eq!(
        run(
            home.path(),
            &["convert".as_ref(), os(&sharded), os(&single_b)]
        )
        .code,
        0
    );
    let a = std::fs::read(single_a.join("model.safetensors")).unwrap();
    let b = std::fs::read(single_b.join("model.safetensors")).unwrap();
    assert!(a == b, "two conversions of the same input differ");

    let orig = checkpoint::open(&minilm_dir()).unwrap();
    let back = checkpoint::open(&single_a).unwrap();
    assert_eq!(orig.source.tensors(), back.source.tensors());
    for t in orig.source.tensors() {
        assert!(
            orig.source.read(&t.name).unwrap() == back.source.read(&t.name).unwrap(),
            "{}",
            t.name
        );
    }
}

#[test]
fn existing_output_needs_force() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    let r = run_str(
        home.path(),
        &[
            "convert",
            minilm_dir().to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"mine");
    let r = run_str(
        home.path(),
        &[
            "convert",
            minilm_dir().to_str().unwrap(),
            out.to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!out.join("keep.txt").exists());
    assert!(out.join("model.safetensors").is_file());
}
