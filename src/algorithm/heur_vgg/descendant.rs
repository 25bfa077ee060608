//! Heur Learngene's descendants ("individual models") and their few-shot experiment.
//!
//! A descendant is a random lower part (conv blocks with a pool after each but the last, the
//! last one as wide as the gene's input), then the inherited gene blocks, a pool, and a random
//! classifier for N-way tasks. Each of `tasks` seeded N-way/K-shot tasks trains two arms on the
//! same budget: the gene-initialised descendant and its control, the same network with the gene
//! blocks randomly initialised; the lower part, the classifier, the task and the batch order are
//! the same seeded draws in both arms. The gene arm may add EWC,
//! `weight · (λ/2) · Σ F (θ − θ*)²` over the gene tensors, with the Fisher F and anchor θ* the
//! gene carries; the paper code's version evaluates to zero, which is [`Ewc::CodeQuirk`].
//!
//! The run directory gets `metrics.jsonl` (one record per arm, task and epoch), `summary.json`
//! (mean final accuracy with a 95% confidence interval per arm, the paired difference and the
//! epochs the gene arm needs to reach the control's final accuracy), `state/` (finished tasks,
//! for `--resume`) and `model/` (the last task's gene-initialised descendant with a README
//! card holding the metrics).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::gene::{TRAINABLE, VggGene};
use super::task::{
    EpochPlan, Labels, Penalty, Task, by_class, draw_task, test_accuracy, train_epoch,
};
use super::vgg::{ConvBlock, Vgg, VggSpec};
use crate::error::{Error, Result};
use crate::fsutil::{StagedDir, write_atomic};
use crate::nn::init::Rng;
use crate::progress::{Event, Reporter};
use crate::train::data::ImageSet;
use crate::train::metrics::MetricsLog;
use crate::train::sgd::Sgd;

/// The paper's lower part: conv widths before the gene (the last becomes the gene's input
/// width).
pub const PAPER_LOWER: [usize; 4] = [64, 128, 256, 512];

/// The EWC term of the gene arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Ewc {
    /// No EWC.
    Off,
    /// `weight · (λ/2) · Σ F (θ − θ*)²` over the gene tensors, as the paper intends.
    Intended {
        /// λ (the paper: 40).
        lambda: f64,
        /// The factor in front (the paper: 1000).
        weight: f64,
    },
    /// The paper code's EWC, which reads its anchors from the wrong object and adds zero.
    CodeQuirk,
}

/// Everything the descendant experiment reads.
#[derive(Debug, Clone)]
pub struct DescendantOptions {
    /// Conv widths of the random lower part; the last is replaced by the gene's input width.
    pub lower: Vec<usize>,
    /// Classifier hidden widths.
    pub hidden: Vec<usize>,
    /// Classes per task (N).
    pub ways: usize,
    /// Training images per class (K).
    pub shots: usize,
    /// Test images per class.
    pub tests_per_class: usize,
    /// Tasks (each trains both arms).
    pub tasks: usize,
    /// The classes tasks are drawn from (the descendants' side of the class split).
    pub classes: Vec<u32>,
    /// How each task trains.
    pub plan: EpochPlan,
    /// The gene arm's EWC.
    pub ewc: Ewc,
    /// The paper code's quirk: each arm's model carries over from task to task.
    pub reuse_model: bool,
    /// Train the random-init control arm.
    pub control: bool,
    /// The seed of every random choice.
    pub seed: u64,
    /// The resolved config, for the card.
    pub run_config: Value,
}

/// The two arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// Gene-initialised.
    Gene,
    /// Random init, the control.
    Random,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Gene => "gene",
            Arm::Random => "random",
        }
    }
}

/// One arm's per-epoch test accuracies on one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmCurve {
    /// The arm.
    pub arm: Arm,
    /// The task (0-based).
    pub task: usize,
    /// Test accuracy after each epoch.
    pub accuracy: Vec<f64>,
}

/// A mean with its 95% confidence interval (Student's t, n − 1 degrees of freedom).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanCi {
    /// The mean.
    pub mean: f64,
    /// The half-width of the 95% interval.
    pub ci95: f64,
    /// The sample size.
    pub n: usize,
}

/// One arm over all tasks.
#[derive(Debug, Clone, Serialize)]
pub struct ArmSummary {
    /// The arm.
    pub arm: Arm,
    /// Final test accuracy, mean over tasks.
    pub final_accuracy: MeanCi,
    /// Per epoch: test accuracy, mean over tasks.
    pub mean_curve: Vec<f64>,
}

/// What the experiment measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Tasks run.
    pub tasks: usize,
    /// N-way.
    pub ways: usize,
    /// K-shot.
    pub shots: usize,
    /// Epochs per task.
    pub epochs: usize,
    /// Each arm.
    pub arms: Vec<ArmSummary>,
    /// Gene − random final accuracy, paired by task.
    pub paired_difference: Option<MeanCi>,
    /// The first epoch (1-based) at which the gene arm's mean curve reaches the random arm's
    /// final mean accuracy (absent: it never does).
    pub epochs_to_random_final: Option<usize>,
    /// The EWC the gene arm used.
    pub ewc: Ewc,
    /// Whether each arm's model carried over between tasks.
    pub reuse_model: bool,
}

/// What [`run_descendants`] made.
#[derive(Debug, Clone, Serialize)]
pub struct Descendants {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The summary, as `summary.json` holds it.
    pub summary: Summary,
    /// The last task's gene-initialised descendant.
    pub model: PathBuf,
    /// Tasks already done when a resumed run started.
    pub resumed_after: Option<usize>,
}

/// The finished tasks, as the state directory records them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DescendantProgress {
    seed: u64,
    curves: Vec<ArmCurve>,
    tasks_done: usize,
    steps: usize,
}

/// Two-sided 95% critical values of Student's t for 1–30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The 95% critical value for `df` degrees of freedom (past 30: the tabled 40, 60 and 120, the
/// next lower one, so the interval errs wide).
fn t95(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T95[df - 1],
        31..=59 => 2.021,
        60..=119 => 2.000,
        _ => 1.980,
    }
}

/// The mean of `values` with its 95% interval.
pub fn mean_ci(values: &[f64]) -> MeanCi {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n.max(1) as f64;
    let ci95 = if n < 2 {
        f64::NAN
    } else {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t95(n - 1) * (var / n as f64).sqrt()
    };
    MeanCi { mean, ci95, n }
}

/// The descendant's shape for `gene`: the lower part, the gene blocks, a pool, the classifier.
pub fn descendant_spec(gene: &VggGene, opts: &DescendantOptions) -> Result<VggSpec> {
    if opts.lower.is_empty() {
        return Err(Error::InvalidValue {
            what: "the descendant's lower part".into(),
            value: "[]".into(),
            reason: "it needs at least one conv block".into(),
        });
    }
    let mut widths = opts.lower.clone();
    if let Some(last) = widths.last_mut() {
        *last = gene.shape.in_channels;
    }
    let lower = widths.len();
    widths.extend(&gene.shape.widths);
    let mut pool_after: Vec<usize> = (0..lower - 1).collect();
    pool_after.push(widths.len() - 1);
    let [channels, side] = gene.shape.image;
    let mut spec = VggSpec::new(
        channels,
        side,
        widths,
        pool_after,
        opts.hidden.clone(),
        opts.ways,
    );
    spec.bn_eps = gene.shape.bn[0];
    spec.bn_momentum = gene.shape.bn[1];
    spec.validate()?;
    Ok(spec)
}

fn fresh(t: &Tensor) -> Result<Var> {
    Ok(Var::from_tensor(&t.copy()?)?)
}

/// A copy of `block` with its own storage (training one copy leaves the gene untouched).
fn fresh_block(block: &ConvBlock) -> Result<ConvBlock> {
    Ok(ConvBlock {
        weight: fresh(block.weight.as_tensor())?,
        bias: fresh(block.bias.as_tensor())?,
        gamma: fresh(block.gamma.as_tensor())?,
        beta: fresh(block.beta.as_tensor())?,
        running_mean: block.running_mean.copy()?,
        running_var: block.running_var.copy()?,
    })
}

/// The two arms' initial models for task `task`: the same random draw, the gene arm's gene
/// blocks replaced by copies of the gene.
fn initial_models(
    spec: &VggSpec,
    gene: &VggGene,
    seed: u64,
    task: usize,
    device: &Device,
) -> Result<(Vgg, Vgg)> {
    let random = Vgg::random(spec.clone(), seed_for(seed, task, 3), device)?;
    let mut inherited = random.clone();
    let lower = spec.widths.len() - gene.blocks.len();
    inherited.convs = random.convs[..lower]
        .iter()
        .chain(&gene.blocks)
        .map(fresh_block)
        .collect::<Result<_>>()?;
    inherited.classifier = random
        .classifier
        .iter()
        .map(|fc| {
            Ok(super::vgg::Linear {
                weight: fresh(fc.weight.as_tensor())?,
                bias: fresh(fc.bias.as_tensor())?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((inherited, random))
}

fn seed_for(seed: u64, task: usize, purpose: u64) -> u64 {
    Rng::stream_seed(
        seed,
        &[
            (task as u64 + 1, 0xA24B_AED4_963E_E407),
            (purpose, 0x9FB2_1C65_1E98_DF25),
        ],
    )
}

/// The EWC anchors: per gene tensor, its Fisher and value, in the order of the model's vars.
struct Anchors {
    first_block: usize,
    fisher: Vec<Tensor>,
    theta: Vec<Tensor>,
    factor: f64,
}

impl Anchors {
    fn new(gene: &VggGene, first_block: usize, lambda: f64, weight: f64) -> Result<Anchors> {
        let mut fisher = Vec::new();
        let mut theta = Vec::new();
        for (block, f) in gene.blocks.iter().zip(&gene.fisher) {
            let values = [&block.weight, &block.bias, &block.gamma, &block.beta];
            for (name, var) in TRAINABLE.iter().zip(values) {
                let Some(f) = f.get(*name) else {
                    return Err(Error::InvalidValue {
                        what: "HEUR.EWC".into(),
                        value: "intended".into(),
                        reason: format!(
                            "the gene has no Fisher for `{name}`; train it again with lgreg, or set HEUR.EWC: off"
                        ),
                    });
                };
                fisher.push(f.clone());
                theta.push(var.as_tensor().copy()?);
            }
        }
        Ok(Anchors {
            first_block,
            fisher,
            theta,
            factor: weight * lambda / 2.0,
        })
    }

    fn penalty(&self, model: &Vgg) -> Result<Tensor> {
        let mut total = Tensor::zeros((), candle_core::DType::F32, &model.device)?;
        let blocks = &model.convs[self.first_block..];
        let params = blocks
            .iter()
            .flat_map(|b| [&b.weight, &b.bias, &b.gamma, &b.beta]);
        for ((p, f), t) in params.zip(&self.fisher).zip(&self.theta) {
            let d = p.as_tensor().sub(t)?;
            total = (total + (d.sqr()? * f)?.sum_all()?)?;
        }
        Ok((total * self.factor)?)
    }
}

/// Train one arm on one task; returns its per-epoch test accuracies and its steps.
#[allow(clippy::too_many_arguments)]
fn train_arm(
    model: &mut Vgg,
    set: &ImageSet,
    task: &Task,
    seed: u64,
    opts: &DescendantOptions,
    anchors: Option<&Anchors>,
    arm: Arm,
    t: usize,
    log: &mut MetricsLog,
    steps: &mut usize,
    reporter: &dyn Reporter,
) -> Result<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut opt = Sgd::new(model.vars(), opts.plan.sgd);
    let penalty = |m: &Vgg| match anchors {
        Some(a) => a.penalty(m),
        None => Ok(Tensor::zeros((), candle_core::DType::F32, &m.device)?),
    };
    let mut curve = Vec::with_capacity(opts.plan.epochs);
    for epoch in 0..opts.plan.epochs {
        let stats = train_epoch(
            model,
            set,
            task,
            Labels::TaskLocal,
            &opts.plan,
            epoch,
            &mut opt,
            anchors.map(|_| &penalty as Penalty<'_>),
            None,
            &mut rng,
        )?;
        let lr = stats.lr;
        *steps += stats.steps;
        let accuracy = test_accuracy(model, set, task, Labels::TaskLocal, opts.plan.batch_size)?;
        log.append(&json!({
            "step": *steps,
            "arm": arm.name(),
            "task": t,
            "epoch": epoch + 1,
            "loss": stats.loss,
            "lr": lr,
            "train_accuracy": stats.train_accuracy,
            "test_accuracy": accuracy,
            "images_per_sec": stats.images_per_sec,
        }))?;
        reporter.report(Event::Advance {
            amount: 1,
            item: Some(format!(
                "task {}/{} {} · loss {:.4} · test {:.3} · {:.0} images/s",
                t + 1,
                opts.tasks,
                arm.name(),
                stats.loss,
                accuracy,
                stats.images_per_sec
            )),
        });
        curve.push(accuracy);
    }
    Ok(curve)
}

fn state_file(run_dir: &Path) -> PathBuf {
    run_dir.join("state").join("progress.json")
}

fn load_progress(run_dir: &Path, seed: u64) -> Result<DescendantProgress> {
    let path = state_file(run_dir);
    let progress: DescendantProgress =
        serde_json::from_slice(&fs_err::read(&path)?).map_err(|e| Error::Config {
            path: path.clone(),
            reason: format!("not a descendant progress record: {e}"),
        })?;
    if progress.seed != seed {
        return Err(Error::InvalidValue {
            what: "`--resume`".into(),
            value: path.display().to_string(),
            reason: format!(
                "the saved run used seed {}, this one {seed}; resume with the config it started with",
                progress.seed
            ),
        });
    }
    Ok(progress)
}

fn save_progress(run_dir: &Path, progress: &DescendantProgress) -> Result<()> {
    let staged = StagedDir::new(&run_dir.join("state"), true)?;
    staged.write_file("progress.json", &serde_json::to_vec_pretty(progress)?)?;
    staged.commit()?;
    Ok(())
}

fn check_options(opts: &DescendantOptions) -> Result<()> {
    if opts.tasks == 0 || opts.plan.epochs == 0 || opts.shots == 0 || opts.tests_per_class == 0 {
        return Err(Error::InvalidValue {
            what: "DATASET.NUM_WORKS_TT / TRAIN.EPOCHS / DATASET.NUM_IMGS_PER_CAT_TRAIN / HEUR.TEST_PER_CLASS".into(),
            value: format!(
                "{} tasks, {} epochs, {} shots, {} test images per class",
                opts.tasks, opts.plan.epochs, opts.shots, opts.tests_per_class
            ),
            reason: "each must be at least 1".into(),
        });
    }
    Ok(())
}

/// Run the descendant experiment for `gene` on `set` into `run_dir`.
pub fn run_descendants(
    gene: &VggGene,
    set: &ImageSet,
    opts: &DescendantOptions,
    run_dir: &Path,
    resume: bool,
    device: &Device,
    reporter: &dyn Reporter,
) -> Result<Descendants> {
    check_options(opts)?;
    let spec = descendant_spec(gene, opts)?;
    set.check_shape(spec.in_channels, spec.image_size)?;
    let index = by_class(set);
    let lower = spec.widths.len() - gene.blocks.len();
    let anchors = match opts.ewc {
        Ewc::Intended { lambda, weight } => Some(Anchors::new(gene, lower, lambda, weight)?),
        Ewc::Off | Ewc::CodeQuirk => None,
    };
    // With HEUR.REUSE_MODEL each task starts from the models the one before left, which the
    // state does not hold: such a run starts over.
    let can_resume = resume && !opts.reuse_model && state_file(run_dir).is_file();
    let mut progress = if can_resume {
        load_progress(run_dir, opts.seed)?
    } else {
        DescendantProgress {
            seed: opts.seed,
            ..DescendantProgress::default()
        }
    };
    let resumed_after = can_resume.then_some(progress.tasks_done);
    let mut log = MetricsLog::open(&run_dir.join("metrics.jsonl"), progress.steps)?;
    let arms: &[Arm] = if opts.control {
        &[Arm::Gene, Arm::Random]
    } else {
        &[Arm::Gene]
    };
    reporter.report(Event::Start {
        task: "descendants".into(),
        total: (opts.tasks * opts.plan.epochs * arms.len()) as u64,
    });
    reporter.report(Event::Advance {
        amount: (progress.tasks_done * opts.plan.epochs * arms.len()) as u64,
        item: None,
    });
    let mut carried: Option<(Vgg, Vgg)> = None;
    let mut last_gene_model = None;
    for t in progress.tasks_done..opts.tasks {
        let mut draw = Rng::new(seed_for(opts.seed, t, 0));
        let task = draw_task(
            &index,
            &opts.classes,
            opts.ways,
            opts.shots,
            opts.tests_per_class,
            &mut draw,
        )?;
        let (mut inherited, mut random) = match carried.take() {
            Some(models) => models,
            None => initial_models(&spec, gene, opts.seed, t, device)?,
        };
        let order_seed = seed_for(opts.seed, t, 1);
        for &arm in arms {
            let (model, anchors) = match arm {
                Arm::Gene => (&mut inherited, anchors.as_ref()),
                Arm::Random => (&mut random, None),
            };
            let accuracy = train_arm(
                model,
                set,
                &task,
                order_seed,
                opts,
                anchors,
                arm,
                t,
                &mut log,
                &mut progress.steps,
                reporter,
            )?;
            progress.curves.push(ArmCurve {
                arm,
                task: t,
                accuracy,
            });
        }
        progress.tasks_done = t + 1;
        save_progress(run_dir, &progress)?;
        if opts.reuse_model {
            carried = Some((inherited.clone(), random));
        }
        last_gene_model = Some(inherited);
    }
    reporter.report(Event::Finish);
    let summary = summarise(&progress.curves, opts);
    write_atomic(
        &run_dir.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    let model = run_dir.join("model");
    if let Some(m) = last_gene_model {
        save_model(&m, &model, &summary, gene, opts)?;
    }
    Ok(Descendants {
        run_dir: run_dir.to_path_buf(),
        summary,
        model,
        resumed_after,
    })
}

/// Write the descendant with a README card holding the experiment's numbers.
fn save_model(
    model: &Vgg,
    dir: &Path,
    summary: &Summary,
    gene: &VggGene,
    opts: &DescendantOptions,
) -> Result<()> {
    model.save(dir, true)?;
    let card = json!({
        "summary": summary,
        "gene_layers": gene.shape.source_layers,
        "gene_fidelity": gene.card.fidelity,
        "run_config": opts.run_config,
    });
    let text = format!(
        "---\nlibrary_name: lgreg\ntags: [learngene, heur, vgg]\n---\n# heur_vgg descendant\n\n{}\n\n```json\n{}\n```\n",
        summary_table(summary),
        serde_json::to_string_pretty(&card)?
    );
    write_atomic(&dir.join("README.md"), text.as_bytes())
}

/// The summary as a Markdown table.
pub fn summary_table(s: &Summary) -> String {
    let mut out = format!(
        "{} tasks, {}-way {}-shot, {} epochs each\n\n| arm | final accuracy (mean ± 95% CI) |\n|---|---|\n",
        s.tasks, s.ways, s.shots, s.epochs
    );
    for a in &s.arms {
        out.push_str(&format!(
            "| {} | {:.4} ± {:.4} |\n",
            a.arm.name(),
            a.final_accuracy.mean,
            a.final_accuracy.ci95
        ));
    }
    if let Some(d) = s.paired_difference {
        out.push_str(&format!(
            "| gene − random (paired) | {:+.4} ± {:.4} |\n",
            d.mean, d.ci95
        ));
    }
    out
}

fn finals(curves: &[ArmCurve], arm: Arm) -> BTreeMap<usize, f64> {
    curves
        .iter()
        .filter(|c| c.arm == arm)
        .filter_map(|c| c.accuracy.last().map(|a| (c.task, *a)))
        .collect()
}

fn mean_curve(curves: &[ArmCurve], arm: Arm, epochs: usize) -> Vec<f64> {
    let mine: Vec<&ArmCurve> = curves.iter().filter(|c| c.arm == arm).collect();
    (0..epochs)
        .map(|e| {
            let values: Vec<f64> = mine
                .iter()
                .filter_map(|c| c.accuracy.get(e))
                .copied()
                .collect();
            values.iter().sum::<f64>() / values.len().max(1) as f64
        })
        .collect()
}

/// The experiment's numbers from its per-task curves.
pub fn summarise(curves: &[ArmCurve], opts: &DescendantOptions) -> Summary {
    let arms: Vec<Arm> = [Arm::Gene, Arm::Random]
        .into_iter()
        .filter(|a| curves.iter().any(|c| c.arm == *a))
        .collect();
    let summaries: Vec<ArmSummary> = arms
        .iter()
        .map(|&arm| ArmSummary {
            arm,
            final_accuracy: mean_ci(&finals(curves, arm).into_values().collect::<Vec<_>>()),
            mean_curve: mean_curve(curves, arm, opts.plan.epochs),
        })
        .collect();
    let gene = finals(curves, Arm::Gene);
    let random = finals(curves, Arm::Random);
    let diffs: Vec<f64> = gene
        .iter()
        .filter_map(|(t, g)| random.get(t).map(|r| g - r))
        .collect();
    let curve_of = |arm| summaries.iter().find(|s| s.arm == arm);
    let epochs_to_random_final = match (curve_of(Arm::Gene), curve_of(Arm::Random)) {
        (Some(g), Some(r)) => {
            let target = r.final_accuracy.mean;
            g.mean_curve
                .iter()
                .position(|a| *a >= target)
                .map(|e| e + 1)
        }
        _ => None,
    };
    Summary {
        tasks: gene.len().max(random.len()),
        ways: opts.ways,
        shots: opts.shots,
        epochs: opts.plan.epochs,
        arms: summaries,
        paired_difference: (!diffs.is_empty()).then(|| mean_ci(&diffs)),
        epochs_to_random_final,
        ewc: opts.ewc,
        reuse_model: opts.reuse_model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_uses_students_t() {
        // 1, 2, 3: mean 2, s = 1, t(2) = 4.303, half-width 4.303 / √3.
        let m = mean_ci(&[1.0, 2.0, 3.0]);
        assert_eq!(m.mean, 2.0);
        assert!((m.ci95 - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!(mean_ci(&[1.0]).ci95.is_nan());
        assert_eq!(t95(45), 2.021);
    }
}
