//! The collective model: Heur Learngene's ancestor, trained through a sequence of tasks (each a
//! random subset of the ancestor's classes), widened by Net2WiderNet after each task on the
//! paper's schedule, with the gradient criterion r_l recorded for every layer, task and epoch.
//! At the end the stable suffix of layers becomes the gene, with the diagonal Fisher of each
//! gene tensor for the descendants' EWC.
//!
//! The run directory holds `metrics.jsonl` (one record per epoch), `state/` (the model after
//! the last finished task and `progress.json`, written together in one staged commit),
//! `ancestor/` (the final collective model) and `gene/`. A killed run resumes from the last
//! finished task: every task draws its classes, images, batch order and widening from
//! `(seed, task)` alone and starts a fresh optimiser, so a resumed run ends in the same state
//! as an unbroken one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::criterion::{Choice, Selection, Threshold, select};
use super::gene::{self, TRAINABLE, VggShape};
use super::task::{EpochPlan, EpochStats, Labels, Task, by_class, draw_task, train_epoch};
use super::vgg::{CONFIG_FILE, Vgg, VggSpec, WEIGHTS_FILE, block_prefix, safetensors_bytes};
use super::widen::{Widening, widen};
use crate::error::{Error, Result};
use crate::fsutil::StagedDir;
use crate::nn::init::Rng;
use crate::progress::{Event, Reporter};
use crate::registry::manifest::GeneCard;
use crate::train::data::ImageSet;
use crate::train::loss::cross_entropy;
use crate::train::metrics::{METRICS_FILE, MetricsLog};
use crate::train::sgd::Sgd;

/// The paper's conv widths for its 13-layer VGG.
pub const PAPER_WIDTHS: [usize; 13] = [64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256];

/// Pools for 28×28 input: 28 → 14 → 7 → 3 → 1 (the paper pools five times on 32×32 CIFAR;
/// a fifth pool here would shrink the 1×1 map further).
pub const POOLS_28: [usize; 4] = [1, 3, 6, 12];

/// The paper's classifier hidden widths.
pub const PAPER_HIDDEN: [usize; 2] = [1024, 1024];

/// The paper code's widening schedule: after task t (0-based), conv layer `PAPER_WIDEN[t]` grows
/// by 64 channels for the first 8 tasks and by 128 after.
pub const PAPER_WIDEN: [usize; 20] = [
    2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
];

/// The sub-directory of the resumable state.
pub const STATE_DIR: &str = "state";

/// The record of progress inside the state directory.
pub const PROGRESS_FILE: &str = "progress.json";

/// `width · scale`, at least 1.
pub fn scaled(width: usize, scale: f64) -> usize {
    ((width as f64 * scale).round() as usize).max(1)
}

/// The paper's widening schedule with its channel counts scaled.
pub fn paper_schedule(scale: f64) -> Vec<(usize, usize)> {
    PAPER_WIDEN
        .iter()
        .enumerate()
        .map(|(t, &layer)| (layer, scaled(if t < 8 { 64 } else { 128 }, scale)))
        .collect()
}

/// Everything the collective model's training reads.
#[derive(Debug, Clone)]
pub struct CollectiveOptions {
    /// The model at the start of the sequence.
    pub spec: VggSpec,
    /// The classes the ancestor may see (the class split).
    pub classes: Vec<u32>,
    /// Tasks in the sequence.
    pub tasks: usize,
    /// Classes per task.
    pub classes_per_task: usize,
    /// Training images per class of a task.
    pub images_per_class: usize,
    /// How each task trains.
    pub plan: EpochPlan,
    /// The gradient criterion's threshold.
    pub threshold: Threshold,
    /// How the gene layers are chosen.
    pub selection: Selection,
    /// `(layer, extra channels)` applied after task t; tasks past its end do not widen.
    pub schedule: Vec<(usize, usize)>,
    /// Symmetry-breaking noise on widened units (0 keeps the function exactly, as the paper).
    pub widen_noise: f64,
    /// The seed of every random choice.
    pub seed: u64,
    /// What the card records of the run: the resolved config, the dataset's name.
    pub run_config: Value,
}

/// What the state directory records next to the model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Tasks finished.
    pub tasks_done: usize,
    /// Per finished task: r_l of its last epoch, per layer.
    pub criterion: Vec<Vec<f64>>,
    /// Optimiser steps so far.
    pub steps: usize,
    /// Training images seen so far.
    pub examples: usize,
    /// Per finished epoch: `[step, loss]`.
    pub loss_curve: Vec<[f64; 2]>,
    /// The widenings done.
    pub widenings: Vec<WideningRecord>,
    /// The seed the run started with (a resume must use the same).
    pub seed: u64,
    /// The digest of the data the run started with.
    pub data_digest: String,
}

/// One widening as progress records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WideningRecord {
    /// After which task (0-based).
    pub task: usize,
    /// The conv layer.
    pub layer: usize,
    /// Its width before.
    pub from: usize,
    /// Its width after.
    pub to: usize,
}

/// One epoch's record in `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
struct EpochRecord<'a> {
    step: usize,
    task: usize,
    epoch: usize,
    loss: f64,
    lr: f64,
    train_accuracy: f64,
    images_per_sec: f64,
    criterion: &'a [f64],
    widths: &'a [usize],
}

/// What [`train_collective`] made.
#[derive(Debug, Clone, Serialize)]
pub struct Collective {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The final collective model.
    pub ancestor: PathBuf,
    /// The gene directory.
    pub gene: PathBuf,
    /// The chosen layers and the criterion's statistics.
    pub choice: Choice,
    /// Tasks trained (all of them, resumed ones included).
    pub tasks: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Training images seen.
    pub examples: usize,
    /// The final widths.
    pub widths: Vec<usize>,
    /// The last task's final training loss.
    pub final_loss: f64,
    /// The task it resumed after, if it did.
    pub resumed_after: Option<usize>,
    /// The data digest.
    pub data_digest: String,
}

fn task_rng(seed: u64, task: usize, purpose: u64) -> Rng {
    Rng::new(Rng::stream_seed(
        seed,
        &[
            (task as u64 + 1, 0x9E37_79B9_7F4A_7C15),
            (purpose, 0xD6E8_FEB8_6659_FD93),
        ],
    ))
}

fn state_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(STATE_DIR)
}

/// Save the model and the progress in one staged commit.
fn save_state(run_dir: &Path, model: &Vgg, progress: &Progress) -> Result<()> {
    let staged = StagedDir::new(&state_dir(run_dir), true)?;
    staged.write_file(WEIGHTS_FILE, &safetensors_bytes(&model.tensors())?)?;
    staged.write_file(CONFIG_FILE, &serde_json::to_vec_pretty(&model.spec)?)?;
    staged.write_file(PROGRESS_FILE, &serde_json::to_vec_pretty(progress)?)?;
    staged.commit()?;
    Ok(())
}

/// The saved model and progress, checked against this run's seed and data.
fn load_state(run_dir: &Path, seed: u64, digest: &str, device: &Device) -> Result<(Vgg, Progress)> {
    let dir = state_dir(run_dir);
    let path = dir.join(PROGRESS_FILE);
    let progress: Progress =
        serde_json::from_slice(&fs_err::read(&path)?).map_err(|e| Error::Config {
            path: path.clone(),
            reason: format!("not a collective-model progress record: {e}"),
        })?;
    if progress.seed != seed || progress.data_digest != digest {
        return Err(Error::InvalidValue {
            what: "`--resume`".into(),
            value: path.display().to_string(),
            reason: format!(
                "the saved run used seed {} and data {}, this one seed {seed} and data {digest}; resume with the config it started with",
                progress.seed, progress.data_digest
            ),
        });
    }
    Ok((Vgg::load(&dir, device)?, progress))
}

fn check_options(opts: &CollectiveOptions, set: &ImageSet) -> Result<()> {
    opts.spec.validate()?;
    set.check_shape(opts.spec.in_channels, opts.spec.image_size)?;
    set.check_labels(opts.spec.classes)?;
    if opts.tasks == 0 || opts.plan.epochs == 0 {
        return Err(Error::InvalidValue {
            what: "DATASET.NUM_WORKS / TRAIN.EPOCHS".into(),
            value: format!("{} tasks, {} epochs", opts.tasks, opts.plan.epochs),
            reason: "the collective model needs at least one task of one epoch".into(),
        });
    }
    if let Some(&(layer, _)) = opts
        .schedule
        .iter()
        .find(|(l, _)| *l >= opts.spec.widths.len())
    {
        return Err(Error::InvalidValue {
            what: "widening schedule".into(),
            value: layer.to_string(),
            reason: format!("the VGG has {} conv layers", opts.spec.widths.len()),
        });
    }
    Ok(())
}

/// Train one task; returns the last epoch's stats.
#[allow(clippy::too_many_arguments)]
fn train_task(
    model: &mut Vgg,
    set: &ImageSet,
    task: &Task,
    t: usize,
    opts: &CollectiveOptions,
    progress: &mut Progress,
    log: &mut MetricsLog,
    reporter: &dyn Reporter,
) -> Result<EpochStats> {
    let mut rng = task_rng(opts.seed, t, 1);
    let mut opt = Sgd::new(model.vars(), opts.plan.sgd);
    let mut last = None;
    for epoch in 0..opts.plan.epochs {
        let stats = train_epoch(
            model,
            set,
            task,
            Labels::Dataset,
            &opts.plan,
            epoch,
            &mut opt,
            None,
            Some(opts.threshold),
            &mut rng,
        )?;
        let lr = stats.lr;
        progress.steps += stats.steps;
        progress.examples += task.train.len();
        progress
            .loss_curve
            .push([progress.steps as f64, stats.loss]);
        log.append(&EpochRecord {
            step: progress.steps,
            task: t,
            epoch,
            loss: stats.loss,
            lr,
            train_accuracy: stats.train_accuracy,
            images_per_sec: stats.images_per_sec,
            criterion: &stats.criterion,
            widths: &model.spec.widths,
        })?;
        reporter.report(Event::Advance {
            amount: 1,
            item: Some(format!(
                "task {}/{} · loss {:.4} · {:.0} images/s",
                t + 1,
                opts.tasks,
                stats.loss,
                stats.images_per_sec
            )),
        });
        last = Some(stats);
    }
    last.ok_or_else(|| Error::InvalidValue {
        what: "TRAIN.EPOCHS".into(),
        value: "0".into(),
        reason: "a task needs at least one epoch".into(),
    })
}

/// The diagonal Fisher of each trainable tensor of `layers`: the squared gradient of the
/// cross-entropy on one eval-mode batch (the paper's EWC estimate).
fn fisher(
    model: &mut Vgg,
    set: &ImageSet,
    task: &Task,
    batch_size: usize,
    layers: &[usize],
) -> Result<Vec<BTreeMap<String, Tensor>>> {
    let take: Vec<usize> = task.train.iter().copied().take(batch_size.max(1)).collect();
    let sub = Task {
        train: take.clone(),
        ..task.clone()
    };
    let (x, y) = super::task::batch(set, &sub, &take, Labels::Dataset, model)?;
    let logits = model.forward(&x, false)?;
    let grads = cross_entropy(&logits.contiguous()?, &y)?.backward()?;
    layers
        .iter()
        .map(|&l| {
            let vars = model.convs[l].vars(&block_prefix(l));
            let mut out = BTreeMap::new();
            for ((_, var), name) in vars.iter().zip(TRAINABLE) {
                let g = match grads.get(var.as_tensor()) {
                    Some(g) => g.sqr()?,
                    None => var.as_tensor().zeros_like()?,
                };
                out.insert(name.to_string(), g);
            }
            Ok(out)
        })
        .collect()
}

/// Train the collective model of `opts` on `set` into `run_dir`, choose the gene and write it.
pub fn train_collective(
    set: &ImageSet,
    opts: &CollectiveOptions,
    run_dir: &Path,
    resume: bool,
    device: &Device,
    reporter: &dyn Reporter,
) -> Result<Collective> {
    check_options(opts, set)?;
    let digest = set.digest();
    let index = by_class(set);
    let resumable = resume && state_dir(run_dir).join(PROGRESS_FILE).is_file();
    let (mut model, mut progress) = if resumable {
        load_state(run_dir, opts.seed, &digest, device)?
    } else {
        let progress = Progress {
            seed: opts.seed,
            data_digest: digest.clone(),
            ..Progress::default()
        };
        (Vgg::random(opts.spec.clone(), opts.seed, device)?, progress)
    };
    let resumed_after = resumable.then_some(progress.tasks_done);
    let mut log = MetricsLog::open(&run_dir.join(METRICS_FILE), progress.steps)?;
    reporter.report(Event::Start {
        task: "collective model".into(),
        total: (opts.tasks * opts.plan.epochs) as u64,
    });
    reporter.report(Event::Advance {
        amount: (progress.tasks_done * opts.plan.epochs) as u64,
        item: None,
    });
    let mut last_task = None;
    let mut final_loss = progress.loss_curve.last().map_or(f64::NAN, |p| p[1]);
    for t in 0..opts.tasks {
        let mut draw = task_rng(opts.seed, t, 0);
        let task = draw_task(
            &index,
            &opts.classes,
            opts.classes_per_task,
            opts.images_per_class,
            0,
            &mut draw,
        )?;
        if t < progress.tasks_done {
            last_task = Some(task);
            continue;
        }
        let stats = train_task(
            &mut model,
            set,
            &task,
            t,
            opts,
            &mut progress,
            &mut log,
            reporter,
        )?;
        final_loss = stats.loss;
        progress.criterion.push(stats.criterion);
        if let Some(&(layer, extra)) = opts.schedule.get(t) {
            let mut rng = task_rng(opts.seed, t, 2);
            let Widening { layer, from, to } =
                widen(&mut model, layer, extra, opts.widen_noise, &mut rng)?;
            progress.widenings.push(WideningRecord {
                task: t,
                layer,
                from,
                to,
            });
        }
        progress.tasks_done = t + 1;
        save_state(run_dir, &model, &progress)?;
        last_task = Some(task);
    }
    reporter.report(Event::Finish);
    let choice = select(&progress.criterion, opts.selection)?;
    let task = last_task.ok_or_else(|| Error::InvalidValue {
        what: "DATASET.NUM_WORKS".into(),
        value: "0".into(),
        reason: "no task ran".into(),
    })?;
    let fisher = fisher(&mut model, set, &task, opts.plan.batch_size, &choice.layers)?;
    let ancestor = run_dir.join("ancestor");
    model.save(&ancestor, true)?;
    let card = gene_card(opts, &model, &choice, &progress, final_loss)?;
    let blocks: Vec<_> = choice.layers.iter().map(|&l| &model.convs[l]).collect();
    let gene_dir = gene::write(&run_dir.join("gene"), &card, &blocks, &fisher)?;
    Ok(Collective {
        run_dir: run_dir.to_path_buf(),
        ancestor,
        gene: gene_dir,
        tasks: progress.tasks_done,
        steps: progress.steps,
        examples: progress.examples,
        widths: model.spec.widths.clone(),
        final_loss,
        resumed_after,
        data_digest: digest,
        choice,
    })
}

fn gene_card(
    opts: &CollectiveOptions,
    model: &Vgg,
    choice: &Choice,
    progress: &Progress,
    final_loss: f64,
) -> Result<GeneCard> {
    let first = choice.layers[0];
    let spec = &model.spec;
    let shape = VggShape {
        source_layers: choice.layers.clone(),
        widths: choice.layers.iter().map(|&l| spec.widths[l]).collect(),
        in_channels: if first == 0 {
            spec.in_channels
        } else {
            spec.widths[first - 1]
        },
        input_side: spec.side_after(first),
        image: [spec.in_channels, spec.image_size],
        bn: [spec.bn_eps, spec.bn_momentum],
    };
    let params = object(json!({
        "tau": opts.threshold.tau,
        "absolute": opts.threshold.absolute,
        "selection": choice.selection,
        "tasks": opts.tasks,
        "classes_per_task": opts.classes_per_task,
        "images_per_class": opts.images_per_class,
        "epochs": opts.plan.epochs,
        "batch_size": opts.plan.batch_size,
        "lr": opts.plan.lr,
        "schedule": opts.schedule,
        "widen_noise": opts.widen_noise,
        "softmax_before_ce": opts.plan.softmax_before_ce,
        "reset_optimizer_each_epoch": opts.plan.reset_optimizer_each_epoch,
        "seed": opts.seed,
    }));
    let diagnostics = object(json!({
        "choice": choice,
        "criterion_per_task": progress.criterion,
        "classes": opts.classes,
        "data_digest": progress.data_digest,
        "steps": progress.steps,
        "examples": progress.examples,
        "tasks": progress.tasks_done,
        "widenings": progress.widenings,
        "ancestor_widths": spec.widths,
        "loss_curve": progress.loss_curve,
        "run_config": opts.run_config,
    }));
    let metrics = object(json!({ "train_loss": final_loss }));
    gene::card(&shape, params, diagnostics, metrics)
}

/// The map of a `json!` object literal.
fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
