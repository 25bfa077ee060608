//! The bert family: post-norm encoder; the output is the last hidden states, which
//! [`super::mean_pool`] turns into sentence embeddings.

use candle_core::{D, DType, Tensor};

use super::config::ModelConfig;
use super::model::Ctx;
use super::ops::{SelfAttention, gelu, layer_norm};
use crate::anatomy::{Param, Role};
use crate::error::Result;

/// The normalised word + position + type embeddings `[batch, seq, hidden]` of ids
/// `[batch, seq]`.
pub(crate) fn embed(ctx: &Ctx<'_>, c: &ModelConfig, ids: &Tensor) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let g = |role| ctx.need(&super::param::global(role, Param::Weight));
    let table = g(Role::TokenEmbedding)?;
    let words = table
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, t, table.dim(1)?))?;
    let positions = g(Role::PositionEmbedding)?.narrow(0, c.position_offset, t)?;
    let mut e = words.broadcast_add(&positions)?;
    if let Some(types) = ctx.get(&super::param::global(
        Role::TokenTypeEmbedding,
        Param::Weight,
    ))? {
        e = e.broadcast_add(&types.narrow(0, 0, 1)?)?;
    }
    let (w, bias) = ctx.global_wb(Role::EmbeddingNorm)?;
    layer_norm(&e, &w, bias.as_ref(), c.norm_eps, ctx.mode)
}

/// Last hidden states `[batch, seq, hidden]` from the hidden states `h` that enter block
/// `start`; `mask` is the 0/1 padding mask `[batch, seq]`.
pub(crate) fn blocks(
    ctx: &Ctx<'_>,
    c: &ModelConfig,
    mut h: Tensor,
    start: usize,
    mask: Option<&Tensor>,
    mut hidden: Option<&mut Vec<Tensor>>,
) -> Result<Tensor> {
    let mut spec = SelfAttention {
        heads: c.heads,
        kv_heads: c.heads,
        causal: false,
        key_mask: mask,
        rope: None,
    };
    for l in start..ctx.depth() {
        (spec.heads, spec.kv_heads) = c.heads_at(h.dim(D::Minus1)?);
        let (wq, bq) = ctx.wb(l, Role::AttnQ)?;
        let (wk, bk) = ctx.wb(l, Role::AttnK)?;
        let (wv, bv) = ctx.wb(l, Role::AttnV)?;
        let q = ctx.linear(&h, &wq, bq.as_ref())?;
        let k = ctx.linear(&h, &wk, bk.as_ref())?;
        let v = ctx.linear(&h, &wv, bv.as_ref())?;
        let att = ctx.attention(&q, &k, &v, &spec)?;
        let (wo, bo) = ctx.wb(l, Role::AttnO)?;
        let (wn, bn) = ctx.wb(l, Role::AttnNorm)?;
        let att = ctx.linear(&att, &wo, bo.as_ref())?;
        ctx.keep_attention(&att);
        h = layer_norm(&(h + att)?, &wn, bn.as_ref(), c.norm_eps, ctx.mode)?;
        let (wu, bu) = ctx.wb(l, Role::MlpUp)?;
        let (wd, bd) = ctx.wb(l, Role::MlpDown)?;
        let (wn, bn) = ctx.wb(l, Role::MlpNorm)?;
        let inner = gelu(&ctx.linear(&h, &wu, bu.as_ref())?)?;
        h = layer_norm(
            &(h + ctx.linear(&inner, &wd, bd.as_ref())?)?,
            &wn,
            bn.as_ref(),
            c.norm_eps,
            ctx.mode,
        )?;
        h = ctx.stitch(l, h)?;
        if let Some(states) = hidden.as_deref_mut() {
            states.push(h.clone());
        }
    }
    Ok(h.to_dtype(DType::F32)?)
}
