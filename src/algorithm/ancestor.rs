//! [`AncestorModel`]: an opened ancestor seen as a stack of identical layers, each a map from
//! (role, param) to one tensor, plus the global tensors.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use crate::anatomy::{Anatomy, Family, Naming, Param, Role, Slot, analyze, slot_name};
use crate::checkpoint::{Checkpoint, DType, Format, TensorInfo};
use crate::error::{Error, Result};

/// The key of a per-layer tensor: what it does and whether it is a weight or a bias.
pub type Key = (Role, Param);

/// An ancestor whose layers all hold the same tensors with the same shapes.
pub struct AncestorModel<'a> {
    /// The opened checkpoint.
    pub ckpt: &'a Checkpoint,
    /// Its anatomy.
    pub anatomy: Anatomy,
    layers: Vec<BTreeMap<Key, String>>,
}

impl std::fmt::Debug for AncestorModel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AncestorModel")
            .field("path", &self.ckpt.path)
            .field("family", &self.anatomy.family)
            .field("layers", &self.layers.len())
            .finish()
    }
}

fn uneven(reason: String) -> Error {
    Error::Algorithm {
        algorithm: "extract".into(),
        reason,
        fix: "learngenes are extracted from ancestors whose layers all have the same tensors and shapes; pick another ancestor".into(),
    }
}

impl<'a> AncestorModel<'a> {
    /// Analyse `ckpt` and check that its layers are uniform.
    pub fn new(ckpt: &'a Checkpoint) -> Result<AncestorModel<'a>> {
        let anatomy = analyze(ckpt.config.as_ref(), ckpt.source.tensors())?;
        let depth = anatomy.hyper.layers;
        let mut layers: Vec<BTreeMap<Key, String>> = vec![BTreeMap::new(); depth];
        for (name, slot) in &anatomy.slots {
            if let Some(l) = slot.layer
                && !matches!(slot.role, Role::Buffer | Role::Stitch)
            {
                layers[l].insert((slot.role, slot.param), name.clone());
            }
        }
        if depth == 0 {
            return Err(uneven(format!("`{}` has no layers", ckpt.path.display())));
        }
        let model = AncestorModel {
            ckpt,
            anatomy,
            layers,
        };
        model.check_uniform()?;
        Ok(model)
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.ckpt.source.require(name)
    }

    fn check_uniform(&self) -> Result<()> {
        let first = &self.layers[0];
        for (l, layer) in self.layers.iter().enumerate().skip(1) {
            for key in first.keys().chain(layer.keys()) {
                let (Some(a), Some(b)) = (first.get(key), layer.get(key)) else {
                    let have = if first.contains_key(key) { 0 } else { l };
                    return Err(uneven(format!(
                        "layer {have} has a {:?} {:?} tensor that layer {} lacks",
                        key.0,
                        key.1,
                        if have == 0 { l } else { 0 }
                    )));
                };
                let (sa, sb) = (&self.info(a)?.shape, &self.info(b)?.shape);
                if sa != sb {
                    return Err(uneven(format!(
                        "`{b}` has shape {sb:?}, but `{a}` of layer 0 has {sa:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.anatomy.family
    }

    /// The naming scheme.
    pub fn naming(&self) -> Naming {
        self.anatomy.naming
    }

    /// Number of layers.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// The (role, param) keys every layer has, in order.
    pub fn keys(&self) -> Vec<Key> {
        self.layers[0].keys().copied().collect()
    }

    /// The ancestor's name of one layer tensor.
    pub fn tensor(&self, layer: usize, key: Key) -> Result<&str> {
        self.layers
            .get(layer)
            .and_then(|m| m.get(&key))
            .map(String::as_str)
            .ok_or_else(|| Error::MissingTensor {
                name: format!("{:?} {:?} of layer {layer}", key.0, key.1),
            })
    }

    /// The shape of a layer tensor (the same in every layer).
    pub fn shape(&self, key: Key) -> Result<Vec<usize>> {
        Ok(self.info(self.tensor(0, key)?)?.shape.clone())
    }

    /// One layer tensor as f32 values.
    pub fn read(&self, layer: usize, key: Key) -> Result<Vec<f32>> {
        self.ckpt.source.read_f32(self.tensor(layer, key)?)
    }

    /// One layer tensor as f32 values, borrowed from the memory map when it is stored as f32
    /// (see [`crate::checkpoint::TensorSource::view_f32`]), else converted.
    pub fn view(&self, layer: usize, key: Key) -> Result<Cow<'_, [f32]>> {
        self.ckpt.source.view_f32(self.tensor(layer, key)?)
    }

    /// One layer tensor's bytes as they lie in the memory map, with their dtype; `None` when
    /// the source has to decode or copy them (GGUF, pickles).
    pub fn stored(&self, layer: usize, key: Key) -> Result<Option<(DType, &[u8])>> {
        let name = self.tensor(layer, key)?;
        let dtype = self.info(name)?.dtype;
        if self.ckpt.format != Format::Safetensors || !dtype.is_float() {
            return Ok(None);
        }
        Ok(match self.ckpt.source.read(name)? {
            Cow::Borrowed(bytes) => Some((dtype, bytes)),
            Cow::Owned(_) => None,
        })
    }

    /// Let the pages of a layer tensor go once it has been used.
    pub fn release(&self, layer: usize, key: Key) {
        if let Ok(name) = self.tensor(layer, key) {
            self.ckpt.source.release(name);
        }
    }

    /// Let the pages of the elements `elements` of a layer tensor go.
    pub fn release_elements(&self, layer: usize, key: Key, elements: Range<usize>) {
        if let Some((name, bytes)) = self.byte_range(layer, key, elements) {
            self.ckpt.source.release_range(name, bytes);
        }
    }

    /// Bring in the pages of the elements `elements` of a layer tensor, which are read next.
    pub fn prefetch_elements(&self, layer: usize, key: Key, elements: Range<usize>) {
        if let Some((name, bytes)) = self.byte_range(layer, key, elements) {
            self.ckpt.source.prefetch_range(name, bytes);
        }
    }

    /// The name of a layer tensor and the bytes that hold its elements `elements`.
    fn byte_range(
        &self,
        layer: usize,
        key: Key,
        elements: Range<usize>,
    ) -> Option<(&str, Range<usize>)> {
        let name = self.tensor(layer, key).ok()?;
        let size = self.info(name).ok()?.dtype.size();
        let bytes = elements.start.saturating_mul(size)..elements.end.saturating_mul(size);
        Some((name, bytes))
    }

    /// The name a layer tensor has inside a gene block unit: its name as layer 0.
    pub fn unit_name(&self, key: Key) -> Result<String> {
        unit_tensor_name(self.family(), self.naming(), key)
    }

    /// The names of the global tensors (embeddings, final norm, head, buffers).
    pub fn globals(&self) -> Vec<&str> {
        self.anatomy.global_tensors()
    }

    /// Elements of one layer (every layer has the same).
    pub fn layer_elements(&self) -> Result<u64> {
        self.keys()
            .into_iter()
            .map(|key| Ok(self.shape(key)?.iter().product::<usize>() as u64))
            .sum()
    }

    /// Bytes of every weight in f32: what loading the whole model takes.
    pub fn f32_bytes(&self) -> Result<u64> {
        Ok(4 * (self.layer_elements()? * self.depth() as u64 + self.global_elements()?))
    }

    /// Whether the data-driven algorithms run this ancestor one block at a time: as `forced`
    /// says, else when its f32 weights exceed [`crate::nn::layerwise::LAYERWISE_ABOVE`].
    pub fn run_layerwise(&self, forced: Option<bool>) -> Result<bool> {
        match forced {
            Some(choice) => Ok(choice),
            None => Ok(self.f32_bytes()? > crate::nn::layerwise::LAYERWISE_ABOVE),
        }
    }

    /// Elements of the global tensors.
    pub fn global_elements(&self) -> Result<u64> {
        self.globals()
            .into_iter()
            .map(|name| Ok(self.info(name)?.numel() as u64))
            .sum()
    }
}

/// The name of a layer tensor inside a block unit of a gene: the family's name for layer 0.
pub fn unit_tensor_name(family: Family, naming: Naming, key: Key) -> Result<String> {
    let slot = Slot {
        layer: Some(0),
        role: key.0,
        param: key.1,
    };
    slot_name(family, &slot, naming).ok_or_else(|| Error::ModelMismatch {
        name: format!("{:?} {:?}", key.0, key.1),
        reason: format!("the {family} family has no name for it"),
    })
}
