//! Malformed safetensors input: every case is refused with a clear message, a non-zero exit,
//! and no output left behind.

use std::path::Path;

use serde_json::json;

use crate::support::{listing, run_str, safetensors_bytes};

const CONFIG: &str = r#"{"model_type":"bert","architectures":["BertModel"],"hidden_size":4,"num_hidden_layers":1,"num_attention_heads":1,"intermediate_size":8,"vocab_size":3}"#;

/// Write a model directory holding `weights` as model.safetensors plus a bert config.
fn model_dir(root: &Path, weights: &[u8]) -> std::path::PathBuf {
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    dir
}

fn valid_header() -> serde_json::Value {
    json!({
        "embeddings.word_embeddings.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
        "encoder.layer.0.attention.self.query.weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [48, 112]},
    })
}

/// Convert `weights` and check the refusal: exit 1, `needle` in the message, no output.
fn assert_refused(weights: &[u8], needle: &str) {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(root.path(), weights);
    let before = listing(root.path());
    let out = root.path().join("out");
    let r = run_str(
        root.path(),
        &["convert", dir.to_str().unwrap(), out.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(needle),
        "expected `{needle}` in: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("model.safetensors"),
        "the message names the file: {}",
        r.stderr
    );
    assert!(!out.exists(), "output left behind");
    assert_eq!(listing(root.path()), before, "something was written");
    let r = run_str(root.path(), &["inspect", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
}

#[test]
fn valid_file_converts() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(
        root.path(),
        &safetensors_bytes(&valid_header(), &[0u8; 112]),
    );
    let out = root.path().join("out");
    let r = run_str(
        root.path(),
        &["convert", dir.to_str().unwrap(), out.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn truncated_file() {
    let bytes = safetensors_bytes(&valid_header(), &[0u8; 112]);
    assert_refused(&bytes[..bytes.len() - 10], "truncated");
    assert_refused(&bytes[..5], "too short");
}

#[test]
fn header_length_beyond_end_of_file() {
    let mut bytes = safetensors_bytes(&valid_header(), &[0u8; 112]);
    bytes[..8].copy_from_slice(&10_000u64.to_le_bytes());
    assert_refused(&bytes, "runs past the end of the file");
}

#[test]
fn huge_header() {
    let mut bytes = safetensors_bytes(&valid_header(), &[0u8; 112]);
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_refused(&bytes, "exceeds the 100000000-byte limit");
}

#[test]
fn non_utf8_header() {
    let mut bytes = safetensors_bytes(&valid_header(), &[0u8; 112]);
    bytes[10] = 0xff;
    assert_refused(&bytes, "not UTF-8");
}

#[test]
fn overlapping_offsets() {
    let mut h = valid_header();
    h["encoder.layer.0.attention.self.query.weight"]["data_offsets"] = json!([40, 104]);
    assert_refused(&safetensors_bytes(&h, &[0u8; 104]), "overlaps");
}

#[test]
fn out_of_range_offsets() {
    let mut h = valid_header();
    h["encoder.layer.0.attention.self.query.weight"]["data_offsets"] = json!([48, 112]);
    assert_refused(
        &safetensors_bytes(&h, &[0u8; 100]),
        "past the 100-byte data section",
    );
}

#[test]
fn offsets_that_disagree_with_the_shape() {
    let mut h = valid_header();
    h["encoder.layer.0.attention.self.query.weight"]["data_offsets"] = json!([48, 100]);
    assert_refused(&safetensors_bytes(&h, &[0u8; 100]), "needs 64 bytes");
}

#[test]
fn unknown_dtype() {
    let mut h = valid_header();
    h["embeddings.word_embeddings.weight"]["dtype"] = json!("F31");
    assert_refused(&safetensors_bytes(&h, &[0u8; 112]), "unknown dtype `F31`");
}

#[test]
fn shard_named_by_index_is_missing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let index = json!({"metadata": {"total_size": 112}, "weight_map": {
        "embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors",
        "encoder.layer.0.attention.self.query.weight": "model-00002-of-00002.safetensors"}});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let h = json!({"embeddings.word_embeddings.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}});
    std::fs::write(
        dir.join("model-00001-of-00002.safetensors"),
        safetensors_bytes(&h, &[0u8; 48]),
    )
    .unwrap();
    let out = root.path().join("out");
    let r = run_str(
        root.path(),
        &["convert", dir.to_str().unwrap(), out.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("model-00002-of-00002.safetensors"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
    assert!(!out.exists());
}

#[test]
fn shard_name_with_path_traversal_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let index = json!({"weight_map": {"embeddings.word_embeddings.weight": "../../etc/passwd"}});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let r = run_str(root.path(), &["inspect", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("../../etc/passwd"), "{}", r.stderr);
    assert!(r.stderr.contains("not a plain file name"), "{}", r.stderr);
}

#[test]
fn unknown_family_lists_the_known_ones() {
    let root = tempfile::tempdir().unwrap();
    let dir = model_dir(
        root.path(),
        &safetensors_bytes(&valid_header(), &[0u8; 112]),
    );
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type":"gpt2","architectures":["GPT2LMHeadModel"]}"#,
    )
    .unwrap();
    let r = run_str(root.path(), &["inspect", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("gpt2"), "{}", r.stderr);
    assert!(r.stderr.contains("`llama`, `vit`, `bert`"), "{}", r.stderr);
}
