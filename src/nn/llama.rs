//! The llama family: RMSNorm, RoPE, grouped-query attention, SwiGLU, tied or untied head.

use candle_core::{D, Tensor};

use super::config::ModelConfig;
use super::model::Ctx;
use super::ops::{SelfAttention, rms_norm, rope_tables, swiglu};
use crate::anatomy::{Param, Role};
use crate::error::Result;

/// The token embeddings `[batch, seq, width]` of ids `[batch, seq]`, at the embedding table's
/// width (the front instance's, before a Learngene Pool stitch to a wider end).
pub(crate) fn embed(ctx: &Ctx<'_>, _c: &ModelConfig, ids: &Tensor) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let embed = ctx.need(&super::param::global(Role::TokenEmbedding, Param::Weight))?;
    let width = embed.dim(1)?;
    Ok(embed
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, t, width))?)
}

/// Logits `[batch, seq, vocab]` from the hidden states `h` that enter block `start`.
pub(crate) fn blocks(
    ctx: &Ctx<'_>,
    c: &ModelConfig,
    mut h: Tensor,
    start: usize,
    mut hidden: Option<&mut Vec<Tensor>>,
) -> Result<Tensor> {
    let t = h.dim(1)?;
    let hd = c.head_dim();
    let (cos, sin) = rope_tables(t, hd, c.rope_theta, c.rope_scaling, h.device())?;
    let mut spec = SelfAttention {
        heads: c.heads,
        kv_heads: c.kv_heads,
        causal: true,
        key_mask: None,
        rope: Some((&cos, &sin)),
    };
    for l in start..ctx.depth() {
        (spec.heads, spec.kv_heads) = c.heads_at(h.dim(D::Minus1)?);
        let (w, _) = ctx.wb(l, Role::AttnNorm)?;
        let x = rms_norm(&h, &w, c.norm_eps, ctx.mode)?;
        let (wq, bq) = ctx.wb(l, Role::AttnQ)?;
        let (wk, bk) = ctx.wb(l, Role::AttnK)?;
        let (wv, bv) = ctx.wb(l, Role::AttnV)?;
        let q = ctx.linear(&x, &wq, bq.as_ref())?;
        let k = ctx.linear(&x, &wk, bk.as_ref())?;
        let v = ctx.linear(&x, &wv, bv.as_ref())?;
        let att = ctx.attention(&q, &k, &v, &spec)?;
        let (wo, bo) = ctx.wb(l, Role::AttnO)?;
        let att = ctx.linear(&att, &wo, bo.as_ref())?;
        ctx.keep_attention(&att);
        h = (h + att)?;
        let (w, _) = ctx.wb(l, Role::MlpNorm)?;
        let x = rms_norm(&h, &w, c.norm_eps, ctx.mode)?;
        let (wg, _) = ctx.wb(l, Role::MlpGate)?;
        let (wu, _) = ctx.wb(l, Role::MlpUp)?;
        let (wd, _) = ctx.wb(l, Role::MlpDown)?;
        let gated = swiglu(&ctx.linear(&x, &wg, None)?, &ctx.linear(&x, &wu, None)?)?;
        h = (h + ctx.linear(&gated, &wd, None)?)?;
        h = ctx.stitch(l, h)?;
        if let Some(states) = hidden.as_deref_mut() {
            states.push(h.clone());
        }
    }
    if ctx.blocks_only {
        return Ok(h);
    }
    let (w, _) = ctx.global_wb(Role::FinalNorm)?;
    let h = rms_norm(&h, &w, c.norm_eps, ctx.mode)?;
    let head = match ctx.get(&super::param::global(Role::Head, Param::Weight))? {
        Some(w) => w,
        None => ctx.need(&super::param::global(Role::TokenEmbedding, Param::Weight))?,
    };
    ctx.linear(&h, &head, None)
}
