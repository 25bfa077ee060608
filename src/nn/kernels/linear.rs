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
    fn grads(
        x: &Tensor,
        w: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        linear_grads(x, w, g, (wants_grad(x), wants_grad(w)))
    }
}

/// The gradients `(dx, dw) = (g · w, gᵀ · x)` of `x [rows, in] · wᵀ` for output gradient
/// `g [rows, out]`, each only where `want` asks for it; `dw` comes back contiguous in `w`'s
/// layout.
pub(super) fn linear_grads(
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    want: (bool, bool),
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let g = g.detach().contiguous()?;
    let dx = want.0.then(|| g.matmul(&w.detach())).transpose()?;
    let dw = want.1.then(|| g.t()?.matmul(&x.detach())).transpose()?;
    Ok((dx, dw))
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
        product(xs, xl, ws, wl)
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
        let (y, shape) = product(xs, xl, ws, wl)?;
        let bias = slice(bs, bl, "linear")?;
        let CpuStorage::F32(mut y) = y else {
            candle_core::bail!("linear: the product is not f32");
        };
        let n = bias.len();
        if shape.dims()[1] != n {
            candle_core::bail!("linear: {} outputs, bias of {n}", shape.dims()[1]);
        }
        add_bias(&mut y, bias, None);
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

/// `x · wᵀ` for `x [rows, k]` and `w [n, k]` given as storages and layouts (either may be a
/// view into a larger buffer), row-major `[rows, n]`.
pub(super) fn product(
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

/// Add `bias` to every row of the row-major `y` (rows of `bias.len()`), and `residual`
/// (shaped like `y`) where given, in one parallel pass.
pub(super) fn add_bias(y: &mut [f32], bias: &[f32], residual: Option<&[f32]>) {
    let n = bias.len().max(1);
    let chunk = n * rows_per_task(y.len() / n);
    let add_rows = |ys: &mut [f32], rs: Option<&[f32]>| {
        for (i, row) in ys.chunks_exact_mut(n).enumerate() {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
            if let Some(rs) = rs {
                for (v, r) in row.iter_mut().zip(&rs[i * n..(i + 1) * n]) {
                    *v += r;
                }
            }
        }
    };
    match residual {
        Some(r) => y
            .par_chunks_mut(chunk)
            .zip(r.par_chunks(chunk))
            .for_each(|(ys, rs)| add_rows(ys, Some(rs))),
        None => y.par_chunks_mut(chunk).for_each(|ys| add_rows(ys, None)),
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
