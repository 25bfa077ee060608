//! Rotary position embedding in HF Llama's "rotate half" layout, applied to activations in
//! their projection layout `[batch, seq, heads, head_dim]` so that no head split is needed.
//! Rotation is linear and orthogonal: the backward pass is the same rotation with −sin.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{host, rows_per_task, slice, tensor, wants_grad};

/// The rotation by the angles of `cos` and `sin` (`[seq, head_dim / 2]`), or its inverse.
#[derive(Clone)]
struct Rope {
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    seq: usize,
    heads: usize,
    /// 1 for the rotation, −1 for its inverse.
    sign: f32,
}

impl Rope {
    /// Rotate `x [batch, seq, heads, head_dim]`.
    fn rotate(&self, x: &[f32]) -> candle_core::Result<Vec<f32>> {
        let half = self.cos.len() / self.seq.max(1);
        let width = self.heads * 2 * half;
        if width == 0 || !x.len().is_multiple_of(width * self.seq) {
            candle_core::bail!(
                "rope: {} values for {} positions of width {width}",
                x.len(),
                self.seq
            );
        }
        let mut y = vec![0f32; x.len()];
        let rows = x.len() / width;
        let chunk = width * rows_per_task(rows);
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .enumerate()
            .for_each(|(task, (ys, xs))| {
                let first = task * chunk / width;
                for (r, (yr, xr)) in ys
                    .chunks_exact_mut(width)
                    .zip(xs.chunks_exact(width))
                    .enumerate()
                {
                    let pos = (first + r) % self.seq;
                    let cos = &self.cos[pos * half..(pos + 1) * half];
                    let sin = &self.sin[pos * half..(pos + 1) * half];
                    for (yh, xh) in yr.chunks_exact_mut(2 * half).zip(xr.chunks_exact(2 * half)) {
                        let (x1, x2) = xh.split_at(half);
                        let (y1, y2) = yh.split_at_mut(half);
                        for i in 0..half {
                            let s = self.sign * sin[i];
                            y1[i] = x1[i] * cos[i] - x2[i] * s;
                            y2[i] = x2[i] * cos[i] + x1[i] * s;
                        }
                    }
                }
            });
        Ok(y)
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "lgreg-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = self.rotate(slice(s, l, "rope")?)?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !wants_grad(x) {
            return Ok(None);
        }
        let g = g.contiguous()?;
        let inverse = Rope {
            sign: -self.sign,
            ..self.clone()
        };
        let dx = inverse.rotate(host(&g)?.as_slice()?)?;
        Ok(Some(tensor(dx, x.shape().clone())?))
    }
}

/// Rotate `x [batch, seq, heads · head_dim]` by the tables `cos`, `sin` (`[seq, head_dim / 2]`),
/// f32 on the CPU.
pub(crate) fn rope(
    x: &Tensor,
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
) -> candle_core::Result<Tensor> {
    let seq = x.dim(1)?;
    let table = |t: &Tensor| -> candle_core::Result<Arc<Vec<f32>>> {
        Ok(Arc::new(t.flatten_all()?.to_vec1::<f32>()?))
    };
    x.contiguous()?.apply_op1(Rope {
        cos: table(cos)?,
        sin: table(sin)?,
        seq,
        heads,
        sign: 1.0,
    })
}
