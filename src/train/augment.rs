//! DeiT's batch augmentations for image classifiers, as timm applies them: RandAugment of each
//! image (`TRAIN.AA`, see [`super::randaugment`]) or, without it, colour jitter
//! (`TRAIN.COLOR_JITTER`, see [`super::color_jitter`]), random erasing of each image
//! (`TRAIN.REPROB`), then Mixup (`TRAIN.MIXUP`) or CutMix (`TRAIN.CUTMIX`) of the batch with its
//! reverse, and label smoothing (`TRAIN.SMOOTHING`).
//!
//! A mixed batch keeps both label vectors and the mixing weight λ. Its loss is
//! `λ·L(y) + (1 − λ)·L(y_flipped)`, where `L` is the cross-entropy against the smoothed target
//! `(1 − ε)·onehot + ε/K`. That equals timm's soft-target cross-entropy on its mixed, smoothed
//! targets, and it keeps the fused cross-entropy kernel: for one label,
//! `L = CE + ε·(z_y − mean_k z_k)`.
//!
//! Every random draw comes from a generator seeded by the run's seed and the step, so a
//! resumed run augments its remaining steps exactly as an unbroken one.

use candle_core::{D, Tensor};
use serde::Serialize;

use super::color_jitter::ColorJitter;
use super::loss::cross_entropy;
use super::randaugment::RandAugment;
use crate::error::Result;
use crate::nn::init::Rng;

/// The augmentations of a run; all zero is none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Augment {
    /// Label smoothing ε.
    pub smoothing: f64,
    /// Mixup's Beta(α, α) parameter (0: off).
    pub mixup: f64,
    /// CutMix's Beta(α, α) parameter (0: off).
    pub cutmix: f64,
    /// The probability that a batch is mixed at all (timm's `mixup_prob`, DeiT 1.0).
    pub mix_prob: f64,
    /// With both on, the probability of CutMix rather than Mixup (DeiT 0.5).
    pub switch_prob: f64,
    /// The probability that an image gets one random-erasing rectangle.
    pub erase_prob: f64,
    /// RandAugment's policy, if any.
    pub rand_augment: Option<RandAugment>,
    /// Colour jitter strength (0: off); timm skips it when RandAugment is on.
    pub color_jitter: f64,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            smoothing: 0.0,
            mixup: 0.0,
            cutmix: 0.0,
            mix_prob: 1.0,
            switch_prob: 0.5,
            erase_prob: 0.0,
            rand_augment: None,
            color_jitter: 0.0,
        }
    }
}

impl Augment {
    /// With colour jitter `j`, unless RandAugment is on: timm turns jitter off then.
    pub fn with_color_jitter(mut self, j: f64) -> Augment {
        self.color_jitter = if self.rand_augment.is_some() { 0.0 } else { j };
        self
    }

    /// Whether the run augments nothing.
    pub fn is_none(&self) -> bool {
        self.smoothing == 0.0
            && self.mixup == 0.0
            && self.cutmix == 0.0
            && self.erase_prob == 0.0
            && self.rand_augment.is_none()
            && self.color_jitter == 0.0
    }
}

/// A batch after augmentation.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images `[n, c, h, w]`.
    pub x: Tensor,
    /// Labels `[n]`.
    pub y: Tensor,
    /// The labels of the images mixed in (`y` reversed), and the weight of `y`.
    pub mixed: Option<(Tensor, f64)>,
}

/// A Gamma(α, 1) draw (Marsaglia and Tsang; α < 1 through Gamma(α + 1)·U^(1/α)).
fn gamma(alpha: f64, rng: &mut Rng) -> f64 {
    if alpha < 1.0 {
        let u = rng.uniform().max(f64::MIN_POSITIVE);
        return gamma(alpha + 1.0, rng) * u.powf(1.0 / alpha);
    }
    let d = alpha - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.uniform();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A Beta(α, α) draw.
pub fn beta(alpha: f64, rng: &mut Rng) -> f64 {
    let a = gamma(alpha, rng);
    let b = gamma(alpha, rng);
    if a + b > 0.0 { a / (a + b) } else { 0.5 }
}

/// One rectangle of `area` (fraction of the image) and aspect in [0.3, 1/0.3], log-uniform, as
/// timm's random erasing draws it; `None` when it does not fit after 10 tries.
fn erase_box(h: usize, w: usize, rng: &mut Rng) -> Option<(usize, usize, usize, usize)> {
    for _ in 0..10 {
        let area = (h * w) as f64 * (0.02 + rng.uniform() * (1.0 / 3.0 - 0.02));
        let log_ratio = (0.3f64).ln() + rng.uniform() * ((1.0 / 0.3f64).ln() - (0.3f64).ln());
        let ratio = log_ratio.exp();
        let eh = (area * ratio).sqrt().round() as usize;
        let ew = (area / ratio).sqrt().round() as usize;
        if eh > 0 && ew > 0 && eh < h && ew < w {
            let top = rng.below(h - eh + 1);
            let left = rng.below(w - ew + 1);
            return Some((top, left, eh, ew));
        }
    }
    None
}

/// Random erasing in timm's `pixel` mode: each image, with probability `p`, gets one rectangle
/// of standard-normal noise in every channel.
fn erase(pixels: &mut [f32], dims: (usize, usize, usize, usize), p: f64, rng: &mut Rng) {
    let (n, c, h, w) = dims;
    for i in 0..n {
        if rng.uniform() >= p {
            continue;
        }
        let Some((top, left, eh, ew)) = erase_box(h, w, rng) else {
            continue;
        };
        for ch in 0..c {
            for r in top..top + eh {
                let row = ((i * c + ch) * h + r) * w;
                for v in &mut pixels[row + left..row + left + ew] {
                    *v = rng.normal() as f32;
                }
            }
        }
    }
}

/// CutMix's box for weight `lambda` on an `h`×`w` image: `(top, left, height, width)`, clipped
/// to the image; the weight is then corrected to the area actually kept.
fn cut_box(h: usize, w: usize, lambda: f64, rng: &mut Rng) -> ((usize, usize, usize, usize), f64) {
    let ratio = (1.0 - lambda).sqrt();
    let (ch, cw) = ((h as f64 * ratio) as i64, (w as f64 * ratio) as i64);
    let cy = rng.below(h) as i64;
    let cx = rng.below(w) as i64;
    let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
    let (y0, y1) = (clip(cy - ch / 2, h), clip(cy + ch / 2, h));
    let (x0, x1) = (clip(cx - cw / 2, w), clip(cx + cw / 2, w));
    let kept = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (h * w) as f64;
    ((y0, x0, y1 - y0, x1 - x0), kept)
}

/// Paste the box of each image's partner (the batch reversed) into it.
fn paste(pixels: &mut [f32], dims: (usize, usize, usize, usize), b: (usize, usize, usize, usize)) {
    let (n, c, h, w) = dims;
    let (top, left, bh, bw) = b;
    let source = pixels.to_vec();
    for i in 0..n {
        let j = n - 1 - i;
        for ch in 0..c {
            for r in top..top + bh {
                let at = |k: usize| ((k * c + ch) * h + r) * w + left;
                let (to, from) = (at(i), at(j));
                pixels[to..to + bw].copy_from_slice(&source[from..from + bw]);
            }
        }
    }
}

/// `x` mixed with its reverse: `λ·x + (1 − λ)·x_reversed`.
fn blend(pixels: &mut [f32], n: usize, lambda: f64) {
    let per = pixels.len() / n.max(1);
    let source = pixels.to_vec();
    let (a, b) = (lambda as f32, (1.0 - lambda) as f32);
    for i in 0..n {
        let j = n - 1 - i;
        for k in 0..per {
            pixels[i * per + k] = a * source[i * per + k] + b * source[j * per + k];
        }
    }
}

/// The generator of step `step`'s augmentations.
pub fn step_rng(seed: u64, step: usize) -> Rng {
    Rng::new(Rng::stream_seed(
        seed,
        &[
            (1, 0x5DEE_CE66_D1CE_4E5B),
            (step as u64 + 1, 0x2545_F491_4F6C_DD1D),
        ],
    ))
}

/// Augment the batch `x [n, c, h, w]`, `y [n]` by `aug` with `rng`.
pub fn apply(x: &Tensor, y: &Tensor, aug: &Augment, rng: &mut Rng) -> Result<Batch> {
    let plain = Batch {
        x: x.clone(),
        y: y.clone(),
        mixed: None,
    };
    let mixes = aug.mixup > 0.0 || aug.cutmix > 0.0;
    if aug.erase_prob == 0.0 && !mixes && aug.rand_augment.is_none() && aug.color_jitter == 0.0 {
        return Ok(plain);
    }
    let dims = x.dims4()?;
    let mut pixels: Vec<f32> = x.flatten_all()?.to_vec1()?;
    if let Some(ra) = &aug.rand_augment {
        ra.apply(&mut pixels, dims, rng);
    } else if aug.color_jitter > 0.0 {
        ColorJitter(aug.color_jitter).apply(&mut pixels, dims, rng);
    }
    if aug.erase_prob > 0.0 {
        erase(&mut pixels, dims, aug.erase_prob, rng);
    }
    let mut mixed = None;
    if mixes && dims.0 > 1 && rng.uniform() < aug.mix_prob {
        let use_cutmix = aug.cutmix > 0.0 && (aug.mixup == 0.0 || rng.uniform() < aug.switch_prob);
        let lambda = if use_cutmix {
            let (b, kept) = cut_box(dims.2, dims.3, beta(aug.cutmix, rng), rng);
            paste(&mut pixels, dims, b);
            kept
        } else {
            let lambda = beta(aug.mixup, rng);
            blend(&mut pixels, dims.0, lambda);
            lambda
        };
        let reversed: Vec<u32> = y.to_vec1::<u32>()?.into_iter().rev().collect();
        mixed = Some((Tensor::from_vec(reversed, dims.0, y.device())?, lambda));
    }
    Ok(Batch {
        x: Tensor::from_vec(pixels, dims, x.device())?,
        y: y.clone(),
        mixed,
    })
}

/// The cross-entropy of `logits [n, k]` against `y` smoothed by `eps`.
pub fn smoothed_cross_entropy(logits: &Tensor, y: &Tensor, eps: f64) -> Result<Tensor> {
    let ce = cross_entropy(logits, y)?;
    if eps == 0.0 {
        return Ok(ce);
    }
    let picked = logits.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?;
    let gap = (picked - logits.mean(D::Minus1)?)?.mean_all()?;
    Ok((ce + (gap * eps)?)?)
}

/// The loss of `logits` on an augmented batch.
pub fn loss(logits: &Tensor, batch: &Batch, aug: &Augment) -> Result<Tensor> {
    let own = smoothed_cross_entropy(logits, &batch.y, aug.smoothing)?;
    match &batch.mixed {
        None => Ok(own),
        Some((other, lambda)) => {
            let theirs = smoothed_cross_entropy(logits, other, aug.smoothing)?;
            Ok(((own * *lambda)? + (theirs * (1.0 - lambda))?)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn soft_target_ce(logits: &[f32], target: &[f32]) -> f64 {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + logits
            .iter()
            .map(|&z| (z as f64 - m).exp())
            .sum::<f64>()
            .ln();
        logits
            .iter()
            .zip(target)
            .map(|(&z, &q)| q as f64 * (lse - z as f64))
            .sum()
    }

    #[test]
    fn smoothed_mixed_loss_is_the_soft_target_cross_entropy() {
        let dev = Device::Cpu;
        let z = [[1.0f32, -0.5, 2.0, 0.3], [0.2, 0.1, -1.0, 0.7]];
        let logits = Tensor::new(&z, &dev).unwrap();
        let y = Tensor::new(&[2u32, 3], &dev).unwrap();
        let other = Tensor::new(&[3u32, 2], &dev).unwrap();
        let (eps, lambda) = (0.1, 0.7);
        let aug = Augment {
            smoothing: eps,
            ..Augment::default()
        };
        let batch = Batch {
            x: Tensor::zeros((2, 1, 1, 1), candle_core::DType::F32, &dev).unwrap(),
            y,
            mixed: Some((other, lambda)),
        };
        let got = loss(&logits, &batch, &aug)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        // timm: targets λ·smooth(y) + (1 − λ)·smooth(y_reversed), then Σ −q log p.
        let smooth = |label: usize| -> Vec<f32> {
            (0..4)
                .map(|k| (eps / 4.0 + if k == label { 1.0 - eps } else { 0.0 }) as f32)
                .collect()
        };
        let want = [(0usize, 2usize, 3usize), (1, 3, 2)]
            .iter()
            .map(|&(row, a, b)| {
                let q: Vec<f32> = smooth(a)
                    .iter()
                    .zip(smooth(b))
                    .map(|(x, y)| lambda as f32 * x + (1.0 - lambda as f32) * y)
                    .collect();
                soft_target_ce(&z[row], &q)
            })
            .sum::<f64>()
            / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn beta_draws_have_the_right_mean_and_spread() {
        let mut rng = Rng::new(3);
        for alpha in [0.8, 1.0, 2.0] {
            let draws: Vec<f64> = (0..20_000).map(|_| beta(alpha, &mut rng)).collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
            let want_var = 1.0 / (4.0 * (2.0 * alpha + 1.0));
            assert!((mean - 0.5).abs() < 0.01, "alpha {alpha}: mean {mean}");
            assert!(
                (var - want_var).abs() < 0.01,
                "alpha {alpha}: var {var} vs {want_var}"
            );
            assert!(draws.iter().all(|d| (0.0..=1.0).contains(d)));
        }
    }

    #[test]
    fn cutmix_pastes_the_partners_box_and_weighs_by_the_area_kept() {
        let dev = Device::Cpu;
        // Image 0 is all 1, image 1 all 2.
        let mut v = vec![1.0f32; 16];
        v.extend(vec![2.0f32; 16]);
        let x = Tensor::from_vec(v, (2, 1, 4, 4), &dev).unwrap();
        let y = Tensor::new(&[0u32, 1], &dev).unwrap();
        let aug = Augment {
            cutmix: 1.0,
            ..Augment::default()
        };
        let mut rng = Rng::new(9);
        let b = apply(&x, &y, &aug, &mut rng).unwrap();
        let (other, lambda) = b.mixed.clone().expect("mixed");
        assert_eq!(other.to_vec1::<u32>().unwrap(), vec![1, 0]);
        let first: Vec<f32> =
            b.x.get(0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
        let from_partner = first.iter().filter(|&&p| p == 2.0).count();
        assert!((lambda - (1.0 - from_partner as f64 / 16.0)).abs() < 1e-12);
        // Mixup blends: every pixel of image 0 is λ·1 + (1 − λ)·2.
        let aug = Augment {
            mixup: 0.8,
            ..Augment::default()
        };
        let b = apply(&x, &y, &aug, &mut Rng::new(4)).unwrap();
        let (_, lambda) = b.mixed.clone().expect("mixed");
        let p =
            b.x.get(0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[5];
        assert!((p as f64 - (lambda + 2.0 * (1.0 - lambda))).abs() < 1e-6);
    }

    #[test]
    fn random_erasing_fills_one_box_with_noise_and_the_same_seed_repeats_it() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((3, 2, 16, 16), candle_core::DType::F32, &dev).unwrap();
        let y = Tensor::new(&[0u32, 1, 2], &dev).unwrap();
        let aug = Augment {
            erase_prob: 1.0,
            ..Augment::default()
        };
        let a = apply(&x, &y, &aug, &mut step_rng(5, 7)).unwrap();
        let b = apply(&x, &y, &aug, &mut step_rng(5, 7)).unwrap();
        let va: Vec<f32> = a.x.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b.x.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, vb);
        assert!(a.mixed.is_none());
        for img in va.chunks(2 * 256) {
            let erased = img.iter().filter(|&&p| p != 0.0).count();
            // 2% to 1/3 of the area, in both channels.
            assert!((10..=2 * 86).contains(&erased), "{erased}");
        }
        let none = apply(&x, &y, &Augment::default(), &mut step_rng(5, 7)).unwrap();
        assert!(none.mixed.is_none());
    }
}
