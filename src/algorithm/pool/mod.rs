//! Learngene Pool (arXiv 2312.05743): the gene is a pool of small "instances" plus linear
//! stitch layers between them; a descendant is the front blocks of one instance, a stitch, and
//! the end blocks of another (or one instance alone).
//!
//! Training-free approximation (the paper distils small students from the ancestor): the
//! instances are two block subsets of the ancestor at its own width, `a` = its even layers and
//! `b` = its odd layers ([`configs`]). Every stitch layer is fitted in closed form on calibration
//! data as SN-Net's `snnet` initialisation does: for each configuration `(i, j)` it serves,
//! least squares `[X_i, 1]·M ≈ Y_{j-1}` where `X_i` is the hidden states after front block `i`
//! and `Y_{j-1}` those entering end block `j` (the embedding output when `j = 0`), tokens as rows;
//! `W = Mᵀ` without the bias row, `b` = the bias row, averaged over the configurations that share
//! the layer ([`lstsq`]). The instances run as engine models ([`Model::load_layers`]), or one
//! block at a time from the mapped checkpoint when the ancestor is large
//! ([`crate::nn::layerwise`]; recipe parameter `layerwise`).
//!
//! The paper's pool, with distilled students of several widths and a fine-tuned pool, is
//! [`trained`] (`lgreg train`, `MODE: faithful`); its genes grow through the same `spawn`.

pub mod configs;
pub mod lstsq;
pub mod trained;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::ancestor::AncestorModel;
use super::blueprint::{Blueprint, GrowRequest, LayerSource, StitchSource};
use super::builder::GeneBuilder;
use super::probe::{Probe, ProbeBatch, token_rows};
use super::{Algorithm, ExtractJob, GeneView};
use crate::anatomy::{Role, STITCH_PREFIX};
use crate::error::{Error, Result};
use crate::nn::layerwise::Layerwise;
use crate::nn::{Hooks, Input, Mode, Model};
use crate::progress::{Event, Reporter};
use configs::{Choice, StitchConfig, block_unit, configurations, instance_layers, pair_names};
use lstsq::Affine;

/// The pool algorithm.
#[derive(Debug)]
pub struct Pool;

/// The recipe parameters of the stitch fits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    /// Calibration inputs (token blocks, sentences or images).
    pub samples: usize,
    /// Tokens per llama calibration block (vit reads images and has none).
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Relative ridge of the least-squares fits.
    pub ridge: f64,
    /// Run each instance one block at a time ([`crate::nn::layerwise`]): `true`, `false`, or
    /// unset to do so when the ancestor is large ([`AncestorModel::run_layerwise`]).
    #[serde(default)]
    pub layerwise: Option<bool>,
}

fn default_seq_len() -> usize {
    32
}

/// The tensor names inside a stitch unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StitchTensors {
    pub weight: String,
    pub bias: String,
}

impl StitchTensors {
    pub(crate) fn new() -> StitchTensors {
        StitchTensors {
            weight: format!("{STITCH_PREFIX}.0.weight"),
            bias: format!("{STITCH_PREFIX}.0.bias"),
        }
    }

    /// Record the stitch role of both tensor names in `out`.
    pub(crate) fn record_roles(&self, out: &mut GeneBuilder) -> Result<()> {
        let role = serde_json::to_value(Role::Stitch)?;
        for name in [&self.weight, &self.bias] {
            out.roles
                .insert(name.clone(), role.as_str().unwrap_or("stitch").to_string());
        }
        Ok(())
    }
}

/// Most calibration inputs run in one forward pass.
const MAX_BATCH: usize = 8;

fn pool_error(reason: String, fix: &str) -> Error {
    Error::Algorithm {
        algorithm: "pool".into(),
        reason,
        fix: fix.into(),
    }
}

/// The largest divisor of `samples` that is at most [`MAX_BATCH`], so that exactly `samples`
/// inputs are drawn.
fn batch_size(samples: usize) -> usize {
    (1..=MAX_BATCH.min(samples))
        .rev()
        .find(|&b| samples.is_multiple_of(b))
        .unwrap_or(1)
}

/// The hidden states of `model` on `batches`, as token rows: entry `k` holds the states that
/// enter block `k` (`k = 0`: the embedding output; `k = D`: the last block's output).
pub(crate) fn hidden_rows(
    model: &Model,
    batches: &[ProbeBatch],
    reporter: &dyn Reporter,
) -> Result<Vec<Tensor>> {
    let states = |input: &Input| {
        Ok(model
            .forward_with(input, Mode::Infer, Hooks::HIDDEN_STATES)?
            .hidden)
    };
    hidden_rows_of(states, batches, reporter)
}

/// [`hidden_rows`] of a model whose hidden states (after the embeddings and every block)
/// `states` gives.
fn hidden_rows_of(
    states: impl Fn(&Input) -> Result<Vec<Tensor>>,
    batches: &[ProbeBatch],
    reporter: &dyn Reporter,
) -> Result<Vec<Tensor>> {
    let mut parts: Vec<Vec<Tensor>> = Vec::new();
    for batch in batches {
        let hidden = states(&batch.input)?;
        parts.resize_with(hidden.len(), Vec::new);
        let mask = match &batch.input {
            Input::Tokens { mask, .. } => mask.as_ref(),
            Input::Images(_) => None,
        };
        for (k, h) in hidden.iter().enumerate() {
            parts[k].push(token_rows(h, mask)?);
        }
        reporter.report(Event::Advance {
            amount: 1,
            item: None,
        });
    }
    parts.iter().map(|p| Ok(Tensor::cat(p, 0)?)).collect()
}

/// One stitch layer fitted over the configurations that share it, with its relative residual
/// over all of them and on each.
pub(crate) struct FittedStitch {
    /// The affine map.
    pub map: Affine,
    /// The relative residual over its configurations.
    pub residual: f64,
    /// The relative residual on each, in order.
    pub per_pair: Vec<f64>,
}

/// Fit the stitch layer shared by `pairs`, given the inverse Gram matrix of every front block:
/// the mean over pairs of `G_i⁻¹ [X_i, 1]ᵀ Y_{j-1}`, summing `Y` over the pairs of each `i`.
fn fit_stitch(
    front: &[Tensor],
    end: &[Tensor],
    inverses: &[Tensor],
    pairs: &[&StitchConfig],
) -> Result<FittedStitch> {
    let mut by_front: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for c in pairs {
        by_front.entry(c.i).or_default().push(c.j);
    }
    let mut sum: Option<Tensor> = None;
    for (&i, ends) in &by_front {
        let targets: Vec<&Tensor> = ends.iter().map(|&j| &end[j]).collect();
        let y = Tensor::stack(&targets, 0)?.sum(0)?;
        let solution = inverses[i].matmul(&lstsq::cross(&front[i + 1], &y)?)?;
        sum = Some(match sum {
            Some(s) => (s + solution)?,
            None => solution,
        });
    }
    let sum = sum.ok_or_else(|| {
        pool_error(
            "a stitch layer without configurations".into(),
            "this is a bug in lgreg",
        )
    })?;
    let map = lstsq::affine_of(&sum, 1.0 / pairs.len() as f64)?;
    let (mut err, mut norm) = (0.0, 0.0);
    let mut per_pair = Vec::with_capacity(pairs.len());
    for c in pairs {
        let (e, y) = lstsq::squared_error(&front[c.i + 1], &end[c.j], &map)?;
        per_pair.push(relative(e, y));
        err += e;
        norm += y;
    }
    Ok(FittedStitch {
        map,
        residual: relative(err, norm),
        per_pair,
    })
}

fn relative(err: f64, norm: f64) -> f64 {
    if norm > 0.0 { (err / norm).sqrt() } else { 0.0 }
}

/// The calibration batches of the stitch fits: `params.samples` inputs of `data`, read as
/// `ancestor` reads them, drawn with `seed`.
pub(crate) fn calibration_batches(
    ancestor: &AncestorModel<'_>,
    data: &Path,
    params: &Params,
    seed: u64,
) -> Result<Vec<ProbeBatch>> {
    let probe = Probe::load(ancestor, data, params.seq_len)?;
    if probe.is_empty() {
        return Err(pool_error(
            format!("`{}` gave no calibration input", data.display()),
            "pass a longer text (llama, bert) or more images (vit) with `--data`",
        ));
    }
    let size = batch_size(params.samples.max(1));
    probe.batches(params.samples.max(1) / size, size, seed, &Device::Cpu)
}

/// Run each instance on the calibration data: its hidden-state rows, by instance name.
fn calibrate(
    job: &ExtractJob<'_>,
    params: &Params,
    instances: &[(String, Vec<usize>)],
) -> Result<(BTreeMap<String, Vec<Tensor>>, usize)> {
    let data = job.require_data("pool")?;
    let batches = calibration_batches(job.ancestor, data, params, job.seed)?;
    job.reporter.report(Event::Start {
        task: "calibrate pool instances".into(),
        total: (batches.len() * instances.len()) as u64,
    });
    let layerwise = job.ancestor.run_layerwise(params.layerwise)?;
    let mut states = BTreeMap::new();
    for (name, layers) in instances {
        let ckpt = job.ancestor.ckpt;
        let rows = if layerwise {
            let blocks = Layerwise::of_layers(ckpt, layers.clone(), &Device::Cpu)?;
            hidden_rows_of(|input| blocks.hidden_states(input), &batches, job.reporter)?
        } else {
            let model = Model::load_layers(ckpt, Some(layers), &Device::Cpu)?;
            hidden_rows(&model, &batches, job.reporter)?
        };
        states.insert(name.clone(), rows);
    }
    job.reporter.report(Event::Finish);
    let rows = rows_of(&states)?;
    Ok((states, rows))
}

/// The number of calibration rows (tokens) in `states`.
pub(crate) fn rows_of(states: &BTreeMap<String, Vec<Tensor>>) -> Result<usize> {
    states
        .values()
        .next()
        .and_then(|s| s.first())
        .map_or(Ok(0), |t| Ok(t.dim(0)?))
}

/// The hidden states of one instance, by name.
fn states_of<'s>(states: &'s BTreeMap<String, Vec<Tensor>>, name: &str) -> Result<&'s [Tensor]> {
    states
        .get(name)
        .map(Vec::as_slice)
        .ok_or_else(|| pool_error(format!("no instance `{name}`"), "this is a bug in lgreg"))
}

/// What [`fit_all`] found, by stitch unit.
struct Fitted {
    /// The relative residual of each stitch layer over its configurations.
    residuals: BTreeMap<String, f64>,
    /// The parameters of each stitch layer (weight and bias).
    sizes: BTreeMap<String, u64>,
}

/// Fit every stitch layer of `all` on the instances' hidden `states`, in the order the units
/// first appear; the relative residual of each configuration is filled into `all`.
pub(crate) fn fit_units(
    states: &BTreeMap<String, Vec<Tensor>>,
    all: &mut [StitchConfig],
    ridge: f64,
    reporter: &dyn Reporter,
) -> Result<Vec<(String, FittedStitch)>> {
    let mut units: Vec<String> = all.iter().map(|c| c.stitch.clone()).collect();
    units.dedup();
    reporter.report(Event::Start {
        task: "fit stitch layers".into(),
        total: units.len() as u64,
    });
    let mut fitted = Vec::with_capacity(units.len());
    // The inverse Gram matrix of every block of the current front instance (units come
    // grouped by direction).
    let mut inverses: (String, Vec<Tensor>) = (String::new(), Vec::new());
    for unit in units {
        let pairs: Vec<&StitchConfig> = all.iter().filter(|c| c.stitch == unit).collect();
        let (front, end) = (
            states_of(states, &pairs[0].front)?,
            states_of(states, &pairs[0].end)?,
        );
        if inverses.0 != pairs[0].front {
            let inv = front[1..]
                .iter()
                .map(|x| lstsq::inverse(&lstsq::gram(x)?, ridge))
                .collect::<Result<Vec<_>>>()?;
            inverses = (pairs[0].front.clone(), inv);
        }
        let fit = fit_stitch(front, end, &inverses.1, &pairs)?;
        let mut per_pair = fit.per_pair.iter();
        for c in all.iter_mut().filter(|c| c.stitch == unit) {
            c.residual = per_pair.next().copied();
        }
        reporter.report(Event::Advance {
            amount: 1,
            item: Some(unit.clone()),
        });
        fitted.push((unit, fit));
    }
    reporter.report(Event::Finish);
    Ok(fitted)
}

/// Fit and write every stitch layer; the relative residual of each, by unit, and of each
/// configuration (filled into `all`).
fn fit_all(
    out: &mut GeneBuilder,
    job: &ExtractJob<'_>,
    states: &BTreeMap<String, Vec<Tensor>>,
    all: &mut [StitchConfig],
    ridge: f64,
) -> Result<Fitted> {
    let names = StitchTensors::new();
    let mut residuals = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    for (unit, fit) in fit_units(states, all, ridge, job.reporter)? {
        let m = fit.map;
        sizes.insert(unit.clone(), (m.outputs * m.inputs + m.outputs) as u64);
        out.put_tensors(
            &unit,
            &[
                (names.weight.clone(), vec![m.outputs, m.inputs], m.weight),
                (names.bias.clone(), vec![m.outputs], m.bias),
            ],
        )?;
        residuals.insert(unit, fit.residual);
    }
    names.record_roles(out)?;
    Ok(Fitted { residuals, sizes })
}

/// The layers and the stitch of the stitched configuration `c` over `d`-block instances, the
/// stitch unit's tensors named `names`.
pub(crate) fn stitched_blueprint(c: &StitchConfig, d: usize, names: StitchTensors) -> Blueprint {
    let copy = |name: &str, k: usize| LayerSource::Copy {
        unit: block_unit(name, k),
    };
    let mut bp = Blueprint::of(
        (0..=c.i)
            .map(|k| copy(&c.front, k))
            .chain((c.j..d).map(|k| copy(&c.end, k)))
            .collect(),
    );
    bp.stitches.push(StitchSource {
        after: c.i,
        unit: c.stitch.clone(),
        weight: names.weight,
        bias: names.bias,
        random: false,
    });
    bp
}

impl Algorithm for Pool {
    fn name(&self) -> &'static str {
        "pool"
    }

    fn summary(&self) -> &'static str {
        "two instances (even and odd layers) and least-squares stitch layers between them"
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn grow_options(&self) -> &'static [&'static str] {
        &["front", "end", "stitch", "max-params"]
    }

    fn extract(&self, job: &ExtractJob<'_>, out: &mut GeneBuilder) -> Result<()> {
        let params: Params = job.recipe.typed()?;
        job.require_data(self.name())?;
        let ancestor = job.ancestor;
        let d = ancestor.depth() / 2;
        if d == 0 {
            return Err(pool_error(
                format!(
                    "the ancestor has {} layer(s); two instances need at least 2",
                    ancestor.depth()
                ),
                "extract a pool gene from an ancestor with at least two layers",
            ));
        }
        let instances = instance_layers(ancestor.depth());
        for (name, layers) in &instances {
            for (k, &l) in layers.iter().enumerate() {
                out.copy_layer(&block_unit(name, k), ancestor, l)?;
            }
        }
        let mut all = configurations(d);
        let (states, rows) = calibrate(job, &params, &instances)?;
        let Fitted { residuals, sizes } = fit_all(out, job, &states, &mut all, params.ridge)?;
        let (globals, block) = (ancestor.global_elements()?, ancestor.layer_elements()?);
        for c in &mut all {
            let stitch = sizes.get(&c.stitch).copied().unwrap_or(0);
            c.params = Some(globals + c.depth as u64 * block + stitch);
        }
        out.diagnostic("instance_params", globals + d as u64 * block)?;
        let instance_map: BTreeMap<&str, &Vec<usize>> =
            instances.iter().map(|(n, l)| (n.as_str(), l)).collect();
        out.diagnostic("instances", &instance_map)?;
        out.diagnostic("instance_depth", d)?;
        out.diagnostic("configurations", &all)?;
        out.diagnostic("stitch_tensors", StitchTensors::new())?;
        let mean = residuals.values().sum::<f64>() / residuals.len().max(1) as f64;
        out.diagnostic("stitch_residual", &residuals)?;
        out.diagnostic("stitch_residual_mean", mean)?;
        out.diagnostic("calibration_tokens", rows)?;
        out.diagnostic("ridge", params.ridge)?;
        out.diagnostic(
            "stitch_fit",
            "snnet closed form: [X_i, 1] M ~ Y_{j-1} per configuration, averaged per stitch layer; residual = ||pred - Y|| / ||Y|| over its configurations",
        )?;
        Ok(())
    }

    fn grow(&self, gene: &GeneView, request: &GrowRequest) -> Result<Blueprint> {
        if gene.card.diagnostics.contains_key(trained::DISTILLED) {
            return trained::grow(gene, request);
        }
        let d: usize = gene.diagnostic("instance_depth")?;
        let all: Vec<StitchConfig> = gene.diagnostic("configurations")?;
        let instances: BTreeMap<String, Vec<usize>> = gene.diagnostic("instances")?;
        let layers_of = |name: &str| instances.get(name).cloned().unwrap_or_default();
        let copy = |name: &str, k: usize| LayerSource::Copy {
            unit: block_unit(name, k),
        };
        let mut notes = serde_json::Map::new();
        let choice = match request.options.max_params {
            Some(budget) => {
                let sized: Option<u64> = gene.diagnostic("instance_params").ok();
                let pure: Vec<(String, Option<u64>)> =
                    pair_names().into_iter().map(|n| (n, sized)).collect();
                configs::choose_by_budget(&all, d, &pure, budget, request)?
            }
            None => configs::choose(&all, &pair_names(), d, request)?,
        };
        let bp = match choice {
            Choice::Pure(name) => {
                notes.insert("pool_instance".into(), name.clone().into());
                notes.insert(
                    "ancestor_layers".into(),
                    serde_json::to_value(layers_of(&name))?,
                );
                Blueprint::of((0..d).map(|k| copy(&name, k)).collect())
            }
            Choice::Stitched(c) => {
                let names: StitchTensors = gene.diagnostic("stitch_tensors")?;
                let (front, end) = (layers_of(&c.front), layers_of(&c.end));
                let ancestor: Vec<usize> =
                    front[..=c.i].iter().chain(&end[c.j..]).copied().collect();
                notes.insert("ancestor_layers".into(), serde_json::to_value(ancestor)?);
                notes.insert("pool_configuration".into(), serde_json::to_value(&c)?);
                stitched_blueprint(&c, d, names)
            }
        };
        Ok(Blueprint { notes, ..bp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_divide_the_samples() {
        assert_eq!(batch_size(100), 5);
        assert_eq!(batch_size(8), 8);
        assert_eq!(batch_size(97), 1);
        assert_eq!(batch_size(1), 1);
    }
}
