//! Casting tensor bytes between the floating-point dtypes (f64, f32, f16, bf16).
//!
//! Conversions go through f32 and round to nearest-even, as PyTorch and numpy do.

use std::borrow::Cow;

use half::{bf16, f16};
use rayon::prelude::*;

use super::DType;
use crate::error::{Error, Result};

/// Cast the little-endian bytes of tensor `name` from `from` to `to`.
///
/// Non-float tensors are only "cast" to their own dtype. Returns the input unchanged when the
/// dtypes agree.
pub fn cast_bytes<'a>(
    name: &str,
    from: DType,
    to: DType,
    bytes: &'a [u8],
) -> Result<Cow<'a, [u8]>> {
    if from == to {
        return Ok(Cow::Borrowed(bytes));
    }
    if !from.is_float() || !to.is_float() {
        return Err(Error::UnsupportedCast {
            name: name.to_string(),
            dtype: from.to_string(),
            target: to.to_string(),
        });
    }
    let n = bytes.len() / from.size();
    let mut out = vec![0u8; n * to.size()];
    let input = bytes[..n * from.size()].par_chunks(CAST_BLOCK * from.size());
    out.par_chunks_mut(CAST_BLOCK * to.size())
        .zip(input)
        .for_each(|(out, input)| {
            let mut values = [0f32; CAST_BLOCK];
            let values = &mut values[..input.len() / from.size()];
            decode_f32(from, input, values);
            encode_f32(to, values, out);
        });
    Ok(Cow::Owned(out))
}

/// Decode the little-endian float bytes of tensor `name` (of `dtype`) into `out` as f32,
/// replacing its contents, block by block on every core.
pub fn decode_into_f32(name: &str, dtype: DType, bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
    if !dtype.is_float() {
        return Err(Error::UnsupportedCast {
            name: name.to_string(),
            dtype: dtype.to_string(),
            target: DType::F32.to_string(),
        });
    }
    out.clear();
    out.resize(bytes.len() / dtype.size(), 0.0);
    out.par_chunks_mut(CAST_BLOCK)
        .zip(bytes.par_chunks(CAST_BLOCK * dtype.size()))
        .for_each(|(values, input)| decode_f32(dtype, input, values));
    Ok(())
}

/// Elements cast per block: each block goes through an f32 buffer on the stack, and blocks
/// run in parallel.
const CAST_BLOCK: usize = 4096;

/// Decode little-endian float bytes of `dtype` into `values` (as many as it holds). Every
/// f16, bf16 and f32 value is exact in f32; an f64 rounds to the nearest f32, as it always
/// did on its way to a narrower dtype.
fn decode_f32(dtype: DType, bytes: &[u8], values: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (v, b) in values.iter_mut().zip(bytes.as_chunks::<4>().0) {
                *v = f32::from_le_bytes(*b);
            }
        }
        DType::F16 => {
            for (v, b) in values.iter_mut().zip(bytes.as_chunks::<2>().0) {
                *v = f16::from_le_bytes(*b).to_f32();
            }
        }
        DType::BF16 => {
            for (v, b) in values.iter_mut().zip(bytes.as_chunks::<2>().0) {
                *v = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16);
            }
        }
        DType::F64 => {
            for (v, b) in values.iter_mut().zip(bytes.as_chunks::<8>().0) {
                *v = f64::from_le_bytes(*b) as f32;
            }
        }
        _ => unreachable!("decode_f32 is only called for float dtypes"),
    }
}

/// Encode `values` as little-endian bytes of `dtype` into `out`, rounding to nearest-even as
/// torch does when it casts an f32 tensor.
fn encode_f32(dtype: DType, values: &[f32], out: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for (b, v) in out.as_chunks_mut::<4>().0.iter_mut().zip(values) {
                *b = v.to_le_bytes();
            }
        }
        DType::F16 => {
            for (b, v) in out.as_chunks_mut::<2>().0.iter_mut().zip(values) {
                *b = f16::from_f32(*v).to_le_bytes();
            }
        }
        DType::BF16 => {
            for (b, v) in out.as_chunks_mut::<2>().0.iter_mut().zip(values) {
                *b = bf16::from_f32(*v).to_le_bytes();
            }
        }
        DType::F64 => {
            for (b, v) in out.as_chunks_mut::<8>().0.iter_mut().zip(values) {
                *b = f64::from(*v).to_le_bytes();
            }
        }
        _ => unreachable!("encode_f32 is only called for float dtypes"),
    }
}

/// Little-endian f32 bytes seen as f32 values without a copy, when they start at an f32
/// boundary (as the tensors of a memory-mapped safetensors file do) and the machine is
/// little-endian; `None` otherwise.
pub fn f32_view(bytes: &[u8]) -> Option<&[f32]> {
    if cfg!(target_endian = "little") {
        bytemuck::try_cast_slice(bytes).ok()
    } else {
        None
    }
}

/// f32 values encoded as little-endian bytes.
pub fn f32_le_bytes(values: &[f32]) -> Vec<u8> {
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice(values).to_vec()
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// Little-endian f32 bytes decoded into a new vector (a trailing partial value is dropped).
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    let (values, _) = bytes.as_chunks::<4>();
    values.iter().map(|b| f32::from_le_bytes(*b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn same_dtype_borrows() {
        let b = f32_bytes(&[1.0, 2.0]);
        assert!(matches!(
            cast_bytes("t", DType::F32, DType::F32, &b).unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn f32_to_bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies exactly between two bf16 values; ties go to even (1.0).
        let b = f32_bytes(&[1.0 + 1.0 / 256.0, 3.0]);
        let out = cast_bytes("t", DType::F32, DType::BF16, &b).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(bf16::from_le_bytes([out[0], out[1]]).to_f32(), 1.0);
        assert_eq!(bf16::from_le_bytes([out[2], out[3]]).to_f32(), 3.0);
    }

    #[test]
    fn f32_bytes_are_viewed_in_place_only_at_an_f32_boundary() {
        let stored = vec![1.5f32, -2.0, 3.25, 0.5];
        let bytes: &[u8] = bytemuck::cast_slice(&stored);
        if cfg!(target_endian = "little") {
            assert_eq!(f32_view(bytes), Some(&stored[..]));
            assert_eq!(f32_values(bytes), stored);
        }
        assert!(f32_view(&bytes[1..13]).is_none());
        assert_eq!(f32_values(&f32_bytes(&stored)), stored);
    }

    #[test]
    fn integer_cast_is_refused() {
        let err = cast_bytes("ids", DType::I64, DType::F16, &[0; 8]).unwrap_err();
        assert!(err.to_string().contains("`ids`"), "{err}");
    }
}
