//! TLEG (arXiv 2312.05614): the gene is an intercept B and a slope A per layer tensor; layer
//! `l` of a descendant of depth `L` is `B + (l/L)·A`.
//!
//! Training-free extraction fits (A, B) by least squares over the ancestor's own layers with
//! `t_l = l / L_a`, streaming one layer at a time and accumulating in f32 (sums `S0 = Σ W_l`,
//! `S1 = Σ t_l W_l`, and `Σ ‖W_l‖²` in f64 for R²), so memory stays around three layers. With
//! `align: true` each layer is first permuted to match the previous one ([`super::align`]),
//! and the card records the R² of both fits.
//!
//! An official TLEG checkpoint (`*_base` / `*_ilayer` names) is imported instead as a faithful
//! gene ([`official`]).

mod official;

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ancestor::{AncestorModel, Key};
use super::blueprint::{Blueprint, GrowRequest, LayerSource, require_layers};
use super::builder::GeneBuilder;
use super::{Algorithm, ExtractJob, GeneView, Imported, align};
use crate::anatomy::Family;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::progress::Event;
use crate::recipe::Recipe;

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

/// Streaming sums of one tensor's least-squares line fit over the layers.
#[derive(Debug, Clone)]
struct LineFit {
    s0: Vec<f32>,
    s1: Vec<f32>,
    squares: f64,
}

impl LineFit {
    fn new(n: usize) -> LineFit {
        LineFit {
            s0: vec![0.0; n],
            s1: vec![0.0; n],
            squares: 0.0,
        }
    }

    fn add(&mut self, w: &[f32], t: f32) {
        for ((s0, s1), &x) in self.s0.iter_mut().zip(self.s1.iter_mut()).zip(w) {
            *s0 += x;
            *s1 += t * x;
        }
        self.squares += w.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
    }

    /// `(A, B, R²)` for `layers` layers on the grid `t_l = l / layers`.
    fn solve(&self, layers: usize) -> (Vec<f32>, Vec<f32>, f64) {
        let n = layers as f64;
        let t_mean = (n - 1.0) / (2.0 * n);
        let stt = (n * n - 1.0) / (12.0 * n);
        let (tm, st) = (t_mean as f32, stt as f32);
        let slope: Vec<f32> = if stt > 0.0 {
            self.s0
                .iter()
                .zip(&self.s1)
                .map(|(&s0, &s1)| (s1 - tm * s0) / st)
                .collect()
        } else {
            vec![0.0; self.s0.len()]
        };
        let base: Vec<f32> = self
            .s0
            .iter()
            .zip(&slope)
            .map(|(&s0, &a)| s0 / n as f32 - tm * a)
            .collect();
        let mean_sq: f64 = self
            .s0
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum::<f64>()
            / n;
        let total = self.squares - mean_sq;
        let explained = stt
            * slope
                .iter()
                .map(|&a| f64::from(a) * f64::from(a))
                .sum::<f64>();
        let r2 = if total > 1e-30 {
            (explained / total).clamp(0.0, 1.0)
        } else {
            1.0
        };
        (slope, base, r2)
    }
}

/// The fitted line of every layer tensor, with each tensor's R².
struct Fitted {
    slope: BTreeMap<Key, Vec<f32>>,
    base: BTreeMap<Key, Vec<f32>>,
    r2: BTreeMap<Key, f64>,
}

fn fit(fits: BTreeMap<Key, LineFit>, layers: usize) -> Fitted {
    let mut out = Fitted {
        slope: BTreeMap::new(),
        base: BTreeMap::new(),
        r2: BTreeMap::new(),
    };
    for (key, f) in fits {
        let (a, b, r2) = f.solve(layers);
        out.slope.insert(key, a);
        out.base.insert(key, b);
        out.r2.insert(key, r2);
    }
    out
}

fn r2_by_name(
    ancestor: &AncestorModel<'_>,
    r2: &BTreeMap<Key, f64>,
) -> Result<BTreeMap<String, f64>> {
    r2.iter()
        .map(|(k, v)| Ok((ancestor.unit_name(*k)?, *v)))
        .collect()
}

fn mean(values: &BTreeMap<String, f64>) -> f64 {
    values.values().sum::<f64>() / values.len().max(1) as f64
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
        let depth = ancestor.depth();
        let keys = ancestor.keys();
        let spec = align::LayerSpec::of(ancestor)?;
        let mut plain: BTreeMap<Key, LineFit> = BTreeMap::new();
        let mut aligned: BTreeMap<Key, LineFit> = BTreeMap::new();
        for &key in &keys {
            let n = ancestor.shape(key)?.iter().product();
            plain.insert(key, LineFit::new(n));
            if params.align {
                aligned.insert(key, LineFit::new(n));
            }
        }
        job.reporter.report(Event::Start {
            task: "fit layers".into(),
            total: depth as u64,
        });
        let mut previous: Option<align::Layer> = None;
        let mut permutations = Vec::new();
        for l in 0..depth {
            let t = l as f32 / depth as f32;
            let mut layer = align::Layer::new();
            for &key in &keys {
                let w = ancestor.read(l, key)?;
                ancestor.release(l, key);
                if let Some(f) = plain.get_mut(&key) {
                    f.add(&w, t);
                }
                layer.insert(key, w);
            }
            if params.align {
                let (layer_aligned, perm) = match &previous {
                    Some(prev) => align::align_layer(&spec, prev, layer)?,
                    None => (layer, align::Permutation::identity(&spec)),
                };
                for (key, w) in &layer_aligned {
                    if let Some(f) = aligned.get_mut(key) {
                        f.add(w, t);
                    }
                }
                permutations.push(perm.summary());
                previous = Some(layer_aligned);
            }
            job.reporter.report(Event::Advance {
                amount: 1,
                item: None,
            });
        }
        job.reporter.report(Event::Finish);
        let unaligned = fit(plain, depth);
        let r2_plain = r2_by_name(ancestor, &unaligned.r2)?;
        let chosen = if params.align {
            let fitted = fit(aligned, depth);
            let r2 = r2_by_name(ancestor, &fitted.r2)?;
            out.diagnostic("r2_mean", mean(&r2))?;
            out.diagnostic("r2", &r2)?;
            out.diagnostic("r2_unaligned_mean", mean(&r2_plain))?;
            out.diagnostic("r2_unaligned", &r2_plain)?;
            out.diagnostic("alignment", &permutations)?;
            fitted
        } else {
            out.diagnostic("r2_mean", mean(&r2_plain))?;
            out.diagnostic("r2", &r2_plain)?;
            unaligned
        };
        out.diagnostic("aligned", params.align)?;
        out.diagnostic("aux_depth", depth)?;
        out.diagnostic("grid", GRID)?;
        out.put_layer(BASE_UNIT, ancestor, &chosen.base)?;
        out.put_layer(SLOPE_UNIT, ancestor, &chosen.slope)?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_lines_are_recovered_with_r2_one() {
        let layers = 7;
        let (a, b) = ([0.5f32, -2.0, 0.0], [1.0f32, 0.25, 3.0]);
        let mut f = LineFit::new(3);
        for l in 0..layers {
            let t = l as f32 / layers as f32;
            let w: Vec<f32> = a.iter().zip(&b).map(|(a, b)| b + t * a).collect();
            f.add(&w, t);
        }
        let (slope, base, r2) = f.solve(layers);
        for i in 0..3 {
            assert!((slope[i] - a[i]).abs() < 1e-4, "{slope:?}");
            assert!((base[i] - b[i]).abs() < 1e-5, "{base:?}");
        }
        assert!((r2 - 1.0).abs() < 1e-6, "{r2}");
    }

    #[test]
    fn noise_has_r2_in_unit_interval() {
        let mut rng = crate::nn::init::Rng::new(3);
        let mut f = LineFit::new(50);
        for l in 0..9 {
            let w: Vec<f32> = (0..50).map(|_| rng.normal() as f32).collect();
            f.add(&w, l as f32 / 9.0);
        }
        let (_, _, r2) = f.solve(9);
        assert!((0.0..=1.0).contains(&r2) && r2 < 0.5, "{r2}");
    }
}
