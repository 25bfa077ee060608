//! PyTorch checkpoints written by Python's `pickle` exactly as `torch.save` lays them out
//! (stand-in classes, no torch needed), read through `checkpoint::open`.

use std::path::{Path, PathBuf};
use std::process::Command;

use lgreg::checkpoint::{self, DType, TensorSource};

/// Run `pickle_gen.py` into a fresh temp dir, once per test.
fn generate() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_path_buf();
    let status = Command::new("python3")
        .arg("-c")
        .arg(include_str!("pickle_gen.py"))
        .arg(&out)
        .status()
        .expect("python3 is needed to generate the pickle fixtures");
    assert!(status.success(), "pickle_gen.py failed");
    (dir, out)
}

fn f32s(src: &dyn TensorSource, name: &str) -> Vec<f32> {
    src.read_f32(name).unwrap()
}

fn i64s(src: &dyn TensorSource, name: &str) -> Vec<i64> {
    src.read(name)
        .unwrap()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn check_state_dict(path: &Path) {
    let ckpt = checkpoint::open(path).unwrap();
    assert_eq!(ckpt.format, checkpoint::Format::Pytorch);
    let src = ckpt.source.as_ref();
    let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "a.weight",
            "b.half",
            "c.ids",
            "module.scalar",
            "t.transposed",
            "tied.first",
            "tied.second"
        ]
    );
    let info = |n: &str| src.info(n).unwrap().clone();
    assert_eq!(
        (info("a.weight").dtype, info("a.weight").shape),
        (DType::F32, vec![2, 3])
    );
    assert_eq!(
        (info("b.half").dtype, info("b.half").shape),
        (DType::F16, vec![4])
    );
    assert_eq!(
        (info("c.ids").dtype, info("c.ids").shape),
        (DType::I64, vec![3])
    );
    assert_eq!(info("module.scalar").shape, Vec::<usize>::new());
    assert_eq!(info("t.transposed").shape, [3, 2]);

    assert_eq!(f32s(src, "a.weight"), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(f32s(src, "b.half"), [1.0, -2.0, 0.5, 65504.0]);
    assert_eq!(i64s(src, "c.ids"), [1, -2, 1 << 40]);
    assert_eq!(f32s(src, "module.scalar"), [5.0]);
    // Two tensors over one storage at different offsets (tied weights).
    assert_eq!(f32s(src, "tied.first"), [10.0, 11.0, 12.0, 13.0]);
    assert_eq!(
        f32s(src, "tied.second"),
        [14.0, 15.0, 16.0, 17.0, 18.0, 19.0]
    );
    // A transposed view is materialised in row-major order.
    assert_eq!(f32s(src, "t.transposed"), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // Contiguous tensors of stored entries are served straight from the map.
    assert!(matches!(
        src.read("a.weight").unwrap(),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn zip_checkpoint_nested_under_state_dict() {
    let (_dir, out) = generate();
    check_state_dict(&out.join("nested.pt"));
}

#[test]
fn zip_checkpoint_protocol4_plain_state_dict() {
    let (_dir, out) = generate();
    check_state_dict(&out.join("plain.bin"));
}

#[test]
fn pytorch_model_bin_in_a_model_directory() {
    let (_dir, out) = generate();
    let model = out.join("model");
    fs_err::create_dir(&model).unwrap();
    fs_err::copy(out.join("plain.bin"), model.join("pytorch_model.bin")).unwrap();
    let ckpt = checkpoint::open(&model).unwrap();
    assert_eq!(ckpt.source.tensors().len(), 7);
}

#[test]
fn legacy_checkpoint_with_storage_view() {
    let (_dir, out) = generate();
    let ckpt = checkpoint::open(&out.join("legacy.pt")).unwrap();
    let src = ckpt.source.as_ref();
    let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["v", "x", "y"]);
    assert_eq!(src.info("x").unwrap().shape, [2, 4]);
    assert_eq!(f32s(src, "x"), (0..8).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(i64s(src, "y"), [8, 9]);
    assert_eq!(f32s(src, "v"), [3.0, 4.0, 5.0]);
}

#[test]
fn malicious_zip_checkpoint_is_refused_and_nothing_runs() {
    let (_dir, out) = generate();
    let err = checkpoint::open(&out.join("evil.pt")).unwrap_err();
    match &err {
        lgreg::Error::ForbiddenGlobal { global, .. } => assert_eq!(global, "posix.system"),
        other => panic!("expected ForbiddenGlobal, got {other:?}"),
    }
    assert!(err.to_string().contains("`posix.system`"));
    assert!(err.hint().is_some());
    assert!(!out.join("pwned").exists());
}

#[test]
fn zip_checkpoint_round_trips_through_convert() {
    let (_dir, out) = generate();
    let bert = out.join("bert");
    let st = out.join("st");
    let r = crate::support::run_str(
        &out,
        &["convert", bert.to_str().unwrap(), st.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let orig = checkpoint::open(&bert).unwrap();
    let conv = checkpoint::open(&st).unwrap();
    assert_eq!(conv.format, checkpoint::Format::Safetensors);
    assert_eq!(orig.source.tensors(), conv.source.tensors());
    for t in orig.source.tensors() {
        assert_eq!(
            orig.source.read(&t.name).unwrap(),
            conv.source.read(&t.name).unwrap(),
            "{}",
            t.name
        );
    }
    // The transposed query weight was materialised in row-major order.
    let q = f32s(
        conv.source.as_ref(),
        "bert.encoder.layer.0.attention.self.query.weight",
    );
    assert_eq!(&q[..4], &[0.0, 0.5, 1.0, 1.5]);
}
