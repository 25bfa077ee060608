//! Curves read back from run directories, for `lgreg compare RUN…` and for the figure each run
//! leaves in its own directory ([`plot_run`]).
//!
//! A run directory's `metrics.jsonl` says what kind of run it was:
//! - a `lgreg adapt` run: step records (`loss` against `epoch`) and evaluation records (`eval`:
//!   accuracy, retrieval accuracy or perplexity);
//! - a heur_vgg descendant experiment: one record per arm, task and epoch with its
//!   `test_accuracy`; the curve of an arm is its mean over the tasks, epoch by epoch;
//! - a heur_vgg collective model: one record per task and epoch with `loss` and the gradient
//!   criterion r_l of every layer.
//!
//! [`compare`] draws the three figures a learngene paper shows (metric against epochs, loss
//! against epochs, final metric against the fraction of training data) and tabulates, per
//! curve, the final and best metric and the epochs it needs to reach a target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::run::METRICS_FILE;
use crate::error::{Error, Result};
use crate::plot::{Panel, Series, Written, write_figure};
use crate::train::metrics;

/// The figure's file stem in a run directory (`curves.svg`, `curves.png`).
pub const RUN_FIGURE: &str = "curves";

/// The figure's file stem of `lgreg compare` (`compare.svg`, `compare.png`).
pub const COMPARE_FIGURE: &str = "compare";

/// One metric curve of a run (a run has one, or one per arm).
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// `<run>` or `<run> <arm>`.
    pub label: String,
    /// The arm (`gene`, `random`), when the run has arms.
    pub arm: Option<String>,
    /// The metric's name.
    pub metric: String,
    /// Whether a larger value is better (accuracy) or worse (perplexity).
    pub higher_is_better: bool,
    /// `(epoch, metric)`.
    pub points: Vec<(f64, f64)>,
    /// `(epoch, mean training loss)`.
    pub loss: Vec<(f64, f64)>,
    /// Training examples per task or run, when the config says.
    pub examples: Option<f64>,
}

/// What one run directory holds.
#[derive(Debug, Clone)]
pub struct RunCurves {
    /// The directory's name.
    pub name: String,
    /// Its metric curves (empty when it evaluated nothing).
    pub curves: Vec<Curve>,
    /// Its training loss, `(epoch, loss)`, when no curve carries it.
    pub loss: Vec<(f64, f64)>,
    /// The heur criterion: per layer, r_l of each task's last epoch.
    pub criterion: Vec<Vec<f64>>,
}

fn name_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// Mean of the values at each x, in x order.
fn mean_by_x(points: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    let mut sums: BTreeMap<i64, (f64, f64, usize)> = BTreeMap::new();
    for (x, y) in points {
        let e = sums.entry((x * 1e6).round() as i64).or_insert((x, 0.0, 0));
        e.1 += y;
        e.2 += 1;
    }
    sums.values().map(|(x, s, n)| (*x, s / *n as f64)).collect()
}

/// The descendants' training examples per task, from the run's `summary.json`.
fn few_shot_examples(dir: &Path) -> Option<f64> {
    let summary: Value =
        serde_json::from_slice(&fs_err::read(dir.join("summary.json")).ok()?).ok()?;
    Some(f(&summary, "ways")? * f(&summary, "shots")?)
}

/// A run's `DATASET.LIMIT` from its resolved config.
fn limit_examples(dir: &Path) -> Option<f64> {
    let cfg = super::Config::load(&dir.join(super::run::CONFIG_FILE), &[]).ok()?;
    cfg.float("DATASET.LIMIT")
}

fn arm_curves(name: &str, dir: &Path, records: &[Value]) -> Vec<Curve> {
    let mut arms: Vec<String> = Vec::new();
    for r in records {
        if let Some(a) = r["arm"].as_str().filter(|a| !arms.iter().any(|x| x == a)) {
            arms.push(a.to_string());
        }
    }
    let examples = few_shot_examples(dir);
    arms.into_iter()
        .map(|arm| {
            let mine = || records.iter().filter(|r| r["arm"] == arm.as_str());
            Curve {
                label: format!("{name} {arm}"),
                metric: "test_accuracy".into(),
                higher_is_better: true,
                points: mean_by_x(
                    mine().filter_map(|r| Some((f(r, "epoch")?, f(r, "test_accuracy")?))),
                ),
                loss: mean_by_x(mine().filter_map(|r| Some((f(r, "epoch")?, f(r, "loss")?)))),
                examples,
                arm: Some(arm),
            }
        })
        .collect()
}

/// The metric an `eval` record carries, with its direction.
fn eval_metric(eval: &Value) -> Option<(&'static str, f64, bool)> {
    [
        ("accuracy", true),
        ("retrieval_accuracy", true),
        ("perplexity", false),
    ]
    .into_iter()
    .find_map(|(k, better)| Some((k, f(eval, k)?, better)))
}

fn adapt_curves(name: &str, dir: &Path, records: &[Value]) -> (Vec<Curve>, Vec<(f64, f64)>) {
    let loss: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r.get("eval").is_none())
        .filter_map(|r| Some((f(r, "epoch")?, f(r, "loss")?)))
        .collect();
    let evals: Vec<(f64, &'static str, f64, bool)> = records
        .iter()
        .filter_map(|r| {
            let (metric, value, better) = eval_metric(r.get("eval")?)?;
            Some((f(r, "epoch")?, metric, value, better))
        })
        .collect();
    let Some(&(_, metric, _, better)) = evals.first() else {
        return (Vec::new(), loss);
    };
    let curve = Curve {
        label: name.to_string(),
        arm: None,
        metric: metric.into(),
        higher_is_better: better,
        points: evals.iter().map(|e| (e.0, e.2)).collect(),
        loss: loss.clone(),
        examples: limit_examples(dir),
    };
    (vec![curve], Vec::new())
}

/// r_l per layer across tasks: each task's last recorded epoch.
fn criterion(records: &[Value]) -> Vec<Vec<f64>> {
    let mut last: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in records {
        let (Some(task), Some(values)) = (r["task"].as_u64(), r["criterion"].as_array()) else {
            continue;
        };
        last.insert(task, values.iter().filter_map(Value::as_f64).collect());
    }
    let layers = last.values().map(Vec::len).max().unwrap_or(0);
    (0..layers)
        .map(|l| {
            last.values()
                .map(|v| v.get(l).copied().unwrap_or(f64::NAN))
                .collect()
        })
        .collect()
}

/// Read the curves of the run directory `dir`.
pub fn read_run(dir: &Path) -> Result<RunCurves> {
    let path = dir.join(METRICS_FILE);
    if !path.is_file() {
        return Err(Error::InvalidValue {
            what: "run directory".into(),
            value: dir.display().to_string(),
            reason: format!(
                "it has no `{METRICS_FILE}`; give the OUTPUT_DIR of a `lgreg train` or `lgreg adapt` run"
            ),
        });
    }
    let records = metrics::read(&path)?;
    let name = name_of(dir);
    let mut run = RunCurves {
        name: name.clone(),
        curves: Vec::new(),
        loss: Vec::new(),
        criterion: Vec::new(),
    };
    if records.iter().any(|r| r.get("arm").is_some()) {
        run.curves = arm_curves(&name, dir, &records);
    } else if records.iter().any(|r| r.get("criterion").is_some()) {
        run.loss = records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some(((i + 1) as f64, f(r, "loss")?)))
            .collect();
        run.criterion = criterion(&records);
    } else {
        (run.curves, run.loss) = adapt_curves(&name, dir, &records);
    }
    Ok(run)
}

fn series(label: &str, points: &[(f64, f64)]) -> Series {
    Series {
        label: label.to_string(),
        points: points.to_vec(),
        markers_only: false,
    }
}

fn metric_name(curves: &[&Curve]) -> String {
    let mut names: Vec<&str> = curves.iter().map(|c| c.metric.as_str()).collect();
    names.dedup();
    names.join(" / ")
}

fn metric_panel(curves: &[&Curve]) -> Panel {
    Panel {
        title: "validation metric against epochs".into(),
        x_label: "epoch".into(),
        y_label: metric_name(curves),
        series: curves.iter().map(|c| series(&c.label, &c.points)).collect(),
    }
}

fn loss_panel(runs: &[RunCurves]) -> Panel {
    let mut out = Vec::new();
    for run in runs {
        out.extend(run.curves.iter().map(|c| series(&c.label, &c.loss)));
        if !run.loss.is_empty() {
            out.push(series(&run.name, &run.loss));
        }
    }
    let x = if runs.iter().any(|r| !r.criterion.is_empty()) {
        "epoch (all tasks in order)"
    } else {
        "epoch"
    };
    Panel {
        title: "training loss".into(),
        x_label: x.into(),
        y_label: "loss".into(),
        series: out,
    }
}

fn criterion_panel(run: &RunCurves) -> Panel {
    Panel {
        title: "gradient criterion r_l across tasks".into(),
        x_label: "task".into(),
        y_label: "r_l".into(),
        series: run
            .criterion
            .iter()
            .enumerate()
            .map(|(l, values)| Series {
                label: format!("layer {l}"),
                points: values
                    .iter()
                    .enumerate()
                    .map(|(t, &v)| ((t + 1) as f64, v))
                    .collect(),
                markers_only: false,
            })
            .collect(),
    }
}

/// Final metric against the fraction of the largest run's training examples, one line per arm.
fn data_panel(curves: &[&Curve]) -> Option<Panel> {
    let most = curves.iter().filter_map(|c| c.examples).fold(0.0, f64::max);
    if most <= 0.0 {
        return None;
    }
    let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for c in curves {
        let (Some(n), Some(&(_, last))) = (c.examples, c.points.last()) else {
            continue;
        };
        let key = c.arm.clone().unwrap_or_else(|| "final".into());
        lines.entry(key).or_default().push((n / most, last));
    }
    let series = lines
        .into_iter()
        .map(|(label, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label,
                points,
                markers_only: false,
            }
        })
        .collect();
    Some(Panel {
        title: "final metric against training data".into(),
        x_label: "fraction of training data".into(),
        y_label: metric_name(curves),
        series,
    })
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The curve.
    pub label: String,
    /// Its metric.
    pub metric: String,
    /// The metric at the last epoch.
    pub final_value: f64,
    /// The best value over the epochs.
    pub best: f64,
    /// Epochs trained.
    pub epochs: f64,
    /// The first epoch at which it reaches the target (absent: never).
    pub epochs_to_target: Option<f64>,
    /// Its training examples as a fraction of the largest run's.
    pub data_fraction: Option<f64>,
}

/// What `lgreg compare` measured and drew.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The target the epochs are counted to.
    pub target: Option<f64>,
    /// Where the target came from.
    pub target_from: String,
    /// One row per curve.
    pub rows: Vec<Row>,
    /// The figure.
    pub figure: Written,
}

fn reaches(c: &Curve, target: f64) -> Option<f64> {
    c.points
        .iter()
        .find(|(_, y)| {
            if c.higher_is_better {
                *y >= target
            } else {
                *y <= target
            }
        })
        .map(|p| p.0)
}

/// The default target: the final value of the first `random` arm, else the worst final value.
fn default_target(curves: &[&Curve]) -> Option<(f64, String)> {
    if let Some(c) = curves.iter().find(|c| c.arm.as_deref() == Some("random")) {
        return Some((
            c.points.last()?.1,
            format!("final {} of {}", c.metric, c.label),
        ));
    }
    let finals: Vec<(&Curve, f64)> = curves
        .iter()
        .filter_map(|c| Some((*c, c.points.last()?.1)))
        .collect();
    let (c, v) = finals.into_iter().reduce(|a, b| {
        let worse = if a.0.higher_is_better {
            b.1 < a.1
        } else {
            b.1 > a.1
        };
        if worse { b } else { a }
    })?;
    Some((v, format!("the worst final {}, {}", c.metric, c.label)))
}

fn rows(curves: &[&Curve], target: Option<f64>) -> Vec<Row> {
    let most = curves.iter().filter_map(|c| c.examples).fold(0.0, f64::max);
    curves
        .iter()
        .filter_map(|c| {
            let last = c.points.last()?;
            let values = c.points.iter().map(|p| p.1);
            let best = if c.higher_is_better {
                values.fold(f64::NEG_INFINITY, f64::max)
            } else {
                values.fold(f64::INFINITY, f64::min)
            };
            Some(Row {
                label: c.label.clone(),
                metric: c.metric.clone(),
                final_value: last.1,
                best,
                epochs: last.0,
                epochs_to_target: target.and_then(|t| reaches(c, t)),
                data_fraction: c.examples.filter(|_| most > 0.0).map(|n| n / most),
            })
        })
        .collect()
}

/// Compare the runs in `dirs`: write `<out>/compare.{svg,png}` and tabulate every curve.
/// `target` overrides the metric value the epochs are counted to.
pub fn compare(
    dirs: &[PathBuf],
    out: &Path,
    target: Option<f64>,
    font: Option<&Path>,
) -> Result<Comparison> {
    let runs: Vec<RunCurves> = dirs.iter().map(|d| read_run(d)).collect::<Result<_>>()?;
    let curves: Vec<&Curve> = runs.iter().flat_map(|r| &r.curves).collect();
    let (target, target_from) = match target {
        Some(t) => (Some(t), "--target".to_string()),
        None => match default_target(&curves) {
            Some((t, from)) => (Some(t), from),
            None => (None, "no run has a metric".into()),
        },
    };
    let mut panels = Vec::new();
    if !curves.is_empty() {
        panels.push(metric_panel(&curves));
    }
    panels.push(loss_panel(&runs));
    panels.extend(data_panel(&curves));
    fs_err::create_dir_all(out)?;
    let figure = write_figure(&panels, &out.join(COMPARE_FIGURE), font)?;
    Ok(Comparison {
        target,
        target_from,
        rows: rows(&curves, target),
        figure,
    })
}

/// The comparison as a Markdown table.
pub fn table(c: &Comparison) -> String {
    let mut s = String::from(
        "| run | metric | final | best | epochs | epochs to target | data fraction |\n|---|---|---|---|---|---|---|\n",
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    for r in &c.rows {
        s.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} | {} | {} | {} |\n",
            r.label,
            r.metric,
            r.final_value,
            r.best,
            r.epochs,
            r.epochs_to_target.map_or("never".into(), |e| e.to_string()),
            opt(r.data_fraction)
        ));
    }
    if let Some(t) = c.target {
        s.push_str(&format!("\ntarget {t:.4} ({})\n", c.target_from));
    }
    s
}

/// Draw the run directory `dir`'s own figure (`curves.svg`, `curves.png`): its metric and loss
/// curves, and for a heur collective model the criterion r_l of every layer across tasks.
pub fn plot_run(dir: &Path, font: Option<&Path>) -> Result<Written> {
    let run = read_run(dir)?;
    let curves: Vec<&Curve> = run.curves.iter().collect();
    let mut panels = Vec::new();
    if !curves.is_empty() {
        panels.push(metric_panel(&curves));
    }
    panels.push(loss_panel(std::slice::from_ref(&run)));
    if !run.criterion.is_empty() {
        panels.push(criterion_panel(&run));
    }
    write_figure(&panels, &dir.join(RUN_FIGURE), font)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(arm: &str, points: &[(f64, f64)]) -> Curve {
        Curve {
            label: format!("run {arm}"),
            arm: Some(arm.into()),
            metric: "test_accuracy".into(),
            higher_is_better: true,
            points: points.to_vec(),
            loss: Vec::new(),
            examples: Some(50.0),
        }
    }

    #[test]
    fn epochs_to_target_count_to_the_random_arms_final_value() {
        let gene = curve("gene", &[(1.0, 0.5), (2.0, 0.7), (3.0, 0.8)]);
        let random = curve("random", &[(1.0, 0.3), (2.0, 0.5), (3.0, 0.7)]);
        let curves = vec![&gene, &random];
        let (t, from) = default_target(&curves).expect("target");
        assert_eq!(t, 0.7);
        assert!(from.contains("run random"), "{from}");
        let r = rows(&curves, Some(t));
        assert_eq!(r[0].epochs_to_target, Some(2.0));
        assert_eq!(r[1].epochs_to_target, Some(3.0));
        assert_eq!(r[0].best, 0.8);
        assert_eq!(r[0].data_fraction, Some(1.0));
        assert_eq!(rows(&curves, Some(0.9))[0].epochs_to_target, None);
    }

    #[test]
    fn perplexity_counts_downwards() {
        let mut a = curve("x", &[(1.0, 30.0), (2.0, 20.0)]);
        a.arm = None;
        a.higher_is_better = false;
        let mut b = a.clone();
        b.points = vec![(1.0, 40.0), (2.0, 25.0)];
        let curves = vec![&a, &b];
        assert_eq!(default_target(&curves).expect("target").0, 25.0);
        assert_eq!(rows(&curves, Some(25.0))[0].epochs_to_target, Some(2.0));
        assert_eq!(rows(&curves, Some(25.0))[0].best, 20.0);
    }

    #[test]
    fn arm_means_are_taken_epoch_by_epoch() {
        let m = mean_by_x([(1.0, 0.2), (2.0, 0.4), (1.0, 0.4)].into_iter());
        assert_eq!(m.len(), 2);
        assert!((m[0].1 - 0.3).abs() < 1e-12 && m[1] == (2.0, 0.4));
    }
}
