//! Models on candle: llama, vit and bert forward and backward passes whose weights come
//! through a [`Parametrisation`], so one model code runs with plain weights, TLEG's
//! linear-expanded weights, SWS's stage-shared weights and Pool's inserted stitch layers.
//!
//! - [`Model::load`] builds a model from a [`crate::checkpoint::Checkpoint`] by mapping each
//!   tensor's [`crate::anatomy::Role`] to its place in the model.
//! - [`Model::forward_with`] runs a batch with [`Hooks`]; the returned [`Forward`] holds the
//!   per-layer hidden states, and [`Forward::layer_grads`] gives per-layer weight gradients for
//!   any parametrisation.
//! - [`Mode::Train`] carries gradients. On the CPU in f32 its linear layers, norms, attention,
//!   RoPE, activations and loss are fused kernels with hand-written backward passes
//!   (`kernels`); elsewhere, and under [`reference_only`], they are the differentiable
//!   reference forms written out in tensor ops, which the kernels are tested against.
//!   [`Mode::Infer`] uses candle's fused kernels, which carry no gradient.
//! - [`Precision`] runs the matrix products in bf16 or f16 while the weights, norms, softmax and
//!   loss stay in f32 (mixed precision).

mod bert;
mod config;
pub mod init;
pub(crate) mod kernels;
pub mod layerwise;
mod llama;
mod model;
mod ops;
pub mod param;
mod vit;

use candle_core::DType;

pub use config::{Front, ModelConfig, Pooling, RopeScaling};
pub use kernels::reference_only;
pub use model::{DropPath, Dropout, Forward, Hooks, Input, Model, device, mean_pool};
pub use param::{
    Joint, LinearExpanded, Parametrisation, Plain, Shared, Spliced, StageShared, Stitched, Store,
    WithExtras,
};

/// Which implementation of the non-linear ops a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Differentiable ops, for training and gradient hooks: the fused CPU kernels with their
    /// own backward passes, or the reference forms in tensor ops where the kernels do not
    /// apply (another device, a compute precision, [`reference_only`]).
    Train,
    /// candle's fused kernels, faster but without gradients.
    Infer,
}

/// The dtype the matrix products of a forward pass run in.
///
/// The weights stay f32 variables (the optimiser's master copy); with `Bf16` or `F16` each
/// matrix product casts its operands down and its result back up, so gradients reach the f32
/// weights through the casts. Norms, softmax, residual sums and the loss stay f32. candle's CPU
/// backend has no bf16 matrix kernel (it widens to f32), so on the CPU this saves nothing; it
/// is meant for CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Matrix products in bfloat16.
    Bf16,
    /// Matrix products in float16.
    F16,
}

impl Precision {
    /// The reduced dtype of the matrix products, or `None` for f32.
    pub fn compute(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
            Precision::F16 => Some(DType::F16),
        }
    }

    /// Parse `f32`, `bf16` or `f16`.
    pub fn parse(value: &str) -> crate::Result<Precision> {
        match value.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            _ => Err(crate::Error::InvalidValue {
                what: "`--precision`".into(),
                value: value.into(),
                reason: "use f32, bf16 or f16".into(),
            }),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}
