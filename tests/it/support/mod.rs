//! Shared test support: fixture paths and small helpers.

#![allow(dead_code)]

use std::path::PathBuf;

/// Root of the fetched fixtures (`scripts/fetch-fixtures.sh`), overridable with `LGREG_FIXTURES`.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("LGREG_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fixtures"),
    }
}

/// Path of one fixture; panics with the fix when it has not been fetched.
pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures().join(rel);
    assert!(
        p.exists(),
        "fixture `{}` is missing: run `scripts/fetch-fixtures.sh` first",
        p.display()
    );
    p
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF.
pub fn smollm2_gguf() -> PathBuf {
    fixture("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The all-MiniLM-L6-v2 HF folder.
pub fn minilm_dir() -> PathBuf {
    fixture("minilm")
}

pub mod gene;
