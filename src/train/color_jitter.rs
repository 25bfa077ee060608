//! Colour jitter as timm's DeiT recipe applies it (`TRAIN.COLOR_JITTER`, `--color-jitter`):
//! torchvision's `ColorJitter(j, j, j)` on each image, that is brightness, contrast and
//! saturation factors each drawn uniformly from `[max(0, 1 − j), 1 + j]` and applied in a random
//! order through PIL's `ImageEnhance` (the same byte-exact operations as RandAugment's). timm
//! turns it off whenever RandAugment is on, and so does lgreg.

use serde::Serialize;

use super::randaugment::{Op, each_as_bytes, perform};
use crate::nn::init::Rng;

/// Colour jitter of strength `j` for brightness, contrast and saturation (hue untouched).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ColorJitter(pub f64);

impl ColorJitter {
    /// Jitter every image of a normalised batch `[n, c, h, w]` in place.
    pub fn apply(&self, pixels: &mut [f32], dims: (usize, usize, usize, usize), rng: &mut Rng) {
        let (lo, hi) = ((1.0 - self.0).max(0.0), 1.0 + self.0);
        each_as_bytes(pixels, dims, |img| {
            let mut order = [Op::Brightness, Op::Contrast, Op::Color];
            rng.shuffle(&mut order);
            for op in order {
                perform(op, lo + (hi - lo) * rng.uniform(), img);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_seeded_bounded_and_zero_is_no_change() {
        let dims = (3, 3, 6, 6);
        let batch: Vec<f32> = (0..3 * 3 * 36)
            .map(|k| (((k * 29) % 256) as f32 / 255.0 - 0.5) / 0.5)
            .collect();
        let run = |j: f64, seed: u64| {
            let mut x = batch.clone();
            ColorJitter(j).apply(&mut x, dims, &mut Rng::new(seed));
            x
        };
        assert_eq!(run(0.4, 5), run(0.4, 5));
        assert_ne!(run(0.4, 5), run(0.4, 6));
        assert_ne!(run(0.4, 5), batch);
        assert!(run(0.4, 5).iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(run(0.0, 5), batch);
    }
}
