//! Interop with Python's `huggingface_hub` over one cache, both ways.
//!
//! These run when `python3` (or `LGREG_PYTHON`) can import `huggingface_hub`, skip otherwise,
//! and fail when `LGREG_REQUIRE_PY_HUB=1` is set but it cannot (CI sets it after installing it).

use std::process::Command;

use crate::pull::{MINILM, Sandbox};
use crate::support::hub::FakeHub;
use crate::support::{json_result, minilm_dir};

/// The Python interpreter that has `huggingface_hub`, or `None` to skip.
fn python() -> Option<String> {
    crate::support::python_with(
        "huggingface_hub",
        "LGREG_REQUIRE_PY_HUB",
        "pip install huggingface_hub==2.4.0",
    )
}

fn run_py(py: &str, sb: &Sandbox, offline: bool, script: &str) -> String {
    let mut cmd = Command::new(py);
    cmd.arg("-c")
        .arg(script)
        .env("HF_HUB_CACHE", sb.cache())
        .env("HF_HOME", sb.dir.path().join("hf-home"))
        .env("HF_ENDPOINT", &sb.hub.url)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_TOKEN");
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn huggingface_hub_reads_what_lgreg_pulled() {
    let Some(py) = python() else { return };
    let hub = FakeHub::start();
    let commit = hub.add_dir(MINILM, &minilm_dir());
    let sb = Sandbox::new(hub);
    let r = sb.run(&["pull", MINILM, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let snapshot = json_result(&r)["snapshot"].as_str().unwrap().to_string();
    let script = format!(
        r#"
import hashlib, os
from huggingface_hub import hf_hub_download, scan_cache_dir
p = hf_hub_download("{MINILM}", "model.safetensors", local_files_only=True)
c = hf_hub_download("{MINILM}", "config.json", local_files_only=True)
print(p)
print(c)
print(hashlib.sha256(open(p, "rb").read()).hexdigest())
info = scan_cache_dir()
assert not info.warnings, info.warnings
repo = [r for r in info.repos if r.repo_id == "{MINILM}"][0]
revs = list(repo.revisions)
assert [r.commit_hash for r in revs] == ["{commit}"], revs
assert "main" in revs[0].refs, revs[0].refs
assert len(revs[0].files) == 6, revs[0].files
print("ok")
"#
    );
    let out = run_py(&py, &sb, true, &script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("{snapshot}/model.safetensors"));
    assert_eq!(lines[1], format!("{snapshot}/config.json"));
    let oid = &sb
        .hub
        .files(MINILM)
        .into_iter()
        .find(|f| f.name == "model.safetensors")
        .unwrap()
        .sha256;
    assert_eq!(lines[2], oid);
    assert_eq!(lines[3], "ok");
}

#[test]
fn lgreg_reads_what_huggingface_hub_downloaded() {
    let Some(py) = python() else { return };
    let hub = FakeHub::start();
    let commit = hub.add_dir(MINILM, &minilm_dir());
    let sb = Sandbox::new(hub);
    let script = format!(
        r#"
from huggingface_hub import snapshot_download
print(snapshot_download("{MINILM}", allow_patterns=["*.json", "*.safetensors", "vocab.txt"]))
"#
    );
    let out = run_py(&py, &sb, false, &script);
    assert!(out.trim().ends_with(&commit), "{out}");
    let served = sb.hub.bytes_served();

    // Offline, the other verbs read the Python-filled cache.
    let mut cmd = sb.cmd();
    cmd.env("HF_HUB_OFFLINE", "1")
        .args(["inspect", MINILM, "--json"]);
    let r = sb.run_with(&mut cmd);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json_result(&r)["family"], "bert");

    // Online, lgreg reuses Python's blobs instead of downloading them again.
    let r = sb.run(&["pull", MINILM, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    assert_eq!(j["bytes_downloaded"], 0, "{j}");
    assert_eq!(sb.hub.bytes_served(), served);
}
