//! The least-squares line `W_l ≈ B + t_l·A` (`t_l = l / L`) through the values of one layer
//! tensor over the ancestor's `L` layers: streaming sums, the closed-form solve, and R².
//!
//! Every element keeps three f32 sums over the layers, `S0 = Σ W_l`, `S1 = Σ t_l W_l` and
//! `Q = Σ W_l²`, added layer after layer in layer order: a loop that vectorises. R² needs
//! `ΣQ - ΣS0²/L` over the elements, which cancels badly when a tensor varies little around a
//! large mean (norm weights), so those reductions run in f64, in [`LANES`] lanes; the error
//! of R² stays that of the f32 sums (the tests check it against an f64 reference; on
//! SmolLM2's norm weights it is about 2e-7, as before).
//!
//! Two ways feed the same sums and give bit-identical results:
//! - [`fit_tiled`], when a band of elements of every layer can be had at once (from the memory
//!   map, converted band by band from f16 or bf16): tile after tile, all layers pass through
//!   the sums of a few elements held in registers, so the data is read once and the sums are
//!   stored once per tile;
//! - [`LineFit`], one whole layer at a time (layers that had to be converted, and the aligned
//!   fit, whose layers only exist one after the other).

use std::ops::Range;

use crate::error::Result;

/// f64 lanes of the reductions over the elements.
const LANES: usize = 4;
/// Elements whose sums [`fit_tiled`] keeps in registers while every layer passes.
const GROUP: usize = 8;
/// Elements of one tile of [`fit_tiled`] (a multiple of [`LANES`], so that the reductions of
/// both ways add every element to the same lane in the same order): its sums take 12 KiB.
const TILE: usize = 1024;
/// Elements of one band of [`fit_tiled`] (a multiple of [`TILE`]): the caller reads a band of
/// every layer at once and lets its pages go after (256 KiB of f32 per layer).
const BAND: usize = 64 * 1024;

/// The grid `t_l = l / L` of `L` layers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grid {
    layers: usize,
}

impl Grid {
    /// The grid of `layers` layers.
    pub(super) fn new(layers: usize) -> Grid {
        Grid { layers }
    }

    /// `t_l` of layer `l`.
    pub(super) fn t(&self, l: usize) -> f32 {
        l as f32 / self.layers as f32
    }

    /// The mean of `t` over the grid.
    fn t_mean(&self) -> f64 {
        let n = self.layers as f64;
        (n - 1.0) / (2.0 * n)
    }

    /// `Σ (t_l - t̄)² / L`, the variance of `t` over the grid.
    fn t_variance(&self) -> f64 {
        let n = self.layers as f64;
        (n * n - 1.0) / (12.0 * n)
    }
}

/// The fitted line of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Line {
    /// `A`.
    pub slope: Vec<f32>,
    /// `B`.
    pub base: Vec<f32>,
    /// The share of the variance over the layers that the line explains.
    pub r2: f64,
}

/// The sums R² needs, over the elements solved so far, each in [`LANES`] f64 lanes.
#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    /// `Σ Q`: the sum of squares of every value.
    squares: [f64; LANES],
    /// `Σ S0²`.
    s0_squares: [f64; LANES],
    /// `Σ A²`.
    slope_squares: [f64; LANES],
}

impl Moments {
    fn r2(&self, grid: Grid) -> f64 {
        let sum = |lanes: &[f64; LANES]| lanes.iter().sum::<f64>();
        let total = sum(&self.squares) - sum(&self.s0_squares) / grid.layers as f64;
        let explained = grid.t_variance() * sum(&self.slope_squares);
        if total > 1e-30 {
            (explained / total).clamp(0.0, 1.0)
        } else {
            1.0
        }
    }
}

/// Add the values `w` of one layer at grid point `t` to the sums of the same elements.
fn accumulate(s0: &mut [f32], s1: &mut [f32], q: &mut [f32], w: &[f32], t: f32) {
    for (((s0, s1), q), &x) in s0.iter_mut().zip(s1.iter_mut()).zip(q.iter_mut()).zip(w) {
        *s0 += x;
        *s1 += t * x;
        *q += x * x;
    }
}

/// The sums over every layer of the elements from `start` on, as many as `sums` hold: groups
/// of [`GROUP`] elements keep their sums in registers while all layers pass, the few left at
/// the end go layer by layer. Each element sees the same additions in the same order as in
/// [`accumulate`].
fn accumulate_layers(layers: &[&[f32]], start: usize, grid: Grid, sums: [&mut [f32]; 3]) {
    let [s0, s1, q] = sums;
    let at_rest = start + s0.len() / GROUP * GROUP;
    let (s0_groups, s0_rest) = s0.as_chunks_mut::<GROUP>();
    let (s1_groups, s1_rest) = s1.as_chunks_mut::<GROUP>();
    let (q_groups, q_rest) = q.as_chunks_mut::<GROUP>();
    let groups = s0_groups.iter_mut().zip(s1_groups).zip(q_groups);
    for (g, ((s0, s1), q)) in groups.enumerate() {
        let at = start + g * GROUP;
        let (mut a, mut b, mut c) = ([0.0f32; GROUP], [0.0f32; GROUP], [0.0f32; GROUP]);
        for (l, w) in layers.iter().enumerate() {
            let Some(x) = w.get(at..).and_then(<[f32]>::first_chunk::<GROUP>) else {
                continue;
            };
            let t = grid.t(l);
            for i in 0..GROUP {
                a[i] += x[i];
                b[i] += t * x[i];
                c[i] += x[i] * x[i];
            }
        }
        (*s0, *s1, *q) = (a, b, c);
    }
    s0_rest.fill(0.0);
    s1_rest.fill(0.0);
    q_rest.fill(0.0);
    for (l, w) in layers.iter().enumerate() {
        let x = w.get(at_rest..).unwrap_or_default();
        accumulate(s0_rest, s1_rest, q_rest, x, grid.t(l));
    }
}

/// Add `f(x)` of every value to `lanes`, value `i` to lane `i % LANES`.
fn lane_sum(values: &[f32], f: impl Fn(f64) -> f64, lanes: &mut [f64; LANES]) {
    let (groups, rest) = values.as_chunks::<LANES>();
    for group in groups {
        for (lane, &x) in lanes.iter_mut().zip(group) {
            *lane += f(f64::from(x));
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(rest) {
        *lane += f(f64::from(x));
    }
}

/// Solve the elements whose sums are `s0`, `s1`, `q` into `slope` and `base`, and add what
/// R² needs to `moments`.
fn solve(grid: Grid, sums: [&[f32]; 3], slope: &mut [f32], base: &mut [f32], m: &mut Moments) {
    let [s0, s1, q] = sums;
    let n = grid.layers as f32;
    let (t_mean, t_var) = (grid.t_mean() as f32, grid.t_variance() as f32);
    if grid.layers > 1 {
        for ((a, &s0), &s1) in slope.iter_mut().zip(s0).zip(s1) {
            *a = (s1 - t_mean * s0) / t_var;
        }
    } else {
        slope.fill(0.0);
    }
    for ((b, &s0), &a) in base.iter_mut().zip(s0).zip(slope.iter()) {
        *b = s0 / n - t_mean * a;
    }
    lane_sum(q, |x| x, &mut m.squares);
    lane_sum(s0, |x| x * x, &mut m.s0_squares);
    lane_sum(slope, |x| x * x, &mut m.slope_squares);
}

/// Streaming sums of one tensor's line, fed one whole layer at a time.
#[derive(Debug, Clone)]
pub(super) struct LineFit {
    s0: Vec<f32>,
    s1: Vec<f32>,
    q: Vec<f32>,
}

impl LineFit {
    /// Empty sums for a tensor of `n` elements.
    pub(super) fn new(n: usize) -> LineFit {
        LineFit {
            s0: vec![0.0; n],
            s1: vec![0.0; n],
            q: vec![0.0; n],
        }
    }

    /// Add the next layer, at grid point `t` (layers must come in order).
    pub(super) fn add(&mut self, w: &[f32], t: f32) {
        accumulate(&mut self.s0, &mut self.s1, &mut self.q, w, t);
    }

    /// The line and its R² on `grid`.
    pub(super) fn solve(&self, grid: Grid) -> Line {
        let n = self.s0.len();
        let (mut slope, mut base) = (vec![0.0; n], vec![0.0; n]);
        let mut moments = Moments::default();
        let sums = [self.s0.as_slice(), &self.s1, &self.q];
        solve(grid, sums, &mut slope, &mut base, &mut moments);
        Line {
            slope,
            base,
            r2: moments.r2(grid),
        }
    }
}

/// Where [`fit_tiled`] gets the values of one range of elements of every layer.
pub(super) trait Bands {
    /// Put the values of the elements `range` of layer `l` into `layers[l]`, for every layer.
    fn read(&mut self, range: Range<usize>, layers: &mut [Vec<f32>]) -> Result<()>;
    /// The elements `range` of every layer have been used.
    fn done(&mut self, range: Range<usize>);
}

/// Fit one tensor of `n` elements over `depth` layers band by band, in element ranges of
/// [`BAND`] that `bands` reads (converting or borrowing them) and lets go after, and tile by
/// tile inside a band, so that the memory is one band of every layer plus the line.
pub(super) fn fit_tiled(n: usize, depth: usize, bands: &mut impl Bands) -> Result<Line> {
    let grid = Grid::new(depth);
    let (mut slope, mut base) = (vec![0.0; n], vec![0.0; n]);
    let mut moments = Moments::default();
    let mut sums = [[0.0f32; TILE]; 3];
    let mut buffers = vec![Vec::with_capacity(BAND); depth];
    for band in (0..n).step_by(BAND) {
        let band = band..(band + BAND).min(n);
        bands.read(band.clone(), &mut buffers)?;
        let layers: Vec<&[f32]> = buffers.iter().map(Vec::as_slice).collect();
        for start in band.clone().step_by(TILE) {
            let tile = start..(start + TILE).min(band.end);
            let len = tile.len();
            let [s0, s1, q] = &mut sums;
            let (s0, s1, q) = (&mut s0[..len], &mut s1[..len], &mut q[..len]);
            let sums = [&mut *s0, &mut *s1, &mut *q];
            accumulate_layers(&layers, tile.start - band.start, grid, sums);
            let (a, b) = (&mut slope[tile.clone()], &mut base[tile]);
            solve(grid, [s0, s1, q], a, b, &mut moments);
        }
        bands.done(band);
    }
    Ok(Line {
        slope,
        base,
        r2: moments.r2(grid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::init::Rng;

    /// The line and R² computed plainly in f64, as the definition reads.
    fn reference(layers: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>, f64) {
        let count = layers.len() as f64;
        let t: Vec<f64> = (0..layers.len()).map(|l| l as f64 / count).collect();
        let t_mean = t.iter().sum::<f64>() / count;
        let t_var = t.iter().map(|t| (t - t_mean).powi(2)).sum::<f64>() / count;
        let (mut slope, mut base) = (Vec::new(), Vec::new());
        let (mut total, mut residual) = (0.0, 0.0);
        for i in 0..layers[0].len() {
            let y: Vec<f64> = layers.iter().map(|w| f64::from(w[i])).collect();
            let y_mean = y.iter().sum::<f64>() / count;
            let cov = t.iter().zip(&y).map(|(t, y)| (t - t_mean) * (y - y_mean));
            let a = cov.sum::<f64>() / count / t_var;
            let b = y_mean - a * t_mean;
            for (t, y) in t.iter().zip(&y) {
                total += (y - y_mean).powi(2);
                residual += (y - b - a * t).powi(2);
            }
            slope.push(a);
            base.push(b);
        }
        (slope, base, 1.0 - residual / total)
    }

    /// `layers` random layers of `n` values around `mean`: a line with slope `trend`, plus
    /// noise of scale `noise`.
    fn random_layers(rng: &mut Rng, layers: usize, n: usize, shape: [f32; 3]) -> Vec<Vec<f32>> {
        let [mean, trend, noise] = shape;
        let a: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..n).map(|_| mean + rng.normal() as f32).collect();
        (0..layers)
            .map(|l| {
                let t = l as f32 / layers as f32;
                (0..n)
                    .map(|i| b[i] + trend * t * a[i] + noise * rng.normal() as f32)
                    .collect()
            })
            .collect()
    }

    fn line_fit(layers: &[Vec<f32>]) -> Line {
        let grid = Grid::new(layers.len());
        let mut fit = LineFit::new(layers[0].len());
        for (l, w) in layers.iter().enumerate() {
            fit.add(w, grid.t(l));
        }
        fit.solve(grid)
    }

    /// Serves bands of in-memory layers and records the ranges, checking that each is read
    /// once, in order.
    struct Recorded<'a> {
        layers: &'a [Vec<f32>],
        ranges: Vec<Range<usize>>,
    }

    impl Bands for Recorded<'_> {
        fn read(&mut self, range: Range<usize>, out: &mut [Vec<f32>]) -> Result<()> {
            assert_eq!(range.start, self.ranges.last().map_or(0, |r| r.end));
            for (buffer, layer) in out.iter_mut().zip(self.layers) {
                buffer.clear();
                buffer.extend_from_slice(&layer[range.clone()]);
            }
            self.ranges.push(range);
            Ok(())
        }
        fn done(&mut self, range: Range<usize>) {
            assert_eq!(self.ranges.last(), Some(&range));
        }
    }

    fn tiled(layers: &[Vec<f32>]) -> (Line, Vec<Range<usize>>) {
        let mut bands = Recorded {
            layers,
            ranges: Vec::new(),
        };
        let line = fit_tiled(layers[0].len(), layers.len(), &mut bands).unwrap();
        (line, bands.ranges)
    }

    #[test]
    fn both_ways_match_an_f64_reference_on_random_data() {
        let mut rng = Rng::new(11);
        // Sizes around the tile, lane and band edges; from pure noise to nearly exact lines,
        // and values that vary little around a large mean (like norm weights), where R²
        // cancels most.
        let cases = [
            (30, 3 * BAND + 777, [0.5, 4.0, 1.0]),
            (9, 1001, [0.5, 0.0, 1.0]),
            (2, 513, [0.5, 40.0, 1.0]),
            (30, 5000, [1.0, 0.2, 0.1]),
        ];
        for (layers, n, shape) in cases {
            let data = random_layers(&mut rng, layers, n, shape);
            let (a_ref, b_ref, r2_ref) = reference(&data);
            let by_layer = line_fit(&data);
            let (by_tile, bands) = tiled(&data);
            assert_eq!(by_tile, by_layer, "the two ways differ");
            let bands_cover: usize = bands.iter().map(Range::len).sum();
            assert_eq!((bands[0].start, bands_cover), (0, n));
            let worst = |got: &[f32], want: &[f64]| {
                got.iter()
                    .zip(want)
                    .map(|(g, w)| (f64::from(*g) - w).abs() / (1.0 + w.abs()))
                    .fold(0.0, f64::max)
            };
            assert!(worst(&by_layer.slope, &a_ref) < 1e-4, "slope");
            assert!(worst(&by_layer.base, &b_ref) < 1e-5, "base");
            let r2_err = (by_layer.r2 - r2_ref).abs();
            assert!(r2_err < 1e-6, "R² {} vs {r2_ref}", by_layer.r2);
        }
    }

    #[test]
    fn exact_lines_are_recovered_with_r2_one() {
        let layers = 7;
        let (a, b) = ([0.5f32, -2.0, 0.0], [1.0f32, 0.25, 3.0]);
        let grid = Grid::new(layers);
        let data: Vec<Vec<f32>> = (0..layers)
            .map(|l| a.iter().zip(&b).map(|(a, b)| b + grid.t(l) * a).collect())
            .collect();
        let line = line_fit(&data);
        for i in 0..3 {
            assert!((line.slope[i] - a[i]).abs() < 1e-4, "{:?}", line.slope);
            assert!((line.base[i] - b[i]).abs() < 1e-5, "{:?}", line.base);
        }
        assert!((line.r2 - 1.0).abs() < 1e-6, "{}", line.r2);
        assert_eq!(tiled(&data).0, line);
    }

    #[test]
    fn noise_has_r2_in_unit_interval() {
        let mut rng = Rng::new(3);
        let data = random_layers(&mut rng, 9, 50, [0.5, 0.0, 1.0]);
        let r2 = line_fit(&data).r2;
        assert!((0.0..=1.0).contains(&r2) && r2 < 0.5, "{r2}");
    }

    #[test]
    fn one_layer_is_a_flat_line() {
        let line = line_fit(&[vec![1.0, -2.0]]);
        assert_eq!((line.slope, line.base), (vec![0.0; 2], vec![1.0, -2.0]));
    }
}
