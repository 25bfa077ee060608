//! Losses: cross-entropy for labels and next tokens, and the KL distillation loss with
//! temperature used by the faithful extractors.

use candle_core::{D, DType, Tensor};

use crate::error::Result;
use crate::nn::kernels;

/// Mean cross-entropy of `logits [n, classes]` against `targets [n]` (u32), by the fused kernel
/// on f32 CPU logits.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if kernels::fusable(&[logits]) && targets.dtype() == DType::U32 {
        return Ok(kernels::cross_entropy(logits, targets)?);
    }
    cross_entropy_reference(logits, targets)
}

/// [`cross_entropy`] in tensor ops: log-softmax, gather and mean.
pub fn cross_entropy_reference(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, targets)?)
}

/// Mean next-token cross-entropy of `logits [b, t, vocab]` against `targets [b, t]`.
pub fn lm_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)
}

/// Soft distillation: `τ² / (B·C) · Σ p_t (log p_t − log p_s)` with `p = softmax(z / τ)`, the
/// DeiT normalisation (KL with sum reduction divided by the number of logits); by the fused
/// kernel on f32 CPU logits.
pub fn kl_distill(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    if kernels::fusable(&[student, teacher]) {
        return Ok(kernels::kl_distill(student, teacher, temperature)?);
    }
    kl_distill_reference(student, teacher, temperature)
}

/// [`kl_distill`] in tensor ops: two log-softmaxes, the weighted difference and the sum.
pub fn kl_distill_reference(
    student: &Tensor,
    teacher: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let count = student.elem_count() as f64;
    let log_ps = candle_nn::ops::log_softmax(&(student / temperature)?, D::Minus1)?;
    let log_pt = candle_nn::ops::log_softmax(&(teacher.detach() / temperature)?, D::Minus1)?;
    let kl = (log_pt.exp()? * (log_pt - log_ps)?)?.sum_all()?;
    Ok((kl * (temperature * temperature / count))?)
}

/// Count of rows where the arg-max of `logits [n, classes]` equals `targets [n]`.
pub fn correct(logits: &Tensor, targets: &Tensor) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?;
    let hits = pred
        .eq(targets)?
        .to_dtype(candle_core::DType::U32)?
        .sum_all()?;
    Ok(hits.to_scalar::<u32>()? as usize)
}
