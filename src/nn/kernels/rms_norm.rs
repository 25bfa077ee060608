//! RMSNorm over the last dimension, forward per row; the backward pass recomputes each row's
//! inverse root mean square and gathers the weight gradient as parallel partial sums.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{host, rows_per_task, slice, sum_partials, tensor, wants_grad};

struct RmsNorm {
    eps: f32,
}

/// `1 / sqrt(mean(x²) + eps)` of a row.
fn inverse_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "lgreg-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(xs, xl, "rms_norm")?;
        let w = slice(ws, wl, "rms_norm")?;
        let d = w.len();
        let mut y = vec![0f32; x.len()];
        let chunk = d * rows_per_task(x.len() / d);
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(ys, xs)| {
                for (yr, xr) in ys.chunks_exact_mut(d).zip(xs.chunks_exact(d)) {
                    let r = inverse_rms(xr, self.eps);
                    for i in 0..d {
                        yr[i] = xr[i] * r * w[i];
                    }
                }
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (xh, wh, gh) = (host(x)?, host(w)?, host(&g)?);
        let (xv, wv, gv) = (xh.as_slice()?, wh.as_slice()?, gh.as_slice()?);
        let d = wv.len();
        let mut dx = vec![0f32; xv.len()];
        let chunk = d * rows_per_task(xv.len() / d);
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(chunk)
            .zip(xv.par_chunks(chunk).zip(gv.par_chunks(chunk)))
            .map(|(dxs, (xs, gs))| self.backward_rows(dxs, xs, gs, wv))
            .collect();
        let dx = wants_grad(x)
            .then(|| tensor(dx, x.shape().clone()))
            .transpose()?;
        let dw = wants_grad(w)
            .then(|| tensor(sum_partials(partials, d), d))
            .transpose()?;
        Ok((dx, dw))
    }
}

impl RmsNorm {
    /// `dx` for a block of rows, and the block's partial `dw`.
    fn backward_rows(&self, dxs: &mut [f32], xs: &[f32], gs: &[f32], w: &[f32]) -> Vec<f32> {
        let d = w.len();
        let mut dw = vec![0f32; d];
        for ((dxr, xr), gr) in dxs
            .chunks_exact_mut(d)
            .zip(xs.chunks_exact(d))
            .zip(gs.chunks_exact(d))
        {
            let r = inverse_rms(xr, self.eps);
            let mut mean_gwx = 0f32;
            for i in 0..d {
                let xhat = xr[i] * r;
                mean_gwx += gr[i] * w[i] * xhat;
                dw[i] += gr[i] * xhat;
            }
            mean_gwx /= d as f32;
            for i in 0..d {
                dxr[i] = r * (gr[i] * w[i] - xr[i] * r * mean_gwx);
            }
        }
        dw
    }
}

/// RMSNorm of `x [.., d]` with weight `[d]`, f32 on the CPU.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })
}
