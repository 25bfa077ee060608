//! RandAugment as timm applies it in DeiT's recipe (`TRAIN.AA`, `--aa`), e.g.
//! `rand-m9-mstd0.5-inc1`: each image gets `n` operations drawn with replacement from the
//! fifteen of timm's RandAugment set, each applied with probability `p` at a magnitude drawn
//! from N(m, mstd) and clipped to [0, mmax]. `inc1` picks timm's "increasing" variants, whose
//! severity grows with the magnitude. Affine operations resample bicubically (DeiT's
//! interpolation) and fill uncovered pixels with the mean colour, 128.
//!
//! The operations run on 8-bit pixels, as PIL runs them: an image normalised as
//! `(p / 255 − 0.5) / 0.5` is turned back into bytes, transformed and normalised again. They
//! follow PIL's definitions (affine maps on pixel centres, PIL's own bicubic, `ImageOps`' look-up
//! tables, `ImageEnhance` blends in f32 with truncation), and each gives the bytes Pillow gives
//! (the integration test `randaugment_pil`, with `scripts/check_randaugment.py` as PIL's side).
//! One deliberate difference: Pillow 13 refuses to posterize to 0 bits, which timm asks for at
//! magnitude 10 of the increasing set; here that gives black, as older Pillow did.

use serde::Serialize;

use super::data::normalised;
use crate::nn::init::Rng;

/// A RandAugment policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RandAugment {
    /// Operations per image (`n`, default 2).
    pub layers: usize,
    /// Magnitude (`m`, default 10).
    pub magnitude: f64,
    /// Standard deviation of the magnitude per operation (`mstd`, default 0).
    pub magnitude_std: f64,
    /// Upper clip of the magnitude (`mmax`, default 10).
    pub magnitude_max: f64,
    /// timm's increasing-severity operation set (`inc1`).
    pub increasing: bool,
    /// Probability of applying each drawn operation (`p`, default 0.5).
    pub prob: f64,
}

impl RandAugment {
    /// Parse a timm policy string: `''` (or `none`) is none; `rand-…` with sections `m`, `n`,
    /// `mstd`, `mmax`, `inc` and `p`. Returns why a string cannot be applied.
    pub fn parse(policy: &str) -> std::result::Result<Option<Self>, String> {
        let policy = policy.trim();
        if policy.is_empty() || policy.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let mut parts = policy.split('-');
        if parts.next() != Some("rand") {
            return Err(format!(
                "'{policy}' is not a RandAugment policy: only timm's `rand-…` policies (such as \
                 rand-m9-mstd0.5-inc1) are implemented, not AutoAugment or AugMix"
            ));
        }
        let mut ra = RandAugment {
            layers: 2,
            magnitude: 10.0,
            magnitude_std: 0.0,
            magnitude_max: 10.0,
            increasing: false,
            prob: 0.5,
        };
        for section in parts {
            let split = section
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(section.len());
            let (name, value) = section.split_at(split);
            let number = value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0);
            let bad = || format!("section '{section}' of '{policy}' needs a non-negative number");
            match (name, number) {
                ("m", Some(v)) => ra.magnitude = v,
                ("n", Some(v)) if v.fract() == 0.0 => ra.layers = v as usize,
                ("mstd", Some(v)) => ra.magnitude_std = v,
                ("mmax", Some(v)) => ra.magnitude_max = v,
                ("inc", Some(v)) => ra.increasing = v != 0.0,
                ("p", Some(v)) if v <= 1.0 => ra.prob = v,
                ("m" | "n" | "mstd" | "mmax" | "inc" | "p", _) => return Err(bad()),
                ("w", _) => {
                    return Err(format!(
                        "section '{section}' of '{policy}': weighted operation choice is not \
                         implemented; drop the section to draw operations uniformly"
                    ));
                }
                _ => {
                    return Err(format!(
                        "unknown section '{section}' in '{policy}' (known: m, n, mstd, mmax, inc, p)"
                    ));
                }
            }
        }
        Ok(Some(ra))
    }

    /// Augment every image of a normalised batch `[n, c, h, w]` in place.
    pub fn apply(&self, pixels: &mut [f32], dims: (usize, usize, usize, usize), rng: &mut Rng) {
        each_as_bytes(pixels, dims, |img| {
            for _ in 0..self.layers {
                let op = OPS[rng.below(OPS.len())];
                if self.prob < 1.0 && rng.uniform() > self.prob {
                    continue;
                }
                let mut m = self.magnitude;
                if self.magnitude_std > 0.0 {
                    m += self.magnitude_std * rng.normal();
                }
                let level = m.clamp(0.0, self.magnitude_max) / 10.0;
                self.run(op, level, img, rng);
            }
        });
    }

    /// Apply `op` at `level` (magnitude / 10), drawing its sign where it has one.
    fn run(&self, op: Op, level: f64, img: &mut Image, rng: &mut Rng) {
        let arg = self.argument(op, level, rng);
        perform(op, arg, img);
    }

    /// The argument timm's level function gives `op` at `level`: degrees, bits, threshold,
    /// addend, enhancement factor, shear or translation fraction.
    fn argument(&self, op: Op, level: f64, rng: &mut Rng) -> f64 {
        let mut signed = |v: f64| if rng.uniform() > 0.5 { -v } else { v };
        let quarter = f64::from((level * 4.0) as u32);
        let threshold = f64::from((level * 256.0) as u32);
        match op {
            Op::AutoContrast | Op::Equalize | Op::Invert => 0.0,
            Op::Rotate => signed(level * 30.0),
            Op::Posterize if self.increasing => 4.0 - quarter,
            Op::Posterize => quarter,
            Op::Solarize if self.increasing => 256.0 - threshold,
            Op::Solarize => threshold,
            Op::SolarizeAdd => f64::from((level * 110.0) as u32),
            Op::Color | Op::Contrast | Op::Brightness | Op::Sharpness if self.increasing => {
                (1.0 + signed(level * 0.9)).max(0.1)
            }
            Op::Color | Op::Contrast | Op::Brightness | Op::Sharpness => level * 1.8 + 0.1,
            Op::ShearX | Op::ShearY => signed(level * 0.3),
            Op::TranslateX | Op::TranslateY => signed(level * 0.45),
        }
    }
}

/// Apply one operation by timm's name (`Rotate`, `Equalize`, `TranslateXRel`, …) with the
/// argument its function takes (degrees, bits, threshold, addend, factor, shear, or translation
/// as a fraction of the size) to 8-bit channel planes `[c, h, w]`. The hook through which each
/// operation is checked against PIL (`scripts/check_randaugment.py`).
pub fn apply_named(
    name: &str,
    arg: f64,
    bytes: &mut [u8],
    (c, h, w): (usize, usize, usize),
) -> std::result::Result<(), String> {
    let Some(op) = OPS.iter().copied().find(|op| op.name() == name) else {
        let names: Vec<&str> = OPS.iter().map(|op| op.name()).collect();
        return Err(format!(
            "unknown operation '{name}' (known: {})",
            names.join(", ")
        ));
    };
    if bytes.len() != c * h * w {
        return Err(format!("{} bytes for a {c}×{h}×{w} image", bytes.len()));
    }
    let mut img = Image {
        c,
        h,
        w,
        data: bytes.to_vec(),
    };
    perform(op, arg, &mut img);
    bytes.copy_from_slice(&img.data);
    Ok(())
}

/// Run `f` on every image of a normalised batch `[n, c, h, w]` as 8-bit planes, and write the
/// result back normalised.
pub(super) fn each_as_bytes(
    pixels: &mut [f32],
    (n, c, h, w): (usize, usize, usize, usize),
    mut f: impl FnMut(&mut Image),
) {
    let per = c * h * w;
    for values in pixels.chunks_exact_mut(per.max(1)).take(n) {
        let mut img = Image {
            c,
            h,
            w,
            data: values.iter().map(|&v| to_byte(v)).collect(),
        };
        f(&mut img);
        for (v, &b) in values.iter_mut().zip(&img.data) {
            *v = normalised(f32::from(b) / 255.0);
        }
    }
}

/// Apply `op` with its argument.
pub(super) fn perform(op: Op, arg: f64, img: &mut Image) {
    match op {
        Op::AutoContrast => img.per_channel(auto_contrast_lut),
        Op::Equalize => img.per_channel(equalize_lut),
        Op::Invert => img.map(|p| 255 - p),
        Op::Rotate => img.rotate(arg),
        Op::Posterize => img.posterize(arg as u32),
        Op::Solarize => {
            let t = arg as u32;
            img.map(|p| if u32::from(p) < t { p } else { 255 - p });
        }
        Op::SolarizeAdd => {
            let add = arg as u32;
            img.map(|p| {
                if p < 128 {
                    (u32::from(p) + add).min(255) as u8
                } else {
                    p
                }
            });
        }
        Op::Color => {
            let grey = img.luma();
            img.blend_with(|_, k| grey[k], arg);
        }
        Op::Contrast => {
            let luma = img.luma();
            let mean = luma.iter().map(|&v| f64::from(v)).sum::<f64>() / luma.len().max(1) as f64;
            let mean = (mean + 0.5) as u8;
            img.blend_with(|_, _| mean, arg);
        }
        Op::Brightness => img.blend_with(|_, _| 0, arg),
        Op::Sharpness => {
            let smooth = img.smoothed();
            let plane = img.h * img.w;
            img.blend_with(|ch, k| smooth[ch * plane + k], arg);
        }
        Op::ShearX => img.affine([1.0, arg, 0.0, 0.0, 1.0, 0.0]),
        Op::ShearY => img.affine([1.0, 0.0, 0.0, arg, 1.0, 0.0]),
        Op::TranslateX => {
            let px = arg * img.w as f64;
            img.affine([1.0, 0.0, px, 0.0, 1.0, 0.0]);
        }
        Op::TranslateY => {
            let px = arg * img.h as f64;
            img.affine([1.0, 0.0, 0.0, 0.0, 1.0, px]);
        }
    }
}

/// The operations, in timm's order (`_RAND_TRANSFORMS` / `_RAND_INCREASING_TRANSFORMS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Op {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
}

impl Op {
    /// timm's name of the operation (the increasing variants share the plain names here).
    fn name(self) -> &'static str {
        match self {
            Op::AutoContrast => "AutoContrast",
            Op::Equalize => "Equalize",
            Op::Invert => "Invert",
            Op::Rotate => "Rotate",
            Op::Posterize => "Posterize",
            Op::Solarize => "Solarize",
            Op::SolarizeAdd => "SolarizeAdd",
            Op::Color => "Color",
            Op::Contrast => "Contrast",
            Op::Brightness => "Brightness",
            Op::Sharpness => "Sharpness",
            Op::ShearX => "ShearX",
            Op::ShearY => "ShearY",
            Op::TranslateX => "TranslateXRel",
            Op::TranslateY => "TranslateYRel",
        }
    }
}

const OPS: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
];

/// The fill of uncovered pixels: timm's `img_mean` for a mean of 0.5.
const FILL: u8 = 128;

/// A normalised value as the byte it was made from.
fn to_byte(v: f32) -> u8 {
    ((v * 0.5 + 0.5) * 255.0).round().clamp(0.0, 255.0) as u8
}

/// An 8-bit image, channel planes one after another.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Image {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<u8>,
}

impl Image {
    fn map(&mut self, f: impl Fn(u8) -> u8) {
        for p in &mut self.data {
            *p = f(*p);
        }
    }

    /// Apply to each channel the look-up table `lut` makes from its histogram.
    fn per_channel(&mut self, lut: fn(&[u32; 256]) -> [u8; 256]) {
        for plane in self.data.chunks_exact_mut(self.h * self.w) {
            let mut hist = [0u32; 256];
            for &p in plane.iter() {
                hist[usize::from(p)] += 1;
            }
            let table = lut(&hist);
            for p in plane.iter_mut() {
                *p = table[usize::from(*p)];
            }
        }
    }

    /// Keep the top `bits` bits of every pixel (PIL's `posterize`; 8 or more is no change).
    fn posterize(&mut self, bits: u32) {
        if bits >= 8 {
            return;
        }
        let mask = !((1u16 << (8 - bits)) - 1) as u8;
        self.map(|p| p & mask);
    }

    /// PIL's "L" conversion: `(299 R + 587 G + 114 B) / 1000` in 16-bit fixed point, rounded; the
    /// plane itself for one channel.
    fn luma(&self) -> Vec<u8> {
        let plane = self.h * self.w;
        if self.c < 3 {
            return self.data[..plane].to_vec();
        }
        let (r, rest) = self.data.split_at(plane);
        let (g, b) = rest.split_at(plane);
        (0..plane)
            .map(|k| {
                let l = u32::from(r[k]) * 19595 + u32::from(g[k]) * 38470 + u32::from(b[k]) * 7471;
                ((l + 0x8000) >> 16) as u8
            })
            .collect()
    }

    /// `Image.blend(degenerate, image, f)`: `d + f · (p − d)` in f32 as PIL computes it,
    /// clipped and truncated, where `degenerate(channel, k)` is the degenerate image's pixel `k`
    /// of that channel.
    fn blend_with(&mut self, degenerate: impl Fn(usize, usize) -> u8, f: f64) {
        let plane = self.h * self.w;
        let alpha = f as f32;
        for (ch, values) in self.data.chunks_exact_mut(plane).enumerate() {
            for (k, p) in values.iter_mut().enumerate() {
                let d = i32::from(degenerate(ch, k));
                let v = d as f32 + alpha * (i32::from(*p) - d) as f32;
                *p = v.clamp(0.0, 255.0) as u8;
            }
        }
    }

    /// PIL's `ImageFilter.SMOOTH` (3×3 kernel 1 1 1 / 1 5 1 / 1 1 1 over 13), the border
    /// pixels kept.
    fn smoothed(&self) -> Vec<u8> {
        let (h, w) = (self.h, self.w);
        let mut out = self.data.clone();
        if h < 3 || w < 3 {
            return out;
        }
        for (src, dst) in self
            .data
            .chunks_exact(h * w)
            .zip(out.chunks_exact_mut(h * w))
        {
            for y in 1..h - 1 {
                for x in 1..w - 1 {
                    let mut sum = 4 * u32::from(src[y * w + x]);
                    for (dy, dx) in (0..3).flat_map(|dy| (0..3).map(move |dx| (dy, dx))) {
                        sum += u32::from(src[(y + dy - 1) * w + x + dx - 1]);
                    }
                    dst[y * w + x] = ((f64::from(sum) / 13.0) + 0.5) as u8;
                }
            }
        }
        out
    }

    /// Rotate counter-clockwise by `degrees` about the centre, as PIL's `rotate`.
    fn rotate(&mut self, degrees: f64) {
        if degrees.rem_euclid(360.0) == 0.0 {
            return;
        }
        let a = -degrees.to_radians();
        // PIL rounds the matrix to 15 decimals.
        let round15 = |v: f64| (v * 1e15).round() / 1e15;
        let (cos, sin) = (round15(a.cos()), round15(a.sin()));
        let (cx, cy) = (self.w as f64 / 2.0, self.h as f64 / 2.0);
        let c = cos * -cx + sin * -cy + cx;
        let f = -sin * -cx + cos * -cy + cy;
        self.affine([cos, sin, c, -sin, cos, f]);
    }

    /// PIL's affine transform: output pixel centre `(x, y)` samples the input at
    /// `(a x + b y + c, d x + e y + f)`, bicubically; outside the image is the fill.
    fn affine(&mut self, [a, b, c, d, e, f]: [f64; 6]) {
        let (h, w) = (self.h, self.w);
        let src = self.data.clone();
        for (plane, out) in src
            .chunks_exact(h * w)
            .zip(self.data.chunks_exact_mut(h * w))
        {
            for y in 0..h {
                for x in 0..w {
                    let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
                    let xi = a * xo + b * yo + c;
                    let yi = d * xo + e * yo + f;
                    out[y * w + x] = bicubic(plane, (h, w), xi, yi).unwrap_or(FILL);
                }
            }
        }
    }
}

/// PIL's cubic through four taps at offset `d` in [0, 1) from the second (its `BICUBIC` macro
/// in `Geometry.c`, the a = −1 kernel).
fn cubic([v1, v2, v3, v4]: [f64; 4], d: f64) -> f64 {
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    v2 + d * (p2 + d * (p3 + d * p4))
}

/// The bicubic sample of `plane` at continuous position `(x, y)` (pixel centres at half
/// integers), rows first, taps clamped to the edge, truncated to a byte; `None` outside.
fn bicubic(plane: &[u8], (h, w): (usize, usize), x: f64, y: f64) -> Option<u8> {
    if !(0.0..w as f64).contains(&x) || !(0.0..h as f64).contains(&y) {
        return None;
    }
    let (x, y) = (x - 0.5, y - 0.5);
    let (x0, y0) = (x.floor(), y.floor());
    let clip = |v: f64, n: usize| v.clamp(0.0, (n - 1) as f64) as usize;
    let tap = |j: usize| {
        let row = clip(y0 - 1.0 + j as f64, h) * w;
        let at = |i: usize| f64::from(plane[row + clip(x0 - 1.0 + i as f64, w)]);
        cubic([at(0), at(1), at(2), at(3)], x - x0)
    };
    let v = cubic([tap(0), tap(1), tap(2), tap(3)], y - y0);
    Some(v.clamp(0.0, 255.0) as u8)
}

/// PIL's `autocontrast` (no cutoff): the channel's range stretched to 0–255, truncated.
fn auto_contrast_lut(hist: &[u32; 256]) -> [u8; 256] {
    let mut lut = [0u8; 256];
    for (i, v) in lut.iter_mut().enumerate() {
        *v = i as u8;
    }
    let lo = hist.iter().position(|&n| n > 0);
    let hi = hist.iter().rposition(|&n| n > 0);
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return lut;
    };
    if hi <= lo {
        return lut;
    }
    let scale = 255.0 / (hi - lo) as f64;
    let offset = -(lo as f64) * scale;
    for (i, v) in lut.iter_mut().enumerate() {
        *v = (i as f64 * scale + offset).clamp(0.0, 255.0) as u8;
    }
    lut
}

/// PIL's `equalize`: the cumulative histogram in steps of `(total − last bin) / 255`.
fn equalize_lut(hist: &[u32; 256]) -> [u8; 256] {
    let mut lut = [0u8; 256];
    for (i, v) in lut.iter_mut().enumerate() {
        *v = i as u8;
    }
    let used: Vec<u64> = hist
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| u64::from(n))
        .collect();
    let Some(&last) = used.last() else {
        return lut;
    };
    if used.len() <= 1 {
        return lut;
    }
    let step = (used.iter().sum::<u64>() - last) / 255;
    if step == 0 {
        return lut;
    }
    let mut n = step / 2;
    for (i, v) in lut.iter_mut().enumerate() {
        *v = (n / step).min(255) as u8;
        n += u64::from(hist[i]);
    }
    lut
}

#[cfg(test)]
mod tests;
