//! The format as others see it: `oci-spec` types parse every file lgreg writes, oras-py and
//! skopeo read the layout, the committed golden registry keeps loading, and the committed JSON
//! Schema matches the serde types.

use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::support::gene::{gene_dir, json, ok};

fn small_registry(tmp: &Path) -> PathBuf {
    let reg = tmp.join("reg");
    let a = gene_dir(
        &tmp.join("a"),
        "tleg",
        &[("embeddings", 1, 64), ("blocks.0", 2, 32)],
    );
    let b = gene_dir(
        &tmp.join("b"),
        "sws",
        &[("embeddings", 1, 64), ("stage.0", 3, 32)],
    );
    ok(
        &reg,
        &[
            "publish",
            a.to_str().unwrap(),
            "--name",
            "gene-a",
            "--version",
            "0.1.0",
        ],
    );
    ok(
        &reg,
        &[
            "publish",
            b.to_str().unwrap(),
            "--name",
            "gene-b",
            "--version",
            "1.0.0-rc.1",
        ],
    );
    reg
}

fn blob(reg: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs_err::read(reg.join("blobs/sha256").join(hex)).unwrap()
}

#[test]
fn oci_spec_types_parse_the_index_and_every_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = small_registry(tmp.path());
    let layout: serde_json::Value =
        serde_json::from_slice(&fs_err::read(reg.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: ImageIndex =
        serde_json::from_slice(&fs_err::read(reg.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests().len(), 2);
    for d in index.manifests() {
        let name = d.annotations().as_ref().unwrap()["org.opencontainers.image.ref.name"].clone();
        assert!(name.starts_with("gene-"), "{name}");
        let bytes = blob(&reg, d.digest().as_ref());
        assert_eq!(bytes.len() as u64, d.size());
        let m: ImageManifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            m.artifact_type().as_ref().unwrap().to_string(),
            "application/vnd.lgreg.gene.v1"
        );
        assert_eq!(
            m.config().media_type().to_string(),
            "application/vnd.lgreg.gene.config.v1+json"
        );
        for l in m.layers() {
            assert_eq!(
                l.media_type().to_string(),
                "application/vnd.lgreg.tensors.v1+safetensors"
            );
            let title = &l.annotations().as_ref().unwrap()["org.opencontainers.image.title"];
            assert!(title.ends_with(".safetensors"));
            assert_eq!(blob(&reg, l.digest().as_ref()).len() as u64, l.size());
        }
    }
}

fn have_python_module(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn required(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| v == "1")
}

/// oras-py (PyPI `oras` >= 0.2.43) validates the layout and walks each tag's blobs; Python's
/// hashlib checks every digest.
#[test]
fn oras_py_reads_the_layout() {
    if !have_python_module("oras.layout.layout") {
        assert!(
            !required("LGREG_REQUIRE_ORAS"),
            "LGREG_REQUIRE_ORAS=1 but python3 cannot import `oras.layout.layout`: run `python3 -m pip install 'oras>=0.2.43'`"
        );
        eprintln!(
            "skipped: oras-py is not installed (set LGREG_REQUIRE_ORAS=1 to make this fatal)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = small_registry(tmp.path());
    let script = r#"
import hashlib, pathlib, sys
from oras.layout.layout import Layout
root = sys.argv[1]
layout = Layout(root)
for tag in ["gene-a:0.1.0", "gene-b:1.0.0-rc.1"]:
    blobs = layout.get_ordered_blobs(tag)
    assert len(blobs) == 4, blobs
    for d in blobs:
        algo, hexd = d.split(":")
        data = layout.digest_to_blob_path(d).read_bytes()
        assert hashlib.sha256(data).hexdigest() == hexd, d
    print(tag, len(blobs))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&reg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oras-py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("gene-b:1.0.0-rc.1 4"));
}

/// skopeo (Debian package `skopeo`) copies each tag to a new layout, checking every digest,
/// and returns the manifest bytes unchanged.
#[test]
fn skopeo_copies_the_layout() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        assert!(
            !required("LGREG_REQUIRE_SKOPEO"),
            "LGREG_REQUIRE_SKOPEO=1 but `skopeo` is not installed: run `apt-get install -y skopeo`"
        );
        eprintln!(
            "skipped: skopeo is not installed (set LGREG_REQUIRE_SKOPEO=1 to make this fatal)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = small_registry(tmp.path());
    let copy = tmp.path().join("copy");
    let digest = json(&reg, &["show", "gene-a:0.1.0"])["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let src = format!("oci:{}:gene-a:0.1.0", reg.display());
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &src])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(raw.stdout, blob(&reg, &digest));
    let dst = format!("oci:{}:gene-a:0.1.0", copy.display());
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", &src, &dst])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(blob(&copy, &digest), blob(&reg, &digest));

    // A flipped byte in a unit makes skopeo refuse the copy too.
    let show = json(&reg, &["show", "gene-a:0.1.0"]);
    let unit = show["units"][1]["digest"].as_str().unwrap();
    let path = reg
        .join("blobs/sha256")
        .join(unit.strip_prefix("sha256:").unwrap());
    let mut bytes = fs_err::read(&path).unwrap();
    bytes[20] ^= 1;
    fs_err::write(&path, bytes).unwrap();
    let bad = tmp.path().join("bad");
    let dst = format!("oci:{}:gene-a:0.1.0", bad.display());
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", &src, &dst])
        .output()
        .unwrap();
    assert!(!out.status.success(), "skopeo copied a corrupt blob");
}

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("registry/examples/v1")
}

/// The committed v1 registry must load forever.
#[test]
fn golden_v1_registry_loads_shows_and_verifies() {
    let reg = golden();
    let ls = json(&reg, &["ls"]);
    let tags: Vec<&str> = ls["genes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["tiny-sws:1.0.0", "tiny-tleg:0.1.0"]);
    let a = json(&reg, &["show", "tiny-tleg:0.1.0"]);
    let b = json(&reg, &["show", "tiny-sws"]);
    assert_eq!(a["card"]["fidelity"], "approximate");
    assert_eq!(
        a["units"][0]["digest"], b["units"][0]["digest"],
        "the golden genes share their embeddings"
    );
    assert_eq!(
        a["digest"],
        include_str!("../../registry/examples/v1-tiny-tleg.digest").trim()
    );
    let v = json(&reg, &["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    let tmp = tempfile::tempdir().unwrap();
    ok(
        &reg,
        &[
            "export",
            "tiny-tleg:0.1.0",
            "-o",
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
}

/// `registry/schema/gene-config.v1.json` is generated from the serde types; regenerate it with
/// `LGREG_BLESS=1 cargo test --test it schema`.
#[test]
fn gene_config_schema_matches_the_types() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("registry/schema/gene-config.v1.json");
    let generated = lgreg::registry::manifest::gene_card_schema();
    if required("LGREG_BLESS") {
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(&path, &generated).unwrap();
    }
    let committed = fs_err::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "`{}` is stale: run `LGREG_BLESS=1 cargo test --test it schema` and commit it",
        path.display()
    );
}

/// Make the golden registry (run once with `LGREG_MAKE_GOLDEN=1`; it is committed).
#[test]
fn make_golden_registry_when_asked() {
    if !required("LGREG_MAKE_GOLDEN") {
        return;
    }
    let reg = golden();
    let _ = fs_err::remove_dir_all(&reg);
    let tmp = tempfile::tempdir().unwrap();
    let a = gene_dir(
        &tmp.path().join("a"),
        "tleg",
        &[("embeddings", 1, 16), ("blocks.0", 2, 8)],
    );
    let b = gene_dir(
        &tmp.path().join("b"),
        "sws",
        &[("embeddings", 1, 16), ("stage.0", 3, 8)],
    );
    let p = json(
        &reg,
        &[
            "publish",
            a.to_str().unwrap(),
            "--name",
            "tiny-tleg",
            "--version",
            "0.1.0",
        ],
    );
    ok(
        &reg,
        &[
            "publish",
            b.to_str().unwrap(),
            "--name",
            "tiny-sws",
            "--version",
            "1.0.0",
        ],
    );
    fs_err::remove_dir_all(reg.join(".lgreg")).unwrap();
    let digest = p["digest"].as_str().unwrap();
    fs_err::write(
        reg.parent().unwrap().join("v1-tiny-tleg.digest"),
        format!("{digest}\n"),
    )
    .unwrap();
}
