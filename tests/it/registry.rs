//! The local registry through the real binary: round trips, dedupe, gc, concurrency, and
//! every kind of bad input (each must fail clearly and change nothing).

use std::path::Path;
use std::process::Stdio;

use crate::support::gene::{blobs, fails, gene_dir, gene_dir_with, json, lgreg, ok, run, snapshot};

fn blob_size(reg: &Path, digest: &str) -> u64 {
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs_err::metadata(reg.join("blobs/sha256").join(hex))
        .unwrap()
        .len()
}

#[test]
fn publish_show_export_round_trip_keeps_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("reg");
    let g = gene_dir(
        &tmp.path().join("g"),
        "tleg",
        &[("embeddings", 1, 64), ("blocks.0", 2, 32)],
    );
    let p = json(
        &reg,
        &[
            "publish",
            g.to_str().unwrap(),
            "--name",
            "g",
            "--version",
            "0.1.0",
        ],
    );
    let digest = p["digest"].as_str().unwrap().to_string();
    assert_eq!(p["unchanged"], false);

    let again = json(
        &reg,
        &[
            "publish",
            g.to_str().unwrap(),
            "--name",
            "g",
            "--version",
            "0.1.0",
        ],
    );
    assert_eq!(
        (again["digest"].as_str().unwrap(), &again["unchanged"]),
        (digest.as_str(), &true.into())
    );

    let show = json(&reg, &["show", "g"]);
    assert_eq!(show["digest"], digest.as_str());
    assert_eq!(show["card"]["algorithm"], "tleg");
    assert_eq!(show["units"][0]["title"], "embeddings.safetensors");
    assert_eq!(show["units"][0]["tensors"][0]["shape"][0], 64);

    let out = tmp.path().join("out");
    ok(&reg, &["export", "g:0.1.0", "-o", out.to_str().unwrap()]);
    let p2 = json(
        &reg,
        &[
            "publish",
            out.to_str().unwrap(),
            "--name",
            "g",
            "--version",
            "0.2.0",
        ],
    );
    assert_eq!(
        p2["digest"],
        digest.as_str(),
        "export then publish must give the same gene"
    );
    assert_eq!(p2["new_bytes"], 0);
    let d = &digest;
    assert_eq!(
        json(&reg, &["show", &format!("g@{d}")])["digest"],
        d.as_str()
    );
    assert!(ok(&reg, &["ls"]).contains("g:0.2.0"));
    ok(&reg, &["verify"]);
}

#[test]
fn shared_units_are_stored_once_and_gc_frees_exactly_the_unshared() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("reg");
    let a = gene_dir(
        &tmp.path().join("a"),
        "tleg",
        &[("embeddings", 7, 256), ("blocks.0", 1, 128)],
    );
    let b = gene_dir(
        &tmp.path().join("b"),
        "sws",
        &[("embeddings", 7, 256), ("blocks.0", 2, 100)],
    );
    let pa = json(
        &reg,
        &[
            "publish",
            a.to_str().unwrap(),
            "--name",
            "a",
            "--version",
            "1.0.0",
        ],
    );
    let pb = json(
        &reg,
        &[
            "publish",
            b.to_str().unwrap(),
            "--name",
            "b",
            "--version",
            "1.0.0",
        ],
    );
    // 2 manifests + 2 cards + 3 distinct units.
    assert_eq!(blobs(&reg).len(), 7);
    let own_b = fs_err::metadata(b.join("blocks.0.safetensors"))
        .unwrap()
        .len();
    assert_eq!(
        pb["new_bytes"].as_u64().unwrap(),
        own_b,
        "the shared unit was stored twice"
    );
    let _ = pa;

    let show_a = json(&reg, &["show", "a:1.0.0"]);
    let unshared: Vec<String> = vec![
        show_a["digest"].as_str().unwrap().into(),
        show_a["units"][1]["digest"].as_str().unwrap().into(),
    ];
    let manifest_a = &unshared[0];
    let m: serde_json::Value = serde_json::from_slice(
        &fs_err::read(
            reg.join("blobs/sha256")
                .join(manifest_a.strip_prefix("sha256:").unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    let config_a = m["config"]["digest"].as_str().unwrap().to_string();
    let expected: u64 = [manifest_a.as_str(), unshared[1].as_str(), config_a.as_str()]
        .iter()
        .map(|d| blob_size(&reg, d))
        .sum();

    ok(&reg, &["rm", "a:1.0.0"]);
    let before = snapshot(&reg);
    let dry = json(&reg, &["gc", "--dry-run"]);
    assert_eq!(dry["bytes_freed"].as_u64().unwrap(), expected);
    assert_eq!(snapshot(&reg), before, "--dry-run removed something");
    let gc = json(&reg, &["gc"]);
    assert_eq!(gc["bytes_freed"].as_u64().unwrap(), expected);
    assert_eq!(gc["removed"].as_array().unwrap().len(), 3);
    assert_eq!(blobs(&reg).len(), 4);
    ok(&reg, &["verify"]);
    ok(
        &reg,
        &[
            "export",
            "b:1.0.0",
            "-o",
            tmp.path().join("bx").to_str().unwrap(),
        ],
    );
    assert_eq!(json(&reg, &["gc"])["bytes_freed"], 0);
}

#[test]
fn lineage_follows_derived_from_and_subject_and_gc_keeps_the_subject() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("reg");
    let g = gene_dir(&tmp.path().join("g"), "tleg", &[("embeddings", 1, 16)]);
    let pg = json(
        &reg,
        &[
            "publish",
            g.to_str().unwrap(),
            "--name",
            "gene",
            "--version",
            "1.0.0",
        ],
    );
    let gd = pg["digest"].as_str().unwrap();
    let d = gene_dir_with(&tmp.path().join("d"), "tleg", &[("model", 3, 16)], Some(gd));
    json(
        &reg,
        &[
            "publish",
            d.to_str().unwrap(),
            "--name",
            "desc",
            "--version",
            "1.0.0",
        ],
    );
    let l = json(&reg, &["lineage", "gene"]);
    assert_eq!(l["children"][0]["tags"][0], "desc:1.0.0");
    let l = json(&reg, &["lineage", "desc:1.0.0"]);
    assert_eq!(l["parents"][0]["digest"], gd);
    assert_eq!(l["ancestor"]["repo"], "HuggingFaceTB/SmolLM2-135M");
    ok(&reg, &["rm", "gene:1.0.0"]);
    assert_eq!(json(&reg, &["gc"])["removed"].as_array().unwrap().len(), 0);
    ok(&reg, &["verify"]);
    assert!(ok(&reg, &["lineage", &format!("gene@{gd}")]).contains("desc:1.0.0"));
}

#[test]
fn eight_concurrent_publishers_all_land() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("reg");
    let dirs: Vec<_> = (0..8u64)
        .map(|i| {
            gene_dir(
                &tmp.path().join(format!("g{i}")),
                "tleg",
                &[("shared", 99, 4096), ("own", i, 65536)],
            )
        })
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            lgreg(&reg)
                .args([
                    "publish",
                    d.to_str().unwrap(),
                    "--name",
                    &format!("gene{i}"),
                    "--version",
                    "0.1.0",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ls = json(&reg, &["ls"]);
    assert_eq!(ls["genes"].as_array().unwrap().len(), 8);
    let v = json(&reg, &["verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    // 8 manifests + 1 card (the cards are equal) + 8 own units + 1 shared unit.
    assert_eq!(blobs(&reg).len(), 18);
}

/// A registry with one gene `g:0.1.0`; returns (tempdir, registry, gene dir).
fn one_gene() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("reg");
    let g = gene_dir(
        &tmp.path().join("g"),
        "tleg",
        &[("embeddings", 1, 64), ("blocks.0", 2, 32)],
    );
    ok(
        &reg,
        &[
            "publish",
            g.to_str().unwrap(),
            "--name",
            "g",
            "--version",
            "0.1.0",
        ],
    );
    (tmp, reg, g)
}

/// Run `args`, expect failure naming `needle`, and check the registry did not change.
fn refused(reg: &Path, args: &[&str], needle: &str) -> String {
    let before = snapshot(reg);
    let err = fails(reg, args);
    assert!(err.contains(needle), "{args:?}: `{needle}` not in: {err}");
    assert_eq!(snapshot(reg), before, "{args:?} changed the registry");
    err
}

#[test]
fn bad_versions_names_and_tags_are_refused_without_change() {
    let (tmp, reg, g) = one_gene();
    let gs = g.to_str().unwrap();
    let other = gene_dir(&tmp.path().join("o"), "tleg", &[("embeddings", 5, 64)]);
    let err = refused(
        &reg,
        &[
            "publish",
            other.to_str().unwrap(),
            "--name",
            "g",
            "--version",
            "0.1.0",
        ],
        "already exists with other content",
    );
    assert!(
        err.contains("hint: published versions are immutable"),
        "{err}"
    );
    refused(
        &reg,
        &["publish", gs, "--name", "g", "--version", "1.0"],
        "invalid version `1.0`",
    );
    refused(
        &reg,
        &["publish", gs, "--name", "g", "--version", "1.0.0+build"],
        "invalid version",
    );
    refused(
        &reg,
        &["publish", gs, "--name", "G/x", "--version", "1.0.0"],
        "invalid gene name `G/x`",
    );
    for bad in [
        "a/b:1.0.0",
        "..:1.0.0",
        "a..b:1.0.0",
        "a b:1.0.0",
        "a:1.0.0 x",
        "a:1.0.0$",
        "a:-1.0.0",
        "a",
    ] {
        refused(&reg, &["tag", "g:0.1.0", bad], bad);
    }
    refused(
        &reg,
        &["tag", "g:0.1.0", "g:0.1.0-bad!"],
        "invalid reference",
    );
    ok(&reg, &["tag", "g:0.1.0", "h:1.0.0"]);
    let o = tmp.path().join("o2");
    gene_dir(&o, "tleg", &[("x", 9, 8)]);
    ok(
        &reg,
        &[
            "publish",
            o.to_str().unwrap(),
            "--name",
            "o",
            "--version",
            "1.0.0",
        ],
    );
    refused(&reg, &["tag", "o:1.0.0", "h:1.0.0"], "already exists");
    refused(&reg, &["show", "nope:1.0.0"], "is not in the registry");
    refused(&reg, &["rm", "nope:1.0.0"], "is not in the registry");
}

#[test]
fn gene_dirs_without_gene_json_or_with_bad_units_are_refused() {
    let (tmp, reg, _) = one_gene();
    let empty = tmp.path().join("empty");
    fs_err::create_dir_all(&empty).unwrap();
    refused(
        &reg,
        &[
            "publish",
            empty.to_str().unwrap(),
            "--name",
            "x",
            "--version",
            "1.0.0",
        ],
        "`gene.json` is missing",
    );
    let bad = gene_dir(&tmp.path().join("bad"), "tleg", &[("u", 1, 8)]);
    fs_err::write(bad.join("u.safetensors"), b"not safetensors").unwrap();
    refused(
        &reg,
        &[
            "publish",
            bad.to_str().unwrap(),
            "--name",
            "x",
            "--version",
            "1.0.0",
        ],
        "invalid safetensors",
    );
    let esc = gene_dir(&tmp.path().join("esc"), "tleg", &[("u", 1, 8)]);
    let mut card: serde_json::Value =
        serde_json::from_slice(&fs_err::read(esc.join("gene.json")).unwrap()).unwrap();
    card["units"] = serde_json::json!(["../g/embeddings.safetensors"]);
    fs_err::write(esc.join("gene.json"), card.to_string()).unwrap();
    refused(
        &reg,
        &[
            "publish",
            esc.to_str().unwrap(),
            "--name",
            "x",
            "--version",
            "1.0.0",
        ],
        "is not a plain",
    );
    card["units"] = serde_json::json!(["u.safetensors"]);
    card["schema_version"] = 9.into();
    fs_err::write(esc.join("gene.json"), card.to_string()).unwrap();
    let err = refused(
        &reg,
        &[
            "publish",
            esc.to_str().unwrap(),
            "--name",
            "x",
            "--version",
            "1.0.0",
        ],
        "`schema_version` 9",
    );
    assert!(err.contains("upgrade lgreg"), "{err}");
}

fn layer_path(reg: &Path, index: usize) -> (String, std::path::PathBuf) {
    let show = json(reg, &["show", "g:0.1.0"]);
    let d = show["units"][index]["digest"].as_str().unwrap().to_string();
    let p = reg
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap());
    (d, p)
}

#[test]
fn a_flipped_byte_is_reported_by_verify_and_every_read() {
    let (tmp, reg, _) = one_gene();
    let (digest, path) = layer_path(&reg, 1);
    let mut bytes = fs_err::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs_err::write(&path, &bytes).unwrap();
    let out = run(&reg, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&digest) && text.contains("corrupt"), "{text}");
    let out_dir = tmp.path().join("x");
    refused(
        &reg,
        &["show", "g:0.1.0"],
        &format!("blob `{digest}` is corrupt"),
    );
    refused(
        &reg,
        &["export", "g", "-o", out_dir.to_str().unwrap()],
        &format!("blob `{digest}` is corrupt"),
    );
    assert!(!out_dir.exists());
}

#[test]
fn a_missing_blob_is_reported_by_verify_and_reads() {
    let (tmp, reg, _) = one_gene();
    let (digest, path) = layer_path(&reg, 0);
    fs_err::remove_file(&path).unwrap();
    let out = run(&reg, &["--json", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["subject"] == digest.as_str()
            && p["message"].as_str().unwrap().contains("missing")),
        "{v}"
    );
    refused(
        &reg,
        &["export", "g", "-o", tmp.path().join("x").to_str().unwrap()],
        &format!("blob `{digest}` is missing"),
    );
}

#[test]
fn a_truncated_or_non_json_index_is_refused_without_change() {
    let (tmp, reg, g) = one_gene();
    let gs = g.to_str().unwrap();
    let index = reg.join("index.json");
    let good = fs_err::read(&index).unwrap();
    for bad in [
        &good[..good.len() / 2],
        b"not json at all".as_slice(),
        b"".as_slice(),
    ] {
        fs_err::write(&index, bad).unwrap();
        refused(&reg, &["ls"], "index.json` is corrupt");
        refused(&reg, &["show", "g"], "index.json` is corrupt");
        refused(
            &reg,
            &["publish", gs, "--name", "n", "--version", "1.0.0"],
            "index.json` is corrupt",
        );
        refused(&reg, &["gc"], "index.json` is corrupt");
        let out = run(&reg, &["verify"]);
        assert_eq!(out.status.code(), Some(1));
    }
    let _ = tmp;
}

#[test]
fn a_directory_that_is_not_a_layout_is_refused_without_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("home");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(dir.join("notes.txt"), b"mine").unwrap();
    let g = gene_dir(&tmp.path().join("g"), "tleg", &[("u", 1, 8)]);
    let err = refused(
        &dir,
        &[
            "publish",
            g.to_str().unwrap(),
            "--name",
            "g",
            "--version",
            "1.0.0",
        ],
        "is not an OCI image layout",
    );
    assert!(err.contains("notes.txt"), "{err}");
    refused(&dir, &["ls"], "`oci-layout` is missing");
    refused(&dir, &["verify"], "is not an OCI image layout");
    refused(&tmp.path().join("absent"), &["ls"], "no registry at");
}
