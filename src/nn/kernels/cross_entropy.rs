//! Mean cross-entropy of logits `[rows, classes]` against class ids, keeping each row's
//! logsumexp; the backward pass writes `(softmax − one-hot) · g / rows` straight into the one
//! logits-sized buffer it returns.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::elementwise::logsumexp;
use super::{exp_shifted_in_place, host, rows_per_task, slice, tensor, wants_grad};

struct CrossEntropy {
    /// The logsumexp of every row, saved by the forward pass.
    lse: Mutex<Option<Arc<Vec<f32>>>>,
}

/// The class ids of a contiguous u32 target tensor.
fn targets<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [u32]> {
    let data = s.as_slice::<u32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("cross_entropy: the targets must be contiguous"),
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "lgreg-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let logits = slice(ls, ll, "cross_entropy")?;
        let ids = targets(ts, tl)?;
        let (rows, classes) = ll.shape().dims2()?;
        if ids.len() != rows {
            candle_core::bail!(
                "cross_entropy: {rows} rows of logits, {} targets",
                ids.len()
            );
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= classes) {
            candle_core::bail!("cross_entropy: target {bad} is outside the {classes} classes");
        }
        let lse: Vec<f32> = logits.par_chunks(classes).map(logsumexp).collect();
        let loss: f64 = logits
            .par_chunks(classes)
            .zip(ids.par_iter())
            .zip(lse.par_iter())
            .map(|((row, &t), &l)| f64::from(l - row[t as usize]))
            .sum();
        if let Ok(mut saved) = self.lse.lock() {
            *saved = Some(Arc::new(lse));
        }
        let mean = (loss / rows.max(1) as f64) as f32;
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        ids: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if !wants_grad(logits) {
            return Ok((None, None));
        }
        let lse = self.lse.lock().ok().and_then(|s| s.clone());
        let Some(lse) = lse else {
            candle_core::bail!("cross_entropy: backward before forward");
        };
        let (rows, classes) = logits.dims2()?;
        let scale = g.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? / rows.max(1) as f32;
        let ids: Vec<u32> = ids.to_vec1()?;
        let lh = host(logits)?;
        let values = lh.as_slice()?;
        let mut grad = vec![0f32; values.len()];
        let chunk = rows_per_task(rows);
        grad.par_chunks_mut(chunk * classes)
            .zip(values.par_chunks(chunk * classes))
            .enumerate()
            .for_each(|(task, (gs, vs))| {
                for (r, (gr, vr)) in gs
                    .chunks_exact_mut(classes)
                    .zip(vs.chunks_exact(classes))
                    .enumerate()
                {
                    let row = task * chunk + r;
                    gr.copy_from_slice(vr);
                    exp_shifted_in_place(gr, lse[row]);
                    for gv in gr.iter_mut() {
                        *gv *= scale;
                    }
                    gr[ids[row] as usize] -= scale;
                }
            });
        Ok((Some(tensor(grad, (rows, classes))?), None))
    }
}

/// Mean cross-entropy of f32 CPU `logits [rows, classes]` against u32 `targets [rows]`.
pub(crate) fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    logits.contiguous()?.apply_op2(
        &targets.contiguous()?,
        CrossEntropy {
            lse: Mutex::new(None),
        },
    )
}
