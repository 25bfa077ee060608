//! AdamW's update in place, on all cores: the two moments, then the parameter, each one pass
//! over memory with no allocation; the gradient-clipping scale is folded into the moment pass.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor};
use rayon::prelude::*;

use super::elementwise::ELEMENTS_PER_TASK;
use super::{host, slice};

/// The constants of one AdamW step for one tensor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamWStep {
    /// Learning rate.
    pub lr: f32,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// Decoupled weight decay of this tensor.
    pub decay: f32,
    /// `1 − β₁ᵗ`.
    pub bias1: f32,
    /// `1 − β₂ᵗ`.
    pub bias2: f32,
    /// The factor applied to the gradient first (gradient clipping).
    pub grad_scale: f32,
}

/// The mutable elements of a contiguous f32 storage.
fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let (Some((a, b)), CpuStorage::F32(v)) = (l.contiguous_offsets(), s) else {
        candle_core::bail!("adamw: the state must be contiguous f32 on the CPU");
    };
    Ok(&mut v[a..b])
}

/// `m ← β·m + (1 − β)·(s·g)`, or with `(s·g)²` for the second moment.
struct Moment {
    beta: f32,
    scale: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "lgreg-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        ms: &mut CpuStorage,
        ml: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let m = slice_mut(ms, ml)?;
        let g = slice(gs, gl, "adamw")?;
        if m.len() != g.len() {
            candle_core::bail!(
                "adamw: moment of {} values, gradient of {}",
                m.len(),
                g.len()
            );
        }
        let (beta, scale, square) = (self.beta, self.scale, self.square);
        m.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(g.par_chunks(ELEMENTS_PER_TASK))
            .for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    let g = g * scale;
                    let g = if square { g * g } else { g };
                    *m = beta * *m + (1.0 - beta) * g;
                }
            });
        Ok(())
    }
}

/// `p ← p·(1 − lr·decay) − lr · m̂ / (sqrt(v̂) + ε)`.
struct Update(AdamWStep);

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "lgreg-adamw-update"
    }

    fn cpu_fwd(
        &self,
        ps: &mut CpuStorage,
        pl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let p = slice_mut(ps, pl)?;
        let (m, v) = (slice(ms, ml, "adamw")?, slice(vs, vl, "adamw")?);
        let c = self.0;
        let keep = 1.0 - c.lr * c.decay;
        p.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(
                m.par_chunks(ELEMENTS_PER_TASK)
                    .zip(v.par_chunks(ELEMENTS_PER_TASK)),
            )
            .for_each(|(p, (m, v))| {
                for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                    let update = (m / c.bias1) / ((v / c.bias2).sqrt() + c.eps);
                    *p = *p * keep - c.lr * update;
                }
            });
        Ok(())
    }
}

/// One AdamW step on `param` with moments `m`, `v` and gradient `g`, all contiguous f32 CPU
/// tensors of one shape, updated in place.
pub(crate) fn adamw_step(
    param: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    c: &AdamWStep,
) -> candle_core::Result<()> {
    let g = g.contiguous()?;
    m.inplace_op2(
        &g,
        &Moment {
            beta: c.beta1,
            scale: c.grad_scale,
            square: false,
        },
    )?;
    v.inplace_op2(
        &g,
        &Moment {
            beta: c.beta2,
            scale: c.grad_scale,
            square: true,
        },
    )?;
    param.inplace_op3(m, v, &Update(*c))
}

/// `Σ x²` of an f32 CPU tensor, in f64, on all cores.
pub(crate) fn sum_of_squares(t: &Tensor) -> candle_core::Result<f64> {
    let t = t.contiguous()?;
    let h = host(&t)?;
    Ok(h.as_slice()?
        .par_chunks(ELEMENTS_PER_TASK)
        .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
        .sum())
}
