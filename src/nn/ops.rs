//! The building blocks every family shares, each in a differentiable form for training and a
//! fused form for inference.

use candle_core::{D, DType, Device, Tensor};

use super::Mode;
use crate::error::Result;

/// `a · b`, computed in `compute` when given (operands cast down, the result cast back to
/// `a`'s dtype; the casts pass gradients through).
pub(crate) fn matmul(a: &Tensor, b: &Tensor, compute: Option<DType>) -> Result<Tensor> {
    match compute {
        Some(dt) if dt != a.dtype() => Ok(a
            .to_dtype(dt)?
            .matmul(&b.to_dtype(dt)?)?
            .to_dtype(a.dtype())?),
        _ => Ok(a.matmul(b)?),
    }
}

/// `x · wᵀ + b` over the last dimension of `x` (any number of leading dimensions), the product
/// in `compute` when given.
pub(crate) fn linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    compute: Option<DType>,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (lead, in_dim) = dims.split_at(dims.len().saturating_sub(1));
    let rows: usize = lead.iter().product();
    let out_dim = w.dim(0)?;
    let y = matmul(&x.reshape((rows, in_dim[0]))?, &w.t()?, compute)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut shape = lead.to_vec();
    shape.push(out_dim);
    Ok(y.reshape(shape)?)
}

/// Layer normalisation over the last dimension.
pub(crate) fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    eps: f64,
    mode: Mode,
) -> Result<Tensor> {
    match (mode, b) {
        (Mode::Infer, Some(b)) => Ok(candle_nn::ops::layer_norm(
            &x.contiguous()?,
            w,
            b,
            eps as f32,
        )?),
        _ => {
            let mean = x.mean_keepdim(D::Minus1)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
            let y = normed.broadcast_mul(w)?;
            Ok(match b {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            })
        }
    }
}

/// RMS normalisation over the last dimension.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?),
        Mode::Train => {
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
            Ok(normed.broadcast_mul(w)?)
        }
    }
}

/// Softmax over the last dimension.
pub(crate) fn softmax(x: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?),
        Mode::Train => Ok(candle_nn::ops::softmax(x, D::Minus1)?),
    }
}

/// The cosine and sine tables of rotary embeddings, `[seq, head_dim / 2]` each.
pub(crate) fn rope_tables(
    seq: usize,
    head_dim: usize,
    theta: f64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf(2.0 * i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, half), device)?;
    let pos = Tensor::arange(0u32, seq as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((seq, 1))?;
    let angles = pos.broadcast_mul(&inv)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Rotary position embedding in the "rotate half" layout of HF Llama; `x` is
/// `[batch, heads, seq, head_dim]`.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?),
        Mode::Train => {
            let d = x.dim(D::Minus1)?;
            let half = d / 2;
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
            let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
            Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
        }
    }
}

/// `[batch, seq, heads·dim]` → `[batch, heads, seq, dim]`.
pub(crate) fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, w) = x.dims3()?;
    Ok(x.reshape((b, t, heads, w / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// `[batch, heads, seq, dim]` → `[batch, seq, heads·dim]`.
pub(crate) fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, t, h * d))?)
}

/// Repeat each key/value head `n` times for grouped-query attention.
pub(crate) fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, h, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, h, n, t, d))?
        .contiguous()?
        .reshape((b, h * n, t, d))?)
}

/// Scaled dot-product attention with an optional additive mask broadcastable to
/// `[batch, heads, seq, seq]`; the two products in `compute` when given, the softmax in the
/// inputs' dtype.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    mode: Mode,
    compute: Option<DType>,
) -> Result<Tensor> {
    let d = q.dim(D::Minus1)?;
    let scores = (matmul(q, &k.t()?, compute)? / (d as f64).sqrt())?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = softmax(&scores, mode)?;
    matmul(&probs, v, compute)
}

/// The additive causal mask `[seq, seq]`: 0 on and below the diagonal, -inf above.
pub(crate) fn causal_mask(seq: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(values, (seq, seq), device)?)
}

/// The additive padding mask `[batch, 1, 1, seq]` from a 0/1 attention mask `[batch, seq]`.
pub(crate) fn padding_mask(mask: &Tensor) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    let keep = mask.to_dtype(DType::F32)?;
    let blocked = ((keep.ones_like()? - keep)? * f64::from(f32::MIN))?;
    Ok(blocked.reshape((b, 1, 1, t))?)
}
