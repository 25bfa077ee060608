//! TLEG (arXiv 2312.05614): the gene is an intercept B and a slope A per layer tensor; layer
//! `l` of a descendant of depth `L` is `B + (l/L)·A`.
//!
//! Training-free extraction fits (A, B) by least squares over the ancestor's own layers with
//! `t_l = l / L_a`, accumulating in f32 ([`fit`]), and records the R² of every tensor. The fit
//! goes tensor by tensor, each when the base unit's writer reaches it: the layers of one tensor
//! pass through the sums band by band from the memory map (f16 and bf16 converted a band at a
//! time) and their pages are let go behind it, and the slope waits in a scratch file for the
//! slope unit, so memory holds about one tensor's line (on a Llama-2-7B-wide ancestor, 0.7 GB
//! instead of 2.6 GB). A tensor whose layers the source has to decode (GGUF, pickles) is summed
//! one converted layer at a time instead. With `align: true` each layer is first permuted to
//! match the previous one ([`super::align`]), which needs whole layers one after the other; the
//! card records the R² of both fits.
//!
//! The faithful path trains the aux net whose layers are that line, by distillation
//! (the `aux` module, [`super::faithful`]).
//!
//! An official TLEG checkpoint (`*_base` / `*_ilayer` names) is imported instead as a faithful
//! gene ([`official`]).

mod aux;
mod fit;
mod official;

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
use crate::checkpoint::{Checkpoint, DType, decode_into_f32, f32_le_bytes};
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

/// Fit every layer tensor of the ancestor as it is and write the base and slope units, one
/// tensor at a time: each line is fitted when the base unit's writer reaches its tensor, and its
/// slope waits in a scratch file until the slope unit is written, so that memory holds about
/// one line. Returns the R² of every tensor, by its name in the gene; records the time of the
/// fits (`fit`) and of the rest (`units`) as build steps.
fn fit_plain_into(
    out: &mut GeneBuilder,
    ancestor: &AncestorModel<'_>,
    reporter: &dyn Reporter,
) -> Result<BTreeMap<String, f64>> {
    let started = Instant::now();
    let mut fitting = std::time::Duration::ZERO;
    let keys = ancestor.keys();
    let spill = tempfile::Builder::new()
        .prefix("lgreg-tleg-slopes-")
        .tempdir()?;
    let spilled = |key: Key| -> Result<std::path::PathBuf> {
        Ok(spill.path().join(ancestor.unit_name(key)?))
    };
    let mut r2 = BTreeMap::new();
    reporter.report(Event::Start {
        task: "fit tensors".into(),
        total: keys.len() as u64,
    });
    out.put_layer_computed(BASE_UNIT, ancestor, keys.clone(), |key| {
        let fit_started = Instant::now();
        let line = fit_tensor(ancestor, key)?;
        fitting += fit_started.elapsed();
        r2.insert(ancestor.unit_name(key)?, line.r2);
        fs_err::write(spilled(key)?, f32_le_bytes(&line.slope))?;
        reporter.report(Event::Advance {
            amount: 1,
            item: None,
        });
        Ok(f32_le_bytes(&line.base))
    })?;
    reporter.report(Event::Finish);
    out.put_layer_computed(SLOPE_UNIT, ancestor, keys, |key| {
        let path = spilled(key)?;
        let bytes = fs_err::read(&path)?;
        fs_err::remove_file(&path)?;
        Ok(bytes)
    })?;
    let fit_seconds = fitting.as_secs_f64();
    out.record_seconds("fit", fit_seconds);
    out.record_seconds("units", started.elapsed().as_secs_f64() - fit_seconds);
    Ok(r2)
}

/// The R² of every layer tensor's line through the ancestor as it is, the lines themselves
/// dropped as they are fitted.
fn r2_plain(
    ancestor: &AncestorModel<'_>,
    reporter: &dyn Reporter,
) -> Result<BTreeMap<String, f64>> {
    let keys = ancestor.keys();
    reporter.report(Event::Start {
        task: "fit tensors".into(),
        total: keys.len() as u64,
    });
    let mut r2 = BTreeMap::new();
    for key in keys {
        r2.insert(ancestor.unit_name(key)?, fit_tensor(ancestor, key)?.r2);
        reporter.report(Event::Advance {
            amount: 1,
            item: None,
        });
    }
    reporter.report(Event::Finish);
    Ok(r2)
}

/// Fit one layer tensor over every layer: band by band from the memory map when every layer
/// is stored there as floats, else one converted layer at a time.
fn fit_tensor(ancestor: &AncestorModel<'_>, key: Key) -> Result<Line> {
    let depth = ancestor.depth();
    let n: usize = ancestor.shape(key)?.iter().product();
    let mut stored = Vec::with_capacity(depth);
    for l in 0..depth {
        let Some((dtype, bytes)) = ancestor.stored(l, key)? else {
            return fit_by_layer(ancestor, key, n);
        };
        if bytes.len() != n * dtype.size() {
            return Err(size_mismatch(
                ancestor,
                l,
                key,
                bytes.len() / dtype.size(),
                n,
            ));
        }
        stored.push((dtype, bytes));
    }
    let line = fit_tiled(
        n,
        depth,
        &mut Mapped {
            ancestor,
            key,
            stored,
        },
    )?;
    for l in 0..depth {
        ancestor.release(l, key);
    }
    Ok(line)
}

/// Fit one layer tensor one whole layer at a time, converted to f32.
fn fit_by_layer(ancestor: &AncestorModel<'_>, key: Key, n: usize) -> Result<Line> {
    let grid = Grid::new(ancestor.depth());
    let mut fit = LineFit::new(n);
    for l in 0..ancestor.depth() {
        let w = ancestor.view(l, key)?;
        if w.len() != n {
            return Err(size_mismatch(ancestor, l, key, w.len(), n));
        }
        fit.add(&w, grid.t(l));
        ancestor.release(l, key);
    }
    Ok(fit.solve(grid))
}

fn size_mismatch(ancestor: &AncestorModel<'_>, l: usize, key: Key, got: usize, n: usize) -> Error {
    Error::ModelMismatch {
        name: ancestor.tensor(l, key).unwrap_or_default().to_string(),
        reason: format!("it holds {got} values, its shape says {n}"),
    }
}

/// One tensor's bytes in every layer, as the memory map holds them: each band is converted to
/// f32 (or copied) when it is read, its pages brought in before and let go after, so that about
/// one band of every layer is mapped at a time.
struct Mapped<'a, 'b> {
    ancestor: &'a AncestorModel<'b>,
    key: Key,
    stored: Vec<(DType, &'a [u8])>,
}

impl fit::Bands for Mapped<'_, '_> {
    fn read(&mut self, range: Range<usize>, layers: &mut [Vec<f32>]) -> Result<()> {
        for (l, ((dtype, bytes), out)) in self.stored.iter().zip(layers).enumerate() {
            self.ancestor.prefetch_elements(l, self.key, range.clone());
            let size = dtype.size();
            let part = &bytes[range.start * size..range.end * size];
            let name = self.ancestor.tensor(l, self.key)?;
            decode_into_f32(name, *dtype, part, out)?;
        }
        Ok(())
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
        if params.align {
            let r2_unaligned = r2_plain(ancestor, job.reporter)?;
            let (aligned, permutations) = fit_aligned(ancestor, job.reporter)?;
            let r2 = r2_by_name(ancestor, &aligned)?;
            out.diagnostic("r2_mean", mean(&r2))?;
            out.diagnostic("r2", &r2)?;
            out.diagnostic("r2_unaligned_mean", mean(&r2_unaligned))?;
            out.diagnostic("r2_unaligned", &r2_unaligned)?;
            out.diagnostic("alignment", &permutations)?;
            out.record_step("fit", started);
            let started = Instant::now();
            put_lines(out, ancestor, aligned)?;
            out.record_step("units", started);
        } else {
            let r2 = fit_plain_into(out, ancestor, job.reporter)?;
            out.diagnostic("r2_mean", mean(&r2))?;
            out.diagnostic("r2", &r2)?;
        }
        out.diagnostic("aligned", params.align)?;
        out.diagnostic("aux_depth", ancestor.depth())?;
        out.diagnostic("grid", GRID)?;
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
