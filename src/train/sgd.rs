//! SGD with momentum and L2 weight decay, as `torch.optim.SGD` computes it: the decay is added
//! to the gradient, the momentum buffer starts as the first gradient, and the step is
//! `p ← p − lr · buf`. The heur_vgg paper code trains with it.

use std::collections::HashMap;

use candle_core::Var;
use candle_core::backprop::GradStore;

use crate::error::Result;

/// SGD's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Momentum (0 turns the buffer off).
    pub momentum: f64,
    /// L2 weight decay, added to the gradient.
    pub weight_decay: f64,
}

/// An SGD optimiser over named variables.
#[derive(Debug)]
pub struct Sgd {
    vars: Vec<(String, Var)>,
    config: SgdConfig,
    buffers: HashMap<String, candle_core::Tensor>,
}

impl Sgd {
    /// An optimiser over `vars` with empty momentum buffers.
    pub fn new(vars: Vec<(String, Var)>, config: SgdConfig) -> Sgd {
        Sgd {
            vars,
            config,
            buffers: HashMap::new(),
        }
    }

    /// Forget the momentum buffers (the paper code re-creates its optimiser every epoch).
    pub fn reset(&mut self) {
        self.buffers.clear();
    }

    /// One step at learning rate `lr`; variables without a gradient stay as they are.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (name, var) in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mut g = grad.clone();
            if self.config.weight_decay != 0.0 {
                g = (g + (var.as_tensor() * self.config.weight_decay)?)?;
            }
            if self.config.momentum != 0.0 {
                let buf = match self.buffers.get(name) {
                    Some(b) => ((b * self.config.momentum)? + &g)?,
                    None => g,
                };
                self.buffers.insert(name.clone(), buf.clone());
                g = buf;
            }
            var.set(&(var.as_tensor() - (g * lr)?)?)?;
        }
        Ok(())
    }
}

/// The step schedule of the paper code: `lr · drop^⌊epoch / every⌋` (`every` 0: constant).
pub fn step_lr(lr: f64, drop: f64, every: usize, epoch: usize) -> f64 {
    if every == 0 {
        return lr;
    }
    lr * drop.powi((epoch / every) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn momentum_and_decay_follow_torch() {
        // torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5) on loss = sum(p):
        // step 1: g = 1 + 0.5·1 = 1.5, buf = 1.5, p = 1 − 0.15 = 0.85;
        // step 2: g = 1 + 0.425 = 1.425, buf = 1.35 + 1.425 = 2.775, p = 0.85 − 0.2775.
        let p = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = Sgd::new(
            vec![("p".into(), p.clone())],
            SgdConfig {
                momentum: 0.9,
                weight_decay: 0.5,
            },
        );
        for _ in 0..2 {
            let grads = p.as_tensor().sum_all().unwrap().backward().unwrap();
            opt.step(&grads, 0.1).unwrap();
        }
        let v: Vec<f32> = p.as_tensor().to_vec1().unwrap();
        assert!((v[0] - 0.5725).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn step_schedule_drops_every_n_epochs() {
        assert_eq!(step_lr(0.01, 0.4, 0, 7), 0.01);
        assert!((step_lr(0.01, 0.4, 10, 9) - 0.01).abs() < 1e-12);
        assert!((step_lr(0.01, 0.4, 10, 25) - 0.0016).abs() < 1e-12);
    }
}
