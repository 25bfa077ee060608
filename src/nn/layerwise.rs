//! A checkpoint run one block at a time, for models whose f32 weights do not fit in memory (a
//! Llama-2-7B is 27 GB in f32): only the embeddings, final norm and head stay loaded; each
//! block is read from the memory-mapped checkpoint when the pass reaches it and dropped after.
//!
//! - [`Layerwise::hidden_states`]: the hidden states after the embeddings and after every
//!   block, without gradients (CKA, stitch least squares), and [`Layerwise::output`]: the
//!   model's output (a large descendant's smoke perplexity).
//! - [`Layerwise::weight_grads`]: every block's weight gradients of a loss on the output.
//!   The forward pass keeps only each block's input; the backward pass then goes from the top
//!   block down, loading each block again, recomputing its forward pass from its kept input and
//!   differentiating `Σ output ⊙ g`, where `g` is the gradient the block above handed down, so
//!   it yields that block's weight gradients and the `g` for the block below.
//!
//! Memory is the globals plus about two copies of one block in f32 and its gradients; the
//! results are those of the whole model within f32 rounding (tests compare them).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};

use super::{Forward, Hooks, Input, Mode, Model, ModelConfig};
use crate::anatomy::Slot;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// Ancestors whose f32 weights are larger than this run one block at a time unless a recipe
/// says otherwise (`layerwise: false`).
pub const LAYERWISE_ABOVE: u64 = 4 << 30;

/// A checkpoint whose blocks are loaded one at a time.
pub struct Layerwise<'c> {
    ckpt: &'c Checkpoint,
    /// The embeddings, final norm and head, as a model of no blocks.
    globals: Model,
    /// The checkpoint's blocks that run, in order.
    layers: Vec<usize>,
    device: Device,
}

impl std::fmt::Debug for Layerwise<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layerwise")
            .field("layers", &self.layers)
            .finish()
    }
}

impl<'c> Layerwise<'c> {
    /// Load the globals of `ckpt`; its blocks are loaded when a pass reaches them.
    pub fn new(ckpt: &'c Checkpoint, device: &Device) -> Result<Layerwise<'c>> {
        let depth = ModelConfig::of(ckpt)?.layers;
        Layerwise::of_layers(ckpt, (0..depth).collect(), device)
    }

    /// [`Layerwise::new`] running only the checkpoint's blocks `layers`, in the order given
    /// (as [`Model::load_layers`] keeps them).
    pub fn of_layers(
        ckpt: &'c Checkpoint,
        layers: Vec<usize>,
        device: &Device,
    ) -> Result<Layerwise<'c>> {
        let depth = ModelConfig::of(ckpt)?.layers;
        if let Some(&bad) = layers.iter().find(|&&l| l >= depth) {
            return Err(Error::InvalidValue {
                what: "block".into(),
                value: bad.to_string(),
                reason: format!("the checkpoint has {depth} blocks"),
            });
        }
        let globals = Model::load_layers(ckpt, Some(&[]), device)?;
        Ok(Layerwise {
            ckpt,
            globals,
            layers,
            device: device.clone(),
        })
    }

    /// The model's config (with the depth of the blocks that run).
    pub fn config(&self) -> ModelConfig {
        ModelConfig {
            layers: self.layers.len(),
            ..self.globals.config.clone()
        }
    }

    /// The embeddings, final norm and head, as a model of no blocks (for losses on the
    /// output, which read the family and, for bert, the embedding table).
    pub fn globals(&self) -> &Model {
        &self.globals
    }

    /// Number of blocks that run.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// The `position`-th block that runs, loaded alone.
    fn block(&self, position: usize) -> Result<Model> {
        Model::load_blocks(self.ckpt, &self.layers[position..=position], &self.device)
    }

    /// Run block `layer` on `states`.
    fn run_block(
        &self,
        block: &Model,
        states: &Tensor,
        mask: Option<&Tensor>,
        mode: Mode,
        weight_grads: bool,
    ) -> Result<Forward> {
        let hooks = Hooks {
            blocks_only: true,
            weight_grads,
            ..Hooks::default()
        };
        block.forward_from(states, 0, mask, mode, hooks)
    }

    /// The hidden states after the embeddings and after each block (`depth + 1` of them),
    /// without gradients.
    pub fn hidden_states(&self, input: &Input) -> Result<Vec<Tensor>> {
        let mut states = Vec::with_capacity(self.depth() + 1);
        self.each_state(input, |h| states.push(h.clone()))?;
        Ok(states)
    }

    /// The model's output (logits, or the head's output) on `input`, without gradients.
    pub fn output(&self, input: &Input) -> Result<Tensor> {
        let top = self.each_state(input, |_| {})?;
        let mask = match input {
            Input::Tokens { mask, .. } => mask.as_ref(),
            Input::Images(_) => None,
        };
        let hooks = Hooks::default();
        Ok(self
            .globals
            .forward_from(&top, 0, mask, Mode::Infer, hooks)?
            .output)
    }

    /// Run the embeddings and every block without gradients, showing `seen` each hidden state
    /// as it is made; returns the last.
    fn each_state(&self, input: &Input, mut seen: impl FnMut(&Tensor)) -> Result<Tensor> {
        let (mut h, mask) = self.globals.embed(input, Mode::Infer)?;
        seen(&h);
        for layer in 0..self.depth() {
            let block = self.block(layer)?;
            h = self.run_block(&block, &h, mask, Mode::Infer, false)?.output;
            seen(&h);
        }
        Ok(h)
    }

    /// The loss `loss_of(globals, output)` of `input` and the gradient of every block weight
    /// (slots numbered by the blocks' positions in the run), handed to `visit` block by block,
    /// from the top block down.
    pub fn weight_grads(
        &self,
        input: &Input,
        loss_of: impl Fn(&Model, &Forward) -> Result<Tensor>,
        mut visit: impl FnMut(usize, BTreeMap<Slot, Tensor>) -> Result<()>,
    ) -> Result<Tensor> {
        let (h, mask) = self.globals.embed(input, Mode::Train)?;
        let mut inputs = Vec::with_capacity(self.depth());
        let mut h = h.detach();
        for layer in 0..self.depth() {
            let block = self.block(layer)?;
            let out = self.run_block(&block, &h, mask, Mode::Train, false)?.output;
            inputs.push(h);
            h = out.detach();
        }
        let top = Var::from_tensor(&h)?;
        let head =
            self.globals
                .forward_from(top.as_tensor(), 0, mask, Mode::Train, Hooks::default())?;
        let loss = loss_of(&self.globals, &head)?;
        let mut upstream = gradient_of(&loss.backward()?, &top)?;
        for (layer, states) in inputs.into_iter().enumerate().rev() {
            let block = self.block(layer)?;
            let x = Var::from_tensor(&states)?;
            let forward = self.run_block(&block, x.as_tensor(), mask, Mode::Train, true)?;
            let surrogate = (&forward.output * &upstream)?.sum_all()?;
            let grads = surrogate.backward()?;
            let renumbered = forward
                .layer_grads(&grads)
                .into_iter()
                .map(|(slot, g)| {
                    let slot = Slot {
                        layer: Some(layer),
                        ..slot
                    };
                    (slot, g)
                })
                .collect();
            visit(layer, renumbered)?;
            upstream = gradient_of(&grads, &x)?;
        }
        Ok(loss)
    }
}

fn gradient_of(grads: &candle_core::backprop::GradStore, var: &Var) -> Result<Tensor> {
    grads
        .get(var.as_tensor())
        .cloned()
        .ok_or_else(|| Error::InvalidValue {
            what: "layer-by-layer backward pass".into(),
            value: "hidden states".into(),
            reason: "no gradient reached a block's input".into(),
        })
}
