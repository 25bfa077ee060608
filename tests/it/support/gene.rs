//! Synthetic genes and a sandboxed `lgreg` runner for the registry tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Deterministic pseudo-random bytes (xorshift64*), as f32 values in [-1, 1).
pub fn floats(seed: u64, count: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(count * 4);
    for _ in 0..count {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let v = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Write a safetensors file holding one f32 tensor `name` of `count` seeded values.
pub fn write_unit(path: &Path, name: &str, seed: u64, count: usize) {
    let data = floats(seed, count);
    let mut header = format!(
        "{{\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{count}],\"data_offsets\":[0,{}]}}}}",
        data.len()
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    fs_err::write(path, bytes).unwrap();
}

/// A unit of a synthetic gene: file stem, seed, number of f32 values.
pub type UnitSpec<'a> = (&'a str, u64, usize);

/// Make a gene directory `dir` with `gene.json` and one unit per spec.
pub fn gene_dir(dir: &Path, algorithm: &str, units: &[UnitSpec<'_>]) -> PathBuf {
    gene_dir_with(dir, algorithm, units, None)
}

/// Like [`gene_dir`], with a `derived_from` manifest digest.
pub fn gene_dir_with(
    dir: &Path,
    algorithm: &str,
    units: &[UnitSpec<'_>],
    derived_from: Option<&str>,
) -> PathBuf {
    fs_err::create_dir_all(dir).unwrap();
    let mut names = Vec::new();
    for (stem, seed, count) in units {
        let file = format!("{stem}.safetensors");
        write_unit(&dir.join(&file), &format!("{stem}.weight"), *seed, *count);
        names.push(file);
    }
    let mut card = serde_json::json!({
        "schema_version": 1,
        "algorithm": algorithm,
        "fidelity": "approximate",
        "recipe": {"name": format!("{algorithm}-llama"), "version": "1", "params": {"layers": 2}},
        "ancestor": {"repo": "HuggingFaceTB/SmolLM2-135M", "commit": "0123456789abcdef0123456789abcdef01234567", "files": {}},
        "family": {"name": "llama", "hyper_parameters": {"hidden_size": 8}},
        "roles": {},
        "lgreg_version": "0.1.0",
        "created": "2026-01-01T00:00:00Z",
        "units": names,
    });
    if let Some(d) = derived_from {
        card["derived_from"] = d.into();
    }
    fs_err::write(
        dir.join("gene.json"),
        serde_json::to_vec_pretty(&card).unwrap(),
    )
    .unwrap();
    dir.to_path_buf()
}

/// `lgreg --registry REG ...`.
pub fn lgreg(registry: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lgreg"));
    cmd.arg("--registry").arg(registry).env_remove("LGREG_HOME");
    cmd
}

/// Run and return the output.
pub fn run(registry: &Path, args: &[&str]) -> Output {
    lgreg(registry).args(args).output().unwrap()
}

/// Run, assert success, return stdout.
pub fn ok(registry: &Path, args: &[&str]) -> String {
    let out = run(registry, args);
    assert!(
        out.status.success(),
        "lgreg {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run, assert failure, return stderr.
pub fn fails(registry: &Path, args: &[&str]) -> String {
    let out = run(registry, args);
    assert!(!out.status.success(), "lgreg {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run with `--json` and parse the result line.
pub fn json(registry: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(registry, &all);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// Every file under `root` with its bytes, except lock files (opened, never changed).
pub fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if !root.exists() {
        return out;
    }
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs_err::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push((p.display().to_string(), Vec::new()));
                todo.push(p);
            } else if p.extension().is_none_or(|x| x != "lock") {
                out.push((p.display().to_string(), fs_err::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The blob file names under `blobs/sha256`.
pub fn blobs(registry: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs_err::read_dir(registry.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
