//! Models on candle: llama, vit and bert forward and backward passes whose weights come
//! through a [`Parametrisation`], so one model code runs with plain weights, TLEG's
//! linear-expanded weights, SWS's stage-shared weights and Pool's inserted stitch layers.
//!
//! - [`Model::load`] builds a model from a [`crate::checkpoint::Checkpoint`] by mapping each
//!   tensor's [`crate::anatomy::Role`] to its place in the model.
//! - [`Model::forward_with`] runs a batch with [`Hooks`]; the returned [`Forward`] holds the
//!   per-layer hidden states, and [`Forward::layer_grads`] gives per-layer weight gradients for
//!   any parametrisation.
//! - [`Mode::Train`] uses differentiable, hand-written norms, softmax and RoPE; [`Mode::Infer`]
//!   uses candle's fused kernels, which carry no gradient.

mod bert;
mod config;
pub mod init;
mod llama;
mod model;
mod ops;
pub mod param;
mod vit;

pub use config::{ModelConfig, Pooling};
pub use model::{Forward, Hooks, Input, Model, device, mean_pool};
pub use param::{LinearExpanded, Parametrisation, Plain, StageShared, Stitched, Store};

/// Which implementation of the non-linear ops a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Differentiable ops (`rms_norm`, `layer_norm`, `softmax` and RoPE written out in tensor
    /// ops), for training and gradient hooks.
    Train,
    /// candle's fused kernels, faster but without gradients.
    Infer,
}
