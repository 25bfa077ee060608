//! Figures drawn with `plotters` into one SVG and one PNG side by side: line panels of
//! training runs (loss and metric curves, the heur criterion) and heat maps of a matrix (auto's
//! layer similarity). Both are rendered in memory and written
//! through [`write_atomic`], so a figure on disk is always whole.
//!
//! Text needs a TrueType font: the bitmap is rasterised with it, and both backends measure
//! labels with it. [`find_font`] looks in the usual font directories (DejaVu Sans or Liberation
//! Sans first); a caller may name one instead (the CLI reads `LGREG_FONT`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::ImageEncoder as _;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// One curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its legend entry.
    pub label: String,
    /// `(x, y)` in drawing order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Draw the points alone, unjoined (a scatter, e.g. accuracy against size).
    pub markers_only: bool,
}

/// One panel: a title, two axis names and its curves.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Above the panel.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// The curves.
    pub series: Vec<Series>,
}

/// The files a figure was written to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// The vector figure.
    pub svg: PathBuf,
    /// The bitmap figure.
    pub png: PathBuf,
}

/// Width and height of one panel in pixels.
const PANEL: (u32, u32) = (640, 440);

/// The family name fonts are registered under.
const FAMILY: &str = "sans-serif";

/// Fonts tried first, by file name, in this order.
const PREFERRED: [&str; 3] = [
    "DejaVuSans.ttf",
    "LiberationSans-Regular.ttf",
    "NotoSans-Regular.ttf",
];

/// Directories searched for fonts.
const FONT_DIRS: [&str; 2] = ["/usr/share/fonts", "/usr/local/share/fonts"];

fn ttf_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && depth > 0 {
            ttf_files(&path, depth - 1, out);
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ttf"))
        {
            out.push(path);
        }
    }
}

/// A TrueType font in the usual directories: a preferred one when present, else any.
pub fn find_font() -> Option<PathBuf> {
    let mut found = Vec::new();
    for dir in FONT_DIRS {
        ttf_files(Path::new(dir), 4, &mut found);
    }
    found.sort();
    PREFERRED
        .iter()
        .find_map(|name| {
            found
                .iter()
                .find(|p| p.file_name().is_some_and(|f| f == *name))
        })
        .or_else(|| found.first())
        .cloned()
}

fn no_font(reason: String) -> Error {
    Error::InvalidValue {
        what: "font for figures".into(),
        value: "LGREG_FONT".into(),
        reason: format!(
            "{reason}; install one (Debian: `apt-get install fonts-dejavu-core`) or set LGREG_FONT to a .ttf file"
        ),
    }
}

/// Register `font` (or the one [`find_font`] finds) once per process.
fn ensure_font(font: Option<&Path>) -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let outcome = REGISTERED.get_or_init(|| {
        let path = match font.map(Path::to_path_buf).or_else(find_font) {
            Some(p) => p,
            None => return Err("no TrueType font was found under /usr/share/fonts".into()),
        };
        let bytes = fs_err::read(&path).map_err(|e| e.to_string())?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font(FAMILY, FontStyle::Normal, bytes)
            .map_err(|_| format!("`{}` is not a TrueType font", path.display()))
    });
    outcome.clone().map_err(no_font)
}

fn drawing(e: impl std::fmt::Debug) -> Error {
    Error::InvalidValue {
        what: "figure".into(),
        value: "plot".into(),
        reason: format!("drawing failed: {e:?}"),
    }
}

/// The range of `values`, widened a little, and never empty.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        (hi.abs() * 0.05).max(0.05)
    };
    (lo - pad, hi + pad)
}

fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<()> {
    let all = || panel.series.iter().flat_map(|s| finite(&s.points));
    let (x0, x1) = span(all().map(|p| p.0));
    let (y0, y1) = span(all().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .label_style((FAMILY, 13))
        .draw()
        .map_err(drawing)?;
    for (i, series) in panel.series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let points = finite(&series.points);
        let line = if series.markers_only {
            Vec::new()
        } else {
            points.clone()
        };
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))
            .map_err(drawing)?
            .label(series.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        if points.len() <= 40 || series.markers_only {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(drawing)?;
        }
    }
    if panel.series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FAMILY, 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(drawing)?;
    }
    Ok(())
}

/// Something drawn on one drawing area.
trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draw on `root` (already white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Line panels side by side.
struct Panels<'a>(&'a [Panel]);

impl Figure for Panels<'_> {
    fn size(&self) -> (u32, u32) {
        (PANEL.0 * self.0.len().max(1) as u32, PANEL.1)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let areas = root.split_evenly((1, self.0.len()));
        for (area, panel) in areas.iter().zip(self.0) {
            draw_panel(area, panel)?;
        }
        Ok(())
    }
}

/// A matrix drawn as coloured cells: row `r`, column `c` at `(c, r)`, row 0 at the top.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// Above the map.
    pub title: String,
    /// Under the x axis (the columns).
    pub x_label: String,
    /// Beside the y axis (the rows).
    pub y_label: String,
    /// The values, one row per entry; non-finite cells are left white.
    pub rows: Vec<Vec<f64>>,
}

/// A colour from dark blue (0) through green to yellow (1), in the manner of viridis.
fn ramp(t: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [68.0, 1.0, 84.0]),
        (0.25, [59.0, 82.0, 139.0]),
        (0.5, [33.0, 145.0, 140.0]),
        (0.75, [94.0, 201.0, 98.0]),
        (1.0, [253.0, 231.0, 37.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    let i = STOPS
        .iter()
        .rposition(|(at, _)| *at <= t)
        .unwrap_or(0)
        .min(3);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let f = (t - a) / (b - a);
    let mix = |k: usize| (ca[k] + (cb[k] - ca[k]) * f).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

impl Heatmap {
    /// The smallest and largest finite values (the ends of the colour ramp), never equal.
    fn value_range(&self) -> (f64, f64) {
        let (lo, hi) = self
            .rows
            .iter()
            .flatten()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        (lo, if hi > lo { hi } else { lo + 1.0 })
    }
}

impl Figure for Heatmap {
    fn size(&self) -> (u32, u32) {
        PANEL
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let rows = self.rows.len();
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let (lo, hi) = self.value_range();
        let caption = format!("{}: dark {lo:.3} to yellow {hi:.3}", self.title);
        let mut chart = ChartBuilder::on(root)
            .caption(&caption, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0..cols.max(1), 0..rows.max(1))
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&|c| c.to_string())
            .y_label_formatter(&|r| rows.saturating_sub(r + 1).to_string())
            .label_style((FAMILY, 13))
            .draw()
            .map_err(drawing)?;
        let cells = self.rows.iter().enumerate().flat_map(|(r, row)| {
            row.iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(move |(c, &v)| {
                    let y = rows - 1 - r;
                    let colour = ramp((v - lo) / (hi - lo));
                    Rectangle::new([(c, y), (c + 1, y + 1)], colour.filled())
                })
        });
        chart.draw_series(cells).map_err(drawing)?;
        Ok(())
    }
}

fn draw_on<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, figure: &impl Figure) -> Result<()> {
    root.fill(&WHITE).map_err(drawing)?;
    figure.draw(&root)?;
    root.present().map_err(drawing)?;
    Ok(())
}

fn svg_of(figure: &impl Figure, font: Option<&Path>) -> Result<String> {
    ensure_font(font)?;
    let mut text = String::new();
    draw_on(
        SVGBackend::with_string(&mut text, figure.size()).into_drawing_area(),
        figure,
    )?;
    Ok(text)
}

fn png_of(figure: &impl Figure, font: Option<&Path>) -> Result<Vec<u8>> {
    ensure_font(font)?;
    let (w, h) = figure.size();
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    draw_on(
        BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area(),
        figure,
    )?;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .map_err(drawing)?;
    Ok(png)
}

fn write_both(figure: &impl Figure, stem: &Path, font: Option<&Path>) -> Result<Written> {
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    write_atomic(&svg, svg_of(figure, font)?.as_bytes())?;
    write_atomic(&png, &png_of(figure, font)?)?;
    Ok(Written { svg, png })
}

/// The SVG text of `panels`, side by side.
pub fn render_svg(panels: &[Panel], font: Option<&Path>) -> Result<String> {
    svg_of(&Panels(panels), font)
}

/// The PNG bytes of `panels`, side by side.
pub fn render_png(panels: &[Panel], font: Option<&Path>) -> Result<Vec<u8>> {
    png_of(&Panels(panels), font)
}

/// Write `panels` to `<stem>.svg` and `<stem>.png`.
pub fn write_figure(panels: &[Panel], stem: &Path, font: Option<&Path>) -> Result<Written> {
    if panels.is_empty() {
        return Err(nothing_to_draw(stem));
    }
    write_both(&Panels(panels), stem, font)
}

/// Write `map` to `<stem>.svg` and `<stem>.png`.
pub fn write_heatmap(map: &Heatmap, stem: &Path, font: Option<&Path>) -> Result<Written> {
    if map.rows.iter().all(Vec::is_empty) {
        return Err(nothing_to_draw(stem));
    }
    write_both(map, stem, font)
}

fn nothing_to_draw(stem: &Path) -> Error {
    Error::InvalidValue {
        what: "figure".into(),
        value: stem.display().to_string(),
        reason: "there is nothing to draw".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel() -> Panel {
        Panel {
            title: "loss".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: vec![
                Series {
                    label: "gene".into(),
                    points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, f64::NAN), (4.0, 0.5)],
                    markers_only: false,
                },
                Series {
                    label: "random".into(),
                    points: vec![(1.0, 2.5), (2.0, 1.8), (4.0, 1.2)],
                    markers_only: true,
                },
            ],
        }
    }

    #[test]
    fn a_figure_is_written_as_svg_and_png() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written =
            write_figure(&[panel(), panel()], &dir.path().join("curves"), None).expect("figure");
        let svg = fs_err::read_to_string(&written.svg).expect("svg");
        assert!(
            svg.starts_with("<svg") && svg.contains("random"),
            "{svg:.200}"
        );
        let png = fs_err::read(&written.png).expect("png");
        assert_eq!(&png[1..4], b"PNG");
        let decoded = image::load_from_memory(&png).expect("decode");
        assert_eq!((decoded.width(), decoded.height()), (1280, 440));
        // Not a blank page: some pixels are neither white nor one colour.
        let rgb = decoded.to_rgb8();
        let dark = rgb
            .pixels()
            .filter(|p| p.0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 500, "{dark}");
        assert!(write_figure(&[], &dir.path().join("none"), None).is_err());
    }

    #[test]
    fn a_heat_map_is_written_and_colours_its_cells() {
        let dir = tempfile::tempdir().expect("tempdir");
        let map = Heatmap {
            title: "CKA".into(),
            x_label: "pseudo layer".into(),
            y_label: "ancestor layer".into(),
            rows: vec![vec![0.1, 0.9], vec![0.5, f64::NAN], vec![1.0, 0.0]],
        };
        let written = write_heatmap(&map, &dir.path().join("cka"), None).expect("heat map");
        let svg = fs_err::read_to_string(&written.svg).expect("svg");
        assert!(svg.contains("ancestor layer"), "{svg:.200}");
        let png = image::load_from_memory(&fs_err::read(&written.png).expect("png"))
            .expect("decode")
            .to_rgb8();
        // The lowest value's dark blue and the highest value's yellow are both painted.
        let has = |c: RGBColor| png.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
        assert!(has(ramp(0.0)) && has(ramp(1.0)));
        assert_eq!(ramp(0.5), RGBColor(33, 145, 140));
        let empty = Heatmap {
            rows: vec![Vec::new()],
            ..map
        };
        assert!(write_heatmap(&empty, &dir.path().join("none"), None).is_err());
    }

    #[test]
    fn empty_or_flat_series_still_have_a_range() {
        assert_eq!(span(std::iter::empty()), (0.0, 1.0));
        let (lo, hi) = span([2.0, 2.0].into_iter());
        assert!(lo < 2.0 && hi > 2.0);
    }
}
