//! The vit family in timm's DeiT layout: patch embedding, optional class token, position
//! embedding, pre-norm blocks, and a head on the class token or the mean of the patch tokens.

use candle_core::{D, Tensor};

use super::config::{ModelConfig, Pooling};
use super::model::Ctx;
use super::ops::{
    SelfAttention, SublayerMixer, SublayerWeights, fused_pre_norm_sublayer, gelu, layer_norm,
};
use crate::anatomy::{Param, Role};
use crate::error::Result;

/// Cut `[batch, channels, h, w]` into flattened patches `[batch, patches, channels·p·p]`, in
/// the element order of a conv kernel `[out, channels, p, p]`.
pub(crate) fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, ch, hgt, wid) = x.dims4()?;
    let (gh, gw) = (hgt / p, wid / p);
    Ok(x.reshape((b, ch, gh, p, gw, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((b, gh * gw, ch * p * p))?)
}

/// The patch, class-token and position embeddings `[batch, tokens, hidden]` of images
/// `[batch, channels, size, size]`.
pub(crate) fn embed(ctx: &Ctx<'_>, c: &ModelConfig, x: &Tensor) -> Result<Tensor> {
    let b = x.dim(0)?;
    let (pw, pb) = ctx.global_wb(Role::PatchEmbedding)?;
    let width = pw.dim(0)?;
    let kernel = pw.reshape((width, ()))?;
    let mut h = ctx.linear(&patchify(x, c.patch_size)?, &kernel, pb.as_ref())?;
    if c.class_token {
        let cls = ctx.need(&super::param::global(Role::ClassToken, Param::Weight))?;
        h = Tensor::cat(&[&cls.broadcast_as((b, 1, width))?, &h], 1)?;
    }
    let pos = ctx.need(&super::param::global(
        Role::PositionEmbedding,
        Param::Weight,
    ))?;
    ctx.dropout(0, h.broadcast_add(&pos)?)
}

/// Logits `[batch, classes]` from the hidden states `h` that enter block `start`.
pub(crate) fn blocks(
    ctx: &Ctx<'_>,
    c: &ModelConfig,
    mut h: Tensor,
    start: usize,
    mut hidden: Option<&mut Vec<Tensor>>,
) -> Result<Tensor> {
    let prefix = usize::from(c.class_token);
    let mut spec = SelfAttention {
        heads: c.heads,
        kv_heads: c.heads,
        causal: false,
        key_mask: None,
        rope: None,
    };
    for l in start..ctx.depth() {
        (spec.heads, spec.kv_heads) = c.heads_at(h.dim(D::Minus1)?);
        h = attention_half(ctx, c, l, h, &spec)?;
        h = mlp_half(ctx, c, l, h)?;
        h = ctx.stitch(l, h)?;
        if let Some(states) = hidden.as_deref_mut() {
            states.push(h.clone());
        }
    }
    if ctx.blocks_only {
        return Ok(h);
    }
    let norm = ctx.get(&super::param::global(Role::FinalNorm, Param::Weight))?;
    let norm_bias = ctx.get(&super::param::global(Role::FinalNorm, Param::Bias))?;
    if let (Some(w), false) = (&norm, c.norm_after_pool) {
        h = layer_norm(&h, w, norm_bias.as_ref(), c.norm_eps, ctx.mode)?;
    }
    let tokens = h.dim(1)?;
    let mut pooled = match c.pooling {
        Pooling::Cls => h.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean => h.narrow(1, prefix, tokens - prefix)?.mean(1)?,
    };
    if let (Some(w), true) = (&norm, c.norm_after_pool) {
        pooled = layer_norm(&pooled, w, norm_bias.as_ref(), c.norm_eps, ctx.mode)?;
    }
    let (hw, hb) = ctx.global_wb(Role::Head)?;
    ctx.linear(&pooled, &hw, hb.as_ref())
}

/// `h` plus the attention branch of block `l`: one fused op where the pass allows it.
fn attention_half(
    ctx: &Ctx<'_>,
    c: &ModelConfig,
    l: usize,
    h: Tensor,
    spec: &SelfAttention<'_>,
) -> Result<Tensor> {
    let (wn, bn) = ctx.wb(l, Role::AttnNorm)?;
    let (wo, bo) = ctx.wb(l, Role::AttnO)?;
    let mut packed = None;
    if ctx.plain_branches() {
        let (wqkv, bqkv) = packed_qkv(ctx, l)?;
        let weights = SublayerWeights {
            norm: (&wn, bn.as_ref()),
            input: (&wqkv, bqkv.as_ref()),
            output: (&wo, bo.as_ref()),
        };
        let mixer = SublayerMixer::Attention(spec);
        if let Some(out) = fused_pre_norm_sublayer(&h, &weights, mixer, c.norm_eps)? {
            return Ok(out);
        }
        packed = Some((wqkv, bqkv));
    }
    let x = layer_norm(&h, &wn, bn.as_ref(), c.norm_eps, ctx.mode)?;
    let att = match packed {
        Some((w, b)) => ctx.attention_packed(&ctx.linear(&x, &w, b.as_ref())?, spec)?,
        None => attend(ctx, l, &x, spec)?,
    };
    let att = ctx.linear(&att, &wo, bo.as_ref())?;
    ctx.keep_attention(&att);
    let att = ctx.dropout(1 + 3 * l as u64, att)?;
    Ok((h + ctx.drop_branch(l, 0, att)?)?)
}

/// `h` plus the MLP branch of block `l`: one fused op where the pass allows it.
fn mlp_half(ctx: &Ctx<'_>, c: &ModelConfig, l: usize, h: Tensor) -> Result<Tensor> {
    let (wn, bn) = ctx.wb(l, Role::MlpNorm)?;
    let (wu, bu) = ctx.wb(l, Role::MlpUp)?;
    let (wd, bd) = ctx.wb(l, Role::MlpDown)?;
    if ctx.plain_branches() {
        let weights = SublayerWeights {
            norm: (&wn, bn.as_ref()),
            input: (&wu, bu.as_ref()),
            output: (&wd, bd.as_ref()),
        };
        if let Some(out) = fused_pre_norm_sublayer(&h, &weights, SublayerMixer::Gelu, c.norm_eps)? {
            return Ok(out);
        }
    }
    let site = 2 + 3 * l as u64;
    let x = layer_norm(&h, &wn, bn.as_ref(), c.norm_eps, ctx.mode)?;
    let inner = ctx.dropout(site, gelu(&ctx.linear(&x, &wu, bu.as_ref())?)?)?;
    let mlp = ctx.dropout(site + 1, ctx.linear(&inner, &wd, bd.as_ref())?)?;
    Ok((h + ctx.drop_branch(l, 1, mlp)?)?)
}

/// The packed qkv projection of block `l`: its fused weight where it has one, else the query,
/// key and value weights stacked (a missing bias as zeros, none when all three are missing).
fn packed_qkv(ctx: &Ctx<'_>, l: usize) -> Result<(Tensor, Option<Tensor>)> {
    if let Some(w) = ctx.get(&super::param::slot(l, Role::AttnQkv, Param::Weight))? {
        let b = ctx.get(&super::param::slot(l, Role::AttnQkv, Param::Bias))?;
        return Ok((w, b));
    }
    let mut weights = Vec::with_capacity(3);
    let mut biases = Vec::with_capacity(3);
    for role in [Role::AttnQ, Role::AttnK, Role::AttnV] {
        let (w, b) = ctx.wb(l, role)?;
        weights.push(w);
        biases.push(b);
    }
    let bias = if biases.iter().all(Option::is_none) {
        None
    } else {
        let filled = biases
            .into_iter()
            .zip(&weights)
            .map(|(b, w)| match b {
                Some(b) => Ok(b),
                None => Ok(Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?),
            })
            .collect::<Result<Vec<_>>>()?;
        Some(Tensor::cat(&filled, 0)?)
    };
    Ok((Tensor::cat(&weights, 0)?, bias))
}

/// Self-attention of block `l` over `x`: one packed projection where the block has a fused
/// qkv weight, else three.
fn attend(ctx: &Ctx<'_>, l: usize, x: &Tensor, spec: &SelfAttention<'_>) -> Result<Tensor> {
    let fused = super::param::slot(l, Role::AttnQkv, Param::Weight);
    if let Some(w) = ctx.get(&fused)? {
        let b = ctx.get(&super::param::slot(l, Role::AttnQkv, Param::Bias))?;
        return ctx.attention_packed(&ctx.linear(x, &w, b.as_ref())?, spec);
    }
    let mut out = Vec::with_capacity(3);
    for role in [Role::AttnQ, Role::AttnK, Role::AttnV] {
        let (w, b) = ctx.wb(l, role)?;
        out.push(ctx.linear(x, &w, b.as_ref())?);
    }
    match out.as_slice() {
        [q, k, v] => ctx.attention(q, k, v, spec),
        _ => unreachable!("three projections were pushed"),
    }
}
