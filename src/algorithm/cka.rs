//! Linear CKA (centred kernel alignment, Kornblith et al. 2019) between two representations of
//! the same `n` inputs, each `[n, features]`:
//! `CKA(X, Y) = ⟨K, L⟩ / (‖K‖ ‖L‖)` with `K = X̄ X̄ᵀ`, `L = Ȳ Ȳᵀ` and `X̄`, `Ȳ` centred per
//! feature. It is 1 for identical representations and invariant to orthogonal transforms,
//! isotropic scaling and translation. Work is in f64; the `n × n` Gram form keeps the cost at
//! `n²·features` per representation, whatever the widths.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// The centred Gram matrix of one representation, ready to compare.
#[derive(Debug, Clone)]
pub struct Gram {
    values: Vec<f64>,
    norm: f64,
}

impl Gram {
    /// The centred Gram matrix of `rows [n, features]`.
    pub fn new(rows: &Tensor) -> Result<Gram> {
        let x = rows.to_dtype(DType::F64)?;
        let (n, _) = x.dims2()?;
        if n < 2 {
            return Err(Error::InvalidValue {
                what: "CKA representation".into(),
                value: format!("{n} row(s)"),
                reason: "CKA needs at least two inputs".into(),
            });
        }
        let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
        let gram = centred.matmul(&centred.t()?)?;
        let values: Vec<f64> = gram.flatten_all()?.to_vec1()?;
        let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
        Ok(Gram { values, norm })
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        (self.values.len() as f64).sqrt().round() as usize
    }

    /// Whether it holds no inputs.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// `rows [n, features]` with every row scaled to unit root-mean-square (zero rows stay zero):
/// the token states as a pre-norm layer reads them, without the few tokens of huge norm
/// (attention sinks) that would otherwise dominate the Gram matrix.
pub fn unit_rms_rows(rows: &Tensor) -> Result<Tensor> {
    let x = rows.to_dtype(DType::F64)?;
    let rms = x.sqr()?.mean_keepdim(1)?.sqrt()?.clamp(1e-30, f64::MAX)?;
    Ok(x.broadcast_div(&rms)?)
}

/// Linear CKA between two representations of the same inputs (0 when either is constant).
pub fn cka(a: &Gram, b: &Gram) -> Result<f64> {
    if a.values.len() != b.values.len() {
        return Err(Error::InvalidValue {
            what: "CKA representations".into(),
            value: format!("{} and {} inputs", a.len(), b.len()),
            reason: "both must describe the same inputs".into(),
        });
    }
    if a.norm == 0.0 || b.norm == 0.0 {
        return Ok(0.0);
    }
    let dot: f64 = a.values.iter().zip(&b.values).map(|(x, y)| x * y).sum();
    Ok(dot / (a.norm * b.norm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::init::Rng;
    use candle_core::Device;

    fn random(n: usize, d: usize, seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let v: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
        Tensor::from_vec(v, (n, d), &Device::Cpu).expect("tensor")
    }

    /// A Householder reflection `I − 2vvᵀ/‖v‖²`: orthogonal.
    fn orthogonal(d: usize, seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let v: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        let vv: f64 = v.iter().map(|x| x * x).sum();
        let q: Vec<f64> = (0..d * d)
            .map(|k| {
                let (i, j) = (k / d, k % d);
                f64::from(u8::from(i == j)) - 2.0 * v[i] * v[j] / vv
            })
            .collect();
        Tensor::from_vec(q, (d, d), &Device::Cpu).expect("tensor")
    }

    fn cka_of(x: &Tensor, y: &Tensor) -> f64 {
        cka(&Gram::new(x).expect("gram"), &Gram::new(y).expect("gram")).expect("cka")
    }

    #[test]
    fn cka_of_a_representation_with_itself_is_one() {
        let x = random(40, 7, 1);
        assert!((cka_of(&x, &x) - 1.0).abs() < 1e-12);
        assert_eq!(Gram::new(&x).expect("gram").len(), 40);
    }

    #[test]
    fn cka_ignores_rotation_scale_and_shift() {
        let x = random(40, 7, 2);
        let y = ((x.matmul(&orthogonal(7, 3)).expect("matmul") * 3.5).expect("scale") + 2.0)
            .expect("shift");
        assert!((cka_of(&x, &y) - 1.0).abs() < 1e-10, "{}", cka_of(&x, &y));
        // Widths may differ: a padded copy is the same representation.
        let wide = Tensor::cat(&[&x, &x.zeros_like().expect("zeros")], 1).expect("cat");
        assert!((cka_of(&x, &wide) - 1.0).abs() < 1e-10);
    }

    #[test]
    fn unrelated_representations_score_low() {
        let (x, z) = (random(200, 5, 4), random(200, 5, 5));
        let c = cka_of(&x, &z);
        assert!((0.0..0.3).contains(&c), "{c}");
        // Anisotropic scaling is not an invariance: CKA drops below 1.
        let scale = Tensor::from_vec(vec![10.0f64, 1.0, 1.0, 1.0, 0.1], (1, 5), &Device::Cpu)
            .expect("tensor");
        let s = cka_of(&x, &x.broadcast_mul(&scale).expect("mul"));
        assert!(s < 0.99 && s > 0.0, "{s}");
        let unit = unit_rms_rows(&(&x * 100.0).expect("scale")).expect("rms");
        let rms: Vec<f64> = unit
            .sqr()
            .and_then(|u| u.mean(1))
            .expect("rms")
            .to_vec1()
            .expect("vec");
        assert!(rms.iter().all(|r| (r - 1.0).abs() < 1e-12), "{rms:?}");
        let short = random(10, 5, 6);
        let err = cka(
            &Gram::new(&x).expect("gram"),
            &Gram::new(&short).expect("gram"),
        );
        assert!(err.is_err());
    }
}
