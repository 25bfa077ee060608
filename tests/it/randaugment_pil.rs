//! RandAugment's operations against PIL (Pillow), the library timm's RandAugment runs them in.
//!
//! `scripts/check_randaugment.py` writes each operation's input and PIL's output; lgreg must
//! give the same bytes. Runs when `python3` (or `LGREG_PYTHON`) can import PIL, skips otherwise,
//! and fails when `LGREG_REQUIRE_PIL=1` is set but it cannot (CI sets it after installing it).

use std::process::Command;

use lgreg::train::randaugment::apply_named;

/// The Python interpreter that has PIL, or `None` to skip.
fn python() -> Option<String> {
    crate::support::python_with("PIL", "LGREG_REQUIRE_PIL", "pip install pillow==13.0.0")
}

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_operation_gives_the_bytes_pil_gives() {
    let Some(py) = python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cases.json");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check_randaugment.py");
    let run = Command::new(&py).arg(script).arg(&out).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 70, "{} cases", cases.len());
    let mut ops = std::collections::BTreeSet::new();
    for case in cases {
        let dim = |k: &str| case[k].as_u64().unwrap() as usize;
        let (op, arg) = (case["op"].as_str().unwrap(), case["arg"].as_f64().unwrap());
        let mut img = bytes(case["input"].as_str().unwrap());
        apply_named(op, arg, &mut img, (dim("c"), dim("h"), dim("w"))).unwrap();
        let pil = bytes(case["pil"].as_str().unwrap());
        let differing = img.iter().zip(&pil).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing,
            0,
            "{op}({arg}) on a {}-channel image: {differing} of {} bytes differ from Pillow {}",
            dim("c"),
            pil.len(),
            doc["pillow"]
        );
        ops.insert(op.to_string());
    }
    assert_eq!(ops.len(), 15, "{ops:?}");
    assert!(apply_named("Cutout", 1.0, &mut [0u8; 4], (1, 2, 2)).is_err());
    assert!(apply_named("Invert", 0.0, &mut [0u8; 3], (1, 2, 2)).is_err());
}
