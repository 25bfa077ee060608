//! The building blocks every family shares. Each dispatches to the fused kernels of
//! [`super::kernels`] where they apply (f32 on the CPU, products in f32) and otherwise to a
//! reference form: differentiable tensor ops for [`Mode::Train`], candle's fused inference
//! kernels for [`Mode::Infer`]. The `*_reference` functions are also the kernels' test oracle.

use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};

use super::Mode;
use super::kernels::{self, fusable};
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
    let x2 = x.reshape((rows, in_dim[0]))?;
    let fused = compute.is_none_or(|dt| dt == x.dtype())
        && fusable(&[x, w])
        && b.is_none_or(|b| fusable(&[b]));
    let y = if fused {
        kernels::linear(&x2, w, b)?
    } else {
        linear_reference(&x2, w, b, compute)?
    };
    let mut shape = lead.to_vec();
    shape.push(out_dim);
    Ok(y.reshape(shape)?)
}

/// `x [rows, in] · wᵀ + b` in tensor ops.
pub(crate) fn linear_reference(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    compute: Option<DType>,
) -> Result<Tensor> {
    let y = matmul(x, &w.t()?, compute)?;
    Ok(match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// Layer normalisation over the last dimension.
pub(crate) fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    eps: f64,
    mode: Mode,
) -> Result<Tensor> {
    if fusable(&[x, w]) && b.is_none_or(|b| fusable(&[b])) {
        let zeros;
        let b = match b {
            Some(b) => b,
            None => {
                zeros = w.zeros_like()?.detach();
                &zeros
            }
        };
        return Ok(kernels::layer_norm(x, w, b, eps)?);
    }
    layer_norm_reference(x, w, b, eps, mode)
}

/// [`layer_norm`] without the fused kernel.
pub(crate) fn layer_norm_reference(
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
    if fusable(&[x, w]) {
        return Ok(kernels::rms_norm(x, w, eps)?);
    }
    rms_norm_reference(x, w, eps, mode)
}

/// [`rms_norm`] without the fused kernel.
pub(crate) fn rms_norm_reference(x: &Tensor, w: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
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

/// GELU in its exact (erf) form.
pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
    if fusable(&[x]) {
        return Ok(kernels::gelu(x)?);
    }
    Ok(x.gelu_erf()?)
}

/// SwiGLU's gate `silu(gate) · up`.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if fusable(&[gate, up]) {
        return Ok(kernels::swiglu(gate, up)?);
    }
    Ok((gate.silu()? * up)?)
}

/// The cosine and sine tables of rotary embeddings, `[seq, head_dim / 2]` each.
pub(crate) fn rope_tables(
    seq: usize,
    head_dim: usize,
    theta: f64,
    scaling: Option<super::config::RopeScaling>,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| {
            let inv = 1.0 / (theta as f32).powf(2.0 * i as f32 / head_dim as f32);
            match scaling {
                Some(s) => s.apply(f64::from(inv)) as f32,
                None => inv,
            }
        })
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

/// How a block attends: its heads, causality, key padding and rotary tables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SelfAttention<'a> {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` without grouped-query attention).
    pub kv_heads: usize,
    /// Each position attends only to itself and the positions before it.
    pub causal: bool,
    /// The 0/1 padding mask `[batch, seq]` over the keys.
    pub key_mask: Option<&'a Tensor>,
    /// The cosine and sine tables of [`rope_tables`], applied to queries and keys.
    pub rope: Option<(&'a Tensor, &'a Tensor)>,
}

/// Attention of `q [batch, seq, heads · head_dim]` over `k`, `v`
/// `[batch, seq, kv_heads · head_dim]`, with RoPE first where `spec` has tables; the output is
/// shaped like `q`.
pub(crate) fn self_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: &SelfAttention<'_>,
    mode: Mode,
    compute: Option<DType>,
) -> Result<Tensor> {
    if compute.is_none_or(|dt| dt == q.dtype()) && fusable(&[q, k, v]) {
        let (q, k) = match spec.rope {
            Some((cos, sin)) => (
                kernels::rope(q, spec.heads, cos, sin)?,
                kernels::rope(k, spec.kv_heads, cos, sin)?,
            ),
            None => (q.clone(), k.clone()),
        };
        return Ok(kernels::attention(&q, &k, v, fused_spec(spec)?)?);
    }
    self_attention_reference(q, k, v, spec, mode, compute)
}

/// [`self_attention`] over one packed projection `qkv [batch, seq, (heads + 2 · kv_heads) ·
/// head_dim]`: queries, then keys, then values. The fused kernel reads it in place; other paths
/// take the three slices.
pub(crate) fn self_attention_packed(
    qkv: &Tensor,
    spec: &SelfAttention<'_>,
    mode: Mode,
    compute: Option<DType>,
) -> Result<Tensor> {
    if spec.rope.is_none() && compute.is_none_or(|dt| dt == qkv.dtype()) && fusable(&[qkv]) {
        return Ok(kernels::attention_packed(qkv, fused_spec(spec)?)?);
    }
    let width = qkv.dim(D::Minus1)?;
    let head_dim = width / (spec.heads + 2 * spec.kv_heads).max(1);
    let (qw, kw) = (spec.heads * head_dim, spec.kv_heads * head_dim);
    let q = qkv.narrow(D::Minus1, 0, qw)?;
    let k = qkv.narrow(D::Minus1, qw, kw)?;
    let v = qkv.narrow(D::Minus1, qw + kw, kw)?;
    self_attention(&q, &k, &v, spec, mode, compute)
}

/// What mixes the projected rows of a pre-norm sublayer.
#[derive(Clone, Copy)]
pub(crate) enum SublayerMixer<'a> {
    /// Attention over the packed qkv projection.
    Attention(&'a SelfAttention<'a>),
    /// GELU (erf).
    Gelu,
}

/// The weights of a pre-norm sublayer, each a weight and an optional bias: the norm, the input
/// projection (the packed qkv or the MLP's up projection) and the output projection.
pub(crate) struct SublayerWeights<'a> {
    pub norm: (&'a Tensor, Option<&'a Tensor>),
    pub input: (&'a Tensor, Option<&'a Tensor>),
    pub output: (&'a Tensor, Option<&'a Tensor>),
}

/// `h + output(mix(input(LayerNorm(h))))` as one fused op (two graph edges instead of a
/// dozen), where the kernels can run it: every tensor f32 on the CPU and no rotary tables.
/// `None` otherwise, for the caller's written-out form. A missing bias counts as zero.
pub(crate) fn fused_pre_norm_sublayer(
    h: &Tensor,
    w: &SublayerWeights<'_>,
    mixer: SublayerMixer<'_>,
    eps: f64,
) -> Result<Option<Tensor>> {
    let parts = [w.norm, w.input, w.output];
    let mut tensors: Vec<&Tensor> = vec![h];
    tensors.extend(
        parts
            .iter()
            .flat_map(|(w, b)| std::iter::once(*w).chain(*b)),
    );
    let rotary = matches!(mixer, SublayerMixer::Attention(spec) if spec.rope.is_some());
    if rotary || !fusable(&tensors) {
        return Ok(None);
    }
    let or_zeros = |(w, b): (&Tensor, Option<&Tensor>)| -> Result<Tensor> {
        match b {
            Some(b) => Ok(b.clone()),
            None => Ok(Tensor::zeros(w.dim(0)?, DType::F32, w.device())?),
        }
    };
    let (nb, ib, ob) = (or_zeros(w.norm)?, or_zeros(w.input)?, or_zeros(w.output)?);
    let weights = kernels::SublayerWeights {
        norm: (w.norm.0, &nb),
        input: (w.input.0, &ib),
        output: (w.output.0, &ob),
    };
    let mixer = match mixer {
        SublayerMixer::Attention(spec) => kernels::Mixer::Attention(fused_spec(spec)?),
        SublayerMixer::Gelu => kernels::Mixer::Gelu,
    };
    Ok(Some(kernels::pre_norm_sublayer(h, &weights, mixer, eps)?))
}

/// The fused kernel's description of `spec`, the padding mask read out as f32.
fn fused_spec(spec: &SelfAttention<'_>) -> Result<kernels::AttentionSpec> {
    let key_mask = match spec.key_mask {
        Some(m) => Some(Arc::new(
            m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
        )),
        None => None,
    };
    Ok(kernels::AttentionSpec {
        heads: spec.heads,
        kv_heads: spec.kv_heads,
        causal: spec.causal,
        key_mask,
    })
}

/// [`self_attention`] in tensor ops: heads split, RoPE, repeated key/value heads, an explicit
/// additive mask and [`attention`].
pub(crate) fn self_attention_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: &SelfAttention<'_>,
    mode: Mode,
    compute: Option<DType>,
) -> Result<Tensor> {
    let rep = spec.heads / spec.kv_heads.max(1);
    let mut q = split_heads(q, spec.heads)?;
    let mut k = split_heads(k, spec.kv_heads)?;
    let v = split_heads(v, spec.kv_heads)?;
    if let Some((cos, sin)) = spec.rope {
        q = rope(&q, cos, sin, mode)?;
        k = rope(&k, cos, sin, mode)?;
    }
    let (k, v) = (repeat_kv(&k, rep)?, repeat_kv(&v, rep)?);
    let t = q.dim(2)?;
    let causal = if spec.causal {
        Some(causal_mask(t, q.device())?)
    } else {
        None
    };
    let padding = match spec.key_mask {
        Some(m) => Some(padding_mask(m)?),
        None => None,
    };
    let mask = match (causal, padding) {
        (Some(c), Some(p)) => Some(p.broadcast_add(&c)?),
        (c, p) => c.or(p),
    };
    merge_heads(&attention(&q, &k, &v, mask.as_ref(), mode, compute)?)
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
