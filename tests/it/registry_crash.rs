//! Crash safety: `lgreg publish` is killed with SIGKILL at random points, again and again.
//! Afterwards `verify` is clean, no tag points at a missing blob, and the next write removes
//! the temp files the killed processes left.

use std::time::{Duration, Instant};

use crate::support::gene::{gene_dir, json, lgreg, ok};

#[test]
fn sigkill_during_publish_never_corrupts_the_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("reg");
    let units: Vec<(String, u64, usize)> = (0..8)
        .map(|i| (format!("blocks.{i}"), i, 256 * 1024))
        .collect();
    let specs: Vec<(&str, u64, usize)> =
        units.iter().map(|(n, s, c)| (n.as_str(), *s, *c)).collect();
    let g = gene_dir(&tmp.path().join("g"), "tleg", &specs);
    let gs = g.to_str().unwrap();

    let start = Instant::now();
    ok(
        &reg,
        &["publish", gs, "--name", "base", "--version", "1.0.0"],
    );
    let mut full = start.elapsed().max(Duration::from_millis(20));

    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut killed = 0;
    let mut i = 0;
    while killed < 20 && i < 80 {
        i += 1;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Each round publishes other content, so blobs really are being written.
        let gi = gene_dir(
            &tmp.path().join(format!("g{i}")),
            "tleg",
            &[
                ("embeddings", 1000 + i, 256 * 1024),
                ("blocks.0", 2000 + i, 512 * 1024),
                ("head", 7, 128 * 1024),
            ],
        );
        let delay = Duration::from_micros(seed % (full.as_micros() as u64 * 3 / 2 + 1));
        let mut child = lgreg(&reg)
            .args([
                "publish",
                gi.to_str().unwrap(),
                "--name",
                "crash",
                "--version",
                &format!("0.0.{i}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        } else {
            // It finished first: aim earlier (the machine may be faster than calibrated).
            full = full * 7 / 10;
        }
        let _ = child.kill();
        let _ = child.wait();
        let v = json(&reg, &["verify"]);
        assert_eq!(v["problems"].as_array().unwrap().len(), 0, "round {i}: {v}");
        let ls = json(&reg, &["ls"]);
        for g in ls["genes"].as_array().unwrap() {
            let t = g["tag"].as_str().unwrap();
            ok(
                &reg,
                &[
                    "export",
                    t,
                    "-o",
                    tmp.path().join(format!("x{i}-{t}")).to_str().unwrap(),
                ],
            );
        }
    }
    assert!(
        killed >= 20,
        "only {killed} of 24 publishes were killed mid-way"
    );

    // The next publish removes what the killed ones left behind.
    let last = gene_dir(&tmp.path().join("last"), "tleg", &[("u", 5, 16)]);
    ok(
        &reg,
        &[
            "publish",
            last.to_str().unwrap(),
            "--name",
            "last",
            "--version",
            "1.0.0",
        ],
    );
    let left: Vec<_> = fs_err::read_dir(reg.join(".lgreg/tmp")).unwrap().collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
    assert!(
        json(&reg, &["verify"])["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
