//! Auto-style learngene, after Auto Learngene (arXiv 2305.02279), whose condensing step has no
//! public code: the gene is a contiguous window of `k` whole ancestor layers (default half the
//! depth), kept at its relative depth in descendants, with seeded random layers around it.
//!
//! `rule: cka` (default), on calibration data (`--data`):
//! 1. a *pseudo-descendant* of `P = pseudo_layers` blocks keeps every stride-th ancestor layer,
//!    ending at the last one (layer `⌈(j+1)·L/P⌉ − 1` for `j < P`), with the ancestor's
//!    embeddings and head; it is not trained (the paper's would be);
//! 2. `samples` examples run through the ancestor and the pseudo-descendant; linear CKA
//!    ([`super::cka`]) compares every ancestor layer's output with every pseudo-descendant
//!    layer's output, tokens as rows (padding left out);
//! 3. each window of `k` consecutive ancestor layers is scored by its best monotone alignment
//!    to the pseudo-descendant, the mean CKA of the matched pairs, found by dynamic programming
//!    ([`best_alignment`]: window layer `i` ↦ pseudo layer `π(i)` in order, every pseudo layer
//!    matched when `k ≥ P`); the best window wins, the earliest among scores equal to 4
//!    decimals.
//!
//! Each token state is scaled to unit RMS before CKA (`token_norm`, default on): the few tokens
//! of huge norm in llama residual streams (attention sinks) otherwise dominate the Gram
//! matrices; on SmolLM2 they held every CKA near 0.05 from layer 11 to 27.
//!
//! `rule: trained` is the paper's description (`fidelity: as-described`): the pseudo-descendant
//! is a small model trained from scratch on the descendant's side of the data (`lgreg train` with
//! `MODE: faithful` trains it and passes its directory as `pseudo`), and steps 2–3 compare the
//! ancestor with it.
//!
//! `rule: first-half` is the fixed rule of the Cluster-Learngene baseline: layers `0..k`.
//!
//! **Growth:** for `N ≥ k` the gene starts at layer `round(s/L·N)` (clamped so the window fits),
//! where `s` is the window's first ancestor layer.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::Deserialize;

use super::blueprint::{Blueprint, GrowRequest};
use super::builder::GeneBuilder;
use super::cka::{Gram, cka, unit_rms_rows};
use super::probe::Probe;
use super::{Algorithm, ExtractJob, GeneView, subset};
use crate::anatomy::Slot;
use crate::checkpoint::open;
use crate::error::{Error, Result};
use crate::nn::{Hooks, Mode, Model, ModelConfig, Parametrisation};
use crate::progress::Event;
use crate::registry::manifest::Fidelity;

/// The auto algorithm.
#[derive(Debug)]
pub struct Auto;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Rule {
    Cka,
    Trained,
    FirstHalf,
}

fn default_seq_len() -> usize {
    64
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    rule: Rule,
    /// Gene size `k` (default: half the ancestor's depth, at least 1).
    #[serde(default)]
    layers: Option<usize>,
    /// Depth of the untrained pseudo-descendant (`rule: cka`).
    pseudo_layers: usize,
    /// `rule: trained`: the directory of the trained pseudo-descendant.
    #[serde(default)]
    pseudo: Option<PathBuf>,
    /// Calibration examples (one batch).
    samples: usize,
    /// Tokens per llama block.
    #[serde(default = "default_seq_len")]
    seq_len: usize,
    /// Scale every token state to unit RMS before CKA.
    #[serde(default = "yes")]
    token_norm: bool,
}

fn yes() -> bool {
    true
}

fn auto_error(reason: String, fix: &str) -> Error {
    Error::Algorithm {
        algorithm: "auto".into(),
        reason,
        fix: fix.into(),
    }
}

/// The depth of the pseudo-descendant a resolved auto `recipe` asks for (`pseudo_layers`).
pub fn pseudo_depth(recipe: &crate::recipe::Recipe) -> Result<usize> {
    let params: Params = recipe.typed()?;
    if params.pseudo_layers == 0 {
        return Err(auto_error(
            "a pseudo-descendant of 0 layers".into(),
            "set `pseudo_layers` (GENE.PARAMS) to 1 or more",
        ));
    }
    Ok(params.pseudo_layers)
}

/// The ancestor layers the pseudo-descendant keeps: every stride-th, ending at the last.
pub fn pseudo_layers(depth: usize, count: usize) -> Vec<usize> {
    (0..count)
        .map(|j| ((j + 1) * depth).div_ceil(count.max(1)).saturating_sub(1))
        .collect()
}

/// The index of the first largest value among `candidates` of `values` (skipping −∞).
fn first_max(values: &[f64], candidates: impl Iterator<Item = usize>) -> Option<usize> {
    candidates
        .filter(|&q| values[q] > f64::NEG_INFINITY)
        .fold(None, |b, q| match b {
            Some(b) if values[b] >= values[q] => Some(b),
            _ => Some(q),
        })
}

/// The best monotone alignment of window layers (rows of `scores`) to pseudo-descendant
/// layers (columns), and the column `π(i)` of each row; the score is `Σ scores[i][π(i)]`.
/// When there are at least as many rows as columns, `π` runs from the first column to the
/// last in steps of 0 or 1, so every pseudo-descendant layer is matched; otherwise `π` is
/// strictly increasing, so window layers take distinct pseudo-descendant layers in order.
pub fn best_alignment(scores: &[Vec<f64>]) -> (f64, Vec<usize>) {
    let rows = scores.len();
    let cols = scores.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return (0.0, Vec::new());
    }
    let cover = rows >= cols;
    let score = |i: usize, p: usize| scores[i].get(p).copied().unwrap_or(f64::NEG_INFINITY);
    // best[i][p]: the best sum for rows 0..=i with row i on column p; from[i][p]: row i-1's.
    let mut best = vec![vec![f64::NEG_INFINITY; cols]; rows];
    let mut from = vec![vec![0; cols]; rows];
    best[0] = (0..cols)
        .map(|p| {
            if !cover || p == 0 {
                score(0, p)
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    for i in 1..rows {
        for p in 0..cols {
            let lo = if cover { p.saturating_sub(1) } else { 0 };
            let hi = if cover { p + 1 } else { p };
            if let Some(q) = first_max(&best[i - 1], lo..hi) {
                best[i][p] = best[i - 1][q] + score(i, p);
                from[i][p] = q;
            }
        }
    }
    let end = if cover {
        Some(cols - 1)
    } else {
        first_max(&best[rows - 1], 0..cols)
    };
    let Some(mut p) = end else {
        return (f64::NEG_INFINITY, Vec::new());
    };
    let total = best[rows - 1][p];
    let mut path = vec![0; rows];
    for i in (0..rows).rev() {
        path[i] = p;
        p = from[i][p];
    }
    (total, path)
}

/// The mean aligned CKA of every window of `k` consecutive rows of `matrix`, rounded to 4
/// decimals, and the best window's start: the earliest among equal rounded scores, so that
/// float noise cannot pick between near-equal windows.
pub fn best_window(matrix: &[Vec<f64>], k: usize) -> (usize, Vec<f64>) {
    let scores: Vec<f64> = (0..=matrix.len().saturating_sub(k.max(1)))
        .map(|s| round4(best_alignment(&matrix[s..s + k.max(1)]).0 / k.max(1) as f64))
        .collect();
    let start = (0..scores.len()).fold(0, |b, s| if scores[s] > scores[b] { s } else { b });
    (start, scores)
}

/// A model's weights seen through a subset of its layers: block `j` is block `layers[j]`.
struct Picked {
    inner: Box<dyn Parametrisation>,
    layers: Vec<usize>,
}

impl Parametrisation for Picked {
    fn get(&self, slot: &Slot) -> Result<Option<Tensor>> {
        match slot.layer {
            None => self.inner.get(slot),
            Some(j) => match self.layers.get(j) {
                Some(&l) => self.inner.get(&Slot {
                    layer: Some(l),
                    ..slot.clone()
                }),
                None => Ok(None),
            },
        }
    }
    fn depth(&self) -> usize {
        self.layers.len()
    }
    fn stitch(&self, layer: usize) -> Option<(Tensor, Option<Tensor>)> {
        self.layers.get(layer).and_then(|&l| self.inner.stitch(l))
    }
    fn vars(&self) -> Vec<(String, Var)> {
        self.inner.vars()
    }
}

/// The pseudo-descendant the ancestor's layers are compared with.
enum Pseudo<'a> {
    /// Every stride-th ancestor layer, untrained (`rule: cka`).
    Picked(&'a [usize]),
    /// A model trained from scratch (`rule: trained`).
    Trained(&'a Path),
}

impl Pseudo<'_> {
    /// The pseudo-descendant as a model: `ancestor` seen through the picked layers, or the
    /// trained model, checked to read the ancestor's inputs.
    fn model(&self, ancestor: Model) -> Result<Model> {
        match self {
            Pseudo::Picked(picks) => {
                let Model {
                    mut config,
                    params: weights,
                    device,
                    ..
                } = ancestor;
                config.layers = picks.len();
                Ok(Model::new(
                    config,
                    Box::new(Picked {
                        inner: weights,
                        layers: picks.to_vec(),
                    }),
                    device,
                ))
            }
            Pseudo::Trained(dir) => {
                let model = Model::load(&open(dir)?, &ancestor.device)?;
                check_pseudo(dir, &model.config, &ancestor.config)?;
                Ok(model)
            }
        }
    }
}

/// Refuse a trained pseudo-descendant that cannot read the ancestor's calibration inputs.
fn check_pseudo(dir: &Path, pseudo: &ModelConfig, ancestor: &ModelConfig) -> Result<()> {
    let same_input = pseudo.family == ancestor.family
        && pseudo.vocab == ancestor.vocab
        && pseudo.image_size == ancestor.image_size
        && pseudo.patch_size == ancestor.patch_size
        && pseudo.channels == ancestor.channels;
    if same_input {
        return Ok(());
    }
    Err(auto_error(
        format!(
            "the pseudo-descendant at '{}' ({} with vocabulary {}, images {}px) does not read the ancestor's inputs ({} with vocabulary {}, images {}px)",
            dir.display(),
            pseudo.family,
            pseudo.vocab,
            pseudo.image_size,
            ancestor.family,
            ancestor.vocab,
            ancestor.image_size
        ),
        "train the pseudo-descendant with the ancestor's family, tokenizer and image size (`lgreg train` with `MODE: faithful` does)",
    ))
}

/// The CKA matrix `[ancestor layer][pseudo layer]` on one calibration batch, and its row count.
fn cka_matrix(
    job: &ExtractJob<'_>,
    params: &Params,
    pseudo: &Pseudo<'_>,
) -> Result<(Vec<Vec<f64>>, usize)> {
    let data = job.require_data("auto")?;
    let ancestor = job.ancestor;
    let model = Model::load(ancestor.ckpt, &Device::Cpu)?;
    let probe = Probe::load(ancestor, data, params.seq_len)?;
    probe.check(&model.config, false)?;
    let batch = probe
        .batches(1, params.samples, job.seed, &Device::Cpu)?
        .remove(0);
    let full = model.forward_with(&batch.input, Mode::Infer, Hooks::HIDDEN_STATES)?;
    let pseudo = pseudo.model(model)?;
    job.reporter.report(Event::Start {
        task: "layer similarity".into(),
        total: (ancestor.depth() + pseudo.params.depth()) as u64,
    });
    let small = pseudo.forward_with(&batch.input, Mode::Infer, Hooks::HIDDEN_STATES)?;
    let advance = || {
        job.reporter.report(Event::Advance {
            amount: 1,
            item: None,
        })
    };
    let gram = |state: &Tensor| -> Result<Gram> {
        let rows = batch.rows(state)?;
        if params.token_norm {
            Gram::new(&unit_rms_rows(&rows)?)
        } else {
            Gram::new(&rows)
        }
    };
    let mut columns = Vec::with_capacity(pseudo.params.depth());
    for state in small.hidden.iter().skip(1) {
        columns.push(gram(state)?);
        advance();
    }
    let mut matrix = Vec::with_capacity(ancestor.depth());
    for state in full.hidden.iter().skip(1) {
        let gram = gram(state)?;
        matrix.push(
            columns
                .iter()
                .map(|c| cka(&gram, c))
                .collect::<Result<Vec<f64>>>()?,
        );
        advance();
    }
    job.reporter.report(Event::Finish);
    let rows = columns.first().map_or(0, Gram::len);
    Ok((matrix, rows))
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

impl Auto {
    /// The untrained pseudo-descendant of `rule: cka`: every stride-th ancestor layer.
    fn picked_layers(&self, job: &ExtractJob<'_>, params: &Params) -> Result<Vec<usize>> {
        let depth = job.ancestor.depth();
        if !(1..=depth).contains(&params.pseudo_layers) {
            return Err(auto_error(
                format!(
                    "a pseudo-descendant of {} layer(s) from an ancestor of {depth}",
                    params.pseudo_layers
                ),
                &format!("pass `--set pseudo_layers=P` with 1 <= P <= {depth}"),
            ));
        }
        Ok(pseudo_layers(depth, params.pseudo_layers))
    }

    /// The trained pseudo-descendant's directory of `rule: trained`.
    fn trained_pseudo<'p>(&self, params: &'p Params) -> Result<&'p Path> {
        params.pseudo.as_deref().ok_or_else(|| {
            auto_error(
                "rule: trained compares the ancestor with a trained pseudo-descendant, and no `pseudo` directory was given".into(),
                "pass `--set pseudo=DIR` (a model trained from scratch on the descendant's data), or run `lgreg train` with `MODE: faithful`, which trains one",
            )
        })
    }

    fn select_cka(
        &self,
        job: &ExtractJob<'_>,
        params: &Params,
        k: usize,
        out: &mut GeneBuilder,
    ) -> Result<Vec<usize>> {
        if params.samples == 0 {
            return Err(auto_error(
                "0 calibration samples".into(),
                "pass `--set samples=S` with S >= 1",
            ));
        }
        let picks;
        let (pseudo, described) = if params.rule == Rule::Trained {
            let dir = self.trained_pseudo(params)?;
            out.diagnostic("pseudo_descendant", dir.display().to_string())?;
            (
                Pseudo::Trained(dir),
                "a trained pseudo-descendant".to_string(),
            )
        } else {
            picks = self.picked_layers(job, params)?;
            out.diagnostic("pseudo_descendant", &picks)?;
            (
                Pseudo::Picked(&picks),
                format!(
                    "an untrained {}-layer pseudo-descendant (ancestor layers {picks:?})",
                    picks.len()
                ),
            )
        };
        let (matrix, rows) = cka_matrix(job, params, &pseudo)?;
        let (start, scores) = best_window(&matrix, k);
        let (_, alignment) = best_alignment(&matrix[start..start + k]);
        let round_row = |r: &Vec<f64>| r.iter().map(|&x| round4(x)).collect::<Vec<_>>();
        out.diagnostic("cka", matrix.iter().map(round_row).collect::<Vec<_>>())?;
        out.diagnostic("window_scores", round_row(&scores))?;
        out.diagnostic("alignment", &alignment)?;
        out.diagnostic("calibration_tokens", rows)?;
        out.diagnostic(
            "rule",
            format!(
                "{}: the window of {k} consecutive layers with the best monotone mean linear CKA to {described}, tokens as rows{}",
                if params.rule == Rule::Trained { "trained" } else { "cka" },
                if params.token_norm { ", each scaled to unit RMS" } else { "" }
            ),
        )?;
        Ok((start..start + k).collect())
    }
}

impl Algorithm for Auto {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn summary(&self) -> &'static str {
        "auto: the window of whole layers most similar (CKA) to a trained or untrained pseudo-descendant, or the first half; random layers around it"
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn extract(&self, job: &ExtractJob<'_>, out: &mut GeneBuilder) -> Result<()> {
        let params: Params = job.recipe.typed()?;
        let depth = job.ancestor.depth();
        let k = params.layers.unwrap_or((depth / 2).max(1));
        subset::check_gene_size(self.name(), k, depth)?;
        let selected = match params.rule {
            Rule::Cka => {
                job.require_data(self.name())?;
                self.select_cka(job, &params, k, out)?
            }
            Rule::Trained => {
                job.require_data(self.name())?;
                out.fidelity = Some(Fidelity::AsDescribed);
                self.select_cka(job, &params, k, out)?
            }
            Rule::FirstHalf => {
                out.diagnostic(
                    "rule",
                    format!("first-half: layers 0..{k}, the Cluster-Learngene baseline"),
                )?;
                (0..k).collect()
            }
        };
        subset::write_layers(out, job.ancestor, &selected)
    }

    fn grow(&self, gene: &GeneView, request: &GrowRequest) -> Result<Blueprint> {
        let (selected, depth) = subset::selection(gene)?;
        let first = selected.first().copied().unwrap_or(0);
        let start = (first as f64 / depth.max(1) as f64 * request.layers as f64).round() as usize;
        subset::place_layers(self.name(), &selected, request, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_descendant_takes_every_stride_th_layer_ending_at_the_last() {
        assert_eq!(pseudo_layers(30, 4), vec![7, 14, 22, 29]);
        assert_eq!(pseudo_layers(6, 4), vec![1, 2, 4, 5]);
        assert_eq!(pseudo_layers(12, 3), vec![3, 7, 11]);
        assert_eq!(pseudo_layers(5, 5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn alignment_is_the_best_monotone_map() {
        // Deeper windows cover every pseudo layer in order, from the first to the last.
        let scores = vec![vec![0.9, 0.0], vec![0.9, 0.1], vec![0.0, 1.0]];
        assert_eq!(best_alignment(&scores), (2.8, vec![0, 0, 1]));
        let flat = vec![vec![0.9, 0.1]; 3];
        let (total, path) = best_alignment(&flat);
        assert_eq!(path, vec![0, 0, 1]);
        assert!((total - 1.9).abs() < 1e-12);
        // Greedy per row would take column 1 twice; shallower windows take distinct columns.
        let scores = vec![vec![0.1, 0.9, 0.2], vec![0.1, 0.95, 0.3]];
        let (total, path) = best_alignment(&scores);
        assert_eq!(path, vec![1, 2]);
        assert!((total - 1.2).abs() < 1e-12);
        assert_eq!(best_alignment(&[vec![0.2, 0.7, 0.1]]), (0.7, vec![1]));
    }

    #[test]
    fn the_best_window_wins_and_ties_go_to_the_earliest() {
        let m = vec![
            vec![0.1, 0.1],
            vec![0.9, 0.2],
            vec![0.3, 0.8],
            vec![0.2, 0.1],
        ];
        let (start, scores) = best_window(&m, 2);
        assert_eq!(start, 1);
        assert_eq!(scores.len(), 3);
        assert!((scores[1] - 0.85).abs() < 1e-12, "{scores:?}");
        let flat = vec![vec![0.5]; 4];
        assert_eq!(best_window(&flat, 2).0, 0);
        let near = vec![vec![0.5], vec![0.500_000_1], vec![0.4]];
        assert_eq!(best_window(&near, 1), (0, vec![0.5, 0.5, 0.4]));
        assert_eq!(best_window(&m, 4).1.len(), 1);
    }
}
