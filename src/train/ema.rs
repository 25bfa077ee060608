//! An exponential moving average of the weights, as DeiT keeps one (timm's `ModelEmaV2`): after
//! every optimiser step each shadow tensor becomes `decay · shadow + (1 − decay) · weight`. The
//! shadow starts from the weights the run starts with, is saved with the training state, and at
//! the end is evaluated and written beside the trained model.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::nn::Model;

/// The shadow weights of a model.
#[derive(Debug, Clone)]
pub struct Ema {
    /// The decay per step.
    pub decay: f64,
    /// The shadow of each variable, by name.
    pub shadow: BTreeMap<String, Tensor>,
}

impl Ema {
    /// A shadow equal to `model`'s weights now.
    pub fn new(model: &Model, decay: f64) -> Result<Ema> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(Error::InvalidValue {
                what: "MODEL.EMA_DECAY".into(),
                value: decay.to_string(),
                reason: "the EMA decay lies in [0, 1] (DeiT uses 0.99996)".into(),
            });
        }
        let shadow = model
            .vars()
            .into_iter()
            .map(|(name, var)| Ok((name, var.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        Ok(Ema { decay, shadow })
    }

    /// Move every shadow tensor towards the model's weights.
    pub fn update(&mut self, model: &Model) -> Result<()> {
        for (name, var) in model.vars() {
            let Some(s) = self.shadow.get_mut(&name) else {
                continue;
            };
            let w = var.as_tensor().detach();
            *s = ((&*s * self.decay)? + (w * (1.0 - self.decay))?)?;
        }
        Ok(())
    }

    /// Put the shadow into `model`; returns the weights it replaced, for [`Ema::restore`].
    pub fn swap_in(&self, model: &Model) -> Result<BTreeMap<String, Tensor>> {
        let mut kept = BTreeMap::new();
        for (name, var) in model.vars() {
            if let Some(s) = self.shadow.get(&name) {
                kept.insert(name, var.as_tensor().copy()?);
                var.set(s)?;
            }
        }
        Ok(kept)
    }

    /// Put back the weights [`Ema::swap_in`] replaced.
    pub fn restore(model: &Model, kept: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, var) in model.vars() {
            if let Some(t) = kept.get(&name) {
                var.set(t)?;
            }
        }
        Ok(())
    }
}
