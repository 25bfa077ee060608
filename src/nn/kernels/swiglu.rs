//! SwiGLU's gate, `silu(a) · b`, in one pass; the backward pass gives
//! `db = g · silu(a)` and `da = g · b · σ(a) · (1 + a · (1 − σ(a)))`.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::elementwise::Binary;
use super::fastmath::exp;
use super::{host, slice, tensor, wants_grad, zip_map_par};

struct SwiGlu;

#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp(-a))
}

/// Declares an element function of `(a, b)` for the [`super::elementwise`] loops.
macro_rules! binary {
    ($(#[$doc:meta])* $name:ident, |$a:ident, $b:ident| $body:expr) => {
        $(#[$doc])*
        struct $name;
        impl Binary for $name {
            #[inline(always)]
            fn apply(&self, $a: f32, $b: f32) -> f32 {
                $body
            }
        }
    };
}

binary!(
    /// `silu(a) · b`.
    Value, |a, b| a * sigmoid(a) * b
);
binary!(
    /// `g · b`.
    Product, |g, b| g * b
);
binary!(
    /// The gate's gradient from `g · b` and the gate `a`.
    GateGrad, |gb, a| {
        let s = sigmoid(a);
        gb * s * (1.0 + a * (1.0 - s))
    }
);
binary!(
    /// The up projection's gradient `g · silu(a)`.
    UpGrad, |g, a| g * a * sigmoid(a)
);

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "lgreg-swiglu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (gate, up) = (slice(gs, gl, "swiglu")?, slice(us, ul, "swiglu")?);
        if gate.len() != up.len() {
            candle_core::bail!("swiglu: gate {:?}, up {:?}", gl.shape(), ul.shape());
        }
        let y = zip_map_par(gate, up, Value);
        Ok((CpuStorage::F32(y), gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (ah, bh, gh) = (host(gate)?, host(up)?, host(&g)?);
        let (a, b, gv) = (ah.as_slice()?, bh.as_slice()?, gh.as_slice()?);
        let dgate = if wants_grad(gate) {
            let gb = zip_map_par(gv, b, Product);
            let d = zip_map_par(&gb, a, GateGrad);
            Some(tensor(d, gate.shape().clone())?)
        } else {
            None
        };
        let dup = if wants_grad(up) {
            let d = zip_map_par(gv, a, UpGrad);
            Some(tensor(d, up.shape().clone())?)
        } else {
            None
        };
        Ok((dgate, dup))
    }
}

/// `silu(gate) · up`, f32 on the CPU.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}
