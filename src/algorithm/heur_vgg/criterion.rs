//! Heur Learngene's gradient criterion and the choice of the gene layers.
//!
//! For every conv layer l, on every mini-batch, r_l is the fraction of weight-gradient entries
//! above τ (signed, as the paper code counts; `|g| > τ` as an option), averaged over an epoch's
//! batches. The paper observes that the deeper layers' r_l stays stable across the task sequence
//! and takes those layers as the learngene. The rule here: per layer, the coefficient of
//! variation (population std / mean) of r_l across tasks (each task's last epoch); the gene is
//! the longest suffix of layers whose CV is at most `max_cv`, capped at `max_layers`, and never
//! empty (the last layer always goes in). The paper code's fixed choice, the last k layers, is
//! [`Selection::LastK`].

use candle_core::Tensor;
use serde::Serialize;

use crate::error::{Error, Result};

/// How a gradient entry is counted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Threshold {
    /// τ (the paper: 5e-10).
    pub tau: f64,
    /// Count `|g| > τ` instead of the code's signed `g > τ`.
    pub absolute: bool,
}

/// The fraction of entries of `grad` above the threshold.
pub fn fraction_above(grad: &Tensor, threshold: Threshold) -> Result<f64> {
    let g = if threshold.absolute {
        grad.abs()?
    } else {
        grad.clone()
    };
    let above = g
        .gt(threshold.tau)?
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?;
    Ok(above.to_scalar::<f32>()? as f64 / grad.elem_count().max(1) as f64)
}

/// r_l of one epoch, accumulated batch by batch.
#[derive(Debug, Clone, Default)]
pub struct EpochCriterion {
    sums: Vec<f64>,
    batches: usize,
}

impl EpochCriterion {
    /// Add one batch's fractions, one per conv layer.
    pub fn add(&mut self, fractions: &[f64]) {
        if self.sums.len() < fractions.len() {
            self.sums.resize(fractions.len(), 0.0);
        }
        for (s, f) in self.sums.iter_mut().zip(fractions) {
            *s += f;
        }
        self.batches += 1;
    }

    /// The epoch's mean per layer.
    pub fn finish(&self) -> Vec<f64> {
        let n = self.batches.max(1) as f64;
        self.sums.iter().map(|s| s / n).collect()
    }
}

/// How the gene layers are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Selection {
    /// The longest suffix whose across-task CV of r_l is at most `max_cv`, at most `max_layers`.
    StableSuffix {
        /// The CV threshold.
        max_cv: f64,
        /// The most layers the gene may take.
        max_layers: usize,
    },
    /// The last `k` layers (the paper code's hard-coded choice, k = 3).
    LastK {
        /// How many.
        k: usize,
    },
}

/// The layers chosen, and the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// Conv layers of the gene, ascending.
    pub layers: Vec<usize>,
    /// Per layer: the across-task CV of r_l.
    pub cv: Vec<f64>,
    /// Per layer: the across-task mean of r_l.
    pub mean: Vec<f64>,
    /// The rule applied.
    pub selection: Selection,
}

fn mean_and_cv(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let cv = if mean.abs() > 0.0 {
        var.sqrt() / mean.abs()
    } else {
        f64::INFINITY
    };
    (mean, cv)
}

/// Choose the gene layers from `per_task` (for each task, r_l of its last epoch per layer).
pub fn select(per_task: &[Vec<f64>], selection: Selection) -> Result<Choice> {
    let layers = per_task.first().map(Vec::len).unwrap_or(0);
    if layers == 0 || per_task.iter().any(|r| r.len() != layers) {
        return Err(Error::Algorithm {
            algorithm: "heur".into(),
            reason: "the gradient criterion has no complete record of every layer over the tasks"
                .into(),
            fix: "train the collective model for at least one task and epoch".into(),
        });
    }
    let stats: Vec<(f64, f64)> = (0..layers)
        .map(|l| mean_and_cv(&per_task.iter().map(|r| r[l]).collect::<Vec<_>>()))
        .collect();
    let take = match selection {
        Selection::LastK { k } => k.clamp(1, layers),
        Selection::StableSuffix { max_cv, max_layers } => {
            let stable = stats
                .iter()
                .rev()
                .take_while(|(_, cv)| *cv <= max_cv)
                .count();
            stable.clamp(1, max_layers.clamp(1, layers))
        }
    };
    Ok(Choice {
        layers: (layers - take..layers).collect(),
        cv: stats.iter().map(|s| s.1).collect(),
        mean: stats.iter().map(|s| s.0).collect(),
        selection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn signed_and_absolute_counts_differ() {
        let g = Tensor::new(&[1e-9f32, -1e-9, 0.0, 2e-9], &Device::Cpu).unwrap();
        let signed = Threshold {
            tau: 5e-10,
            absolute: false,
        };
        let absolute = Threshold {
            absolute: true,
            ..signed
        };
        assert_eq!(fraction_above(&g, signed).unwrap(), 0.5);
        assert_eq!(fraction_above(&g, absolute).unwrap(), 0.75);
    }

    #[test]
    fn stable_suffix_stops_at_the_first_unstable_layer() {
        // layer 0 swings, layers 1 and 2 are steady.
        let per_task = vec![
            vec![0.1, 0.50, 0.40],
            vec![0.9, 0.51, 0.40],
            vec![0.5, 0.49, 0.41],
        ];
        let rule = Selection::StableSuffix {
            max_cv: 0.05,
            max_layers: 3,
        };
        let c = select(&per_task, rule).unwrap();
        assert_eq!(c.layers, vec![1, 2]);
        assert!(c.cv[0] > 0.5 && c.cv[1] < 0.05);
        let capped = Selection::StableSuffix {
            max_cv: 1.0,
            max_layers: 2,
        };
        assert_eq!(select(&per_task, capped).unwrap().layers, vec![1, 2]);
        let last = select(&per_task, Selection::LastK { k: 1 }).unwrap();
        assert_eq!(last.layers, vec![2]);
    }

    #[test]
    fn an_unstable_last_layer_still_gives_a_gene_of_one() {
        let per_task = vec![vec![0.5, 0.1], vec![0.5, 0.9]];
        let rule = Selection::StableSuffix {
            max_cv: 0.05,
            max_layers: 3,
        };
        assert_eq!(select(&per_task, rule).unwrap().layers, vec![1]);
        assert!(select(&[], rule).is_err());
    }
}
