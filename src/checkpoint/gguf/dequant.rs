//! Dequantisation of ggml blocks to little-endian f32 bytes.
//!
//! Each routine walks whole blocks (`as_chunks`, so no per-element bounds checks), expands a
//! block into a small f32 array with exactly ggml's arithmetic (`d * q + m`, `d1 * q - m1`, ...)
//! and stores it. The results match ggml's reference dequantisers bit for bit.

use half::{bf16, f16};

use super::parse::GgmlType;

/// Dequantise `src` (whole blocks of `ty`) into little-endian f32 bytes, 4 per element.
///
/// Returns `None` when the type is not supported or `src` is not whole blocks; the parser
/// guarantees neither happens for tensors it accepted.
pub fn dequantize(ty: GgmlType, src: &[u8]) -> Option<Vec<u8>> {
    let (_, block_bytes) = ty.block()?;
    if !(src.len() as u64).is_multiple_of(block_bytes) {
        return None;
    }
    Some(match ty {
        GgmlType::F32 => src.to_vec(),
        GgmlType::F16 => blocks::<2, 1, 4>(src, |b, out| {
            out[0] = f16::from_le_bytes(*b).to_f32();
        }),
        GgmlType::BF16 => blocks::<2, 1, 4>(src, |b, out| {
            out[0] = bf16::from_le_bytes(*b).to_f32();
        }),
        GgmlType::Q4_0 => blocks::<18, 32, 128>(src, q4_0),
        GgmlType::Q4_1 => blocks::<20, 32, 128>(src, q4_1),
        GgmlType::Q8_0 => blocks::<34, 32, 128>(src, q8_0),
        GgmlType::Q4K => blocks::<144, 256, 1024>(src, q4_k),
        GgmlType::Q5K => blocks::<176, 256, 1024>(src, q5_k),
        GgmlType::Q6K => blocks::<210, 256, 1024>(src, q6_k),
        GgmlType::Unsupported(_) => return None,
    })
}

/// Run `f` over every block of `BB` bytes, appending its `BE` values as `BO = 4 * BE` bytes.
///
/// The output is filled by appending, never zeroed first: zeroing half a gigabyte of f32
/// costs as much as the dequantisation itself.
fn blocks<const BB: usize, const BE: usize, const BO: usize>(
    src: &[u8],
    f: impl Fn(&[u8; BB], &mut [f32; BE]),
) -> Vec<u8> {
    debug_assert_eq!(BO, 4 * BE);
    let (src, _) = src.as_chunks::<BB>();
    let mut out = Vec::with_capacity(src.len() * BO);
    let mut vals = [0f32; BE];
    let mut bytes = [0u8; BO];
    for block in src {
        f(block, &mut vals);
        for (o, v) in bytes.as_chunks_mut::<4>().0.iter_mut().zip(vals.iter()) {
            *o = v.to_le_bytes();
        }
        out.extend_from_slice(&bytes);
    }
    out
}

#[inline(always)]
fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn q4_0(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        out[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
        out[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8; 20], out: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        out[j] = (qs[j] & 0x0f) as f32 * d + m;
        out[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

fn q8_0(b: &[u8; 34], out: &mut [f32; 32]) {
    let d = half_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed 6-bit bytes of Q4_K/Q5_K.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn q4_k(b: &[u8; 144], out: &mut [f32; 256]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let y = &mut out[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0x0f) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn q5_k(b: &[u8; 176], out: &mut [f32; 256]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for chunk in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let u1 = 1u8 << (2 * chunk);
        let u2 = 2u8 << (2 * chunk);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let y = &mut out[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((q[l] & 0x0f) + h1) as f32 - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

fn q6_k(b: &[u8; 210], out: &mut [f32; 256]) {
    let all_ql = &b[0..128];
    let all_qh = &b[128..192];
    let all_sc = &b[192..208];
    let d = half_at(b, 208);
    for half in 0..2 {
        let ql = &all_ql[64 * half..64 * half + 64];
        let qh = &all_qh[32 * half..32 * half + 32];
        let sc = &all_sc[8 * half..8 * half + 8];
        let y = &mut out[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
