//! `inspect` and `convert` on GGUF input through the binary: the real SmolLM2 fixture, and
//! malformed files that must be refused without leaving output behind.

use crate::support::{json_result, listing, run_str, smollm2_gguf};

#[test]
fn inspect_smollm2_reports_llama() {
    let home = tempfile::tempdir().unwrap();
    let r = run_str(
        home.path(),
        &["inspect", "--json", smollm2_gguf().to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    assert_eq!(j["family"], "llama");
    assert_eq!(j["format"], "gguf");
    assert_eq!(j["layers"], 30);
    assert_eq!(j["hidden_size"], 576);
    assert_eq!(j["heads"], 9);
    assert_eq!(j["kv_heads"], 3);
    assert_eq!(j["intermediate_size"], 1536);
    assert_eq!(j["vocab_size"], 49152);
    assert_eq!(j["parameters"], 134_515_008u64);
    assert_eq!(j["tensors"], 272);
}

/// A minimal GGUF v3: `general.architecture = llama` and one tensor of ggml type `ty`.
fn tiny_gguf(ty: u32, data: &[u8]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // kv pairs
    string(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    string(&mut b, "llama");
    string(&mut b, "token_embd.weight");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&32u64.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend_from_slice(data);
    b
}

fn assert_refused(bytes: &[u8], needles: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("bad.gguf");
    std::fs::write(&input, bytes).unwrap();
    let before = listing(root.path());
    let out = root.path().join("out");
    for args in [
        vec!["convert", input.to_str().unwrap(), out.to_str().unwrap()],
        vec!["inspect", input.to_str().unwrap()],
    ] {
        let r = run_str(root.path(), &args);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains("bad.gguf"),
            "the message names the file: {}",
            r.stderr
        );
        for needle in needles {
            assert!(
                r.stderr.contains(needle),
                "expected `{needle}` in: {}",
                r.stderr
            );
        }
    }
    assert!(!out.exists(), "output left behind");
    assert_eq!(listing(root.path()), before, "something was written");
}

#[test]
fn unknown_quant_type_is_refused() {
    assert_refused(&tiny_gguf(99, &[0u8; 256]), &["token_embd.weight", "99"]);
}

#[test]
fn truncated_tensor_data_is_refused() {
    // 64 f32 values need 256 bytes; only 100 are there.
    assert_refused(
        &tiny_gguf(0, &[0u8; 100]),
        &["token_embd.weight", "truncated"],
    );
}

#[test]
fn truncated_real_file_is_refused() {
    let full = std::fs::read(smollm2_gguf()).unwrap();
    assert_refused(&full[..full.len() / 2], &["truncated"]);
}
