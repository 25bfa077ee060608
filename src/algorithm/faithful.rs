//! The faithful path of TLEG and SWS: the **aux net**, a model whose parameters are constrained
//! so that its free parameters are the gene (TLEG: every layer on one line, `B + (l/L)·A`; SWS:
//! one block per stage). An algorithm builds it ([`super::Algorithm::aux_net`]) with one of
//! three initialisations ([`AuxInit`]); it is then distilled from a teacher
//! ([`crate::train::distill`]), and its trained variables are written as the gene's units
//! ([`AuxNet::write_units`]). The variables are shared (`candle` variables are reference
//! counted), so the handle the model trains and the handle that writes the units see the same
//! values.

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::Serialize;

use super::ancestor::{AncestorModel, Key};
use super::builder::GeneBuilder;
use crate::anatomy::{Role, Slot};
use crate::error::{Error, Result};
use crate::nn::init::{layout, random_plain};
use crate::nn::param::{Parametrisation, Plain, Store};
use crate::nn::{Model, ModelConfig};

/// How the aux net starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuxInit {
    /// Seeded random values, as in the papers (TLEG: A and B of the linear layers
    /// truncated-normal σ = 0.02, norms B = 1 and A = 0, biases 0).
    Random,
    /// A warm start from the teacher's own layers (TLEG: the closed-form least-squares line;
    /// SWS: the middle layer of each stage) and its globals; the widths must match.
    Fit,
}

impl AuxInit {
    /// Read `random` or `fit`.
    pub fn parse(text: &str) -> std::result::Result<AuxInit, String> {
        match text {
            "random" => Ok(AuxInit::Random),
            "fit" => Ok(AuxInit::Fit),
            other => Err(format!(
                "'{other}' is not an aux-net initialisation; use `random` (the papers) or `fit` (a warm start from the teacher's layers, same width)"
            )),
        }
    }
}

/// What an algorithm needs to build its aux net.
pub struct AuxRequest<'a> {
    /// The aux net's sizes; `layers` is its number of virtual layers.
    pub config: &'a ModelConfig,
    /// The teacher (read by [`AuxInit::Fit`]).
    pub teacher: &'a Model,
    /// The initialisation.
    pub init: AuxInit,
    /// Seed of the random values.
    pub seed: u64,
    /// SWS: the stage ratio (e.g. 3:3:4:3:3).
    pub ratio: &'a [usize],
}

/// A trainable aux net.
pub trait AuxNet: Send + Sync {
    /// A parametrisation over the aux net's variables (shared with this aux net) for
    /// [`Model::new`].
    fn params(&self) -> Box<dyn Parametrisation>;
    /// Write the trained variables as the gene's layer units, with the diagnostics `grow`
    /// reads; `aux` is the aux net written out as a plain checkpoint, which names the tensors.
    fn write_units(&self, aux: &AncestorModel<'_>, out: &mut GeneBuilder) -> Result<()>;
}

/// The error of a warm start whose widths do not match the teacher's.
pub(crate) fn require_teacher_shapes(request: &AuxRequest<'_>) -> Result<()> {
    let (s, t) = (request.config, &request.teacher.config);
    if (s.hidden, s.heads, s.kv_heads, s.intermediate)
        == (t.hidden, t.heads, t.kv_heads, t.intermediate)
    {
        return Ok(());
    }
    Err(Error::InvalidValue {
        what: "AUX.INIT".into(),
        value: "fit".into(),
        reason: format!(
            "a warm start copies the teacher's tensors, and the aux net (hidden {}, heads {}, kv heads {}, MLP {}) differs from the teacher (hidden {}, heads {}, kv heads {}, MLP {}); use `AUX.INIT: random`, or the teacher's width",
            s.hidden,
            s.heads,
            s.kv_heads,
            s.intermediate,
            t.hidden,
            t.heads,
            t.kv_heads,
            t.intermediate
        ),
    })
}

/// The aux net's own tensors, seeded, on the teacher's device: `layers` plain blocks and the
/// globals.
pub(crate) fn random_blocks(request: &AuxRequest<'_>, layers: usize) -> Result<Plain> {
    let sized = ModelConfig {
        layers,
        ..request.config.clone()
    };
    random_plain(&sized, request.seed, &request.teacher.device)
}

/// Whether a tensor starts with a zero slope in TLEG's initialisation: norms and biases.
pub(crate) fn flat_at_init(slot: &Slot) -> bool {
    slot.param == crate::anatomy::Param::Bias
        || matches!(
            slot.role,
            Role::AttnNorm | Role::MlpNorm | Role::FinalNorm | Role::EmbeddingNorm
        )
}

/// The globals of `plain`, as a store.
pub(crate) fn globals_of(plain: &Plain) -> Result<Store> {
    let mut globals = Store::new();
    for (slot, name, var) in plain.store.iter() {
        if slot.layer.is_none() {
            globals.insert(slot.clone(), name, var.as_tensor())?;
        }
    }
    Ok(globals)
}

/// The teacher's tensors of every slot of `config`'s layout for `layers` blocks, named as the
/// layout names them (a plain model the warm starts read).
pub(crate) fn teacher_plain(teacher: &Model, config: &ModelConfig) -> Result<Plain> {
    let sized = ModelConfig {
        layers: teacher.params.depth(),
        ..config.clone()
    };
    let mut store = Store::new();
    for (slot, name, _) in layout(&sized) {
        if let Some(t) = teacher.params.get(&slot)? {
            store.insert(slot, &name, &t)?;
        }
    }
    Ok(Plain { store })
}

/// `slot` in block `layer`.
pub(crate) fn in_layer(slot: &Slot, layer: usize) -> Slot {
    Slot {
        layer: Some(layer),
        ..slot.clone()
    }
}

/// The tensor of `slot` in `store`, or an error naming it.
pub(crate) fn need(store: &Store, slot: &Slot) -> Result<Tensor> {
    store.tensor(slot).ok_or_else(|| Error::ModelMismatch {
        name: format!("{:?} {:?} of layer {:?}", slot.role, slot.param, slot.layer),
        reason: "the model has no such tensor".into(),
    })
}

/// The values of the tensors of block `layer` in `store`, by key, for a gene unit.
pub(crate) fn block_values(store: &Store, layer: usize) -> Result<BTreeMap<Key, Vec<f32>>> {
    let mut out = BTreeMap::new();
    for (slot, _, var) in store.iter() {
        if slot.layer == Some(layer) && slot.role != Role::Stitch {
            let values: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            out.insert((slot.role, slot.param), values);
        }
    }
    Ok(out)
}

/// The aux net as a plain model: every tensor of its layout, each layer computed by its
/// parametrisation (the expanded line, or the stage's block).
pub fn materialise(model: &Model) -> Result<Plain> {
    let mut store = Store::new();
    for (slot, name, _) in layout(&model.config) {
        if let Some(t) = model.params.get(&slot)? {
            store.insert(slot, &name, &t.detach())?;
        }
    }
    Ok(Plain { store })
}

#[cfg(test)]
mod tests;
