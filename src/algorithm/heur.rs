//! Heur Learngene (arXiv 2106.06788): the gene is the ancestor's deepest layers whose gradient
//! activity is stable across tasks; descendants stack seeded random lower layers under them.
//!
//! The criterion of the released code: on every probe batch `b`, for every layer `l`, the
//! fraction `r_l` of weight-gradient entries *strictly greater* than `τ` (signed, not absolute,
//! as the code; default 5e-10). The code hooks the conv weights only, so here `r_l` counts the
//! entries of the layer's weight matrices (norm scales and biases are left out). Per layer the
//! mean and coefficient of variation (population std / mean) of `r_l` across the batches are
//! kept; the batches stand in for the paper's task sequence on one pretrained ancestor.
//!
//! **Selection:** the longest suffix of at most `layers` layers (3, as the released code keeps)
//! whose layers all have a CV at most `max_cv`; when not even the last layer qualifies, the last
//! `layers` are taken anyway and the card says so. The losses are those of
//! [`super::probe::ProbeBatch::loss`].

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::blueprint::{Blueprint, GrowRequest};
use super::builder::GeneBuilder;
use super::probe::{Probe, ProbeBatch};
use super::{Algorithm, ExtractJob, GeneView, subset};
use crate::anatomy::{Param, Slot};
use crate::error::{Error, Result};
use crate::nn::layerwise::Layerwise;
use crate::nn::{Hooks, Mode, Model};
use crate::progress::Event;

/// The heur algorithm.
#[derive(Debug)]
pub struct Heur;

fn default_layers() -> usize {
    3
}

fn default_seq_len() -> usize {
    64
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Most layers in the gene.
    #[serde(default = "default_layers")]
    layers: usize,
    /// `τ`: a gradient entry counts when it is strictly above it.
    threshold: f64,
    /// Probe batches (at least 2, for a variation).
    batches: usize,
    /// Examples per batch.
    batch_size: usize,
    /// Tokens per llama block.
    #[serde(default = "default_seq_len")]
    seq_len: usize,
    /// Largest coefficient of variation of a stable layer.
    max_cv: f64,
    /// Run the ancestor one block at a time ([`crate::nn::layerwise`]): `true`, `false`, or
    /// unset to do so when it is large
    /// ([`super::ancestor::AncestorModel::run_layerwise`]).
    #[serde(default)]
    layerwise: Option<bool>,
}

/// The gradient activity of one layer across the probe batches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Mean of `r_l`.
    pub mean: f64,
    /// Coefficient of variation of `r_l` (0 when it never varies).
    pub cv: f64,
}

fn heur_error(reason: String, fix: &str) -> Error {
    Error::Algorithm {
        algorithm: "heur".into(),
        reason,
        fix: fix.into(),
    }
}

/// Mean and coefficient of variation of each layer's `r` values (`per_batch[b][l]`).
pub fn activity(per_batch: &[Vec<f64>]) -> Vec<Activity> {
    let layers = per_batch.first().map_or(0, Vec::len);
    let n = per_batch.len().max(1) as f64;
    (0..layers)
        .map(|l| {
            let mean = per_batch.iter().map(|r| r[l]).sum::<f64>() / n;
            let var = per_batch.iter().map(|r| (r[l] - mean).powi(2)).sum::<f64>() / n;
            let cv = if var > 0.0 { var.sqrt() / mean } else { 0.0 };
            Activity { mean, cv }
        })
        .collect()
}

/// The gene's layers: the longest stable suffix of at most `k` layers, or (second value true)
/// the last `k` when no suffix is stable.
pub fn stable_suffix(stats: &[Activity], k: usize, max_cv: f64) -> (Vec<usize>, bool) {
    let depth = stats.len();
    let stable = stats
        .iter()
        .rev()
        .take(k)
        .take_while(|a| a.cv <= max_cv)
        .count();
    let fallback = stable == 0;
    let len = if fallback { k.min(depth) } else { stable };
    ((depth - len..depth).collect(), fallback)
}

/// `r_l` of every layer on every probe batch.
fn gradient_activity(job: &ExtractJob<'_>, params: &Params) -> Result<(Vec<Vec<f64>>, Vec<f64>)> {
    let data = job.require_data("heur")?;
    let ancestor = job.ancestor;
    let runner = if ancestor.run_layerwise(params.layerwise)? {
        Runner::Blocks(Layerwise::new(ancestor.ckpt, &Device::Cpu)?)
    } else {
        Runner::Whole(Model::load(ancestor.ckpt, &Device::Cpu)?)
    };
    let probe = Probe::load(ancestor, data, params.seq_len)?;
    probe.check(&runner.config(), true)?;
    let batches = probe.batches(params.batches, params.batch_size, job.seed, &Device::Cpu)?;
    job.reporter.report(Event::Start {
        task: "gradient criterion".into(),
        total: batches.len() as u64,
    });
    let mut per_batch = Vec::with_capacity(batches.len());
    let mut losses = Vec::with_capacity(batches.len());
    for batch in &batches {
        let mut activity = Activity::counter(ancestor.depth(), params.threshold);
        let loss = runner.loss_counting(batch, &mut activity)?;
        losses.push(f64::from(loss.to_scalar::<f32>()?));
        per_batch.push(activity.rates());
        job.reporter.report(Event::Advance {
            amount: 1,
            item: None,
        });
    }
    job.reporter.report(Event::Finish);
    Ok((per_batch, losses))
}

/// How the ancestor runs: loaded whole, or one block at a time.
enum Runner<'c> {
    Whole(Model),
    Blocks(Layerwise<'c>),
}

impl Runner<'_> {
    fn config(&self) -> crate::nn::ModelConfig {
        match self {
            Runner::Whole(model) => model.config.clone(),
            Runner::Blocks(blocks) => blocks.config(),
        }
    }

    /// The loss of `batch`, its weight gradients counted into `activity`.
    fn loss_counting(&self, batch: &ProbeBatch, activity: &mut ActivityCounter) -> Result<Tensor> {
        match self {
            Runner::Whole(model) => {
                let hooks = Hooks {
                    weight_grads: true,
                    ..Default::default()
                };
                let forward = model.forward_with(&batch.input, Mode::Train, hooks)?;
                let loss = batch.loss(model, &forward)?;
                activity.add(&forward.layer_grads(&loss.backward()?))?;
                Ok(loss)
            }
            Runner::Blocks(blocks) => blocks.weight_grads(
                &batch.input,
                |globals, forward| batch.loss(globals, forward),
                |_, grads| activity.add(&grads),
            ),
        }
    }
}

/// Counts, per layer, of weight-gradient entries above the threshold.
struct ActivityCounter {
    threshold: f64,
    above: Vec<u64>,
    total: Vec<u64>,
}

impl Activity {
    fn counter(depth: usize, threshold: f64) -> ActivityCounter {
        ActivityCounter {
            threshold,
            above: vec![0; depth],
            total: vec![0; depth],
        }
    }
}

impl ActivityCounter {
    /// Count the weight matrices among `grads` (norm scales and biases are left out).
    fn add(&mut self, grads: &BTreeMap<Slot, Tensor>) -> Result<()> {
        for (slot, grad) in grads {
            let Some(layer) = slot.layer.filter(|&l| l < self.above.len()) else {
                continue;
            };
            if slot.param != Param::Weight || grad.rank() < 2 {
                continue;
            }
            let count = grad.gt(self.threshold)?.to_dtype(DType::U32)?.sum_all()?;
            self.above[layer] += u64::from(count.to_scalar::<u32>()?);
            self.total[layer] += grad.elem_count() as u64;
        }
        Ok(())
    }

    /// `r_l` of every layer.
    fn rates(&self) -> Vec<f64> {
        self.above
            .iter()
            .zip(&self.total)
            .map(|(&a, &t)| a as f64 / t.max(1) as f64)
            .collect()
    }
}

/// `x` to 6 significant digits, so the card stays readable.
fn round6(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(5 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

impl Algorithm for Heur {
    fn name(&self) -> &'static str {
        "heur"
    }

    fn summary(&self) -> &'static str {
        "the deepest layers with stable gradient activity on probe data (3 by default); random layers below"
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn extract(&self, job: &ExtractJob<'_>, out: &mut GeneBuilder) -> Result<()> {
        let params: Params = job.recipe.typed()?;
        job.require_data(self.name())?;
        subset::check_gene_size(self.name(), params.layers, job.ancestor.depth())?;
        if params.batches < 2 || params.batch_size == 0 {
            return Err(heur_error(
                format!(
                    "{} batch(es) of {} example(s) give no variation across batches",
                    params.batches, params.batch_size
                ),
                "pass `--set batches=N` with N >= 2 and `--set batch_size=B` with B >= 1",
            ));
        }
        let (per_batch, losses) = gradient_activity(job, &params)?;
        let stats = activity(&per_batch);
        let (selected, fallback) = stable_suffix(&stats, params.layers, params.max_cv);
        let rounded: Vec<Activity> = stats
            .iter()
            .map(|a| Activity {
                mean: round6(a.mean),
                cv: round6(a.cv),
            })
            .collect();
        out.diagnostic("gradient_activity", &rounded)?;
        out.diagnostic(
            "probe_loss",
            losses.iter().map(|&l| round6(l)).collect::<Vec<_>>(),
        )?;
        out.diagnostic(
            "rule",
            format!(
                "longest suffix of at most {} layers whose CV of r across {} batches is <= {}; r = fraction of weight-matrix gradient entries > {:e}",
                params.layers, params.batches, params.max_cv, params.threshold
            ),
        )?;
        out.diagnostic("fallback", fallback)?;
        subset::write_layers(out, job.ancestor, &selected)
    }

    fn grow(&self, gene: &GeneView, request: &GrowRequest) -> Result<Blueprint> {
        let (selected, _) = subset::selection(gene)?;
        let start = request.layers.saturating_sub(selected.len());
        subset::place_layers(self.name(), &selected, request, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(cvs: &[f64]) -> Vec<Activity> {
        cvs.iter().map(|&cv| Activity { mean: 0.5, cv }).collect()
    }

    #[test]
    fn activity_is_mean_and_cv_across_batches() {
        let stats = activity(&[vec![0.2, 0.5], vec![0.4, 0.5]]);
        assert!((stats[0].mean - 0.3).abs() < 1e-12);
        assert!((stats[0].cv - 0.1 / 0.3).abs() < 1e-12);
        assert_eq!(stats[1], Activity { mean: 0.5, cv: 0.0 });
    }

    #[test]
    fn the_longest_stable_suffix_is_kept() {
        assert_eq!(
            stable_suffix(&act(&[0.9, 0.1, 0.1, 0.1]), 3, 0.5),
            (vec![1, 2, 3], false)
        );
        assert_eq!(
            stable_suffix(&act(&[0.1, 0.1, 0.9, 0.1]), 3, 0.5),
            (vec![3], false)
        );
        assert_eq!(
            stable_suffix(&act(&[0.1, 0.1, 0.1, 0.9]), 3, 0.5),
            (vec![1, 2, 3], true)
        );
        assert_eq!(
            stable_suffix(&act(&[0.1, 0.1]), 3, 0.5),
            (vec![0, 1], false)
        );
        assert_eq!(round6(0.123_456_789), 0.123_457);
    }
}
