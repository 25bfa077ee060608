//! [`DescendantSource`]: the tensors of a descendant, produced lazily from a [`Blueprint`]:
//! copied zero-copy from a gene unit, computed as `base + t·slope`, or drawn from a seeded
//! generator, one tensor at a time, so peak memory follows the largest tensor.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::algorithm::ancestor::Key;
use crate::algorithm::builder::{FILES_UNIT, GLOBALS_UNIT};
use crate::algorithm::{Blueprint, GeneView, GlobalsFrom, LayerSource};
use crate::anatomy::{Param, Role, Slot, slot_name};
use crate::checkpoint::safetensors::SafetensorsFile;
use crate::checkpoint::{DType, Stored, TensorInfo, TensorSource, f32_le_bytes};
use crate::error::{Error, Result};
use crate::nn::init::{Rng, init_values, name_hash};

/// Where one output tensor comes from.
#[derive(Debug, Clone)]
enum Origin {
    Copy {
        unit: String,
        tensor: String,
    },
    Line {
        base: (String, String),
        slope: (String, String),
        t: f32,
    },
    Random {
        role: Role,
        param: Param,
        seed: u64,
    },
}

/// The lazily produced tensors of one descendant.
pub struct DescendantSource<'g> {
    gene: &'g GeneView,
    infos: Vec<TensorInfo>,
    origins: BTreeMap<String, Origin>,
    /// The (role, param) → tensor map of every block unit the blueprint uses, read once.
    blocks: BTreeMap<String, BTreeMap<Key, String>>,
}

/// A seed for one tensor, from the spawn seed and the tensor's name (FNV-1a, then mixed), so
/// each random tensor is the same whatever else the descendant holds.
fn tensor_seed(seed: u64, name: &str) -> u64 {
    name_hash(name) ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The global tensors of a descendant as `(unit, tensor name)`: the gene's globals unit, one
/// instance's, or a trained pool's split (embeddings from the front's unit, the tensors that
/// run after the blocks from the end's).
fn global_tensors(gene: &GeneView, from: &GlobalsFrom) -> Result<Vec<(String, String)>> {
    let names_in =
        |unit: &str, keep: &dyn Fn(Option<Role>) -> bool| -> Result<Vec<(String, String)>> {
            Ok(gene
                .unit(unit)?
                .tensors()
                .iter()
                .filter(|info| {
                    keep(
                        gene.rules()
                            .classify(&info.name, gene.naming)
                            .map(|s| s.role),
                    )
                })
                .map(|info| (unit.to_string(), info.name.clone()))
                .collect())
        };
    let after = |role: Option<Role>| role.is_some_and(Role::after_blocks);
    match from {
        GlobalsFrom::Gene => names_in(GLOBALS_UNIT, &|_| true),
        GlobalsFrom::Unit { unit } => names_in(unit, &|_| true),
        GlobalsFrom::Split { front, end } => {
            let mut out = names_in(front, &|r| !after(r))?;
            out.extend(names_in(end, &after)?);
            Ok(out)
        }
    }
}

impl<'g> DescendantSource<'g> {
    /// Plan every tensor of the descendant `bp` of `gene`, with random parts seeded by `seed`.
    ///
    /// With `inherit_globals` off, the embeddings, final norm and head are drawn at random too
    /// (a baseline that inherits nothing).
    pub fn new(
        gene: &'g GeneView,
        bp: &Blueprint,
        seed: u64,
        inherit_globals: bool,
    ) -> Result<DescendantSource<'g>> {
        let mut blocks = BTreeMap::new();
        for source in &bp.layers {
            let units = match source {
                LayerSource::Copy { unit } => vec![unit],
                LayerSource::Line { base, slope, .. } => vec![base, slope],
                LayerSource::Random => vec![],
                LayerSource::RandomLike { unit } => vec![unit],
            };
            for unit in units {
                if !blocks.contains_key(unit) {
                    blocks.insert(unit.clone(), gene.block(unit)?);
                }
            }
        }
        let mut src = DescendantSource {
            gene,
            infos: Vec::new(),
            origins: BTreeMap::new(),
            blocks,
        };
        for (unit, name) in global_tensors(gene, &bp.globals)? {
            let info = gene.unit(&unit)?.require(&name)?.clone();
            let slot = gene.rules().classify(&name, gene.naming);
            let origin = match slot {
                Some(slot) if !inherit_globals && info.dtype.is_float() => Origin::Random {
                    role: slot.role,
                    param: slot.param,
                    seed: tensor_seed(seed, &name),
                },
                _ => Origin::Copy {
                    unit,
                    tensor: name.clone(),
                },
            };
            let dtype = match origin {
                Origin::Random { .. } => DType::F32,
                _ => info.dtype,
            };
            src.add(&name, dtype, &info.shape, origin);
        }
        let template = src.template(bp)?;
        for (layer, source) in bp.layers.iter().enumerate() {
            // A copied block keeps its own unit's shapes (a trained pool mixes widths).
            let own = match source {
                LayerSource::Copy { unit } | LayerSource::RandomLike { unit } => {
                    Some(src.shapes_of(unit)?)
                }
                _ => None,
            };
            for (key, (tensor, shape)) in own.as_ref().unwrap_or(&template) {
                let slot = Slot {
                    layer: Some(layer),
                    role: key.0,
                    param: key.1,
                };
                let name = slot_name(gene.family, &slot, gene.naming).ok_or_else(|| {
                    Error::ModelMismatch {
                        name: tensor.clone(),
                        reason: format!(
                            "the {} family has no name for it in layer {layer}",
                            gene.family
                        ),
                    }
                })?;
                let (origin, dtype) = src.layer_origin(source, *key, &name, seed)?;
                src.add(&name, dtype, shape, origin);
            }
        }
        for st in &bp.stitches {
            for (tensor, param) in [(&st.weight, Param::Weight), (&st.bias, Param::Bias)] {
                let unit = gene.unit(&st.unit)?;
                let info = unit.require(tensor)?.clone();
                let slot = Slot {
                    layer: Some(st.after),
                    role: Role::Stitch,
                    param,
                };
                let name = slot_name(gene.family, &slot, gene.naming).unwrap_or_default();
                let (origin, dtype) = if st.random {
                    let seed = tensor_seed(seed, &name);
                    let (role, param) = (Role::Stitch, param);
                    (Origin::Random { role, param, seed }, DType::F32)
                } else {
                    let (unit, tensor) = (st.unit.clone(), tensor.clone());
                    (Origin::Copy { unit, tensor }, info.dtype)
                };
                src.add(&name, dtype, &info.shape, origin);
            }
        }
        src.infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(src)
    }

    /// The gene unit and tensor that `name` is a verbatim copy of, if it is one.
    fn copied_from(&self, name: &str) -> Option<(&'g SafetensorsFile, &str)> {
        match self.origins.get(name)? {
            Origin::Copy { unit, tensor } => Some((self.gene.unit(unit).ok()?, tensor)),
            _ => None,
        }
    }

    fn add(&mut self, name: &str, dtype: DType, shape: &[usize], origin: Origin) {
        self.infos.push(TensorInfo {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        });
        self.origins.insert(name.to_string(), origin);
    }

    /// The layer tensors (key → unit tensor name, shape) of the first block unit the
    /// blueprint uses; every layer of the descendant has exactly these.
    fn template(&self, bp: &Blueprint) -> Result<BTreeMap<Key, (String, Vec<usize>)>> {
        let unit = bp
            .layers
            .iter()
            .find_map(|s| match s {
                LayerSource::Copy { unit } => Some(unit.clone()),
                LayerSource::Line { base, .. } => Some(base.clone()),
                LayerSource::Random | LayerSource::RandomLike { .. } => None,
            })
            .or_else(|| {
                self.gene
                    .unit_digests
                    .iter()
                    .map(|(t, _)| t.clone())
                    .find(|t| t != GLOBALS_UNIT && t != FILES_UNIT && self.gene.block(t).is_ok())
            })
            .ok_or_else(|| Error::Algorithm {
                algorithm: self.gene.algorithm().to_string(),
                reason: format!(
                    "gene `{}` has no block unit to take the layer shapes from",
                    self.gene.reference
                ),
                fix: "re-extract the gene with `lgreg extract`".into(),
            })?;
        self.shapes_of(&unit)
    }

    /// The layer tensors (key → unit tensor name, shape) of the block unit `unit`.
    fn shapes_of(&self, unit: &str) -> Result<BTreeMap<Key, (String, Vec<usize>)>> {
        let file = self.gene.unit(unit)?;
        let mut out = BTreeMap::new();
        for (key, name) in self.gene.block(unit)? {
            let info = file.require(&name)?;
            out.insert(key, (name.clone(), info.shape.clone()));
        }
        Ok(out)
    }

    fn layer_origin(
        &self,
        source: &LayerSource,
        key: (Role, Param),
        name: &str,
        seed: u64,
    ) -> Result<(Origin, DType)> {
        let tensor_in = |unit: &str| -> Result<String> {
            self.blocks
                .get(unit)
                .and_then(|block| block.get(&key))
                .cloned()
                .ok_or_else(|| Error::MissingTensor {
                    name: format!("{:?} {:?} in gene unit `{unit}`", key.0, key.1),
                })
        };
        Ok(match source {
            LayerSource::Copy { unit } => {
                let tensor = tensor_in(unit)?;
                let dtype = self.gene.unit(unit)?.require(&tensor)?.dtype;
                (
                    Origin::Copy {
                        unit: unit.clone(),
                        tensor,
                    },
                    dtype,
                )
            }
            LayerSource::Line { base, slope, t } => (
                Origin::Line {
                    base: (base.clone(), tensor_in(base)?),
                    slope: (slope.clone(), tensor_in(slope)?),
                    t: *t as f32,
                },
                DType::F32,
            ),
            LayerSource::Random | LayerSource::RandomLike { .. } => (
                Origin::Random {
                    role: key.0,
                    param: key.1,
                    seed: tensor_seed(seed, name),
                },
                DType::F32,
            ),
        })
    }
}

/// `base + t·slope` as f32 little-endian bytes, written straight into the output buffer.
fn line_bytes(base: &[f32], slope: &[f32], t: f32) -> Vec<u8> {
    let mut out = vec![0u8; base.len().min(slope.len()) * 4];
    let (values, _) = out.as_chunks_mut::<4>();
    for ((v, b), a) in values.iter_mut().zip(base).zip(slope) {
        *v = (b + t * a).to_le_bytes();
    }
    out
}

impl TensorSource for DescendantSource<'_> {
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let origin = self.origins.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
        match origin {
            Origin::Copy { unit, tensor } => self.gene.unit(unit)?.read(tensor),
            Origin::Line { base, slope, t } => {
                let b = self.gene.unit(&base.0)?.view_f32(&base.1)?;
                let a = self.gene.unit(&slope.0)?.view_f32(&slope.1)?;
                let bytes = line_bytes(&b, &a, *t);
                // The inputs are spent: their pages go now, not when the writer is done.
                self.release(name);
                Ok(Cow::Owned(bytes))
            }
            Origin::Random { role, param, seed } => {
                let n = self.require(name)?.numel();
                let values = init_values(*role, *param, n, &mut Rng::new(*seed));
                Ok(Cow::Owned(f32_le_bytes(&values)))
            }
        }
    }

    fn release(&self, name: &str) {
        if let Some((file, tensor)) = self.copied_from(name) {
            file.release(tensor);
        }
        if let Some(Origin::Line { base, slope, .. }) = self.origins.get(name) {
            for (unit, tensor) in [base, slope] {
                if let Ok(file) = self.gene.unit(unit) {
                    file.release(tensor);
                }
            }
        }
    }

    fn release_range(&self, name: &str, range: std::ops::Range<usize>) {
        if let Some((file, tensor)) = self.copied_from(name) {
            file.release_range(tensor, range);
        }
    }

    fn prefetch_range(&self, name: &str, range: std::ops::Range<usize>) {
        if let Some((file, tensor)) = self.copied_from(name) {
            file.prefetch_range(tensor, range);
        }
    }

    fn stored_at(&self, name: &str) -> Option<Stored<'_>> {
        let (file, tensor) = self.copied_from(name)?;
        file.stored_at(tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::tensor_seed;

    #[test]
    fn tensor_seeds_depend_on_name_and_seed() {
        assert_ne!(tensor_seed(0, "a"), tensor_seed(0, "b"));
        assert_ne!(tensor_seed(0, "a"), tensor_seed(1, "a"));
        assert_eq!(tensor_seed(7, "x"), tensor_seed(7, "x"));
    }
}
