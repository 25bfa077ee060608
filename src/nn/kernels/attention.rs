//! Scaled dot-product attention over activations in their projection layout
//! `[batch, seq, heads · head_dim]`: causal or bidirectional, with a key padding mask and
//! grouped-query heads, one parallel task per (batch, head).
//!
//! The forward pass keeps only the output and each query's logsumexp. The backward pass, in
//! the manner of flash attention, recomputes the probabilities from that logsumexp, one task
//! per (batch, key/value head) so that the heads sharing a key/value head add into it without
//! contention. The per-head products run through candle's gemm on strided views; no mask
//! tensor, no head split and no repeated key/value heads are materialised.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::{slice, tensor, wants_grad};

/// What the attention computes, besides its inputs.
#[derive(Debug, Clone)]
pub(crate) struct AttentionSpec {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (dividing `heads`).
    pub kv_heads: usize,
    /// Each query sees only the keys at or before its position.
    pub causal: bool,
    /// A 0/1 mask over the keys, `[batch, seq]` row-major; 0 marks padding.
    pub key_mask: Option<Arc<Vec<f32>>>,
}

/// The sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    seq: usize,
    head_dim: usize,
    heads: usize,
    kv_heads: usize,
}

impl Dims {
    fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// The offset of head `h` of batch `b` in a tensor `width` wide.
    fn offset(&self, b: usize, h: usize, width: usize) -> usize {
        b * self.seq * width + h * self.head_dim
    }
}

/// The storages and layouts of q, k and v.
struct Operands<'a> {
    q: (&'a CpuStorage, &'a Layout),
    k: (&'a CpuStorage, &'a Layout),
    v: (&'a CpuStorage, &'a Layout),
}

/// A `[rows, cols]` view with the given strides, at `offset`.
fn view(rows: usize, cols: usize, strides: (usize, usize), offset: usize) -> Layout {
    Layout::new(
        Shape::from((rows, cols)),
        vec![strides.0, strides.1],
        offset,
    )
}

/// `a · b` for views `a [m, k]` and `b [k, n]`, row-major `[m, n]`.
fn product(a: (&CpuStorage, &Layout), b: (&CpuStorage, &Layout)) -> candle_core::Result<Vec<f32>> {
    let (m, k) = a.1.shape().dims2()?;
    let n = b.1.shape().dims()[1];
    match a.0.matmul(b.0, (1, m, n, k), a.1, b.1)? {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("attention: the product is not f32"),
    }
}

/// A contiguous `[rows, cols]` matrix as a storage and layout.
fn matrix(values: Vec<f32>, rows: usize, cols: usize) -> (CpuStorage, Layout) {
    (
        CpuStorage::F32(values),
        Layout::contiguous(Shape::from((rows, cols))),
    )
}

struct Attention {
    spec: AttentionSpec,
    /// The logsumexp of every query row, `[batch, heads, seq]`, saved by the forward pass.
    lse: Mutex<Option<Arc<Vec<f32>>>>,
}

impl Attention {
    fn dims(&self, ql: &Layout, kl: &Layout) -> candle_core::Result<Dims> {
        let (batch, seq, width) = ql.shape().dims3()?;
        let (kb, kt, kw) = kl.shape().dims3()?;
        let s = &self.spec;
        if s.heads == 0
            || s.kv_heads == 0
            || !s.heads.is_multiple_of(s.kv_heads)
            || !width.is_multiple_of(s.heads)
        {
            candle_core::bail!(
                "attention: {} heads over {} key/value heads",
                s.heads,
                s.kv_heads
            );
        }
        let head_dim = width / s.heads;
        if (kb, kt, kw) != (batch, seq, s.kv_heads * head_dim) {
            candle_core::bail!("attention: q {:?} against k {:?}", ql.shape(), kl.shape());
        }
        Ok(Dims {
            batch,
            seq,
            head_dim,
            heads: s.heads,
            kv_heads: s.kv_heads,
        })
    }

    /// Scaled, masked scores of batch `b`, turned in place into probabilities. With `lse`
    /// the probabilities come from the saved logsumexp; without, the logsumexp of each row is
    /// computed and returned.
    fn probabilities(
        &self,
        scores: &mut [f32],
        b: usize,
        dims: Dims,
        lse: Option<&[f32]>,
    ) -> Vec<f32> {
        let t = dims.seq;
        let scale = 1.0 / (dims.head_dim as f32).sqrt();
        let mask = self.spec.key_mask.as_ref().map(|m| &m[b * t..(b + 1) * t]);
        let mut out = Vec::with_capacity(if lse.is_some() { 0 } else { t });
        for (i, row) in scores.chunks_exact_mut(t).enumerate() {
            let visible = if self.spec.causal { i + 1 } else { t };
            for (j, s) in row.iter_mut().enumerate() {
                *s = if j < visible {
                    *s * scale
                } else {
                    f32::NEG_INFINITY
                };
                if let Some(m) = mask {
                    *s += (1.0 - m[j]) * f32::MIN;
                }
            }
            let row_lse = match lse {
                Some(l) => l[i],
                None => {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = row.iter().map(|s| (s - max).exp()).sum();
                    let l = max + sum.ln();
                    out.push(l);
                    l
                }
            };
            for s in row.iter_mut() {
                *s = (*s - row_lse).exp();
            }
        }
        out
    }

    /// The output `[seq, head_dim]` and logsumexp `[seq]` of head `h` of batch `b`.
    fn head_forward(
        &self,
        ops: &Operands<'_>,
        dims: Dims,
        b: usize,
        h: usize,
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let (t, d) = (dims.seq, dims.head_dim);
        let kvh = h / (dims.heads / dims.kv_heads);
        let (qw, kw) = (dims.q_width(), dims.kv_width());
        let q = view(
            t,
            d,
            (qw, 1),
            ops.q.1.start_offset() + dims.offset(b, h, qw),
        );
        let kt = view(
            d,
            t,
            (1, kw),
            ops.k.1.start_offset() + dims.offset(b, kvh, kw),
        );
        let v = view(
            t,
            d,
            (kw, 1),
            ops.v.1.start_offset() + dims.offset(b, kvh, kw),
        );
        let mut scores = product((ops.q.0, &q), (ops.k.0, &kt))?;
        let lse = self.probabilities(&mut scores, b, dims, None);
        let (p, pl) = matrix(scores, t, t);
        let out = product((&p, &pl), (ops.v.0, &v))?;
        Ok((out, lse))
    }

    /// The gradients of the key/value head `kvh` of batch `b` and of the query heads sharing
    /// it: `(dq per query head, dk, dv)`, each `[seq, head_dim]`.
    fn group_backward(
        &self,
        ops: &Operands<'_>,
        (dout, dout_at): (&CpuStorage, usize),
        dims: Dims,
        lse: &[f32],
        (b, kvh): (usize, usize),
    ) -> candle_core::Result<GroupGrads> {
        let (t, d) = (dims.seq, dims.head_dim);
        let rep = dims.heads / dims.kv_heads;
        let (qw, kw) = (dims.q_width(), dims.kv_width());
        let scale = 1.0 / (d as f32).sqrt();
        let k_at = ops.k.1.start_offset() + dims.offset(b, kvh, kw);
        let v_at = ops.v.1.start_offset() + dims.offset(b, kvh, kw);
        let k = view(t, d, (kw, 1), k_at);
        let kt = view(d, t, (1, kw), k_at);
        let vt = view(d, t, (1, kw), v_at);
        let mut dk = vec![0f32; t * d];
        let mut dv = vec![0f32; t * d];
        let mut dqs = Vec::with_capacity(rep);
        for h in kvh * rep..(kvh + 1) * rep {
            let q = view(
                t,
                d,
                (qw, 1),
                ops.q.1.start_offset() + dims.offset(b, h, qw),
            );
            let g = view(t, d, (qw, 1), dout_at + dims.offset(b, h, qw));
            let row_lse = &lse[(b * dims.heads + h) * t..(b * dims.heads + h + 1) * t];
            let mut p = product((ops.q.0, &q), (ops.k.0, &kt))?;
            self.probabilities(&mut p, b, dims, Some(row_lse));
            let (ps, _) = matrix(p, t, t);
            let pt = view(t, t, (1, t), 0);
            add(&mut dv, &product((&ps, &pt), (dout, &g))?);
            let mut ds = product((dout, &g), (ops.v.0, &vt))?;
            let probs = ps.as_slice::<f32>()?;
            for (dsr, pr) in ds.chunks_exact_mut(t).zip(probs.chunks_exact(t)) {
                let di: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                for (s, p) in dsr.iter_mut().zip(pr) {
                    *s = p * (*s - di) * scale;
                }
            }
            let (dss, dsl) = matrix(ds, t, t);
            dqs.push(product((&dss, &dsl), (ops.k.0, &k))?);
            let dst = view(t, t, (1, t), 0);
            add(&mut dk, &product((&dss, &dst), (ops.q.0, &q))?);
        }
        Ok((dqs, dk, dv))
    }
}

/// The gradients of one key/value group: `dq` of each query head sharing it, `dk`, `dv`.
type GroupGrads = (Vec<Vec<f32>>, Vec<f32>, Vec<f32>);

/// `acc += x`.
fn add(acc: &mut [f32], x: &[f32]) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// Write head `h`'s rows `[seq, head_dim]` into batch `b` of a `[batch, seq, width]` buffer.
fn scatter(dst: &mut [f32], rows: &[f32], dims: Dims, (b, h): (usize, usize), width: usize) {
    let d = dims.head_dim;
    for (i, row) in rows.chunks_exact(d).enumerate() {
        let at = dims.offset(b, h, width) + i * width;
        dst[at..at + d].copy_from_slice(row);
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "lgreg-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        for (s, l) in [(qs, ql), (ks, kl), (vs, vl)] {
            slice(s, l, "attention")?;
        }
        let dims = self.dims(ql, kl)?;
        let ops = Operands {
            q: (qs, ql),
            k: (ks, kl),
            v: (vs, vl),
        };
        let heads: Vec<(Vec<f32>, Vec<f32>)> = (0..dims.batch * dims.heads)
            .into_par_iter()
            .map(|bh| self.head_forward(&ops, dims, bh / dims.heads, bh % dims.heads))
            .collect::<candle_core::Result<_>>()?;
        let mut out = vec![0f32; dims.batch * dims.seq * dims.q_width()];
        let mut lse = Vec::with_capacity(dims.batch * dims.heads * dims.seq);
        for (bh, (o, l)) in heads.into_iter().enumerate() {
            let at = (bh / dims.heads, bh % dims.heads);
            scatter(&mut out, &o, dims, at, dims.q_width());
            lse.extend(l);
        }
        if let Ok(mut saved) = self.lse.lock() {
            *saved = Some(Arc::new(lse));
        }
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = match self.lse.lock() {
            Ok(saved) => saved.clone(),
            Err(_) => None,
        };
        let Some(lse) = lse else {
            candle_core::bail!("attention: backward before forward");
        };
        let g = g.contiguous()?;
        let (qg, ql) = q.storage_and_layout();
        let (kg, kl) = k.storage_and_layout();
        let (vg, vl) = v.storage_and_layout();
        let (gg, gl) = g.storage_and_layout();
        let (Storage::Cpu(qs), Storage::Cpu(ks), Storage::Cpu(vs), Storage::Cpu(gs)) =
            (&*qg, &*kg, &*vg, &*gg)
        else {
            candle_core::bail!("attention: the fused kernel runs on the CPU");
        };
        let dims = self.dims(ql, kl)?;
        let ops = Operands {
            q: (qs, ql),
            k: (ks, kl),
            v: (vs, vl),
        };
        let groups: Vec<_> = (0..dims.batch * dims.kv_heads)
            .into_par_iter()
            .map(|bk| {
                let at = (bk / dims.kv_heads, bk % dims.kv_heads);
                self.group_backward(&ops, (gs, gl.start_offset()), dims, &lse, at)
            })
            .collect::<candle_core::Result<_>>()?;
        let rows = dims.batch * dims.seq;
        let mut dq = vec![0f32; rows * dims.q_width()];
        let mut dk = vec![0f32; rows * dims.kv_width()];
        let mut dv = vec![0f32; rows * dims.kv_width()];
        let rep = dims.heads / dims.kv_heads;
        for (bk, (dqs, dkg, dvg)) in groups.into_iter().enumerate() {
            let (b, kvh) = (bk / dims.kv_heads, bk % dims.kv_heads);
            for (r, dqh) in dqs.iter().enumerate() {
                scatter(&mut dq, dqh, dims, (b, kvh * rep + r), dims.q_width());
            }
            scatter(&mut dk, &dkg, dims, (b, kvh), dims.kv_width());
            scatter(&mut dv, &dvg, dims, (b, kvh), dims.kv_width());
        }
        let grad = |t: &Tensor, values: Vec<f32>| {
            wants_grad(t)
                .then(|| tensor(values, t.shape().clone()))
                .transpose()
        };
        Ok((grad(q, dq)?, grad(k, dk)?, grad(v, dv)?))
    }
}

/// Attention of `q [batch, seq, heads · head_dim]` over `k`, `v`
/// `[batch, seq, kv_heads · head_dim]`, all f32 on the CPU; the output is shaped like `q`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: AttentionSpec,
) -> candle_core::Result<Tensor> {
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            spec,
            lse: Mutex::new(None),
        },
    )
}
