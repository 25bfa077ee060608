//! Function-preserving alignment of one layer to another: permute MLP neurons and attention
//! heads of a layer so that they best match a reference layer, before TLEG fits lines or SWS
//! averages layers.
//!
//! What moves, by role (rows are a weight's first axis):
//! - MLP neurons: the rows of the gate and up projections (and their biases) and the columns
//!   of the down projection;
//! - attention heads, whole heads only: the row blocks of q, k and v (and their biases) and
//!   the column blocks of the output projection. With grouped-query attention a key/value head
//!   moves together with the query heads that read it; timm's fused qkv (rows `[q; k; v]`) is
//!   permuted the same way inside each of its three parts.
//!
//! Nothing on the residual side moves (norms, output biases, the residual axis of every
//! matrix), and no head is changed inside (RoPE rotates pairs of dimensions within a head), so
//! the layer computes the same function. Units are matched by the correlation of their
//! concatenated incoming and outgoing weights ([`similarity`], one candle matmul), and the
//! matching that maximises the total correlation is found by [`super::assign`].

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::ancestor::{AncestorModel, Key};
use super::assign::{best_assignment, is_permutation};
use crate::anatomy::{Family, Param, Role};
use crate::error::{Error, Result};

/// The tensors of one layer by (role, param), as f32.
pub type Layer = BTreeMap<Key, Vec<f32>>;

/// The sizes alignment needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSpec {
    /// The family.
    pub family: Family,
    /// Model width.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// MLP width.
    pub intermediate: usize,
    /// The shape of every layer tensor.
    pub shapes: BTreeMap<Key, Vec<usize>>,
}

impl LayerSpec {
    /// The spec of an ancestor's layers.
    pub fn of(ancestor: &AncestorModel<'_>) -> Result<LayerSpec> {
        let h = &ancestor.anatomy.hyper;
        let hidden = h.hidden_size.unwrap_or(0);
        let heads = h.heads.unwrap_or(1).max(1);
        let mut shapes = BTreeMap::new();
        for key in ancestor.keys() {
            shapes.insert(key, ancestor.shape(key)?);
        }
        Ok(LayerSpec {
            family: ancestor.family(),
            hidden,
            heads,
            kv_heads: h.kv_heads.unwrap_or(heads).max(1),
            head_dim: hidden / heads,
            intermediate: h.intermediate_size.unwrap_or(4 * hidden),
            shapes,
        })
    }
}

/// A permutation of a layer's MLP neurons and attention heads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permutation {
    /// New neuron `i` is old neuron `neurons[i]`.
    pub neurons: Vec<usize>,
    /// New key/value head group `i` is old group `heads[i]`.
    pub heads: Vec<usize>,
}

impl Permutation {
    /// The permutation that changes nothing.
    pub fn identity(spec: &LayerSpec) -> Permutation {
        Permutation {
            neurons: (0..spec.intermediate).collect(),
            heads: (0..spec.kv_heads).collect(),
        }
    }

    /// How much it moves, for the gene card.
    pub fn summary(&self) -> serde_json::Value {
        let moved = |p: &[usize]| p.iter().enumerate().filter(|(i, j)| i != *j).count();
        serde_json::json!({
            "neurons_moved": moved(&self.neurons),
            "heads_moved": moved(&self.heads),
        })
    }
}

/// Which permutation moves a tensor's slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Units {
    /// MLP neurons.
    Neurons,
    /// Key/value head groups (with their query heads).
    Heads,
}

/// The axis of a `[rows, cols]` matrix that a permutation moves (a bias is `[rows, 1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    Rows,
    Cols,
}

/// A run of units along an axis: unit `u` owns the indices `offset + u·block ..
/// offset + (u + 1)·block`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    offset: usize,
    block: usize,
}

/// How one layer tensor moves under a permutation.
#[derive(Debug, Clone)]
struct Plan {
    units: Units,
    axis: Axis,
    segments: Vec<Segment>,
}

fn misfit(reason: String) -> Error {
    Error::Algorithm {
        algorithm: "align".into(),
        reason,
        fix: "extract without alignment (`--set align=false`), or check that config.json gives the right head counts".into(),
    }
}

impl LayerSpec {
    /// Query heads per key/value head.
    fn group(&self) -> usize {
        self.heads / self.kv_heads.max(1)
    }

    /// Number of units of a kind.
    fn count(&self, units: Units) -> usize {
        match units {
            Units::Neurons => self.intermediate,
            Units::Heads => self.kv_heads,
        }
    }

    /// How `key` moves, or `None` when it stays where it is.
    fn plan(&self, key: Key) -> Option<Plan> {
        let (hd, group) = (self.head_dim, self.group());
        let one = |units, axis, block| Plan {
            units,
            axis,
            segments: vec![Segment { offset: 0, block }],
        };
        Some(match key {
            (Role::MlpGate | Role::MlpUp, _) => one(Units::Neurons, Axis::Rows, 1),
            (Role::MlpDown, Param::Weight) => one(Units::Neurons, Axis::Cols, 1),
            (Role::AttnQ, _) => one(Units::Heads, Axis::Rows, group * hd),
            (Role::AttnK | Role::AttnV, _) => one(Units::Heads, Axis::Rows, hd),
            (Role::AttnO, Param::Weight) => one(Units::Heads, Axis::Cols, group * hd),
            (Role::AttnQkv, _) => {
                let q = self.heads * hd;
                let kv = self.kv_heads * hd;
                Plan {
                    units: Units::Heads,
                    axis: Axis::Rows,
                    segments: vec![
                        Segment {
                            offset: 0,
                            block: group * hd,
                        },
                        Segment {
                            offset: q,
                            block: hd,
                        },
                        Segment {
                            offset: q + kv,
                            block: hd,
                        },
                    ],
                }
            }
            _ => return None,
        })
    }

    /// `(rows, cols)` of a layer tensor seen as a matrix (a vector is one column).
    fn dims(&self, key: Key) -> Result<(usize, usize)> {
        let shape = self.shapes.get(&key).ok_or_else(|| {
            misfit(format!(
                "the layer has a {:?} {:?} tensor the spec does not know",
                key.0, key.1
            ))
        })?;
        let rows = shape.first().copied().unwrap_or(1);
        Ok((rows, shape.iter().skip(1).product()))
    }

    /// Check that every moving tensor splits into whole units.
    pub fn check(&self) -> Result<()> {
        if self.heads == 0 || self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(misfit(format!(
                "{} query heads do not split into {} key/value groups",
                self.heads, self.kv_heads
            )));
        }
        for &key in self.shapes.keys() {
            let Some(plan) = self.plan(key) else {
                continue;
            };
            let (rows, cols) = self.dims(key)?;
            let len = match plan.axis {
                Axis::Rows => rows,
                Axis::Cols => cols,
            };
            let n = self.count(plan.units);
            let covered: usize = plan.segments.iter().map(|s| n * s.block).sum();
            let last = plan.segments.last().map_or(0, |s| s.offset + n * s.block);
            if covered != len || last != len {
                return Err(misfit(format!(
                    "the {:?} {:?} tensor has {len} {} but {n} {} need {covered}",
                    key.0,
                    key.1,
                    if plan.axis == Axis::Rows {
                        "rows"
                    } else {
                        "columns"
                    },
                    if plan.units == Units::Neurons {
                        "neurons"
                    } else {
                        "head groups"
                    },
                )));
            }
        }
        Ok(())
    }
}

/// Align `layer` to `reference`; returns the permuted layer and the permutation used.
pub fn align_layer(
    spec: &LayerSpec,
    reference: &Layer,
    layer: Layer,
) -> Result<(Layer, Permutation)> {
    spec.check()?;
    let perm = Permutation {
        neurons: matching(spec, reference, &layer, Units::Neurons)?,
        heads: matching(spec, reference, &layer, Units::Heads)?,
    };
    let aligned = apply(spec, &layer, &perm)?;
    Ok((aligned, perm))
}

/// The best matching of `layer`'s units of one kind to `reference`'s: `p[i]` is the unit of
/// `layer` that takes place `i`.
fn matching(
    spec: &LayerSpec,
    reference: &Layer,
    layer: &Layer,
    units: Units,
) -> Result<Vec<usize>> {
    let n = spec.count(units);
    if n <= 1 {
        return Ok((0..n).collect());
    }
    Ok(match similarity(spec, reference, layer, units)? {
        Some(score) => best_assignment(&score, n),
        None => (0..n).collect(),
    })
}

/// Correlation of every unit of `reference` (rows) with every unit of `layer` (columns),
/// row-major `n × n`; `None` when no tensor holds such units.
fn similarity(
    spec: &LayerSpec,
    reference: &Layer,
    layer: &Layer,
    units: Units,
) -> Result<Option<Vec<f32>>> {
    let (Some(a), Some(b)) = (
        features(spec, reference, units)?,
        features(spec, layer, units)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(a.matmul(&b.t()?)?.flatten_all()?.to_vec1::<f32>()?))
}

/// Each unit's incoming and outgoing weights concatenated, centred and scaled to unit norm:
/// `[n, features]`, so that a dot product is a correlation.
fn features(spec: &LayerSpec, layer: &Layer, units: Units) -> Result<Option<Tensor>> {
    let n = spec.count(units);
    let mut pieces = Vec::new();
    for (&key, values) in layer {
        let Some(plan) = spec.plan(key).filter(|p| p.units == units) else {
            continue;
        };
        let (rows, cols) = checked_dims(spec, key, values)?;
        let t = Tensor::from_slice(values, (rows, cols), &Device::Cpu)?;
        for s in &plan.segments {
            let piece = match plan.axis {
                Axis::Rows => t
                    .narrow(0, s.offset, n * s.block)?
                    .reshape((n, s.block * cols))?,
                Axis::Cols => t
                    .narrow(1, s.offset, n * s.block)?
                    .reshape((rows, n, s.block))?
                    .transpose(0, 1)?
                    .reshape((n, rows * s.block))?,
            };
            pieces.push(piece);
        }
    }
    if pieces.is_empty() {
        return Ok(None);
    }
    let x = Tensor::cat(&pieces, 1)?;
    let x = x.broadcast_sub(&x.mean_keepdim(1)?)?;
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
    Ok(Some(x.broadcast_div(&norm)?))
}

fn checked_dims(spec: &LayerSpec, key: Key, values: &[f32]) -> Result<(usize, usize)> {
    let (rows, cols) = spec.dims(key)?;
    if rows * cols != values.len() {
        return Err(misfit(format!(
            "the {:?} {:?} tensor has {} values, but its shape {rows}×{cols} needs {}",
            key.0,
            key.1,
            values.len(),
            rows * cols
        )));
    }
    Ok((rows, cols))
}

/// `layer` with its neurons and heads moved by `perm`: new unit `i` is old unit `perm[i]`.
pub fn apply(spec: &LayerSpec, layer: &Layer, perm: &Permutation) -> Result<Layer> {
    spec.check()?;
    for (units, p) in [(Units::Neurons, &perm.neurons), (Units::Heads, &perm.heads)] {
        if p.len() != spec.count(units) || !is_permutation(p) {
            return Err(misfit(format!(
                "{p:?} is not a permutation of the layer's {} {units:?}",
                spec.count(units)
            )));
        }
    }
    let mut out = Layer::new();
    for (&key, values) in layer {
        let moved = match spec.plan(key) {
            Some(plan) => {
                let p = match plan.units {
                    Units::Neurons => &perm.neurons,
                    Units::Heads => &perm.heads,
                };
                let (rows, cols) = checked_dims(spec, key, values)?;
                let len = if plan.axis == Axis::Rows { rows } else { cols };
                let order = index_order(len, &plan.segments, p);
                match plan.axis {
                    Axis::Rows => permute_rows(values, cols, &order),
                    Axis::Cols => permute_cols(values, cols, &order),
                }
            }
            None => values.clone(),
        };
        out.insert(key, moved);
    }
    Ok(out)
}

/// The source index of every index along an axis of length `len`.
fn index_order(len: usize, segments: &[Segment], perm: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    for s in segments {
        for (i, &from) in perm.iter().enumerate() {
            for k in 0..s.block {
                order[s.offset + i * s.block + k] = s.offset + from * s.block + k;
            }
        }
    }
    order
}

fn permute_rows(values: &[f32], cols: usize, order: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    for &r in order {
        out.extend_from_slice(&values[r * cols..(r + 1) * cols]);
    }
    out
}

fn permute_cols(values: &[f32], cols: usize, order: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks_exact(cols.max(1)) {
        out.extend(order.iter().map(|&c| row[c]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::init::{Rng, VitSpec, random_plain};
    use crate::nn::{Input, Mode, Model, ModelConfig, Plain, Pooling};

    fn text_config(family: Family) -> ModelConfig {
        ModelConfig {
            family,
            layers: 3,
            hidden: 16,
            heads: 4,
            kv_heads: if family == Family::Llama { 2 } else { 4 },
            intermediate: 24,
            norm_eps: 1e-5,
            vocab: 40,
            rope_theta: 10_000.0,
            tied_head: false,
            image_size: 0,
            patch_size: 0,
            channels: 0,
            classes: 0,
            class_token: false,
            pooling: Pooling::Mean,
            norm_after_pool: false,
            front: None,
            position_offset: 0,
            rope_scaling: None,
        }
    }

    fn configs() -> Vec<ModelConfig> {
        let vit = VitSpec {
            image_size: 8,
            patch_size: 4,
            channels: 1,
            hidden: 16,
            layers: 3,
            heads: 4,
            classes: 3,
            class_token: true,
        };
        vec![
            text_config(Family::Llama),
            text_config(Family::Bert),
            vit.config(),
        ]
    }

    fn input(c: &ModelConfig) -> Input {
        let dev = Device::Cpu;
        if c.family == Family::Vit {
            let mut rng = Rng::new(3);
            let v: Vec<f32> = (0..2 * 64).map(|_| rng.normal() as f32).collect();
            return Input::Images(Tensor::from_vec(v, (2, 1, 8, 8), &dev).unwrap());
        }
        let ids = Tensor::new(&[[1u32, 5, 9, 3, 7], [2, 4, 6, 8, 0]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0]], &dev).unwrap();
        Input::Tokens {
            ids,
            mask: (c.family == Family::Bert).then_some(mask),
        }
    }

    /// A random model whose biases and norms are random too, so that every tensor matters,
    /// with a handle on its variables (clones share them).
    fn model(c: &ModelConfig) -> (Model, Plain, LayerSpec) {
        let plain = random_plain(c, 1, &Device::Cpu).unwrap();
        let mut rng = Rng::new(2);
        let mut shapes = BTreeMap::new();
        for (slot, _, var) in plain.store.iter() {
            let n = var.elem_count();
            let v: Vec<f32> = (0..n).map(|_| 0.3 * rng.normal() as f32).collect();
            let t = Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap();
            let t = if slot.param == Param::Bias || var.dims().len() == 1 {
                (t + 1.0).unwrap()
            } else {
                t
            };
            var.set(&t).unwrap();
            if slot.layer == Some(0) {
                shapes.insert((slot.role, slot.param), var.dims().to_vec());
            }
        }
        let spec = LayerSpec {
            family: c.family,
            hidden: c.hidden,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim(),
            intermediate: c.intermediate,
            shapes,
        };
        let model = Model::new(c.clone(), Box::new(plain.clone()), Device::Cpu);
        (model, plain, spec)
    }

    fn read_layer(p: &Plain, l: usize) -> Layer {
        p.store
            .iter()
            .filter(|(s, _, _)| s.layer == Some(l))
            .map(|(s, _, v)| {
                let values = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                ((s.role, s.param), values)
            })
            .collect()
    }

    fn write_layer(p: &Plain, l: usize, layer: &Layer) {
        for (s, _, v) in p.store.iter().filter(|(s, _, _)| s.layer == Some(l)) {
            let values = layer[&(s.role, s.param)].clone();
            v.set(&Tensor::from_vec(values, v.dims(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }

    fn shuffled(n: usize, rng: &mut Rng) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut p);
        p
    }

    fn output(model: &Model, c: &ModelConfig) -> Vec<f32> {
        let out = model.forward(&input(c), Mode::Infer, false).unwrap().output;
        out.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn permutations_keep_the_function_and_alignment_undoes_them() {
        for c in configs() {
            let (model, p, spec) = model(&c);
            spec.check().unwrap();
            let before = output(&model, &c);
            let p = &p;
            let mut rng = Rng::new(5);
            for l in 0..c.layers {
                let original = read_layer(p, l);
                let perm = Permutation {
                    neurons: shuffled(spec.intermediate, &mut rng),
                    heads: shuffled(spec.kv_heads, &mut rng),
                };
                let moved = apply(&spec, &original, &perm).unwrap();
                assert_ne!(moved, original, "{:?} layer {l}", c.family);
                write_layer(p, l, &moved);
                // Aligning the shuffled layer to the original finds the way back.
                let (back, found) = align_layer(&spec, &original, moved).unwrap();
                assert_eq!(back, original, "{:?} layer {l}", c.family);
                let undo = apply(&spec, &apply(&spec, &original, &perm).unwrap(), &found);
                assert_eq!(undo.unwrap(), original);
            }
            let after = output(&model, &c);
            let scale = before.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = before
                .iter()
                .zip(&after)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{:?}: {diff} of {scale}",
                c.family
            );
        }
    }

    #[test]
    fn bad_permutations_and_specs_are_refused() {
        let (_, _, spec) = model(&text_config(Family::Llama));
        let layer: Layer = spec
            .shapes
            .iter()
            .map(|(k, s)| (*k, vec![0.0; s.iter().product()]))
            .collect();
        let mut perm = Permutation::identity(&spec);
        perm.neurons[0] = 1;
        assert!(apply(&spec, &layer, &perm).is_err());
        let mut odd = spec.clone();
        odd.kv_heads = 3;
        let err = align_layer(&odd, &layer, layer.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("key/value"), "{err}");
        let mut wide = spec.clone();
        wide.intermediate = 25;
        let err = align_layer(&wide, &layer, layer.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("neurons"), "{err}");
    }
}
