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
    /// The warm start of [`AuxInit::Fit`] on the teacher's weights narrowed to the aux net's
    /// width: the leading channels of every dimension, whole heads (the head width must stay
    /// the same), consistently across tensors (weight selection, Xu et al. 2023, with its
    /// consecutive rule).
    Select,
}

impl AuxInit {
    /// Read `random` or `fit`.
    pub fn parse(text: &str) -> std::result::Result<AuxInit, String> {
        match text {
            "random" => Ok(AuxInit::Random),
            "fit" => Ok(AuxInit::Fit),
            "select" => Ok(AuxInit::Select),
            other => Err(format!(
                "'{other}' is not an aux-net initialisation; use `random` (the papers), `fit` (a warm start from the teacher's layers, same width) or `select` (the same from the teacher's leading channels, for a narrower aux net)"
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

/// The error of a warm start whose widths do not fit the teacher's: `fit` needs the same
/// widths, `select` widths no larger and the same head width.
pub(crate) fn require_teacher_shapes(request: &AuxRequest<'_>) -> Result<()> {
    let (s, t) = (request.config, &request.teacher.config);
    let sizes = |c: &ModelConfig| (c.hidden, c.heads, c.kv_heads, c.intermediate);
    let described = |c: &ModelConfig| {
        format!(
            "hidden {}, heads {}, kv heads {}, MLP {}",
            c.hidden, c.heads, c.kv_heads, c.intermediate
        )
    };
    if request.init == AuxInit::Select {
        let narrower = s.hidden <= t.hidden
            && s.heads <= t.heads
            && s.kv_heads <= t.kv_heads
            && s.intermediate <= t.intermediate;
        if narrower && s.head_dim() == t.head_dim() {
            return Ok(());
        }
        return Err(Error::InvalidValue {
            what: "AUX.INIT".into(),
            value: "select".into(),
            reason: format!(
                "selection keeps whole heads of the teacher's head width {hd}: the aux net ({}) must be no wider than the teacher ({}) and keep that head width; set AUX.HEADS to AUX.HIDDEN / {hd}, or use `AUX.INIT: random`",
                described(s),
                described(t),
                hd = t.head_dim()
            ),
        });
    }
    if sizes(s) == sizes(t) {
        return Ok(());
    }
    Err(Error::InvalidValue {
        what: "AUX.INIT".into(),
        value: "fit".into(),
        reason: format!(
            "a warm start copies the teacher's tensors, and the aux net ({}) differs from the teacher ({}); use `AUX.INIT: select` for a narrower aux net, `random`, or the teacher's width",
            described(s),
            described(t)
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

/// The teacher's tensors of every slot of `config`'s layout, one block per teacher layer,
/// named as the layout names them and narrowed to its shapes (the leading entries of each
/// dimension; the q, k and v thirds of a packed projection each): the plain model the warm
/// starts read.
pub(crate) fn teacher_plain(teacher: &Model, config: &ModelConfig) -> Result<Plain> {
    let sized = ModelConfig {
        layers: teacher.params.depth(),
        ..config.clone()
    };
    let mut store = Store::new();
    for (slot, name, shape) in layout(&sized) {
        if let Some(t) = teacher.params.get(&slot)? {
            let packed = slot.role == Role::AttnQkv;
            store.insert(slot, &name, &leading(&t, &shape, packed)?)?;
        }
    }
    Ok(Plain { store })
}

/// A plain `config`-shaped model selected from the teacher: its globals and `config.layers`
/// evenly spaced layers (the first and the last among them), each narrowed to `config`'s
/// leading channels and whole heads as [`teacher_plain`] narrows them.
pub(crate) fn selected_plain(teacher: &Model, config: &ModelConfig) -> Result<Plain> {
    let narrowed = teacher_plain(teacher, config)?;
    let (have, want) = (teacher.params.depth(), config.layers);
    let source = |k: usize| {
        if want <= 1 {
            0
        } else {
            (k * (have.max(1) - 1) + (want - 1) / 2) / (want - 1)
        }
    };
    let mut store = Store::new();
    for (slot, name, _) in layout(config) {
        let from = Slot {
            layer: slot.layer.map(source),
            ..slot.clone()
        };
        if let Some(t) = narrowed.store.tensor(&from) {
            store.insert(slot, &name, &t)?;
        }
    }
    Ok(Plain { store })
}

/// The leading `shape` entries of `t` along every dimension; with `packed`, dimension 0 holds
/// three equal parts (q, k, v), each narrowed alike.
fn leading(t: &Tensor, shape: &[usize], packed: bool) -> Result<Tensor> {
    if t.dims() == shape {
        return Ok(t.clone());
    }
    let mut out = t.clone();
    for (axis, &want) in shape.iter().enumerate() {
        let have = out.dim(axis)?;
        if have == want {
            continue;
        }
        if want > have {
            return Err(Error::ModelMismatch {
                name: format!("{:?}", t.dims()),
                reason: format!(
                    "cannot select {want} entries of dimension {axis}, which has {have}"
                ),
            });
        }
        out = if packed && axis == 0 {
            let rest: Vec<usize> = out.dims()[1..].to_vec();
            let mut split = vec![3, have / 3];
            split.extend(&rest);
            let part = out.reshape(split)?.narrow(1, 0, want / 3)?;
            let mut joined = vec![want];
            joined.extend(&rest);
            part.contiguous()?.reshape(joined)?
        } else {
            out.narrow(axis, 0, want)?.contiguous()?
        };
    }
    Ok(out)
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
