//! TLEG (arXiv 2312.05614): the gene is an intercept B and a slope A per layer tensor; layer
//! `l` of a descendant of depth `L` is `B + (l/L)·A`.
//!
//! Training-free extraction fits (A, B) by least squares over the ancestor's own layers with
//! `t_l = l / L_a`, accumulating in f32 ([`fit`]), and records the R² of every tensor. The fit
//! goes tensor by tensor: the layers of one tensor are borrowed from the memory map and pass
//! through the sums tile by tile, and their pages are released behind it, so memory stays at
//! the two output layers and a few MiB of mapped pages. A tensor whose layers have to be
//! converted (another dtype or format) is summed one layer at a time instead. With
//! `align: true` each layer is first permuted to match the previous one ([`super::align`]),
//! which needs whole layers one after the other; the card records the R² of both fits.
//!
//! The faithful path trains the aux net whose layers are that line, by distillation
//! (the `aux` module, [`super::faithful`]).
//!
//! An official TLEG checkpoint (`*_base` / `*_ilayer` names) is imported instead as a faithful
//! gene ([`official`]).

mod aux;
mod fit;
mod official;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;

use serde::Deserialize;

use super::ancestor::{AncestorModel, Key};
use super::blueprint::{Blueprint, GrowRequest, LayerSource, require_layers};
use super::builder::GeneBuilder;
use super::faithful::{AuxNet, AuxRequest};
use super::{Algorithm, ExtractJob, GeneView, Imported, align};
use crate::anatomy::Family;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::progress::{Event, Reporter};
use crate::recipe::Recipe;
use fit::{Grid, Line, LineFit, fit_tiled};

/// The TLEG algorithm.
#[derive(Debug)]
pub struct Tleg;

/// The unit with the intercepts B.
pub const BASE_UNIT: &str = "tleg.base.safetensors";
/// The unit with the slopes A.
pub const SLOPE_UNIT: &str = "tleg.slope.safetensors";
/// The grid descendants are sampled on, for the card.
const GRID: &str = "layer l of L (0-based) = base + (l / L) * slope";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    align: bool,
}

/// The fitted line of every layer tensor.
type Lines = BTreeMap<Key, Line>;

/// Fit every layer tensor of the ancestor as it is.
fn fit_plain(ancestor: &AncestorModel<'_>, reporter: &dyn Reporter) -> Result<Lines> {
    let keys = ancestor.keys();
    reporter.report(Event::Start {
        task: "fit tensors".into(),
        total: keys.len() as u64,
    });
    let mut lines = Lines::new();
    for key in keys {
        lines.insert(key, fit_tensor(ancestor, key)?);
        reporter.report(Event::Advance {
            amount: 1,
            item: None,
        });
    }
    reporter.report(Event::Finish);
    Ok(lines)
}

/// Fit one layer tensor over every layer: tile by tile while its layers are borrowed from the
/// memory map; one layer at a time from the first layer that had to be converted on.
fn fit_tensor(ancestor: &AncestorModel<'_>, key: Key) -> Result<Line> {
    let depth = ancestor.depth();
    let grid = Grid::new(depth);
    let n: usize = ancestor.shape(key)?.iter().product();
    let mut borrowed: Vec<&[f32]> = Vec::with_capacity(depth);
    let mut by_layer: Option<LineFit> = None;
    for l in 0..depth {
        let w = ancestor.view(l, key)?;
        if w.len() != n {
            return Err(Error::ModelMismatch {
                name: ancestor.tensor(l, key)?.to_string(),
                reason: format!("it holds {} values, its shape says {n}", w.len()),
            });
        }
        match (w, &mut by_layer) {
            (Cow::Borrowed(w), None) => borrowed.push(w),
            (w, fit) => {
                let fit = fit.get_or_insert_with(|| LineFit::new(n));
                for (j, earlier) in borrowed.drain(..).enumerate() {
                    fit.add(earlier, grid.t(j));
                    ancestor.release(j, key);
                }
                fit.add(&w, grid.t(l));
                ancestor.release(l, key);
            }
        }
    }
    if let Some(fit) = by_layer {
        return Ok(fit.solve(grid));
    }
    let line = fit_tiled(&borrowed, &mut Mapped { ancestor, key });
    for l in 0..depth {
        ancestor.release(l, key);
    }
    Ok(line)
}

/// The pages of one tensor in every layer, brought in before a band is fitted and let go
/// after, so that about one band of every layer is mapped at a time.
struct Mapped<'a, 'b> {
    ancestor: &'a AncestorModel<'b>,
    key: Key,
}

impl fit::Bands for Mapped<'_, '_> {
    fn next(&mut self, range: Range<usize>) {
        for l in 0..self.ancestor.depth() {
            self.ancestor.prefetch_elements(l, self.key, range.clone());
        }
    }

    fn done(&mut self, range: Range<usize>) {
        for l in 0..self.ancestor.depth() {
            self.ancestor.release_elements(l, self.key, range.clone());
        }
    }
}

/// Fit every layer tensor after aligning each layer to the one before; also returns the
/// summary of every layer's permutation.
fn fit_aligned(
    ancestor: &AncestorModel<'_>,
    reporter: &dyn Reporter,
) -> Result<(Lines, Vec<serde_json::Value>)> {
    let depth = ancestor.depth();
    let grid = Grid::new(depth);
    let keys = ancestor.keys();
    let spec = align::LayerSpec::of(ancestor)?;
    let mut fits: BTreeMap<Key, LineFit> = BTreeMap::new();
    for &key in &keys {
        fits.insert(key, LineFit::new(ancestor.shape(key)?.iter().product()));
    }
    reporter.report(Event::Start {
        task: "align and fit layers".into(),
        total: depth as u64,
    });
    let mut previous: Option<align::Layer> = None;
    let mut permutations = Vec::new();
    for l in 0..depth {
        let mut layer = align::Layer::new();
        for &key in &keys {
            layer.insert(key, ancestor.read(l, key)?);
            ancestor.release(l, key);
        }
        let (layer, perm) = match &previous {
            Some(prev) => align::align_layer(&spec, prev, layer)?,
            None => (layer, align::Permutation::identity(&spec)),
        };
        for (key, w) in &layer {
            if let Some(f) = fits.get_mut(key) {
                f.add(w, grid.t(l));
            }
        }
        permutations.push(perm.summary());
        previous = Some(layer);
        reporter.report(Event::Advance {
            amount: 1,
            item: None,
        });
    }
    reporter.report(Event::Finish);
    let lines = fits.into_iter().map(|(k, f)| (k, f.solve(grid))).collect();
    Ok((lines, permutations))
}

/// The R² of every tensor, by its name in the gene.
fn r2_by_name(ancestor: &AncestorModel<'_>, lines: &Lines) -> Result<BTreeMap<String, f64>> {
    lines
        .iter()
        .map(|(k, line)| Ok((ancestor.unit_name(*k)?, line.r2)))
        .collect()
}

fn mean(values: &BTreeMap<String, f64>) -> f64 {
    values.values().sum::<f64>() / values.len().max(1) as f64
}

/// Write the base and slope units of `lines`.
fn put_lines(out: &mut GeneBuilder, ancestor: &AncestorModel<'_>, lines: Lines) -> Result<()> {
    let (mut base, mut slope) = (BTreeMap::new(), BTreeMap::new());
    for (key, line) in lines {
        base.insert(key, line.base);
        slope.insert(key, line.slope);
    }
    out.put_layer(BASE_UNIT, ancestor, &base)?;
    out.put_layer(SLOPE_UNIT, ancestor, &slope)
}

impl Algorithm for Tleg {
    fn name(&self) -> &'static str {
        "tleg"
    }

    fn summary(&self) -> &'static str {
        "an intercept B and a slope A per layer tensor; layer l of L is B + (l/L)·A"
    }

    fn imports(&self, ckpt: &Checkpoint) -> Option<Family> {
        official::is_official(ckpt).then_some(Family::Vit)
    }

    fn import(&self, ckpt: &Checkpoint, recipe: &Recipe) -> Result<Imported> {
        let params: Params = recipe.typed()?;
        if params.align {
            return Err(Error::Algorithm {
                algorithm: self.name().into(),
                reason: "an official TLEG checkpoint is imported as it is; there are no ancestor layers to align".into(),
                fix: "drop `--set align=true`".into(),
            });
        }
        official::import(ckpt)
    }

    fn extract(&self, job: &ExtractJob<'_>, out: &mut GeneBuilder) -> Result<()> {
        let params: Params = job.recipe.typed()?;
        let ancestor = job.ancestor;
        let started = Instant::now();
        let plain = fit_plain(ancestor, job.reporter)?;
        let r2_plain = r2_by_name(ancestor, &plain)?;
        let chosen = if params.align {
            drop(plain);
            let (aligned, permutations) = fit_aligned(ancestor, job.reporter)?;
            let r2 = r2_by_name(ancestor, &aligned)?;
            out.diagnostic("r2_mean", mean(&r2))?;
            out.diagnostic("r2", &r2)?;
            out.diagnostic("r2_unaligned_mean", mean(&r2_plain))?;
            out.diagnostic("r2_unaligned", &r2_plain)?;
            out.diagnostic("alignment", &permutations)?;
            aligned
        } else {
            out.diagnostic("r2_mean", mean(&r2_plain))?;
            out.diagnostic("r2", &r2_plain)?;
            plain
        };
        out.record_step("fit", started);
        out.diagnostic("aligned", params.align)?;
        out.diagnostic("aux_depth", ancestor.depth())?;
        out.diagnostic("grid", GRID)?;
        let started = Instant::now();
        put_lines(out, ancestor, chosen)?;
        out.record_step("units", started);
        Ok(())
    }

    fn aux_net(&self, request: &AuxRequest<'_>) -> Result<Box<dyn AuxNet>> {
        aux::aux_net(request)
    }

    fn grow(&self, _gene: &GeneView, request: &GrowRequest) -> Result<Blueprint> {
        require_layers(
            self.name(),
            request,
            1,
            "a descendant has at least one layer",
        )?;
        let n = request.layers;
        let layers = (0..n)
            .map(|l| LayerSource::Line {
                base: BASE_UNIT.into(),
                slope: SLOPE_UNIT.into(),
                t: l as f64 / n as f64,
            })
            .collect();
        Ok(Blueprint::of(layers))
    }
}
