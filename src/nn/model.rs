//! [`Model`]: a family's forward pass over a [`Parametrisation`], loaded from a checkpoint.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use super::config::ModelConfig;
use super::init::Rng;
use super::param::{Parametrisation, Plain, Store};
use super::{Mode, Precision, bert, llama, vit};
use crate::anatomy::{Family, Param, Role, Slot, analyze};
use crate::checkpoint::Checkpoint;
use crate::checkpoint::memory::MemorySource;
use crate::checkpoint::write::{WriteOptions, plan_all, write_model};
use crate::error::{Error, Result};
use crate::progress::Silent;

/// What a model reads.
#[derive(Debug, Clone)]
pub enum Input {
    /// Token ids `[batch, seq]` (u32), with an optional 0/1 attention mask `[batch, seq]`.
    Tokens {
        /// The ids.
        ids: Tensor,
        /// 1 for real tokens, 0 for padding (bert).
        mask: Option<Tensor>,
    },
    /// Images `[batch, channels, height, width]` (f32, normalised).
    Images(Tensor),
}

/// The result of a forward pass.
#[derive(Debug, Clone)]
pub struct Forward {
    /// llama: logits `[batch, seq, vocab]`; vit: logits `[batch, classes]`; bert: the last
    /// hidden states `[batch, seq, hidden]`.
    pub output: Tensor,
    /// Hidden states when asked for: entry 0 is the embedding output, entry `l + 1` the output of
    /// block `l`.
    pub hidden: Vec<Tensor>,
    /// With [`Hooks::weight_grads`]: for each per-layer tensor the pass used, a zero probe
    /// added to it, whose gradient is the gradient of that tensor as the layer saw it.
    pub layer_weights: Vec<(Slot, Tensor)>,
    /// With [`Hooks::attention`]: entry `l` is block `l`'s attention branch, after its output
    /// projection and before the residual add (what Learngene Pool's students match).
    pub attention: Vec<Tensor>,
}

/// Stochastic depth for one training forward pass (timm's `DropPath`, ViT only): the residual
/// branches of block l are dropped per example with probability `rate · l / (depth − 1)`
/// (timm's linear rule) and the kept ones scaled by `1 / (1 − that)`. The masks come from
/// `seed`, so the same seed drops the same branches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropPath {
    /// The rate of the last block.
    pub rate: f64,
    /// The seed of this pass's masks.
    pub seed: u64,
}

/// Dropout for one training forward pass (timm's ViT `drop_rate`, ViT only): after the
/// position embeddings, on the attention projection, after the MLP's activation and on its
/// output, each element is zeroed with probability `rate` and the rest scaled by
/// `1 / (1 − rate)`. The masks come from `seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// The probability of dropping an element.
    pub rate: f64,
    /// The seed of this pass's masks.
    pub seed: u64,
}

/// What a forward pass should expose besides its output.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Hooks {
    /// Keep the hidden states after the embeddings and after every block.
    pub hidden: bool,
    /// Make per-layer weight gradients available through [`Forward::layer_grads`].
    pub weight_grads: bool,
    /// Stop after the last block: [`Forward::output`] is then its hidden states, without the
    /// final norm and head (for callers that only read hidden states).
    pub blocks_only: bool,
    /// Stochastic depth (training passes of vit models only).
    pub drop_path: Option<DropPath>,
    /// Dropout (training passes of vit models only).
    pub dropout: Option<Dropout>,
    /// Keep every block's attention branch ([`Forward::attention`]).
    pub attention: bool,
}

impl Hooks {
    /// Hidden states after the embeddings and every block, and nothing after the last block.
    pub const HIDDEN_STATES: Hooks = Hooks {
        hidden: true,
        weight_grads: false,
        blocks_only: true,
        drop_path: None,
        dropout: None,
        attention: false,
    };
}

impl Forward {
    /// The gradient of each per-layer tensor, after `loss.backward()` gave `grads`.
    ///
    /// The pass must have run with [`Hooks::weight_grads`]. For TLEG or SWS weights these are
    /// the gradients with respect to the expanded or shared tensor as layer `l` saw it, not with
    /// respect to the underlying variables.
    pub fn layer_grads(&self, grads: &GradStore) -> BTreeMap<Slot, Tensor> {
        let mut out: BTreeMap<Slot, Tensor> = BTreeMap::new();
        for (slot, t) in &self.layer_weights {
            if let Some(g) = grads.get(t) {
                out.insert(slot.clone(), g.clone());
            }
        }
        out
    }
}

/// The per-pass view of the weights that the family code reads through.
pub(crate) struct Ctx<'a> {
    params: &'a dyn Parametrisation,
    pub mode: Mode,
    compute: Option<DType>,
    probes: bool,
    /// Return the last block's hidden states instead of applying the final norm and head.
    pub blocks_only: bool,
    drop_path: Option<DropPath>,
    dropout: Option<Dropout>,
    used: RefCell<Vec<(Slot, Tensor)>>,
    attention: Option<RefCell<Vec<Tensor>>>,
}

impl<'a> Ctx<'a> {
    fn new(model: &'a Model, mode: Mode, hooks: Hooks) -> Ctx<'a> {
        Ctx {
            params: model.params.as_ref(),
            mode,
            compute: model.precision.compute(),
            probes: hooks.weight_grads,
            blocks_only: hooks.blocks_only,
            drop_path: hooks
                .drop_path
                .filter(|d| mode == Mode::Train && d.rate > 0.0),
            dropout: hooks
                .dropout
                .filter(|d| mode == Mode::Train && d.rate > 0.0),
            used: RefCell::new(Vec::new()),
            attention: hooks.attention.then(|| RefCell::new(Vec::new())),
        }
    }

    /// Whether a block's residual branches run as they are: no dropout, no stochastic depth,
    /// no attention branch to keep and products in the weights' own dtype. Only then may a
    /// family run a whole sublayer as one fused op.
    pub fn plain_branches(&self) -> bool {
        self.dropout.is_none()
            && self.drop_path.is_none()
            && self.attention.is_none()
            && self.compute.is_none()
    }

    /// Keep a block's attention branch when the pass asked for them.
    pub fn keep_attention(&self, branch: &Tensor) {
        if let Some(kept) = &self.attention {
            kept.borrow_mut().push(branch.clone());
        }
    }

    /// The tensor of a slot, if the model has it.
    pub fn get(&self, slot: &Slot) -> Result<Option<Tensor>> {
        let t = self.params.get(slot)?;
        match (t, slot.layer) {
            (Some(t), Some(_)) if self.probes => {
                // candle keeps gradients only for variables: a zero variable added to the
                // tensor receives exactly the tensor's gradient.
                let probe = Var::zeros(t.shape(), t.dtype(), t.device())?;
                let probed = (t + probe.as_tensor())?;
                self.used
                    .borrow_mut()
                    .push((slot.clone(), probe.as_tensor().clone()));
                Ok(Some(probed))
            }
            (t, _) => Ok(t),
        }
    }

    /// The tensor of a slot the model cannot run without.
    pub fn need(&self, slot: &Slot) -> Result<Tensor> {
        self.get(slot)?.ok_or_else(|| Error::ModelMismatch {
            name: format!("{:?} {:?} of layer {:?}", slot.role, slot.param, slot.layer),
            reason: "the model needs it, but the weights do not have it".into(),
        })
    }

    /// Weight and optional bias of a layer role.
    pub fn wb(&self, layer: usize, role: Role) -> Result<(Tensor, Option<Tensor>)> {
        let w = self.need(&super::param::slot(layer, role, Param::Weight))?;
        let b = self.get(&super::param::slot(layer, role, Param::Bias))?;
        Ok((w, b))
    }

    /// Weight and optional bias of a global role.
    pub fn global_wb(&self, role: Role) -> Result<(Tensor, Option<Tensor>)> {
        let w = self.need(&super::param::global(role, Param::Weight))?;
        let b = self.get(&super::param::global(role, Param::Bias))?;
        Ok((w, b))
    }

    /// `x · wᵀ + b`, in the model's [`super::Precision`].
    pub fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        super::ops::linear(x, w, b, self.compute)
    }

    /// Attention over projections `[batch, seq, heads · head_dim]` in the model's
    /// [`super::Precision`] and this pass's mode.
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        spec: &super::ops::SelfAttention<'_>,
    ) -> Result<Tensor> {
        super::ops::self_attention(q, k, v, spec, self.mode, self.compute)
    }

    /// [`Self::attention`] over one packed projection `[batch, seq, (heads + 2 · kv_heads) ·
    /// head_dim]` (queries, keys, values).
    pub fn attention_packed(
        &self,
        qkv: &Tensor,
        spec: &super::ops::SelfAttention<'_>,
    ) -> Result<Tensor> {
        super::ops::self_attention_packed(qkv, spec, self.mode, self.compute)
    }

    /// Apply the stitch after block `layer`, if the parametrisation has one.
    pub fn stitch(&self, layer: usize, h: Tensor) -> Result<Tensor> {
        match self.params.stitch(layer) {
            Some((w, b)) => self.linear(&h, &w, b.as_ref()),
            None => Ok(h),
        }
    }

    /// Number of blocks.
    pub fn depth(&self) -> usize {
        self.params.depth()
    }

    /// `x` under the pass's dropout at site `site` (each site draws its own mask): unchanged
    /// without it.
    pub fn dropout(&self, site: u64, x: Tensor) -> Result<Tensor> {
        let Some(d) = self.dropout else {
            return Ok(x);
        };
        let keep = 1.0 - d.rate;
        let mut rng = Rng::new(Rng::stream_seed(
            d.seed,
            &[(site + 1, 0xD1B5_4A32_D192_ED03)],
        ));
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| if rng.uniform() < keep { scale } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }

    /// Residual branch `which` (0 attention, 1 MLP) of block `l`, `[batch, ...]`, under the
    /// pass's stochastic depth: unchanged without it.
    pub fn drop_branch(&self, l: usize, which: u64, branch: Tensor) -> Result<Tensor> {
        let Some(dp) = self.drop_path else {
            return Ok(branch);
        };
        let depth = self.depth();
        let rate = if depth > 1 {
            dp.rate * l as f64 / (depth - 1) as f64
        } else {
            0.0
        };
        if rate <= 0.0 {
            return Ok(branch);
        }
        let keep = 1.0 - rate;
        let slot = 2 * l as u64 + which + 1;
        let mut rng = Rng::new(Rng::stream_seed(dp.seed, &[(slot, 0x9E37_79B9_7F4A_7C15)]));
        let batch = branch.dim(0)?;
        let mask: Vec<f32> = (0..batch)
            .map(|_| {
                if rng.uniform() < keep {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let mut shape = vec![1usize; branch.rank()];
        shape[0] = batch;
        let mask = Tensor::from_vec(mask, shape, branch.device())?.to_dtype(branch.dtype())?;
        Ok(branch.broadcast_mul(&mask)?)
    }
}

/// A model: its config, its weights and the device they live on.
pub struct Model {
    /// Sizes and options.
    pub config: ModelConfig,
    /// The weights.
    pub params: Box<dyn Parametrisation>,
    /// Where the weights live.
    pub device: Device,
    /// The dtype of the matrix products (the weights stay f32).
    pub precision: Precision,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .finish()
    }
}

/// The device to run on: the first CUDA GPU when `cuda` is true, else the CPU.
pub fn device(cuda: bool) -> Result<Device> {
    if cuda {
        Ok(Device::new_cuda(0)?)
    } else {
        Ok(Device::Cpu)
    }
}

fn skip(family: Family, name: &str, slot: &Slot) -> bool {
    match family {
        // The encoder's output is the embedding; heads and pooler are task-specific.
        Family::Bert => matches!(slot.role, Role::Head | Role::Pooler | Role::Buffer),
        Family::Vit => {
            slot.role == Role::Buffer || slot.role == Role::Pooler || name.contains("dist")
        }
        Family::Llama => slot.role == Role::Buffer,
    }
}

impl Model {
    /// A model in f32 over `params`.
    pub fn new(config: ModelConfig, params: Box<dyn Parametrisation>, device: Device) -> Model {
        Model {
            config,
            params,
            device,
            precision: Precision::F32,
        }
    }

    /// The same model with its matrix products in `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Model {
        self.precision = precision;
        self
    }

    /// Load a model with plain weights from a checkpoint, checking every tensor's shape
    /// against the config.
    pub fn load(ckpt: &Checkpoint, device: &Device) -> Result<Model> {
        Model::load_layers(ckpt, None, device)
    }

    /// [`Model::load`], keeping only the checkpoint's blocks `layers` (distinct indices),
    /// renumbered `0..layers.len()` in the order given; `None` keeps every block.
    pub fn load_layers(
        ckpt: &Checkpoint,
        layers: Option<&[usize]>,
        device: &Device,
    ) -> Result<Model> {
        Model::load_selected(ckpt, layers, true, device)
    }

    /// The checkpoint's blocks `layers` alone, renumbered `0..layers.len()`, without the
    /// embeddings, final norm and head: a model to run with [`Hooks::blocks_only`] through
    /// [`Model::forward_from`] (see [`super::layerwise`]).
    pub fn load_blocks(ckpt: &Checkpoint, layers: &[usize], device: &Device) -> Result<Model> {
        Model::load_selected(ckpt, Some(layers), false, device)
    }

    fn load_selected(
        ckpt: &Checkpoint,
        layers: Option<&[usize]>,
        globals: bool,
        device: &Device,
    ) -> Result<Model> {
        let anatomy = analyze(ckpt.config.as_ref(), ckpt.source.tensors())?;
        let mut config = config_of(ckpt, &anatomy)?;
        if let Some(keep) = layers {
            config.layers = keep.len();
        }
        let mut store = Store::new();
        for (name, slot) in &anatomy.slots {
            if skip(anatomy.family, name, slot) || (!globals && slot.layer.is_none()) {
                continue;
            }
            let slot = match (layers, slot.layer) {
                (Some(keep), Some(l)) => match keep.iter().position(|&k| k == l) {
                    Some(p) => Slot {
                        layer: Some(p),
                        ..slot.clone()
                    },
                    None => continue,
                },
                _ => slot.clone(),
            };
            let info = ckpt.source.require(name)?;
            let values = ckpt.source.read_f32(name)?;
            // The f32 copy is made: the mapped pages behind it can go.
            ckpt.source.release(name);
            let t = Tensor::from_vec(values, info.shape.clone(), device)?;
            if store.var(&slot).is_some() {
                return Err(Error::ModelMismatch {
                    name: name.clone(),
                    reason: format!(
                        "a second tensor for {:?} {:?} (layer {:?})",
                        slot.role, slot.param, slot.layer
                    ),
                });
            }
            store.insert(slot, name, &t)?;
        }
        let model = Model::new(config, Box::new(Plain { store }), device.clone());
        model.check_shapes()?;
        Ok(model)
    }

    /// Check every plain tensor against the shape the config implies.
    pub fn check_shapes(&self) -> Result<()> {
        for (name, var) in self.params.vars() {
            let Some(slot) = self.slot_of(&name) else {
                continue;
            };
            if let Some(want) = expected_shape(&self.config, &slot)
                && var.dims() != want.as_slice()
            {
                return Err(Error::ModelMismatch {
                    name,
                    reason: format!(
                        "shape {:?}, but config (hidden {}, heads {}, kv heads {}, intermediate {}) needs {:?}",
                        var.dims(),
                        self.config.hidden,
                        self.config.heads,
                        self.config.kv_heads,
                        self.config.intermediate,
                        want
                    ),
                });
            }
        }
        Ok(())
    }

    fn slot_of(&self, name: &str) -> Option<Slot> {
        let rules = crate::anatomy::rules(self.config.family);
        [crate::anatomy::Naming::Hf, crate::anatomy::Naming::Timm]
            .into_iter()
            .find_map(|n| rules.classify(name, n))
    }

    /// Run a forward pass; `hidden` asks for per-layer hidden states.
    pub fn forward(&self, input: &Input, mode: Mode, hidden: bool) -> Result<Forward> {
        let hooks = Hooks {
            hidden,
            ..Hooks::default()
        };
        self.forward_with(input, mode, hooks)
    }

    /// Run a forward pass with the given hooks.
    pub fn forward_with(&self, input: &Input, mode: Mode, hooks: Hooks) -> Result<Forward> {
        let ctx = Ctx::new(self, mode, hooks);
        let (h, mask) = self.embed_in(&ctx, input)?;
        self.run(ctx, h, 0, mask, hooks)
    }

    /// The hidden states `[batch, seq, hidden]` that enter the first block, and bert's padding
    /// mask: the embeddings of `input`.
    pub fn embed<'i>(&self, input: &'i Input, mode: Mode) -> Result<(Tensor, Option<&'i Tensor>)> {
        let ctx = Ctx::new(self, mode, Hooks::default());
        self.embed_in(&ctx, input)
    }

    fn embed_in<'i>(
        &self,
        ctx: &Ctx<'_>,
        input: &'i Input,
    ) -> Result<(Tensor, Option<&'i Tensor>)> {
        let c = &self.config;
        Ok(match (c.family, input) {
            (Family::Llama, Input::Tokens { ids, .. }) => (llama::embed(ctx, c, ids)?, None),
            (Family::Bert, Input::Tokens { ids, mask }) => {
                (bert::embed(ctx, c, ids)?, mask.as_ref())
            }
            (Family::Vit, Input::Images(x)) => (vit::embed(ctx, c, x)?, None),
            (family, _) => {
                return Err(Error::InvalidValue {
                    what: "model input".into(),
                    value: family.to_string(),
                    reason: "llama and bert read token ids, vit reads images".into(),
                });
            }
        })
    }

    /// Run blocks `start..` (then the final norm and head) on hidden states
    /// `[batch, seq, hidden]` that enter block `start`, as if the embeddings and the blocks
    /// before had produced them; `mask` is bert's 0/1 padding mask. With `hooks.hidden`,
    /// [`Forward::hidden`] starts with `states` and then holds the output of each block run.
    pub fn forward_from(
        &self,
        states: &Tensor,
        start: usize,
        mask: Option<&Tensor>,
        mode: Mode,
        hooks: Hooks,
    ) -> Result<Forward> {
        let depth = self.params.depth();
        if start > depth {
            return Err(Error::InvalidValue {
                what: "first block".into(),
                value: start.to_string(),
                reason: format!("the model has {depth} blocks"),
            });
        }
        let ctx = Ctx::new(self, mode, hooks);
        self.run(ctx, states.clone(), start, mask, hooks)
    }

    fn run(
        &self,
        ctx: Ctx<'_>,
        h: Tensor,
        start: usize,
        mask: Option<&Tensor>,
        hooks: Hooks,
    ) -> Result<Forward> {
        let mut states = Vec::new();
        let keep = if hooks.hidden {
            states.push(h.clone());
            Some(&mut states)
        } else {
            None
        };
        let c = &self.config;
        let output = match c.family {
            Family::Llama => llama::blocks(&ctx, c, h, start, keep)?,
            Family::Bert => bert::blocks(&ctx, c, h, start, mask, keep)?,
            Family::Vit => vit::blocks(&ctx, c, h, start, keep)?,
        };
        Ok(Forward {
            output,
            hidden: states,
            layer_weights: ctx.used.into_inner(),
            attention: ctx.attention.map(RefCell::into_inner).unwrap_or_default(),
        })
    }

    /// Every learnable variable with its name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.params.vars()
    }

    /// Number of learnable scalars.
    pub fn param_count(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Write the variables as `model.safetensors` (f32) into `dir`, under their names.
    pub fn write_weights(&self, dir: &Path) -> Result<()> {
        let mut mem = MemorySource::new();
        for (name, var) in self.vars() {
            let values: Vec<f32> = var
                .as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            mem.insert_f32(&name, var.dims(), &values)?;
        }
        let opts = WriteOptions::default();
        let plan = plan_all(&mem, &opts);
        write_model(dir, &mem, plan, &opts, &Silent)?;
        Ok(())
    }
}

/// The config of `ckpt` with anatomy `anatomy`: `config.json` and the tensor shapes, and for a
/// vit whose config names no classes, its head's rows.
fn config_of(ckpt: &Checkpoint, anatomy: &crate::anatomy::Anatomy) -> Result<ModelConfig> {
    let mut config = ModelConfig::resolve(anatomy, ckpt.config.as_ref())?;
    if config.family == Family::Vit && config.classes == 0 {
        let head = super::param::global(Role::Head, Param::Weight);
        let rows = anatomy
            .slots
            .iter()
            .find(|(_, slot)| **slot == head)
            .and_then(|(name, _)| ckpt.source.require(name).ok())
            .and_then(|info| info.shape.first().copied());
        config.classes = rows.unwrap_or(0);
    }
    Ok(config)
}

impl ModelConfig {
    /// The config of a checkpoint, from `config.json` and the tensors' shapes, without reading
    /// any weights.
    pub fn of(ckpt: &Checkpoint) -> Result<ModelConfig> {
        config_of(ckpt, &analyze(ckpt.config.as_ref(), ckpt.source.tensors())?)
    }
}

/// The shape a slot must have under `c`, where it is fixed by the config: the front's sizes
/// for the embeddings and front blocks of a stitched descendant (its final norm and head are
/// the end's).
fn expected_shape(c: &ModelConfig, slot: &Slot) -> Option<Vec<usize>> {
    if c.front.is_some() && !(slot.layer.is_none() && slot.role.after_blocks()) {
        let sized = ModelConfig {
            front: None,
            ..c.sized_at(slot.layer)
        };
        return expected_shape(&sized, slot);
    }
    let d = c.hidden;
    let hd = c.head_dim();
    let i = c.intermediate;
    let bias = slot.param == Param::Bias;
    let wb = |rows: usize, cols: usize| if bias { vec![rows] } else { vec![rows, cols] };
    Some(match (c.family, slot.role) {
        (_, Role::AttnNorm | Role::MlpNorm | Role::FinalNorm | Role::EmbeddingNorm) => vec![d],
        (Family::Llama, Role::AttnQ) => wb(c.heads * hd, d),
        (Family::Llama, Role::AttnK | Role::AttnV) => wb(c.kv_heads * hd, d),
        (Family::Llama, Role::AttnO) => wb(d, c.heads * hd),
        (Family::Llama, Role::TokenEmbedding | Role::Head) => vec![c.vocab, d],
        (_, Role::AttnQ | Role::AttnK | Role::AttnV | Role::AttnO) => wb(d, d),
        (_, Role::AttnQkv) => wb(3 * d, d),
        (_, Role::MlpGate | Role::MlpUp) => wb(i, d),
        (_, Role::MlpDown) => wb(d, i),
        (Family::Bert, Role::TokenEmbedding) => vec![c.vocab, d],
        (Family::Vit, Role::PatchEmbedding) if !bias => {
            vec![d, c.channels, c.patch_size, c.patch_size]
        }
        (Family::Vit, Role::PatchEmbedding) => vec![d],
        (Family::Vit, Role::ClassToken) => vec![1, 1, d],
        (Family::Vit, Role::PositionEmbedding) => {
            let side = c.image_size / c.patch_size.max(1);
            vec![1, side * side + usize::from(c.class_token), d]
        }
        (Family::Vit, Role::Head) => wb(c.classes, d),
        _ => return None,
    })
}

/// Mean of `hidden [batch, seq, dim]` over the positions where `mask [batch, seq]` is 1.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    Ok(sum.broadcast_div(&count)?)
}
