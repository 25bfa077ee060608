//! Branch-free `exp`, `erfc` and the normal distribution function in f32, written so that the
//! compiler vectorises the element-wise loops that call them (the C library's `expf` and the
//! `libm` crate's `erff` are scalar calls the loops cannot vectorise through).
//!
//! `exp` is Cody–Waite range reduction with the degree-5 minimax polynomial of Cephes' `expf`
//! (S. L. Moshier, Cephes Math Library, `expf.c`): within 2 ulp over the normal range. Results
//! below the smallest normal f32 flush to zero, arguments above `ln(f32::MAX)` give infinity,
//! and NaN stays NaN.
//!
//! `erfc` is the Chebyshev fit of Numerical Recipes' `erfcc` (Press et al., *Numerical Recipes*,
//! 2nd ed., §6.2), fractional error below 1.2e-7 in exact arithmetic; in f32 the error grows
//! with `x²` in the far tail (the rounding of `x²` inside the exponential), to about 1.5e-6 at
//! `|x| = 4`; `Φ(x)` through it is within 4e-6 relative down to `x = −5.6` (where the previous
//! `1 + erf` form had already lost most of its digits to cancellation), and within 5e-5 out to
//! `x = −13`, where `Φ` reaches the smallest normal f32.

/// `ln(f32::MAX)`: larger arguments overflow.
const MAX_ARG: f32 = 88.722_84;
/// `ln` of the smallest normal f32: smaller arguments flush to zero.
const MIN_ARG: f32 = -87.336_55;
/// `1.5 · 2²³`: adding it rounds to an integer held in the low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;
/// `ln 2` in two parts, the first exact in few bits so that `n · LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` polynomial: `exp(r) ≈ 1 + r + r² · P(r)` on `|r| ≤ ln 2 / 2`.
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5, // Cephes' 5.0000001201e-1, which rounds to 0.5 in f32
];

/// `eˣ`.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    let clamped = x.clamp(MIN_ARG, MAX_ARG);
    let shifted = clamped * std::f32::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = EXP_P.iter().fold(0.0, |acc, &c| acc * r + c);
    let e = p * r * r + r + 1.0;
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
    let half = k >> 1;
    let y = e * pow2(half) * pow2(k - half);
    if x > MAX_ARG {
        f32::INFINITY
    } else if x < MIN_ARG {
        0.0
    } else {
        y
    }
}

/// `2ᵏ` for `-126 ≤ k ≤ 127`, from its exponent bits.
#[inline(always)]
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// Numerical Recipes' `erfcc` coefficients, constant term first.
const ERFC_C: [f32; 10] = [
    -1.265_512_2,
    1.000_023_7,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_204,
    1.488_515_9,
    -0.822_152_2,
    0.170_872_77,
];

/// The complementary error function `1 − erf(x)`.
#[inline(always)]
pub(super) fn erfc(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = ERFC_C.iter().rev().fold(0.0, |acc, &c| acc * t + c);
    let tail = t * exp(poly - a * a);
    if x < 0.0 { 2.0 - tail } else { tail }
}

/// The standard normal distribution function `Φ(x) = erfc(−x / √2) / 2`.
#[inline(always)]
pub(super) fn normal_cdf(x: f32) -> f32 {
    0.5 * erfc(-x * std::f32::consts::FRAC_1_SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest relative error of `f` against `want` over `n + 1` points of `[lo, hi]`,
    /// counting only reference values of at least `floor`.
    fn worst(f: fn(f32) -> f32, want: fn(f64) -> f64, (lo, hi): (f32, f32), floor: f64) -> f64 {
        let n = 200_000;
        (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .filter_map(|x| {
                let w = want(f64::from(x));
                (w.abs() >= floor).then(|| (f64::from(f(x)) - w).abs() / w.abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_normal_range() {
        let e = worst(exp, f64::exp, (MIN_ARG, MAX_ARG - 1e-3), 0.0);
        assert!(e <= 2.4e-7, "exp: relative error {e}");
    }

    #[test]
    fn exp_keeps_the_edges_zero_infinity_and_nan() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e4), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn erfc_and_normal_cdf_are_accurate() {
        let e = worst(erfc, libm::erfc, (-4.0, 4.0), 0.0);
        assert!(e <= 1.5e-6, "erfc on [-4, 4]: relative error {e}");
        let e = worst(erfc, libm::erfc, (4.0, 9.0), 1e-37);
        assert!(e <= 1e-5, "erfc on [4, 9]: relative error {e}");
        let cdf = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let e = worst(normal_cdf, cdf, (-5.6, 8.0), 0.0);
        assert!(e <= 4e-6, "normal_cdf on [-5.6, 8]: relative error {e}");
        let e = worst(normal_cdf, cdf, (-13.0, -5.6), 1e-37);
        assert!(e <= 5e-5, "normal_cdf on [-13, -5.6]: relative error {e}");
        assert!(erfc(f32::NAN).is_nan());
        assert_eq!(normal_cdf(f32::INFINITY), 1.0);
        assert_eq!(normal_cdf(f32::NEG_INFINITY), 0.0);
    }
}
