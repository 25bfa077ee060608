//! DeiT's soft distillation loss `τ² / N · Σ p_t (log p_t − log p_s)` with `p = softmax(z / τ)`
//! over logits `[rows, classes]` (`N` = every logit), keeping each row's two logsumexps. The
//! forward pass works one row at a time in a row-sized scratch; the backward pass writes
//! `τ / N · (p_s − p_t) · g` straight into the one logits-sized buffer it returns. The teacher
//! gets no gradient (it is the target).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::elementwise::{kl_terms, logsumexp};
use super::{exp_shifted_in_place, host, rows_per_task, slice, tensor, wants_grad};

/// The logsumexps of `student / τ` and `teacher / τ` of every row.
type RowLse = Arc<Vec<(f32, f32)>>;

struct KlDistill {
    temperature: f32,
    /// Each row's logsumexps, saved by the forward pass.
    lse: Mutex<Option<RowLse>>,
}

/// `row / τ` into `scratch`, and its logsumexp.
fn scaled_logsumexp(row: &[f32], inv_t: f32, scratch: &mut Vec<f32>) -> f32 {
    scratch.clear();
    scratch.extend(row.iter().map(|v| v * inv_t));
    logsumexp(scratch)
}

impl KlDistill {
    /// One row's KL term and its two logsumexps; the scratch ends holding the two
    /// log-distributions.
    fn row(&self, s: &[f32], t: &[f32], scratch: &mut (Vec<f32>, Vec<f32>)) -> (f64, (f32, f32)) {
        let inv_t = 1.0 / self.temperature;
        let lse_s = scaled_logsumexp(s, inv_t, &mut scratch.0);
        let lse_t = scaled_logsumexp(t, inv_t, &mut scratch.1);
        for (zs, zt) in scratch.0.iter_mut().zip(scratch.1.iter_mut()) {
            *zs -= lse_s;
            *zt -= lse_t;
        }
        let kl = kl_terms(&scratch.1, &scratch.0);
        (f64::from(kl), (lse_s, lse_t))
    }
}

impl CustomOp2 for KlDistill {
    fn name(&self) -> &'static str {
        "lgreg-kl-distill"
    }

    fn cpu_fwd(
        &self,
        ss: &CpuStorage,
        sl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (s, t) = (slice(ss, sl, "kl_distill")?, slice(ts, tl, "kl_distill")?);
        if sl.shape() != tl.shape() {
            candle_core::bail!(
                "kl_distill: student {:?}, teacher {:?}",
                sl.shape(),
                tl.shape()
            );
        }
        let classes = sl.shape().dims().last().copied().unwrap_or(1).max(1);
        let rows: Vec<(f64, (f32, f32))> = s
            .par_chunks(classes)
            .zip(t.par_chunks(classes))
            .map_init(
                || (Vec::new(), Vec::new()),
                |scratch, (s, t)| self.row(s, t, scratch),
            )
            .collect();
        let total: f64 = rows.iter().map(|(kl, _)| kl).sum();
        if let Ok(mut saved) = self.lse.lock() {
            *saved = Some(Arc::new(rows.into_iter().map(|(_, l)| l).collect()));
        }
        let tau = f64::from(self.temperature);
        let loss = total * tau * tau / s.len().max(1) as f64;
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if !wants_grad(student) {
            return Ok((None, None));
        }
        let lse = self.lse.lock().ok().and_then(|s| s.clone());
        let Some(lse) = lse else {
            candle_core::bail!("kl_distill: backward before forward");
        };
        let (sh, th) = (host(student)?, host(teacher)?);
        let (s, t) = (sh.as_slice()?, th.as_slice()?);
        let classes = student.dims().last().copied().unwrap_or(1).max(1);
        let inv_t = 1.0 / self.temperature;
        let g = g.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let scale = g * self.temperature / s.len().max(1) as f32;
        let mut grad = vec![0f32; s.len()];
        let chunk = rows_per_task(s.len() / classes) * classes;
        grad.par_chunks_mut(chunk)
            .zip(s.par_chunks(chunk).zip(t.par_chunks(chunk)))
            .enumerate()
            .for_each(|(task, (gs, (ss, ts)))| {
                let mut pt = vec![0f32; classes];
                let rows = gs.chunks_exact_mut(classes).zip(ss.chunks_exact(classes));
                for (r, ((gr, sr), tr)) in rows.zip(ts.chunks_exact(classes)).enumerate() {
                    let (lse_s, lse_t) = lse[task * chunk / classes + r];
                    for ((gv, pv), (&sv, &tv)) in gr.iter_mut().zip(&mut pt).zip(sr.iter().zip(tr))
                    {
                        *gv = sv * inv_t;
                        *pv = tv * inv_t;
                    }
                    exp_shifted_in_place(gr, lse_s);
                    exp_shifted_in_place(&mut pt, lse_t);
                    for (gv, pv) in gr.iter_mut().zip(&pt) {
                        *gv = (*gv - pv) * scale;
                    }
                }
            });
        Ok((Some(tensor(grad, student.shape().clone())?), None))
    }
}

/// The soft distillation loss of f32 CPU `student` against `teacher` logits (same shape, classes
/// last) at `temperature`.
pub(crate) fn kl_distill(
    student: &Tensor,
    teacher: &Tensor,
    temperature: f64,
) -> candle_core::Result<Tensor> {
    student.contiguous()?.apply_op2(
        &teacher.detach().contiguous()?,
        KlDistill {
            temperature: temperature as f32,
            lse: Mutex::new(None),
        },
    )
}
