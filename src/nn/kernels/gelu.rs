//! GELU in its exact (erf) form, `x · Φ(x)`, with the closed-form derivative
//! `Φ(x) + x · φ(x)`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::elementwise::{Binary, Unary};
use super::fastmath::{exp, normal_cdf};
use super::{host, map_par, slice, tensor, wants_grad, zip_map_par};

/// `1 / sqrt(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

struct Gelu;

/// `x · Φ(x)`.
struct Value;

impl Unary for Value {
    #[inline(always)]
    fn apply(&self, x: f32) -> f32 {
        x * normal_cdf(x)
    }
}

/// `g · (Φ(x) + x · φ(x))` of `(x, g)`.
struct Grad;

impl Binary for Grad {
    #[inline(always)]
    fn apply(&self, x: f32, g: f32) -> f32 {
        g * (normal_cdf(x) + x * INV_SQRT_2PI * exp(-0.5 * x * x))
    }
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "lgreg-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "gelu")?;
        Ok((CpuStorage::F32(gelu_values(x)), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !wants_grad(x) {
            return Ok(None);
        }
        let g = g.contiguous()?;
        let (xh, gh) = (host(x)?, host(&g)?);
        let dx = gelu_grads(xh.as_slice()?, gh.as_slice()?);
        Ok(Some(tensor(dx, x.shape().clone())?))
    }
}

/// `gelu_erf` of every element of `x`, on all cores.
pub(super) fn gelu_values(x: &[f32]) -> Vec<f32> {
    map_par(x, Value)
}

/// The input gradient of `gelu_erf` at `x` for output gradient `g`, on all cores.
pub(super) fn gelu_grads(x: &[f32], g: &[f32]) -> Vec<f32> {
    zip_map_par(x, g, Grad)
}

/// `gelu_erf(x)`, f32 on the CPU.
pub(crate) fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}
