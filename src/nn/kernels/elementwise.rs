//! The element-wise loops every kernel shares, vectorised at the widest SIMD level this CPU
//! offers. The default x86-64 target allows only SSE2; each loop body here is a `pulp`
//! [`WithSimd`] operation, which `pulp` inlines into a copy compiled for AVX2 with FMA when the
//! CPU has them (detected at run time, dispatched without `unsafe` on our side). A loop passed
//! as a closure would stay an SSE2 function call, so each loop has its own small type, and the
//! element functions are [`Unary`] and [`Binary`] implementations whose `#[inline(always)]`
//! methods end up inside the vectorised loop (a closure or `fn` item would be called through
//! its `Fn` shim, element by element).

use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::fastmath;

/// Elements per parallel task of an element-wise kernel.
pub(super) const ELEMENTS_PER_TASK: usize = 1 << 14;

/// An element function of one argument. Implementations mark `apply` `#[inline(always)]`.
pub(super) trait Unary: Sync {
    fn apply(&self, x: f32) -> f32;
}

/// An element function of two arguments. Implementations mark `apply` `#[inline(always)]`.
pub(super) trait Binary: Sync {
    fn apply(&self, a: f32, b: f32) -> f32;
}

/// Run `op` at the widest SIMD level available.
#[inline(always)]
fn dispatch<Op: WithSimd>(op: Op) -> Op::Output {
    pulp::Arch::new().dispatch(op)
}

/// `out[i] = f(x[i])`.
struct Map<'a, F> {
    out: &'a mut [f32],
    x: &'a [f32],
    f: &'a F,
}

impl<F: Unary> WithSimd for Map<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for (o, &x) in self.out.iter_mut().zip(self.x) {
            *o = self.f.apply(x);
        }
    }
}

/// `out[i] = f(a[i], b[i])`.
struct ZipMap<'a, F> {
    out: &'a mut [f32],
    a: &'a [f32],
    b: &'a [f32],
    f: &'a F,
}

impl<F: Binary> WithSimd for ZipMap<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for ((o, &a), &b) in self.out.iter_mut().zip(self.a).zip(self.b) {
            *o = self.f.apply(a, b);
        }
    }
}

/// The sum of a slice in eight interleaved lanes.
struct SumLanes<'a>(&'a [f32]);

impl WithSimd for SumLanes<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> f32 {
        let mut lanes = [0f32; 8];
        let chunks = self.0.chunks_exact(8);
        let rest: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += v;
            }
        }
        lanes.iter().sum::<f32>() + rest
    }
}

/// `x[i] = exp(x[i] − shift)`.
struct ExpShifted<'a> {
    x: &'a mut [f32],
    shift: f32,
}

impl WithSimd for ExpShifted<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for v in self.x.iter_mut() {
            *v = fastmath::exp(*v - self.shift);
        }
    }
}

/// `Σ exp(x[i] − shift)` in eight lanes, without storing the exponentials.
struct SumExpShifted<'a> {
    x: &'a [f32],
    shift: f32,
}

impl WithSimd for SumExpShifted<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> f32 {
        let mut lanes = [0f32; 8];
        let chunks = self.x.chunks_exact(8);
        let rest: f32 = chunks
            .remainder()
            .iter()
            .map(|v| fastmath::exp(v - self.shift))
            .sum();
        for c in chunks {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += fastmath::exp(v - self.shift);
            }
        }
        lanes.iter().sum::<f32>() + rest
    }
}

/// `Σ exp(a[i]) · (a[i] − b[i])` in eight lanes: the KL divergence of two log-distributions.
struct KlTerms<'a> {
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for KlTerms<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> f32 {
        let term = |a: f32, b: f32| fastmath::exp(a) * (a - b);
        let mut lanes = [0f32; 8];
        let (a8, b8) = (self.a.chunks_exact(8), self.b.chunks_exact(8));
        let rest: f32 = a8
            .remainder()
            .iter()
            .zip(b8.remainder())
            .map(|(&a, &b)| term(a, b))
            .sum();
        for (ca, cb) in a8.zip(b8) {
            for ((l, &a), &b) in lanes.iter_mut().zip(ca).zip(cb) {
                *l += term(a, b);
            }
        }
        lanes.iter().sum::<f32>() + rest
    }
}

/// `Σ exp(x − shift)` over `x`.
pub(super) fn sum_exp_shifted(x: &[f32], shift: f32) -> f32 {
    dispatch(SumExpShifted { x, shift })
}

/// The logsumexp of `x`: its maximum plus the log of the shifted exponentials' sum.
pub(super) fn logsumexp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + sum_exp_shifted(x, max).ln()
}

/// `Σ exp(a) · (a − b)` over log-probabilities `a` and `b` of equal length.
pub(super) fn kl_terms(a: &[f32], b: &[f32]) -> f32 {
    dispatch(KlTerms { a, b })
}

/// `f` of every element of `x`, on all cores.
pub(super) fn map_par(x: &[f32], f: impl Unary) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(x.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(out, x)| dispatch(Map { out, x, f: &f }));
    out
}

/// `f` of every pair of elements of `a` and `b` (of equal length), on all cores.
pub(super) fn zip_map_par(a: &[f32], b: &[f32], f: impl Binary) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(
            a.par_chunks(ELEMENTS_PER_TASK)
                .zip(b.par_chunks(ELEMENTS_PER_TASK)),
        )
        .for_each(|(out, (a, b))| dispatch(ZipMap { out, a, b, f: &f }));
    out
}

/// The sum of `x` in eight interleaved lanes, an order the compiler can vectorise.
pub(super) fn sum_lanes(x: &[f32]) -> f32 {
    dispatch(SumLanes(x))
}

/// `x ← exp(x − shift)` for every element.
pub(super) fn exp_shifted_in_place(x: &mut [f32], shift: f32) {
    dispatch(ExpShifted { x, shift });
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Affine;
    impl Unary for Affine {
        #[inline(always)]
        fn apply(&self, x: f32) -> f32 {
            x * 0.5 + 1.0
        }
    }

    struct Times;
    impl Binary for Times {
        #[inline(always)]
        fn apply(&self, a: f32, b: f32) -> f32 {
            a * b
        }
    }

    #[test]
    fn the_loops_compute_what_they_say() {
        let x: Vec<f32> = (0..40_000).map(|i| (i as f32 * 0.001).sin()).collect();
        let y: Vec<f32> = x.iter().map(|v| v * 0.5 + 1.0).collect();
        assert_eq!(map_par(&x, Affine), y);
        let z: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a * b).collect();
        assert_eq!(zip_map_par(&x, &y, Times), z);
        let want: f64 = x.iter().map(|&v| f64::from(v)).sum();
        assert!((f64::from(sum_lanes(&x)) - want).abs() < 1e-3 * want.abs().max(1.0));
        let mut e = vec![0.0, 1.0, f32::NEG_INFINITY];
        exp_shifted_in_place(&mut e, 1.0);
        assert_eq!(e[2], 0.0);
        assert!((e[0] - (-1f32).exp()).abs() < 1e-7 && (e[1] - 1.0).abs() < 1e-7);
    }
}
