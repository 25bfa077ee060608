//! Weight parametrisations: how a model's tensors are produced from the learnable variables.
//!
//! The model code only ever asks [`Parametrisation::get`] for the tensor of a
//! [`Slot`] (layer, role, weight or bias). Each implementation decides how that tensor is made:
//! - [`Plain`]: one variable per tensor;
//! - [`LinearExpanded`] (TLEG): layer `l` of `L` is `B + (l/L)·A`, computed in the graph so
//!   gradients reach `A` and `B`;
//! - [`StageShared`] (SWS): layer `i` uses the variables of its stage `s_i`;
//! - [`Stitched`] (Pool): any of the above plus linear stitch layers between blocks;
//! - [`WithExtras`]: any of the above plus trained variables the model does not read;
//! - [`Spliced`] (a trained Learngene Pool): the front blocks of one model, a stitch and the
//!   end blocks of another, sharing their variables, and [`Joint`], every variable of a pool
//!   at once, for the optimiser.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Tensor, Var};

use crate::anatomy::{Param, Role, Slot};
use crate::error::{Error, Result};

/// Produces the tensors of a model from its learnable variables.
pub trait Parametrisation: Send + Sync {
    /// The tensor for `slot`, or `None` when the model has no such tensor (e.g. no bias).
    fn get(&self, slot: &Slot) -> Result<Option<Tensor>>;
    /// Number of blocks the forward pass runs.
    fn depth(&self) -> usize;
    /// A linear stitch `(weight [out, in], bias)` applied to the hidden states after block
    /// `layer`, if any.
    fn stitch(&self, _layer: usize) -> Option<(Tensor, Option<Tensor>)> {
        None
    }
    /// Every learnable variable with a stable, unique name.
    fn vars(&self) -> Vec<(String, Var)>;
}

/// Named variables keyed by slot: the storage every parametrisation is made of.
#[derive(Debug, Clone, Default)]
pub struct Store {
    vars: BTreeMap<Slot, (String, Var)>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// Add a variable for `slot` under `name`, copying `value`.
    pub fn insert(&mut self, slot: Slot, name: &str, value: &Tensor) -> Result<()> {
        let var = Var::from_tensor(value)?;
        self.vars.insert(slot, (name.to_string(), var));
        Ok(())
    }

    /// The variable of `slot`.
    pub fn var(&self, slot: &Slot) -> Option<&Var> {
        self.vars.get(slot).map(|(_, v)| v)
    }

    /// The tensor of `slot`.
    pub fn tensor(&self, slot: &Slot) -> Option<Tensor> {
        self.var(slot).map(|v| v.as_tensor().clone())
    }

    /// Every `(slot, name, var)`, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&Slot, &str, &Var)> {
        self.vars.iter().map(|(s, (n, v))| (s, n.as_str(), v))
    }

    /// Number of layers (1 + the highest layer index).
    pub fn layers(&self) -> usize {
        self.vars
            .keys()
            .filter(|s| s.role != Role::Stitch)
            .filter_map(|s| s.layer)
            .max()
            .map_or(0, |m| m + 1)
    }

    fn named(&self) -> Vec<(String, Var)> {
        self.vars.values().cloned().collect()
    }
}

/// One variable per tensor, as stored in a checkpoint.
#[derive(Debug, Clone)]
pub struct Plain {
    /// The variables.
    pub store: Store,
}

impl Parametrisation for Plain {
    fn get(&self, slot: &Slot) -> Result<Option<Tensor>> {
        Ok(self.store.tensor(slot))
    }
    fn depth(&self) -> usize {
        self.store.layers()
    }
    fn stitch(&self, layer: usize) -> Option<(Tensor, Option<Tensor>)> {
        let w = self
            .store
            .tensor(&slot(layer, Role::Stitch, Param::Weight))?;
        Some((
            w,
            self.store.tensor(&slot(layer, Role::Stitch, Param::Bias)),
        ))
    }
    fn vars(&self) -> Vec<(String, Var)> {
        self.store.named()
    }
}

fn layer_key(slot: &Slot) -> Slot {
    Slot {
        layer: Some(0),
        role: slot.role,
        param: slot.param,
    }
}

/// TLEG's linear expansion: per-layer tensor `P_l = B_P + (l/L)·A_P` for `l < L`.
///
/// `base` and `slope` hold one block each (slots with layer `0`); `globals` holds the
/// embeddings, final norm and head.
#[derive(Debug, Clone)]
pub struct LinearExpanded {
    /// Non-layer tensors.
    pub globals: Store,
    /// The intercept `B` of every layer tensor.
    pub base: Store,
    /// The slope `A` of every layer tensor.
    pub slope: Store,
    /// The depth `L`.
    pub depth: usize,
}

impl LinearExpanded {
    /// Start from a plain model: `B` = layer 0 of `plain`, `A` = (last layer − layer 0)·L/(L−1),
    /// so the expansion passes through both end layers; globals are copied.
    pub fn from_plain(plain: &Plain, depth: usize) -> Result<LinearExpanded> {
        let mut globals = Store::new();
        let mut base = Store::new();
        let mut slope = Store::new();
        let last = plain.store.layers().saturating_sub(1);
        for (slot, name, var) in plain.store.iter() {
            match slot.layer {
                None => globals.insert(slot.clone(), name, var.as_tensor())?,
                Some(0) => {
                    let end_slot = Slot {
                        layer: Some(last),
                        ..slot.clone()
                    };
                    let end =
                        plain
                            .store
                            .tensor(&end_slot)
                            .ok_or_else(|| Error::ModelMismatch {
                                name: name.to_string(),
                                reason: format!(
                                    "layer {last} has no {:?} {:?}",
                                    slot.role, slot.param
                                ),
                            })?;
                    let a = if last == 0 {
                        end.zeros_like()?
                    } else {
                        ((end - var.as_tensor())? * (depth as f64 / last as f64))?
                    };
                    let key = layer_key(slot);
                    base.insert(key.clone(), &format!("tleg.base.{name}"), var.as_tensor())?;
                    slope.insert(key, &format!("tleg.slope.{name}"), &a)?;
                }
                Some(_) => {}
            }
        }
        Ok(LinearExpanded {
            globals,
            base,
            slope,
            depth,
        })
    }
}

impl Parametrisation for LinearExpanded {
    fn get(&self, slot: &Slot) -> Result<Option<Tensor>> {
        let Some(layer) = slot.layer else {
            return Ok(self.globals.tensor(slot));
        };
        let key = layer_key(slot);
        match (self.base.tensor(&key), self.slope.tensor(&key)) {
            (Some(b), Some(a)) => {
                let coef = layer as f64 / self.depth.max(1) as f64;
                Ok(Some((b + (a * coef)?)?))
            }
            _ => Ok(None),
        }
    }
    fn depth(&self) -> usize {
        self.depth
    }
    fn vars(&self) -> Vec<(String, Var)> {
        let mut v = self.globals.named();
        v.extend(self.base.named());
        v.extend(self.slope.named());
        v
    }
}

/// SWS's stage sharing: layer `i` uses the block of stage `layout[i]`.
#[derive(Debug, Clone)]
pub struct StageShared {
    /// Non-layer tensors.
    pub globals: Store,
    /// One block per stage: slots whose `layer` is the stage index.
    pub stages: Store,
    /// The stage of each layer (non-decreasing, every stage used).
    pub layout: Vec<usize>,
}

impl StageShared {
    /// Start from a plain model: stage `s` takes the first layer of `plain` that `layout` maps
    /// to `s`.
    pub fn from_plain(plain: &Plain, layout: Vec<usize>) -> Result<StageShared> {
        let mut globals = Store::new();
        let mut stages = Store::new();
        for (slot, name, var) in plain.store.iter() {
            match slot.layer {
                None => globals.insert(slot.clone(), name, var.as_tensor())?,
                Some(l) => {
                    let Some(&stage) = layout.get(l) else {
                        continue;
                    };
                    let first = layout.iter().position(|&s| s == stage);
                    if first == Some(l) {
                        let key = Slot {
                            layer: Some(stage),
                            ..slot.clone()
                        };
                        stages.insert(key, &format!("sws.stage{stage}.{name}"), var.as_tensor())?;
                    }
                }
            }
        }
        Ok(StageShared {
            globals,
            stages,
            layout,
        })
    }
}

impl Parametrisation for StageShared {
    fn get(&self, slot: &Slot) -> Result<Option<Tensor>> {
        let Some(layer) = slot.layer else {
            return Ok(self.globals.tensor(slot));
        };
        let Some(&stage) = self.layout.get(layer) else {
            return Ok(None);
        };
        Ok(self.stages.tensor(&Slot {
            layer: Some(stage),
            ..slot.clone()
        }))
    }
    fn depth(&self) -> usize {
        self.layout.len()
    }
    fn vars(&self) -> Vec<(String, Var)> {
        let mut v = self.globals.named();
        v.extend(self.stages.named());
        v
    }
}

/// Any parametrisation with linear stitch layers inserted after some blocks (Pool).
pub struct Stitched {
    /// The blocks and globals.
    pub inner: Box<dyn Parametrisation>,
    /// Stitch layers after block index: `(weight [out, in], bias [out])`.
    pub stitches: BTreeMap<usize, (Var, Var)>,
}

impl Stitched {
    /// Add an identity stitch of width `width` after block `layer`.
    pub fn identity(
        inner: Box<dyn Parametrisation>,
        layer: usize,
        width: usize,
        device: &candle_core::Device,
    ) -> Result<Stitched> {
        let w = Var::from_tensor(&Tensor::eye(width, candle_core::DType::F32, device)?)?;
        let b = Var::from_tensor(&Tensor::zeros(width, candle_core::DType::F32, device)?)?;
        Ok(Stitched {
            inner,
            stitches: BTreeMap::from([(layer, (w, b))]),
        })
    }
}

impl Parametrisation for Stitched {
    fn get(&self, slot: &Slot) -> Result<Option<Tensor>> {
        self.inner.get(slot)
    }
    fn depth(&self) -> usize {
        self.inner.depth()
    }
    fn stitch(&self, layer: usize) -> Option<(Tensor, Option<Tensor>)> {
        self.stitches
            .get(&layer)
            .map(|(w, b)| (w.as_tensor().clone(), Some(b.as_tensor().clone())))
    }
    fn vars(&self) -> Vec<(String, Var)> {
        let mut v = self.inner.vars();
        for (layer, (w, b)) in &self.stitches {
            v.push((format!("stitch.{layer}.weight"), w.clone()));
            v.push((format!("stitch.{layer}.bias"), b.clone()));
        }
        v
    }
}

/// Any parametrisation with extra trained variables that the model never reads (Learngene
/// Pool's feature maps): they are optimised, saved and resumed with the model's own, and left
/// out of the checkpoint it is written as.
pub struct WithExtras {
    /// The model's tensors.
    pub inner: Box<dyn Parametrisation>,
    /// The extra variables, by name.
    pub extras: Vec<(String, Var)>,
}

impl Parametrisation for WithExtras {
    fn get(&self, slot: &Slot) -> Result<Option<Tensor>> {
        self.inner.get(slot)
    }
    fn depth(&self) -> usize {
        self.inner.depth()
    }
    fn stitch(&self, layer: usize) -> Option<(Tensor, Option<Tensor>)> {
        self.inner.stitch(layer)
    }
    fn vars(&self) -> Vec<(String, Var)> {
        let mut v = self.inner.vars();
        v.extend(self.extras.iter().cloned());
        v
    }
}

/// Another model's variables, shared: a pure instance of a trained pool is the instance itself.
pub struct Shared(pub Arc<dyn Parametrisation>);

impl Parametrisation for Shared {
    fn get(&self, slot: &Slot) -> Result<Option<Tensor>> {
        self.0.get(slot)
    }
    fn depth(&self) -> usize {
        self.0.depth()
    }
    fn stitch(&self, layer: usize) -> Option<(Tensor, Option<Tensor>)> {
        self.0.stitch(layer)
    }
    fn vars(&self) -> Vec<(String, Var)> {
        self.0.vars()
    }
}

/// A Learngene Pool configuration over shared variables: the embeddings and blocks
/// `0..front_blocks` of `front`, the stitch after block `front_blocks - 1`, then blocks
/// `end_from..` of `end` with its final norm and head. Gradients reach the instances' own
/// variables, so one optimiser over [`Joint`] trains every configuration.
pub struct Spliced {
    /// The front instance.
    pub front: Arc<dyn Parametrisation>,
    /// The end instance.
    pub end: Arc<dyn Parametrisation>,
    /// Blocks taken from the front.
    pub front_blocks: usize,
    /// The first end block taken.
    pub end_from: usize,
    /// The stitch `(weight [end width, front width], bias)`.
    pub stitch: (Var, Var),
}

impl Parametrisation for Spliced {
    fn get(&self, slot: &Slot) -> Result<Option<Tensor>> {
        match slot.layer {
            Some(l) if l < self.front_blocks => self.front.get(slot),
            Some(l) => self.end.get(&Slot {
                layer: Some(l - self.front_blocks + self.end_from),
                ..slot.clone()
            }),
            None if slot.role.after_blocks() => self.end.get(slot),
            None => self.front.get(slot),
        }
    }
    fn depth(&self) -> usize {
        self.front_blocks + self.end.depth().saturating_sub(self.end_from)
    }
    fn stitch(&self, layer: usize) -> Option<(Tensor, Option<Tensor>)> {
        (layer + 1 == self.front_blocks).then(|| {
            (
                self.stitch.0.as_tensor().clone(),
                Some(self.stitch.1.as_tensor().clone()),
            )
        })
    }
    fn vars(&self) -> Vec<(String, Var)> {
        let mut v = prefixed("front", self.front.as_ref());
        v.extend(prefixed("end", self.end.as_ref()));
        v.push(("stitch.weight".into(), self.stitch.0.clone()));
        v.push(("stitch.bias".into(), self.stitch.1.clone()));
        v
    }
}

/// Every variable of several models and stitches at once, each named once (a trained pool's
/// instances `instance.<name>.*` and stitches `stitch.<unit>.*`): what the optimiser, the
/// resumable state and the EMA see. It is never run.
pub struct Joint {
    /// The models, by name.
    pub parts: Vec<(String, Arc<dyn Parametrisation>)>,
    /// The stitches, by name: `(weight, bias)`.
    pub stitches: Vec<(String, (Var, Var))>,
}

impl Parametrisation for Joint {
    fn get(&self, _slot: &Slot) -> Result<Option<Tensor>> {
        Ok(None)
    }
    fn depth(&self) -> usize {
        0
    }
    fn vars(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = Vec::new();
        for (name, part) in &self.parts {
            v.extend(prefixed(&format!("instance.{name}"), part.as_ref()));
        }
        for (name, (w, b)) in &self.stitches {
            v.push((format!("stitch.{name}.weight"), w.clone()));
            v.push((format!("stitch.{name}.bias"), b.clone()));
        }
        v
    }
}

fn prefixed(prefix: &str, part: &dyn Parametrisation) -> Vec<(String, Var)> {
    part.vars()
        .into_iter()
        .map(|(n, v)| (format!("{prefix}.{n}"), v))
        .collect()
}

/// The slot of a layer tensor.
pub(crate) fn slot(layer: usize, role: Role, param: Param) -> Slot {
    Slot {
        layer: Some(layer),
        role,
        param,
    }
}

/// The slot of a global tensor.
pub(crate) fn global(role: Role, param: Param) -> Slot {
    Slot {
        layer: None,
        role,
        param,
    }
}
