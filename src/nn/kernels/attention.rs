//! Scaled dot-product attention over activations in their projection layout
//! `[batch, seq, heads · head_dim]`: causal or bidirectional, with a key padding mask and
//! grouped-query heads. The forward pass runs one parallel task per (batch, head repeat): each
//! is a batched product over the key/value heads.
//!
//! The forward pass keeps only the output and each query's logsumexp. The backward pass, in
//! the manner of flash attention, recomputes the probabilities from that logsumexp, one task
//! per batch row, so that the query heads sharing a key/value head add into its gradient
//! without contention. The per-head products run through candle's gemm on strided views; no mask
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

/// A `[batch, rows, cols]` view with the given strides, at `offset`.
fn view(shape: (usize, usize, usize), strides: [usize; 3], offset: usize) -> Layout {
    Layout::new(Shape::from(shape), strides.to_vec(), offset)
}

/// The batched product `a · b` of views `a [n, m, k]` and `b [n, k, p]`, row-major `[n, m, p]`.
fn product(a: (&CpuStorage, &Layout), b: (&CpuStorage, &Layout)) -> candle_core::Result<Vec<f32>> {
    let (batch, m, k) = a.1.shape().dims3()?;
    let p = b.1.shape().dims()[2];
    match a.0.matmul(b.0, (batch, m, p, k), a.1, b.1)? {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("attention: the product is not f32"),
    }
}

/// The views of one (batch, repeat) slice: query head `g · rep + r` of every key/value head `g`
/// next to that key/value head.
struct Views {
    /// Queries `[kv_heads, seq, head_dim]`.
    q: Layout,
    /// Keys `[kv_heads, seq, head_dim]`.
    k: Layout,
    /// Keys transposed, `[kv_heads, head_dim, seq]`.
    kt: Layout,
    /// Values transposed, `[kv_heads, head_dim, seq]`.
    vt: Layout,
    /// Values `[kv_heads, seq, head_dim]`.
    v: Layout,
    /// The output gradient, laid out like the queries (offset from its own start).
    dout: Layout,
}

impl Dims {
    fn views(&self, ops: &Operands<'_>, dout_at: usize, (b, r): (usize, usize)) -> Views {
        let (t, d, g) = (self.seq, self.head_dim, self.kv_heads);
        let rep = self.heads / self.kv_heads;
        let (qw, kw) = (self.q_width(), self.kv_width());
        let q_at = self.offset(b, r, qw);
        let k_at = ops.k.1.start_offset() + self.offset(b, 0, kw);
        let v_at = ops.v.1.start_offset() + self.offset(b, 0, kw);
        Views {
            q: view((g, t, d), [rep * d, qw, 1], ops.q.1.start_offset() + q_at),
            k: view((g, t, d), [d, kw, 1], k_at),
            kt: view((g, d, t), [d, 1, kw], k_at),
            vt: view((g, d, t), [d, 1, kw], v_at),
            v: view((g, t, d), [d, kw, 1], v_at),
            dout: view((g, t, d), [rep * d, qw, 1], dout_at + q_at),
        }
    }
}

/// Contiguous `[n, rows, cols]` values as a storage, with its layout and its transpose.
fn batched(values: Vec<f32>, n: usize, rows: usize, cols: usize) -> (CpuStorage, Layout, Layout) {
    let plain = Layout::contiguous(Shape::from((n, rows, cols)));
    let transposed = view((n, cols, rows), [rows * cols, 1, cols], 0);
    (CpuStorage::F32(values), plain, transposed)
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

    /// Turn the scores `[kv_heads, seq, seq]` of slice `(b, r)` into probabilities in place,
    /// from the saved logsumexp when given; returns the logsumexp computed otherwise, head by
    /// head.
    fn slice_probabilities(
        &self,
        scores: &mut [f32],
        dims: Dims,
        (b, r): (usize, usize),
        lse: Option<&[f32]>,
    ) -> Vec<Vec<f32>> {
        let t = dims.seq;
        let rep = dims.heads / dims.kv_heads;
        scores
            .chunks_exact_mut(t * t)
            .enumerate()
            .map(|(g, head)| {
                let h = g * rep + r;
                let saved = lse.map(|l| &l[(b * dims.heads + h) * t..(b * dims.heads + h + 1) * t]);
                self.probabilities(head, b, dims, saved)
            })
            .collect()
    }

    /// The output `[kv_heads, seq, head_dim]` and logsumexp of the query heads `g · rep + r`
    /// of batch `b`.
    fn slice_forward(
        &self,
        ops: &Operands<'_>,
        dims: Dims,
        at: (usize, usize),
    ) -> candle_core::Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let (t, g) = (dims.seq, dims.kv_heads);
        let views = dims.views(ops, 0, at);
        let mut scores = product((ops.q.0, &views.q), (ops.k.0, &views.kt))?;
        let lse = self.slice_probabilities(&mut scores, dims, at, None);
        let (p, pl, _) = batched(scores, g, t, t);
        let out = product((&p, &pl), (ops.v.0, &views.v))?;
        Ok((out, lse))
    }

    /// The gradients of batch `b`: `(dq of each repeat, dk, dv)`, each `[kv_heads, seq, head_dim]`.
    fn batch_backward(
        &self,
        ops: &Operands<'_>,
        (dout, dout_at): (&CpuStorage, usize),
        dims: Dims,
        lse: &[f32],
        b: usize,
    ) -> candle_core::Result<GroupGrads> {
        let (t, d, g) = (dims.seq, dims.head_dim, dims.kv_heads);
        let rep = dims.heads / dims.kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut dk = vec![0f32; g * t * d];
        let mut dv = vec![0f32; g * t * d];
        let mut dqs = Vec::with_capacity(rep);
        for r in 0..rep {
            let views = dims.views(ops, dout_at, (b, r));
            let mut p = product((ops.q.0, &views.q), (ops.k.0, &views.kt))?;
            self.slice_probabilities(&mut p, dims, (b, r), Some(lse));
            let (ps, _, pt) = batched(p, g, t, t);
            add(&mut dv, &product((&ps, &pt), (dout, &views.dout))?);
            let mut ds = product((dout, &views.dout), (ops.v.0, &views.vt))?;
            let probs = ps.as_slice::<f32>()?;
            for (dsr, pr) in ds.chunks_exact_mut(t).zip(probs.chunks_exact(t)) {
                let di: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                for (s, p) in dsr.iter_mut().zip(pr) {
                    *s = p * (*s - di) * scale;
                }
            }
            let (dss, dsl, dst) = batched(ds, g, t, t);
            dqs.push(product((&dss, &dsl), (ops.k.0, &views.k))?);
            add(&mut dk, &product((&dss, &dst), (ops.q.0, &views.q))?);
        }
        Ok((dqs, dk, dv))
    }
}

/// The gradients of one batch element: `dq` of each repeat, `dk`, `dv`.
type GroupGrads = (Vec<Vec<f32>>, Vec<f32>, Vec<f32>);

/// `acc += x`.
fn add(acc: &mut [f32], x: &[f32]) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// Write `[kv_heads, seq, head_dim]` blocks into batch `b` of a `[batch, seq, width]` buffer:
/// block `g` to head `g · stride + r`.
fn scatter(
    dst: &mut [f32],
    blocks: &[f32],
    dims: Dims,
    (b, r, stride): (usize, usize, usize),
    width: usize,
) {
    let d = dims.head_dim;
    for (g, block) in blocks.chunks_exact(dims.seq * d).enumerate() {
        for (i, row) in block.chunks_exact(d).enumerate() {
            let at = dims.offset(b, g * stride + r, width) + i * width;
            dst[at..at + d].copy_from_slice(row);
        }
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
        let rep = dims.heads / dims.kv_heads;
        let slices: Vec<(Vec<f32>, Vec<Vec<f32>>)> = (0..dims.batch * rep)
            .into_par_iter()
            .map(|br| self.slice_forward(&ops, dims, (br / rep, br % rep)))
            .collect::<candle_core::Result<_>>()?;
        let mut out = vec![0f32; dims.batch * dims.seq * dims.q_width()];
        let mut lse = vec![0f32; dims.batch * dims.heads * dims.seq];
        for (br, (o, l)) in slices.into_iter().enumerate() {
            let (b, r) = (br / rep, br % rep);
            scatter(&mut out, &o, dims, (b, r, rep), dims.q_width());
            for (g, row_lse) in l.into_iter().enumerate() {
                let at = (b * dims.heads + g * rep + r) * dims.seq;
                lse[at..at + dims.seq].copy_from_slice(&row_lse);
            }
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
        let batches: Vec<_> = (0..dims.batch)
            .into_par_iter()
            .map(|b| self.batch_backward(&ops, (gs, gl.start_offset()), dims, &lse, b))
            .collect::<candle_core::Result<_>>()?;
        let rows = dims.batch * dims.seq;
        let mut dq = vec![0f32; rows * dims.q_width()];
        let mut dk = vec![0f32; rows * dims.kv_width()];
        let mut dv = vec![0f32; rows * dims.kv_width()];
        let rep = dims.heads / dims.kv_heads;
        for (b, (dqs, dkb, dvb)) in batches.into_iter().enumerate() {
            for (r, dqr) in dqs.iter().enumerate() {
                scatter(&mut dq, dqr, dims, (b, r, rep), dims.q_width());
            }
            scatter(&mut dk, &dkb, dims, (b, 0, 1), dims.kv_width());
            scatter(&mut dv, &dvb, dims, (b, 0, 1), dims.kv_width());
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
