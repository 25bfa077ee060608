//! The matrix products inside attention, written for their sizes: one head's `seq × head_dim`
//! and `seq × seq` matrices (49 × 64 and 49 × 49 for a ViT-Tiny on 28 × 28 images). A general
//! gemm packs both operands and tiles the output for every call, which at these sizes costs as
//! much as the arithmetic; here each output row is a sum of rows of the right operand, kept in
//! registers across the whole inner dimension (`W` columns at a time), and the left operand is
//! read in place through its strides, so a transposed operand costs nothing.

use pulp::{Simd, WithSimd};

/// A matrix read in place: element `(i, p)` at `data[offset + i · row + p · col]`.
#[derive(Clone, Copy)]
pub(super) struct Strided<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub row: usize,
    pub col: usize,
}

/// A matrix of contiguous rows: row `p` starts at `data[offset + p · row]`.
#[derive(Clone, Copy)]
pub(super) struct Rows<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub row: usize,
}

/// `c = a · b`, or `c += a · b` with `accumulate`, for row-major `c [m, n]`, `a [m, k]` and
/// `b [k, n]` (`m` is `c.len() / n`).
pub(super) fn head_product(
    c: &mut [f32],
    n: usize,
    (a, k): (Strided<'_>, usize),
    b: Rows<'_>,
    accumulate: bool,
) {
    pulp::Arch::new().dispatch(Product {
        c,
        n,
        k,
        a,
        b,
        accumulate,
    });
}

/// `dst [cols, rows]` = the transpose of the `rows × cols` matrix `src`.
pub(super) fn transpose(src: Strided<'_>, rows: usize, cols: usize) -> Vec<f32> {
    let mut dst = vec![0f32; rows * cols];
    for (j, out) in dst.chunks_exact_mut(rows).enumerate() {
        for (i, v) in out.iter_mut().enumerate() {
            *v = src.data[src.offset + i * src.row + j * src.col];
        }
    }
    dst
}

struct Product<'a> {
    c: &'a mut [f32],
    n: usize,
    k: usize,
    a: Strided<'a>,
    b: Rows<'a>,
    accumulate: bool,
}

impl WithSimd for Product<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(mut self, _: S) {
        let mut col = 0;
        while col < self.n {
            col += match self.n - col {
                64.. => self.columns::<64>(col, col),
                32.. => self.columns::<32>(col, col),
                16.. => self.columns::<16>(col, col),
                8.. => self.columns::<8>(col, col),
                // The last few columns: the last eight, of which only the new ones are written.
                _ if self.n >= 8 => self.columns::<8>(self.n - 8, col),
                _ => self.columns::<1>(col, col),
            };
        }
    }
}

impl Product<'_> {
    /// Columns `start .. start + W` of every output row, of which those from `from` on are
    /// written; returns how many were.
    #[inline(always)]
    fn columns<const W: usize>(&mut self, start: usize, from: usize) -> usize {
        let (a, b, k) = (self.a, self.b, self.k);
        let skip = from - start;
        for (i, out) in self.c.chunks_exact_mut(self.n).enumerate() {
            let mut acc = [0f32; W];
            let at = a.offset + i * a.row;
            for p in 0..k {
                let x = a.data[at + p * a.col];
                let first = b.offset + p * b.row + start;
                let row = &b.data[first..first + W];
                for (s, y) in acc.iter_mut().zip(row) {
                    *s += x * y;
                }
            }
            let out = &mut out[from..start + W];
            if self.accumulate {
                for (o, s) in out.iter_mut().zip(&acc[skip..]) {
                    *o += s;
                }
            } else {
                out.copy_from_slice(&acc[skip..]);
            }
        }
        W - skip
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `a · b` by the definition, for `a` read through its strides.
    fn naive(a: Strided<'_>, b: Rows<'_>, (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| {
                        a.data[a.offset + i * a.row + p * a.col] * b.data[b.offset + p * b.row + j]
                    })
                    .sum();
            }
        }
        c
    }

    #[test]
    fn head_products_match_the_definition_at_every_column_block() {
        let values: Vec<f32> = (0..20_000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for (m, k, n) in [
            (49, 64, 49),
            (49, 49, 64),
            (1, 3, 1),
            (5, 7, 121),
            (3, 1, 9),
        ] {
            for transposed in [false, true] {
                let a = if transposed {
                    Strided {
                        data: &values,
                        offset: 3,
                        row: 1,
                        col: m + 2,
                    }
                } else {
                    Strided {
                        data: &values,
                        offset: 5,
                        row: k + 1,
                        col: 1,
                    }
                };
                let b = Rows {
                    data: &values,
                    offset: 11,
                    row: n + 3,
                };
                let want = naive(a, b, (m, k, n));
                let mut c = vec![1f32; m * n];
                head_product(&mut c, n, (a, k), b, true);
                for (got, want) in c.iter().zip(&want) {
                    assert!(
                        (got - 1.0 - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{m}x{k}x{n}"
                    );
                }
                head_product(&mut c, n, (a, k), b, false);
                for (got, want) in c.iter().zip(&want) {
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{m}x{k}x{n}"
                    );
                }
            }
        }
        let t = transpose(
            Strided {
                data: &values,
                offset: 2,
                row: 10,
                col: 1,
            },
            3,
            4,
        );
        assert_eq!(
            t[3 + 1],
            values[2 + 10 + 1],
            "row 1 of the transpose, column 1"
        );
    }
}
