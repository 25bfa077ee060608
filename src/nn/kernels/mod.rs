//! Fused CPU kernels with hand-written backward passes, as candle custom ops.
//!
//! Each file holds one op: its forward kernel (a `CustomOp*` whose `cpu_fwd` runs on all cores
//! through rayon) and its backward pass, which reads the saved inputs directly and returns
//! contiguous gradients, and none for constants (tensors that neither are variables nor
//! depend on one). The written-out forms in [`super::ops`] stay the differentiable reference
//! and the path for every device or dtype these kernels do not cover: [`fusable`] decides.
//!
//! | op | file | backward |
//! | --- | --- | --- |
//! | `x · wᵀ + b` | `linear.rs` | `dx = g·w`, `dw = gᵀ·x` (contiguous), `db` by parallel partial sums |
//! | LayerNorm | `layer_norm.rs` | one pass per row, parallel partial sums for `dw`, `db` |
//! | RMSNorm | `rms_norm.rs` | the same without the mean |
//! | attention (q, k, v apart or packed) | `attention.rs` | recomputes the probabilities from the saved logsumexp |
//! | RoPE | `rope.rs` | RoPE with −sin |
//! | GELU (erf) | `gelu.rs` | closed form |
//! | SwiGLU | `swiglu.rs` | closed form |
//! | cross-entropy | `cross_entropy.rs` | `softmax − one-hot` from the saved logsumexp |
//! | KL distillation | `kl_distill.rs` | `τ/N · (p_s − p_t)` from the two saved logsumexps |
//! | pre-norm residual sublayer (ViT attention or MLP half) | `sublayer.rs` | the kernels' own gradients on the saved activations; two graph edges instead of a dozen |
//! | AdamW | `adamw.rs` | in place, with the clipping scale folded in (no backward) |

mod adamw;
mod attention;
mod cross_entropy;
mod elementwise;
mod fastmath;
mod gelu;
mod head_product;
mod kl_distill;
mod layer_norm;
mod linear;
mod rms_norm;
mod rope;
mod sublayer;
mod swiglu;

pub(crate) use adamw::{AdamWStep, adamw_step, sum_of_squares};
pub(crate) use attention::{AttentionSpec, attention, attention_packed};
pub(crate) use cross_entropy::cross_entropy;
pub(crate) use gelu::gelu;
pub(crate) use kl_distill::kl_distill;
pub(crate) use layer_norm::layer_norm;
pub(crate) use linear::linear;
pub(crate) use rms_norm::rms_norm;
pub(crate) use rope::rope;
pub(crate) use sublayer::{Mixer, SublayerWeights, pre_norm_sublayer};
pub(crate) use swiglu::swiglu;

use candle_core::{CpuStorage, DType, Device, Layout, Shape, Storage, StorageRef, Tensor};
use elementwise::{exp_shifted_in_place, map_par, sum_lanes, zip_map_par};

thread_local! {
    static REFERENCE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with the fused kernels switched off on this thread, so that every op takes its
/// reference form: the oracle of the equivalence tests and the "before" of the benchmark.
pub fn reference_only<R>(f: impl FnOnce() -> R) -> R {
    let before = REFERENCE_ONLY.with(|r| r.replace(true));
    let out = f();
    REFERENCE_ONLY.with(|r| r.set(before));
    out
}

/// Whether the fused kernels can run on these tensors: all f32, all on the CPU, and not
/// inside [`reference_only`].
pub(crate) fn fusable(tensors: &[&Tensor]) -> bool {
    !REFERENCE_ONLY.with(std::cell::Cell::get)
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Whether backpropagation needs a gradient for `t`: a variable or a result of one.
fn wants_grad(t: &Tensor) -> bool {
    t.track_op()
}

/// The f32 elements a contiguous layout covers in a CPU storage.
fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// A read lock on a contiguous f32 CPU tensor's elements, for backward passes.
struct HostF32<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl HostF32<'_> {
    fn as_slice(&self) -> candle_core::Result<&[f32]> {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(&v[self.start..self.end]),
            _ => candle_core::bail!("fused kernels read f32 tensors on the CPU"),
        }
    }
}

/// Lock `t` (which must be contiguous, f32 and on the CPU) for reading.
fn host(t: &Tensor) -> candle_core::Result<HostF32<'_>> {
    let (guard, layout) = t.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused kernels read contiguous tensors");
    };
    Ok(HostF32 { guard, start, end })
}

/// A CPU tensor of `shape` owning `values`.
fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// Rows per parallel task so that every thread gets about one chunk.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// Sum the per-task partial vectors into one.
fn sum_partials(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0f32; len];
    for p in partials {
        for (t, x) in total.iter_mut().zip(p) {
            *t += x;
        }
    }
    total
}

#[cfg(test)]
mod tests;
