//! AdamW with saveable state, a cosine schedule with linear warm-up, and global-norm gradient
//! clipping folded into the update.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::nn::kernels;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        }
    }
}

/// AdamW over named variables; its moments can be saved and restored for resuming.
#[derive(Debug)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    vars: Vec<(String, Var)>,
    /// First moments by variable name.
    pub m: BTreeMap<String, Tensor>,
    /// Second moments by variable name.
    pub v: BTreeMap<String, Tensor>,
    /// Steps taken.
    pub step: usize,
}

impl AdamW {
    /// An optimiser over `vars` with zero moments.
    pub fn new(vars: Vec<(String, Var)>, config: AdamWConfig) -> Result<AdamW> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (name, var) in &vars {
            m.insert(name.clone(), var.as_tensor().zeros_like()?);
            v.insert(name.clone(), var.as_tensor().zeros_like()?);
        }
        Ok(AdamW {
            config,
            vars,
            m,
            v,
            step: 0,
        })
    }

    /// The training step of `lgreg adapt` after the forward pass: backpropagate `loss`, clip
    /// the global gradient norm to `max_norm` and update with learning rate `lr`. Returns the
    /// gradient norm before clipping.
    pub fn backward_step(&mut self, loss: &Tensor, max_norm: f64, lr: f64) -> Result<f64> {
        let grads = loss.backward()?;
        let norm = grad_norm(&grads, &self.vars)?;
        self.step_scaled(&grads, lr, clip_scale(norm, max_norm))?;
        Ok(norm)
    }

    /// One update with learning rate `lr`; 1-D tensors (norms, biases) get no weight decay.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// [`AdamW::step`] on the gradients times `grad_scale` (see [`clip_scale`]), without
    /// materialising the scaled gradients. f32 CPU tensors are updated in place by the fused
    /// kernel; others by tensor ops.
    pub fn step_scaled(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (name, var) in &self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let (Some(m), Some(v)) = (self.m.get_mut(name), self.v.get_mut(name)) else {
                continue;
            };
            let decay = if var.rank() > 1 { c.weight_decay } else { 0.0 };
            let p = var.as_tensor();
            if kernels::fusable(&[p, m, v, g]) && p.is_contiguous() {
                let constants = kernels::AdamWStep {
                    lr: lr as f32,
                    beta1: c.beta1 as f32,
                    beta2: c.beta2 as f32,
                    eps: c.eps as f32,
                    decay: decay as f32,
                    bias1: bc1 as f32,
                    bias2: bc2 as f32,
                    grad_scale: grad_scale as f32,
                };
                *m = m.contiguous()?;
                *v = v.contiguous()?;
                kernels::adamw_step(p, m, v, g, &constants)?;
                continue;
            }
            let g = if grad_scale == 1.0 {
                g.clone()
            } else {
                (g * grad_scale)?
            };
            *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&*m / bc1)? / ((&*v / bc2)?.sqrt()? + c.eps)?)?;
            let decayed = (p * (1.0 - lr * decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up from 0 over `warmup` steps,
/// then a cosine from `peak` down to `min`.
pub fn cosine_lr(step: usize, total: usize, warmup: usize, peak: f64, min: f64) -> f64 {
    Schedule {
        total,
        warmup,
        start: 0.0,
        peak,
        min,
    }
    .at(step)
}

/// A cosine schedule with linear warm-up, as timm's `cosine` with `warmup_lr`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Steps in all.
    pub total: usize,
    /// Warm-up steps.
    pub warmup: usize,
    /// The rate the warm-up starts from.
    pub start: f64,
    /// The rate at the end of the warm-up.
    pub peak: f64,
    /// The rate at the end.
    pub min: f64,
}

impl Schedule {
    /// The learning rate at `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            let t = (step + 1) as f64 / self.warmup as f64;
            return self.start + (self.peak - self.start) * t;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        self.min + 0.5 * (self.peak - self.min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// The global L2 norm of the gradients of `vars`.
pub fn grad_norm(grads: &GradStore, vars: &[(String, Var)]) -> Result<f64> {
    let mut total = 0.0f64;
    for (_, var) in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += if kernels::fusable(&[g]) {
                kernels::sum_of_squares(g)?
            } else {
                f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?)
            };
        }
    }
    Ok(total.sqrt())
}

/// The factor that brings gradients of global norm `norm` down to at most `max_norm`
/// (1 when they are within it, or when the norm is not finite).
pub fn clip_scale(norm: f64, max_norm: f64) -> f64 {
    if norm > max_norm && norm.is_finite() {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}
