//! Scaled dot-product attention over activations in their projection layout
//! `[batch, seq, heads · head_dim]`: causal or bidirectional, with a key padding mask and
//! grouped-query heads. The queries, keys and values come either as three tensors or packed in
//! one `[batch, seq, (heads + 2 · kv_heads) · head_dim]` tensor (a fused qkv projection), read in
//! place: no slice of it is copied, and its gradient comes back as one packed tensor. The
//! forward pass runs one parallel task per (batch, head repeat): each is a batched product over
//! the key/value heads.
//!
//! The forward pass keeps only the output and each query's logsumexp. The backward pass, in
//! the manner of flash attention, recomputes the probabilities from that logsumexp, one task
//! per batch row, so that the query heads sharing a key/value head add into its gradient
//! without contention. The per-head products run through `head_product`, written for these
//! sizes, on the activations in place (a head's keys and values are transposed once per task);
//! no mask tensor, no head split and no repeated key/value heads are materialised.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::head_product::{Rows, Strided, head_product, transpose};
use super::{exp_shifted_in_place, slice, sum_lanes, tensor, wants_grad};

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
    /// The offset of head `h` of batch `b` in rows `width` apart.
    fn offset(&self, b: usize, h: usize, width: usize) -> usize {
        b * self.seq * width + h * self.head_dim
    }
    /// The width of a packed qkv row.
    fn packed_width(&self) -> usize {
        self.q_width() + 2 * self.kv_width()
    }
    /// Where q, k and v lie in a packed `[batch, seq, packed_width]` tensor starting at `start`.
    fn packed_places(&self, start: usize) -> [Place; 3] {
        let stride = self.packed_width();
        [0, self.q_width(), self.q_width() + self.kv_width()].map(|col| Place {
            start: start + col,
            stride,
        })
    }
}

/// Where q, k or v lies in a storage: the element of its first row and head, and the
/// distance between its rows.
#[derive(Debug, Clone, Copy)]
struct Place {
    start: usize,
    stride: usize,
}

/// The storages of q, k and v, and where each lies in its storage.
struct Operands<'a> {
    q: (&'a CpuStorage, Place),
    k: (&'a CpuStorage, Place),
    v: (&'a CpuStorage, Place),
}

impl Dims {
    /// Head `h` of batch row `b` of the activations at `place` in `data`, read in place.
    fn head<'a>(&self, data: &'a [f32], place: Place, b: usize, h: usize) -> Strided<'a> {
        Strided {
            data,
            offset: place.start + self.offset(b, h, place.stride),
            row: place.stride,
            col: 1,
        }
    }
}

impl Strided<'_> {
    /// The same matrix as contiguous rows (its columns must be adjacent).
    fn rows(&self) -> Rows<'_> {
        Rows {
            data: self.data,
            offset: self.offset,
            row: self.row,
        }
    }
}

impl Operands<'_> {
    /// The f32 values of the storages of q, k and v.
    fn values(&self) -> candle_core::Result<(&[f32], &[f32], &[f32])> {
        Ok((
            self.q.0.as_slice::<f32>()?,
            self.k.0.as_slice::<f32>()?,
            self.v.0.as_slice::<f32>()?,
        ))
    }
}

/// Square `t × t` block `i` of `values`, read in place or transposed.
fn block(values: &[f32], i: usize, t: usize, transposed: bool) -> Strided<'_> {
    let (row, col) = if transposed { (1, t) } else { (t, 1) };
    Strided {
        data: values,
        offset: i * t * t,
        row,
        col,
    }
}

/// Contiguous rows of `t` values.
fn rows_of(values: &[f32], t: usize) -> Rows<'_> {
    Rows {
        data: values,
        offset: 0,
        row: t,
    }
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
            match lse {
                Some(l) => exp_shifted_in_place(row, l[i]),
                None => {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    exp_shifted_in_place(row, max);
                    let sum = sum_lanes(row);
                    for s in row.iter_mut() {
                        *s /= sum;
                    }
                    out.push(max + sum.ln());
                }
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
        (b, r): (usize, usize),
    ) -> candle_core::Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let (t, d, g) = (dims.seq, dims.head_dim, dims.kv_heads);
        let rep = dims.heads / dims.kv_heads;
        let (q, k, v) = ops.values()?;
        let mut scores = vec![0f32; g * t * t];
        for (gi, s) in scores.chunks_exact_mut(t * t).enumerate() {
            let kt = transpose(dims.head(k, ops.k.1, b, gi), t, d);
            let qh = dims.head(q, ops.q.1, b, gi * rep + r);
            head_product(s, t, (qh, d), rows_of(&kt, t), false);
        }
        let lse = self.slice_probabilities(&mut scores, dims, (b, r), None);
        let mut out = vec![0f32; g * t * d];
        for (gi, o) in out.chunks_exact_mut(t * d).enumerate() {
            let vh = dims.head(v, ops.v.1, b, gi);
            head_product(o, d, (block(&scores, gi, t, false), t), vh.rows(), false);
        }
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
        let (q, k, v) = ops.values()?;
        let dout = dout.as_slice::<f32>()?;
        let dplace = Place {
            start: dout_at,
            stride: dims.q_width(),
        };
        let transposed = |x, place, gi| transpose(dims.head(x, place, b, gi), t, d);
        let kts: Vec<Vec<f32>> = (0..g).map(|gi| transposed(k, ops.k.1, gi)).collect();
        let vts: Vec<Vec<f32>> = (0..g).map(|gi| transposed(v, ops.v.1, gi)).collect();
        let mut dk = vec![0f32; g * t * d];
        let mut dv = vec![0f32; g * t * d];
        let mut dqs = Vec::with_capacity(rep);
        for r in 0..rep {
            let qh = |gi: usize| dims.head(q, ops.q.1, b, gi * rep + r);
            let mut p = vec![0f32; g * t * t];
            for (gi, s) in p.chunks_exact_mut(t * t).enumerate() {
                head_product(s, t, (qh(gi), d), rows_of(&kts[gi], t), false);
            }
            self.slice_probabilities(&mut p, dims, (b, r), Some(lse));
            let mut ds = vec![0f32; g * t * t];
            for (gi, (dvh, dsh)) in dv
                .chunks_exact_mut(t * d)
                .zip(ds.chunks_exact_mut(t * t))
                .enumerate()
            {
                let go = dims.head(dout, dplace, b, gi * rep + r);
                head_product(dvh, d, (block(&p, gi, t, true), t), go.rows(), true);
                head_product(dsh, t, (go, d), rows_of(&vts[gi], t), false);
            }
            for (dsr, pr) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                let di: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                for (s, p) in dsr.iter_mut().zip(pr) {
                    *s = p * (*s - di) * scale;
                }
            }
            let mut dq = vec![0f32; g * t * d];
            for (gi, (dqh, dkh)) in dq
                .chunks_exact_mut(t * d)
                .zip(dk.chunks_exact_mut(t * d))
                .enumerate()
            {
                let kh = dims.head(k, ops.k.1, b, gi);
                head_product(dqh, d, (block(&ds, gi, t, false), t), kh.rows(), false);
                head_product(dkh, d, (block(&ds, gi, t, true), t), qh(gi).rows(), true);
            }
            dqs.push(dq);
        }
        Ok((dqs, dk, dv))
    }
}

/// The gradients of one batch element: `dq` of each repeat, `dk`, `dv`.
type GroupGrads = (Vec<Vec<f32>>, Vec<f32>, Vec<f32>);

/// Write `[kv_heads, seq, head_dim]` blocks into batch `b` of the heads at `place` in a
/// buffer: block `g` to head `g · stride + r`.
fn scatter(
    dst: &mut [f32],
    blocks: &[f32],
    dims: Dims,
    (b, r, stride): (usize, usize, usize),
    place: Place,
) {
    let d = dims.head_dim;
    for (g, block) in blocks.chunks_exact(dims.seq * d).enumerate() {
        for (i, row) in block.chunks_exact(d).enumerate() {
            let at = place.start + dims.offset(b, g * stride + r, place.stride) + i * place.stride;
            dst[at..at + d].copy_from_slice(row);
        }
    }
}

impl Attention {
    fn new(spec: AttentionSpec) -> Self {
        Attention {
            spec,
            lse: Mutex::new(None),
        }
    }

    /// The output `[batch, seq, heads · head_dim]`; saves the logsumexp for the backward pass.
    fn forward(&self, ops: &Operands<'_>, dims: Dims) -> candle_core::Result<Vec<f32>> {
        let rep = dims.heads / dims.kv_heads;
        let slices: Vec<(Vec<f32>, Vec<Vec<f32>>)> = (0..dims.batch * rep)
            .into_par_iter()
            .map(|br| self.slice_forward(ops, dims, (br / rep, br % rep)))
            .collect::<candle_core::Result<_>>()?;
        let mut out = vec![0f32; dims.batch * dims.seq * dims.q_width()];
        let mut lse = vec![0f32; dims.batch * dims.heads * dims.seq];
        let whole = Place {
            start: 0,
            stride: dims.q_width(),
        };
        for (br, (o, l)) in slices.into_iter().enumerate() {
            let (b, r) = (br / rep, br % rep);
            scatter(&mut out, &o, dims, (b, r, rep), whole);
            for (g, row_lse) in l.into_iter().enumerate() {
                let at = (b * dims.heads + g * rep + r) * dims.seq;
                lse[at..at + dims.seq].copy_from_slice(&row_lse);
            }
        }
        if let Ok(mut saved) = self.lse.lock() {
            *saved = Some(Arc::new(lse));
        }
        Ok(out)
    }

    /// The gradients of q, k and v, scattered to `places` in `grads` (one buffer each, or one
    /// packed buffer for all three).
    fn backward(
        &self,
        ops: &Operands<'_>,
        dout: &Tensor,
        dims: Dims,
        grads: &mut [&mut [f32]],
        places: [(usize, Place); 3],
    ) -> candle_core::Result<()> {
        let lse = match self.lse.lock() {
            Ok(saved) => saved.clone(),
            Err(_) => None,
        };
        let Some(lse) = lse else {
            candle_core::bail!("attention: backward before forward");
        };
        let dout = dout.contiguous()?;
        let (gg, gl) = dout.storage_and_layout();
        let Storage::Cpu(gs) = &*gg else {
            candle_core::bail!("attention: the fused kernel runs on the CPU");
        };
        let batches: Vec<_> = (0..dims.batch)
            .into_par_iter()
            .map(|b| self.batch_backward(ops, (gs, gl.start_offset()), dims, &lse, b))
            .collect::<candle_core::Result<_>>()?;
        let rep = dims.heads / dims.kv_heads;
        let [(qi, qp), (ki, kp), (vi, vp)] = places;
        for (b, (dqs, dkb, dvb)) in batches.into_iter().enumerate() {
            for (r, dqr) in dqs.iter().enumerate() {
                scatter(grads[qi], dqr, dims, (b, r, rep), qp);
            }
            scatter(grads[ki], &dkb, dims, (b, 0, 1), kp);
            scatter(grads[vi], &dvb, dims, (b, 0, 1), vp);
        }
        Ok(())
    }
}

/// A contiguous f32 CPU operand's storage, and where its data starts.
fn operand<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<(&'a CpuStorage, usize)> {
    slice(s, l, "attention")?;
    Ok((s, l.start_offset()))
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
        let dims = self.dims(ql, kl)?;
        let place = |l: &Layout, stride| Place {
            start: l.start_offset(),
            stride,
        };
        let ops = Operands {
            q: (operand(qs, ql)?.0, place(ql, dims.q_width())),
            k: (operand(ks, kl)?.0, place(kl, dims.kv_width())),
            v: (operand(vs, vl)?.0, place(vl, dims.kv_width())),
        };
        let out = self.forward(&ops, dims)?;
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
        let (qg, ql) = q.storage_and_layout();
        let (kg, kl) = k.storage_and_layout();
        let (vg, vl) = v.storage_and_layout();
        let (Storage::Cpu(qs), Storage::Cpu(ks), Storage::Cpu(vs)) = (&*qg, &*kg, &*vg) else {
            candle_core::bail!("attention: the fused kernel runs on the CPU");
        };
        let dims = self.dims(ql, kl)?;
        let (qw, kw) = (dims.q_width(), dims.kv_width());
        let place = |l: &Layout, stride| Place {
            start: l.start_offset(),
            stride,
        };
        let ops = Operands {
            q: (qs, place(ql, qw)),
            k: (ks, place(kl, kw)),
            v: (vs, place(vl, kw)),
        };
        let rows = dims.batch * dims.seq;
        let mut dq = vec![0f32; rows * qw];
        let mut dk = vec![0f32; rows * kw];
        let mut dv = vec![0f32; rows * kw];
        let own = |stride| Place { start: 0, stride };
        self.backward(
            &ops,
            g,
            dims,
            &mut [&mut dq, &mut dk, &mut dv],
            [(0, own(qw)), (1, own(kw)), (2, own(kw))],
        )?;
        let grad = |t: &Tensor, values: Vec<f32>| {
            wants_grad(t)
                .then(|| tensor(values, t.shape().clone()))
                .transpose()
        };
        Ok((grad(q, dq)?, grad(k, dk)?, grad(v, dv)?))
    }
}

/// The same attention over one packed qkv tensor.
pub(super) struct PackedAttention(Attention);

impl PackedAttention {
    /// The sizes of a packed `[batch, seq, (heads + 2 · kv_heads) · head_dim]` tensor.
    fn dims(&self, l: &Layout) -> candle_core::Result<Dims> {
        let (batch, seq, width) = l.shape().dims3()?;
        let s = &self.0.spec;
        let parts = s.heads + 2 * s.kv_heads;
        if s.heads == 0
            || s.kv_heads == 0
            || !s.heads.is_multiple_of(s.kv_heads)
            || !width.is_multiple_of(parts)
        {
            candle_core::bail!(
                "attention: a packed width of {width} for {} heads over {} key/value heads",
                s.heads,
                s.kv_heads
            );
        }
        Ok(Dims {
            batch,
            seq,
            head_dim: width / parts,
            heads: s.heads,
            kv_heads: s.kv_heads,
        })
    }

    fn operands<'a>(s: &'a CpuStorage, places: [Place; 3]) -> Operands<'a> {
        let [q, k, v] = places;
        Operands {
            q: (s, q),
            k: (s, k),
            v: (s, v),
        }
    }
}

impl CustomOp1 for PackedAttention {
    fn name(&self) -> &'static str {
        "lgreg-attention-packed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = self.dims(l)?;
        let (s, start) = operand(s, l)?;
        let ops = Self::operands(s, dims.packed_places(start));
        let out = self.0.forward(&ops, dims)?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((dims.batch, dims.seq, dims.q_width())),
        ))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !wants_grad(qkv) {
            return Ok(None);
        }
        let grad = self.grads(qkv, g)?;
        Ok(Some(tensor(grad, qkv.shape().clone())?))
    }
}

impl PackedAttention {
    /// A packed attention of `spec`, to run with [`Tensor::apply_op1_no_bwd`] and keep for
    /// [`Self::grads`].
    pub(super) fn new(spec: AttentionSpec) -> Self {
        PackedAttention(Attention::new(spec))
    }

    /// The packed gradient of `qkv` for output gradient `g`, from the logsumexp this op saved
    /// when it ran forward on `qkv`.
    pub(super) fn grads(&self, qkv: &Tensor, g: &Tensor) -> candle_core::Result<Vec<f32>> {
        let (guard, l) = qkv.storage_and_layout();
        let Storage::Cpu(s) = &*guard else {
            candle_core::bail!("attention: the fused kernel runs on the CPU");
        };
        let dims = self.dims(l)?;
        let ops = Self::operands(s, dims.packed_places(l.start_offset()));
        let mut grad = vec![0f32; qkv.elem_count()];
        let [q, k, v] = dims.packed_places(0);
        self.0
            .backward(&ops, g, dims, &mut [&mut grad], [(0, q), (0, k), (0, v)])?;
        Ok(grad)
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
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, Attention::new(spec))
}

/// Attention over a packed `qkv [batch, seq, (heads + 2 · kv_heads) · head_dim]` (queries,
/// then keys, then values along the last dimension), f32 on the CPU; the output is
/// `[batch, seq, heads · head_dim]`.
pub(crate) fn attention_packed(qkv: &Tensor, spec: AttentionSpec) -> candle_core::Result<Tensor> {
    qkv.contiguous()?.apply_op1(PackedAttention::new(spec))
}
