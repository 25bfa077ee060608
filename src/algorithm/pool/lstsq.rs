//! Affine least squares `[X, 1]·M ≈ Y` by the normal equations, in f64: the Gram matrix
//! `[X, 1]ᵀ[X, 1]` and the cross term `[X, 1]ᵀY` come from candle's matmul, the solve is a
//! Cholesky factorisation with a small ridge, written here.
//!
//! The ridge is relative: `λ = ridge · mean(diag G)`, so one setting suits hidden states of any
//! scale, and keeps the system solvable when there are fewer rows than columns.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// An affine map `y = W x + b`, as a linear layer stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine {
    /// `[out, in]`, row-major.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
}

/// `[x, 1]` in f64, for `x [rows, n]`.
fn augmented(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F64)?;
    let ones = Tensor::ones((x.dim(0)?, 1), DType::F64, x.device())?;
    Ok(Tensor::cat(&[&x, &ones], 1)?)
}

/// The Gram matrix `[x, 1]ᵀ[x, 1]`, `(n + 1) × (n + 1)`, in f64.
pub fn gram(x: &Tensor) -> Result<Tensor> {
    let xa = augmented(x)?;
    Ok(xa.t()?.matmul(&xa)?)
}

/// The cross term `[x, 1]ᵀ y`, `(n + 1) × m`, in f64.
pub fn cross(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let xa = augmented(x)?;
    Ok(xa.t()?.matmul(&y.to_dtype(DType::F64)?)?)
}

fn singular(pivot: usize) -> Error {
    Error::Algorithm {
        algorithm: "pool".into(),
        reason: format!(
            "the stitch fit's normal equations are singular at column {pivot}: the calibration hidden states are rank deficient"
        ),
        fix: "raise the ridge (`--set ridge=1e-4`) or give more calibration data (`--set samples=...`)".into(),
    }
}

/// The lower Cholesky factor of `a + λI` (`n × n`, row-major), `λ = ridge · mean(diag a)`.
fn cholesky(a: &[f64], n: usize, ridge: f64) -> Result<Vec<f64>> {
    let mean_diag = (0..n).map(|k| a[k * n + k]).sum::<f64>() / n.max(1) as f64;
    let lambda = ridge * mean_diag.abs();
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let s = a[j * n + j] + lambda - l[j * n..j * n + j].iter().map(|v| v * v).sum::<f64>();
        if !(s > 0.0 && s.is_finite()) {
            return Err(singular(j));
        }
        let pivot = s.sqrt();
        l[j * n + j] = pivot;
        for i in j + 1..n {
            let (upper, lower) = l.split_at_mut(i * n);
            let dot: f64 = upper[j * n..j * n + j]
                .iter()
                .zip(&lower[..j])
                .map(|(p, q)| p * q)
                .sum();
            lower[j] = (a[i * n + j] - dot) / pivot;
        }
    }
    Ok(l)
}

/// `x -= alpha · y`, element-wise.
fn axpy(x: &mut [f64], alpha: f64, y: &[f64]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a -= alpha * b;
    }
}

/// Solve `(a + λI) M = rhs` for `M` (`n × m`, row-major) with the Cholesky factor of `a`.
pub fn solve(a: &[f64], n: usize, rhs: &[f64], m: usize, ridge: f64) -> Result<Vec<f64>> {
    let l = cholesky(a, n, ridge)?;
    let mut z = rhs.to_vec();
    // Forward: L Z = rhs, row by row.
    for r in 0..n {
        let (before, rest) = z.split_at_mut(r * m);
        let row = &mut rest[..m];
        for k in 0..r {
            axpy(row, l[r * n + k], &before[k * m..(k + 1) * m]);
        }
        let d = l[r * n + r];
        row.iter_mut().for_each(|v| *v /= d);
    }
    // Backward: Lᵀ M = Z, row by row from the bottom.
    for r in (0..n).rev() {
        let (head, after) = z.split_at_mut((r + 1) * m);
        let row = &mut head[r * m..];
        for k in r + 1..n {
            axpy(row, l[k * n + r], &after[(k - r - 1) * m..(k - r) * m]);
        }
        let d = l[r * n + r];
        row.iter_mut().for_each(|v| *v /= d);
    }
    Ok(z)
}

/// `(g + λI)⁻¹` of a Gram matrix `g` (f64, square), by Cholesky.
pub fn inverse(g: &Tensor, ridge: f64) -> Result<Tensor> {
    let n = g.dim(0)?;
    let values: Vec<f64> = g.flatten_all()?.to_vec1()?;
    let mut identity = vec![0.0f64; n * n];
    identity.iter_mut().step_by(n + 1).for_each(|v| *v = 1.0);
    let inv = solve(&values, n, &identity, n, ridge)?;
    Ok(Tensor::from_vec(inv, (n, n), g.device())?)
}

/// `W` and `b` from `scale · M` for a solution `M` (`(n + 1) × m`): `W = Mᵀ` without its last
/// column, `b` = the last row of `M`.
pub fn affine_of(solution: &Tensor, scale: f64) -> Result<Affine> {
    let (rows, m) = solution.dims2()?;
    let n = rows - 1;
    let scaled = (solution * scale)?.to_dtype(DType::F32)?;
    let weight = scaled
        .narrow(0, 0, n)?
        .t()?
        .contiguous()?
        .flatten_all()?
        .to_vec1()?;
    let bias = scaled.narrow(0, n, 1)?.flatten_all()?.to_vec1()?;
    Ok(Affine {
        weight,
        bias,
        inputs: n,
        outputs: m,
    })
}

/// Fit `y ≈ W x + b` on rows `x [rows, n]`, `y [rows, m]`.
pub fn fit_affine(x: &Tensor, y: &Tensor, ridge: f64) -> Result<Affine> {
    let solution = inverse(&gram(x)?, ridge)?.matmul(&cross(x, y)?)?;
    affine_of(&solution, 1.0)
}

/// The squared error `‖x Wᵀ + b − y‖²` of `map` on rows `(x, y)`, and `‖y‖²`.
pub fn squared_error(x: &Tensor, y: &Tensor, map: &Affine) -> Result<(f64, f64)> {
    let device = x.device();
    let w = Tensor::from_slice(&map.weight, (map.outputs, map.inputs), device)?;
    let b = Tensor::from_slice(&map.bias, map.outputs, device)?;
    let x = x.to_dtype(DType::F32)?;
    let y = y.to_dtype(DType::F32)?;
    let pred = x.matmul(&w.t()?)?.broadcast_add(&b)?;
    let err = (pred - &y)?.sqr()?.sum_all()?.to_dtype(DType::F64)?;
    let norm = y.sqr()?.sum_all()?.to_dtype(DType::F64)?;
    Ok((err.to_scalar()?, norm.to_scalar()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::init::Rng;
    use candle_core::Device;

    fn random(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
        (0..rows * cols).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn recovers_an_exact_affine_map() {
        let (rows, n, m) = (200, 12, 7);
        let mut rng = Rng::new(5);
        let xv = random(rows, n, &mut rng);
        let w = random(m, n, &mut rng);
        let b: Vec<f32> = (0..m).map(|o| o as f32 - 3.0).collect();
        let x = Tensor::from_slice(&xv, (rows, n), &Device::Cpu).unwrap();
        let wt = Tensor::from_slice(&w, (m, n), &Device::Cpu).unwrap();
        let bt = Tensor::from_slice(&b, m, &Device::Cpu).unwrap();
        let y = x
            .matmul(&wt.t().unwrap())
            .unwrap()
            .broadcast_add(&bt)
            .unwrap();
        let fit = fit_affine(&x, &y, 1e-12).unwrap();
        for (got, want) in fit.weight.iter().zip(&w) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
        for (got, want) in fit.bias.iter().zip(&b) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
        let (err, norm) = squared_error(&x, &y, &fit).unwrap();
        assert!(err / norm < 1e-9, "{err} / {norm}");
    }

    #[test]
    fn cholesky_solves_a_known_system_and_refuses_a_singular_one() {
        // [[4, 2], [2, 3]] · [1, 2]ᵀ = [8, 8]ᵀ
        let x = solve(&[4.0, 2.0, 2.0, 3.0], 2, &[8.0, 8.0], 1, 0.0).unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] - 2.0).abs() < 1e-12,
            "{x:?}"
        );
        let err = solve(&[1.0, 1.0, 1.0, 1.0], 2, &[1.0, 1.0], 1, 0.0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("singular"), "{err}");
        // The ridge makes the rank-deficient system solvable.
        assert!(solve(&[1.0, 1.0, 1.0, 1.0], 2, &[1.0, 1.0], 1, 1e-6).is_ok());
    }
}
