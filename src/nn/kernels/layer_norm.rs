//! LayerNorm over the last dimension: a forward pass per row, and a backward pass that
//! recomputes each row's mean and inverse deviation and gives `dx` row by row while the weight
//! and bias gradients gather as parallel partial sums.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{host, rows_per_task, slice, sum_partials, tensor, wants_grad};

struct LayerNorm {
    eps: f32,
}

/// The mean and `1 / sqrt(var + eps)` of a row.
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "lgreg-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(xs, xl, "layer_norm")?;
        let w = slice(ws, wl, "layer_norm")?;
        let b = slice(bs, bl, "layer_norm")?;
        let y = layer_norm_rows(x, w, b, self.eps);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (xh, wh, gh) = (host(x)?, host(w)?, host(&g)?);
        let (dx, dw, db) =
            layer_norm_grads(xh.as_slice()?, wh.as_slice()?, gh.as_slice()?, self.eps);
        let d = dw.len();
        let dx = wants_grad(x)
            .then(|| tensor(dx, x.shape().clone()))
            .transpose()?;
        let dw = wants_grad(w).then(|| tensor(dw, d)).transpose()?;
        let db = wants_grad(b).then(|| tensor(db, d)).transpose()?;
        Ok((dx, dw, db))
    }
}

/// The gradients `(dx, dw, db)` of LayerNorm over rows of `w.len()` for output gradient `g`:
/// `dx` row by row, `dw` and `db` as parallel partial sums.
pub(super) fn layer_norm_grads(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut dx = vec![0f32; x.len()];
    let chunk = d * rows_per_task(x.len() / d.max(1));
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
        .map(|(dxs, (xs, gs))| backward_rows(dxs, xs, gs, w, eps))
        .collect();
    let (dws, dbs): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
    (dx, sum_partials(dws, d), sum_partials(dbs, d))
}

/// LayerNorm of the rows of `x` (each `w.len()` long) into a new buffer.
pub(super) fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut y = vec![0f32; x.len()];
    let chunk = d * rows_per_task(x.len() / d.max(1));
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(ys, xs)| {
            for (yr, xr) in ys.chunks_exact_mut(d).zip(xs.chunks_exact(d)) {
                let (mean, rstd) = moments(xr, eps);
                for i in 0..d {
                    yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
                }
            }
        });
    y
}

/// `dx` for a block of rows, and the block's partial `dw` and `db`.
fn backward_rows(
    dxs: &mut [f32],
    xs: &[f32],
    gs: &[f32],
    w: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut dw = vec![0f32; d];
    let mut db = vec![0f32; d];
    let mut xhat = vec![0f32; d];
    for ((dxr, xr), gr) in dxs
        .chunks_exact_mut(d)
        .zip(xs.chunks_exact(d))
        .zip(gs.chunks_exact(d))
    {
        let (mean, rstd) = moments(xr, eps);
        let (mut mean_gw, mut mean_gwx) = (0f32, 0f32);
        for i in 0..d {
            xhat[i] = (xr[i] - mean) * rstd;
            let gw = gr[i] * w[i];
            mean_gw += gw;
            mean_gwx += gw * xhat[i];
            dw[i] += gr[i] * xhat[i];
            db[i] += gr[i];
        }
        mean_gw /= d as f32;
        mean_gwx /= d as f32;
        for i in 0..d {
            dxr[i] = rstd * (gr[i] * w[i] - mean_gw - xhat[i] * mean_gwx);
        }
    }
    (dw, db)
}

/// LayerNorm of `x [.., d]` with weight and bias `[d]`, all f32 on the CPU.
pub(crate) fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LayerNorm { eps: eps as f32 },
    )
}
