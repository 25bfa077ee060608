//! `x · wᵀ + b` as one op whose weight gradient comes back contiguous in `w`'s own layout
//! (`gᵀ · x`), not as the transpose of `xᵀ · g` that candle's `matmul(w.t())` returns, and whose
//! bias gradient is a parallel column sum.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{host, rows_per_task, slice, sum_partials, tensor, wants_grad};

/// The op; with three inputs the third is the bias.
struct Linear;

impl Linear {
    fn product(
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("linear: input width {k}, weight width {k2}");
        }
        let y = xs.matmul(ws, (1, rows, n, k), xl, &wl.transpose(0, 1)?)?;
        Ok((y, Shape::from((rows, n))))
    }

    fn grads(
        x: &Tensor,
        w: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.detach().contiguous()?;
        let dx = if wants_grad(x) {
            Some(g.matmul(&w.detach())?)
        } else {
            None
        };
        let dw = if wants_grad(w) {
            Some(g.t()?.matmul(&x.detach())?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "lgreg-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Linear::product(xs, xl, ws, wl)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Linear::grads(x, w, g)
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "lgreg-linear-bias"
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
        let (y, shape) = Linear::product(xs, xl, ws, wl)?;
        let bias = slice(bs, bl, "linear")?;
        let CpuStorage::F32(mut y) = y else {
            candle_core::bail!("linear: the product is not f32");
        };
        let n = bias.len();
        if shape.dims()[1] != n {
            candle_core::bail!("linear: {} outputs, bias of {n}", shape.dims()[1]);
        }
        y.par_chunks_mut(n * rows_per_task(shape.dims()[0]))
            .for_each(|rows| {
                for row in rows.chunks_exact_mut(n) {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v += b;
                    }
                }
            });
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = Linear::grads(x, w, g)?;
        let db = if wants_grad(b) {
            let g = g.contiguous()?;
            let n = b.elem_count();
            let sums = column_sums(host(&g)?.as_slice()?, n);
            Some(tensor(sums, n)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

/// The sums over rows of a row-major `[rows, n]` matrix, by parallel partial sums.
pub(super) fn column_sums(m: &[f32], n: usize) -> Vec<f32> {
    let rows = m.len() / n.max(1);
    let partials: Vec<Vec<f32>> = m
        .par_chunks(n * rows_per_task(rows))
        .map(|block| {
            let mut acc = vec![0f32; n];
            for row in block.chunks_exact(n) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .collect();
    sum_partials(partials, n)
}

/// `x · wᵀ + b` for `x [rows, in]`, `w [out, in]` and `b [out]`, all f32 on the CPU.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, Linear),
        None => x.apply_op2(&w, Linear),
    }
}
