//! `adapt`: fine-tune a model on a dataset and write it as a Hugging Face directory whose
//! model card holds the metrics. Training state is saved beside the output every few steps, so
//! an interrupted run resumes with `resume`. Tasks: next-token prediction (llama, text),
//! classification (vit, labelled images) and in-batch-negatives contrastive learning on sentence
//! pairs (bert, `first<TAB>second` lines).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use super::augment::{self, Augment};
use super::data::{ImageSet, read_images, split};
use super::distill::Teacher;
use super::ema::Ema;
use super::eval::{
    Metrics, accuracy, as_strs, checkpoint_tokenizer, embed_in, perplexity, similarities,
};
use super::loss::{cross_entropy, lm_loss};
use super::metrics::{METRICS_FILE, MetricsLog, StepRecord};
use super::optim::{AdamW, AdamWConfig, Schedule};
use super::state::{self, StateMeta};
use super::text::{TextBlocks, Tokenizer, read_pairs};
use crate::anatomy::Family;
use crate::checkpoint::{Checkpoint, SideFile, open};
use crate::error::{Error, Result};
use crate::fsutil::StagedDir;
use crate::nn::init::Rng;
use crate::nn::{DropPath, Dropout, Hooks, Input, Mode, Model, ModelConfig, Precision, device};
use crate::progress::{Event, Reporter};

/// Options of [`adapt`].
#[derive(Debug, Clone)]
pub struct AdaptOptions {
    /// Optimiser steps; overrides `epochs`.
    pub steps: Option<usize>,
    /// Passes over the training split when `steps` is not given.
    pub epochs: Option<usize>,
    /// Peak learning rate.
    pub lr: f64,
    /// The floor of the cosine (default `lr / 100`).
    pub min_lr: Option<f64>,
    /// Warm-up in epochs (`TRAIN.WARMUP_EPOCHS`); overrides `warmup` when given.
    pub warmup_epochs: Option<f64>,
    /// The learning rate the warm-up starts from.
    pub warmup_lr: f64,
    /// AdamW's ε.
    pub adam_eps: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Warm-up steps.
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this.
    pub max_grad_norm: f64,
    /// Fraction of the data held out for validation.
    pub val_fraction: f64,
    /// Use only the first `limit` examples of the data.
    pub limit: Option<usize>,
    /// Tokens per block (llama).
    pub seq_len: usize,
    /// Seed for the split and the batch order.
    pub seed: u64,
    /// Save the training state every this many steps.
    pub save_every: usize,
    /// Continue from the saved training state.
    pub resume: bool,
    /// Stop (as if interrupted) after this many steps, leaving the state to resume from.
    pub stop_after: Option<usize>,
    /// Replace an existing output.
    pub force: bool,
    /// Run on the first CUDA GPU.
    pub cuda: bool,
    /// The dtype of the matrix products (mixed precision; the weights stay f32).
    pub precision: Precision,
    /// Append a record per step and per evaluation to this `metrics.jsonl`; without it the
    /// records go to the resumable state and then into the output directory.
    pub metrics: Option<PathBuf>,
    /// DeiT's batch augmentations and label smoothing (image classifiers only).
    pub augment: Augment,
    /// Also evaluate on the validation split at the end of every epoch (logged to `metrics`).
    pub eval_every_epoch: bool,
    /// Also evaluate every this many steps (logged to `metrics`), for curves finer than an
    /// epoch.
    pub eval_every: Option<usize>,
    /// Stochastic depth rate of the last block (vit; 0: off), timm's linear rule below it.
    pub drop_path: f64,
    /// Dropout rate (vit; 0: off), at timm's ViT sites.
    pub dropout: f64,
    /// Keep an exponential moving average of the weights with this decay per step; it is
    /// evaluated at the end and written to `OUTPUT/ema/`.
    pub ema: Option<f64>,
}

impl Default for AdaptOptions {
    fn default() -> Self {
        AdaptOptions {
            steps: None,
            epochs: None,
            lr: 1e-3,
            min_lr: None,
            warmup_epochs: None,
            warmup_lr: 0.0,
            adam_eps: AdamWConfig::default().eps,
            batch_size: 32,
            warmup: 0,
            weight_decay: 0.05,
            max_grad_norm: 1.0,
            val_fraction: 0.1,
            limit: None,
            seq_len: 256,
            seed: 0,
            save_every: 50,
            resume: false,
            stop_after: None,
            force: false,
            cuda: false,
            precision: Precision::F32,
            metrics: None,
            augment: Augment::default(),
            eval_every_epoch: false,
            eval_every: None,
            ema: None,
            drop_path: 0.0,
            dropout: 0.0,
        }
    }
}

/// What [`adapt`] did.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptReport {
    /// The output directory (absent when the run stopped early).
    pub output: Option<String>,
    /// Steps completed.
    pub steps: usize,
    /// Steps planned.
    pub total_steps: usize,
    /// The step the run resumed from, if it did.
    pub resumed_from: Option<usize>,
    /// Loss of the last step.
    pub final_loss: f32,
    /// Training throughput of this run.
    pub samples_per_sec: f64,
    /// Validation metrics (absent when the run stopped early).
    pub metrics: Option<Metrics>,
    /// Validation metrics of the EMA weights (with `ema`).
    pub ema_metrics: Option<Metrics>,
}

/// The sub-directory of an adapted model that holds its EMA weights (with `ema`).
pub const EMA_DIR: &str = "ema";

/// The directory that holds the resumable training state for output `out`.
pub fn state_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!(".{name}.adapt-state"))
}

pub(crate) enum Data {
    Images(ImageSet),
    Text(TextBlocks),
    Pairs {
        pairs: Vec<(String, String)>,
        tok: Box<Tokenizer>,
    },
}

impl Data {
    /// `sha256:` of the examples as read (pixels and labels, token ids, or the pair texts).
    pub(crate) fn digest(&self) -> String {
        match self {
            Data::Images(s) => s.digest(),
            Data::Text(t) => {
                let mut h = crate::registry::digest::Hasher::new();
                for id in t.tokens.as_slice() {
                    h.update(&id.to_le_bytes());
                }
                h.finish().to_string()
            }
            Data::Pairs { pairs, .. } => {
                let mut h = crate::registry::digest::Hasher::new();
                for (a, b) in pairs {
                    for text in [a, b] {
                        h.update(&(text.len() as u64).to_le_bytes());
                        h.update(text.as_bytes());
                    }
                }
                h.finish().to_string()
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Data::Images(s) => s.len(),
            Data::Text(t) => t.len(),
            Data::Pairs { pairs, .. } => pairs.len(),
        }
    }
}

/// Cosine similarities are multiplied by this before the softmax of [`pair_loss`] (the
/// temperature 0.05 of sentence-transformers' in-batch-negatives loss).
const PAIR_SCALE: f64 = 20.0;

/// The in-batch-negatives contrastive loss on sentence pairs: each first sentence must pick its
/// own second among the seconds of the batch, by cosine similarity of mean-pooled embeddings.
fn pair_loss(
    model: &Model,
    tok: &Tokenizer,
    pairs: &[(String, String)],
    batch: &[usize],
) -> Result<Tensor> {
    let texts = pair_texts(pairs, batch);
    let b = texts.len() / 2;
    let e = embed_in(model, tok, &texts, Mode::Train)?;
    let scores = (e.narrow(0, 0, b)?.matmul(&e.narrow(0, b, b)?.t()?)? * PAIR_SCALE)?;
    let targets = Tensor::arange(0u32, b as u32, &model.device)?;
    cross_entropy(&scores, &targets)
}

pub(crate) fn check_options(opts: &AdaptOptions) -> Result<()> {
    if !(opts.lr > 0.0 && opts.lr.is_finite()) {
        return Err(Error::InvalidValue {
            what: "`--lr`".into(),
            value: opts.lr.to_string(),
            reason: "the learning rate must be a positive number, e.g. `1e-3`".into(),
        });
    }
    if opts.batch_size == 0 {
        return Err(Error::InvalidValue {
            what: "`--batch-size`".into(),
            value: "0".into(),
            reason: "a step needs at least one example".into(),
        });
    }
    let a = &opts.augment;
    let probability = |p: f64| (0.0..=1.0).contains(&p);
    let alpha = |x: f64| x >= 0.0 && x.is_finite();
    let valid = (0.0..1.0).contains(&a.smoothing)
        && alpha(a.mixup)
        && alpha(a.cutmix)
        && probability(a.erase_prob)
        && alpha(a.color_jitter)
        && probability(a.mix_prob)
        && probability(a.switch_prob)
        && (0.0..1.0).contains(&opts.drop_path)
        && (0.0..1.0).contains(&opts.dropout);
    if !valid {
        return Err(Error::InvalidValue {
            what: "`--smoothing`/`--mixup`/`--cutmix`/`--reprob`/`--color-jitter`/`--drop-path`/`--drop`".into(),
            value: format!(
                "{}, {}, {}, {}, {}, {}, {}",
                a.smoothing,
                a.mixup,
                a.cutmix,
                a.erase_prob,
                a.color_jitter,
                opts.drop_path,
                opts.dropout
            ),
            reason: "smoothing, the drop-path and the dropout rates lie in [0, 1), the Beta parameters and the jitter are 0 (off) or positive, probabilities lie in [0, 1]".into(),
        });
    }
    if matches!(opts.steps, Some(0)) || matches!(opts.epochs, Some(0)) {
        return Err(Error::InvalidValue {
            what: "`--steps`/`--epochs`".into(),
            value: "0".into(),
            reason: "train for at least one step".into(),
        });
    }
    Ok(())
}

/// Read the training data of a model of `config` from `data` (the tokenizer, where text needs
/// one, from `ckpt`), cut to `opts.limit` examples.
pub(crate) fn read_data(
    ckpt: &Checkpoint,
    config: &ModelConfig,
    data: &Path,
    opts: &AdaptOptions,
) -> Result<Data> {
    let mut set = match config.family {
        Family::Vit => {
            let set = read_images(data)?;
            set.check_shape(config.channels, config.image_size)?;
            set.check_labels(config.classes)?;
            Data::Images(set)
        }
        Family::Llama => {
            let tok = checkpoint_tokenizer(ckpt)?;
            Data::Text(TextBlocks::read(data, &tok, opts.seq_len)?)
        }
        Family::Bert => {
            if opts.batch_size < 2 {
                return Err(Error::InvalidValue {
                    what: "`--batch-size`".into(),
                    value: opts.batch_size.to_string(),
                    reason: "bert trains on sentence pairs against the other pairs of its batch; use 2 or more (e.g. 32)".into(),
                });
            }
            Data::Pairs {
                pairs: read_pairs(data)?,
                tok: Box::new(checkpoint_tokenizer(ckpt)?),
            }
        }
    };
    match (opts.limit, &mut set) {
        (Some(l), Data::Images(s)) => s.truncate(l),
        (Some(l), Data::Pairs { pairs, .. }) => pairs.truncate(l),
        _ => {}
    }
    Ok(set)
}

/// The training and held-out indices of `set` (`opts.val_fraction` held out, seeded; the
/// held-out part may be empty).
pub(crate) fn split_data(
    set: &Data,
    data: &Path,
    opts: &AdaptOptions,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let n = match (opts.limit, set) {
        (Some(l), Data::Text(t)) => l.min(t.len()),
        _ => set.len(),
    };
    let (train, val) = split(n, opts.val_fraction, opts.seed);
    if train.is_empty() {
        return Err(Error::Dataset {
            path: data.to_path_buf(),
            reason: format!("{n} example(s) leave none for training after the validation split"),
        });
    }
    Ok((train, val))
}

/// Refuse the image-only options on a model of another family.
pub(crate) fn check_family_options(config: &ModelConfig, opts: &AdaptOptions) -> Result<()> {
    if config.family == Family::Vit
        || (opts.augment.is_none() && opts.drop_path == 0.0 && opts.dropout == 0.0)
    {
        return Ok(());
    }
    Err(Error::InvalidValue {
        what:
            "TRAIN.SMOOTHING / MIXUP / CUTMIX / REPROB / AA / COLOR_JITTER, MODEL.DROP_PATH / DROP"
                .into(),
        value: format!("{:?}", opts.augment),
        reason: format!(
            "label smoothing, Mixup, CutMix, random erasing, RandAugment, colour jitter, stochastic depth and dropout apply to image classifiers (vit); this model is {:?}: set them to 0 (TRAIN.AA to '')",
            config.family
        ),
    })
}

/// Fine-tune the model at `model_path` on `data` and write it to `out`.
pub fn adapt(
    model_path: &Path,
    data: &Path,
    out: &Path,
    opts: &AdaptOptions,
    reporter: &dyn Reporter,
) -> Result<AdaptReport> {
    check_options(opts)?;
    if out.exists() && !opts.force {
        return Err(Error::OutputExists {
            path: out.to_path_buf(),
        });
    }
    let ckpt = open(model_path)?;
    let mut model = Model::load(&ckpt, &device(opts.cuda)?)?.with_precision(opts.precision);
    check_family_options(&model.config, opts)?;
    let set = read_data(&ckpt, &model.config, data, opts)?;
    let (train, val) = split_data(&set, data, opts)?;
    let eval_idx = if val.is_empty() { train.clone() } else { val };
    let state_path = state_dir(out);
    let metrics_path = opts
        .metrics
        .clone()
        .unwrap_or_else(|| state_path.join(METRICS_FILE));
    let run = Steps {
        model: &model,
        set: &set,
        train,
        eval_idx: &eval_idx,
        opts,
        teacher: None,
        state_path: &state_path,
        metrics_path: &metrics_path,
        task: "adapt",
        views: &[],
    };
    let done = run_steps(&run, reporter)?;
    if done.stop < done.total {
        return Ok(AdaptReport {
            output: None,
            steps: done.stop,
            total_steps: done.total,
            resumed_from: done.resumed_from,
            final_loss: done.last_loss,
            samples_per_sec: done.samples_per_sec,
            metrics: None,
            ema_metrics: None,
        });
    }
    reporter.report(Event::Finish);
    let total = done.total;
    let metrics = validate(&model, &set, &eval_idx)?;
    let ema = done.ema;
    let ema_metrics = match &ema {
        Some(e) => {
            let kept = e.swap_in(&model)?;
            let m = validate(&model, &set, &eval_idx);
            Ema::restore(&model, &kept)?;
            Some(m?)
        }
        None => None,
    };
    let mut log = MetricsLog::open(&metrics_path, total)?;
    log.append(&serde_json::json!({
        "step": total,
        "epoch": total as f64 / done.per_epoch as f64,
        "eval": &metrics,
        "eval_ema": &ema_metrics,
    }))?;
    let own_log = opts.metrics.is_none().then_some(metrics_path.as_path());
    let written = write_output(
        &mut model,
        &ckpt,
        out,
        opts,
        &metrics,
        ema.as_ref(),
        (total, done.last_loss),
        own_log,
    )?;
    let _ = fs_err::remove_dir_all(&state_path);
    Ok(AdaptReport {
        output: Some(written.display().to_string()),
        steps: total,
        total_steps: total,
        resumed_from: done.resumed_from,
        final_loss: done.last_loss,
        samples_per_sec: done.samples_per_sec,
        metrics: Some(metrics),
        ema_metrics,
    })
}

/// One training run for [`run_steps`]: the model, its data, the options and, when it is
/// distilled, its teacher.
pub(crate) struct Steps<'a> {
    /// The model trained.
    pub model: &'a Model,
    /// The data.
    pub set: &'a Data,
    /// The training indices of `set`.
    pub train: Vec<usize>,
    /// The held-out indices, evaluated at the end of every epoch with `eval_every_epoch`.
    pub eval_idx: &'a [usize],
    /// Budget, optimiser, schedule, augmentation.
    pub opts: &'a AdaptOptions,
    /// The teacher to distil from (the loss is then the distillation loss).
    pub teacher: Option<&'a Teacher>,
    /// Where the resumable state lives.
    pub state_path: &'a Path,
    /// The `metrics.jsonl` the steps are appended to.
    pub metrics_path: &'a Path,
    /// The progress bar's name.
    pub task: &'a str,
    /// Models over `model`'s variables of which each step trains one, drawn uniformly with
    /// the step's seed (a Learngene Pool fine-tune samples one configuration per step);
    /// empty: every step trains `model`. The held-out evaluation during the run reads the
    /// last.
    pub views: &'a [Model],
}

impl Steps<'_> {
    /// The model step `step` trains.
    fn model_at(&self, step: usize) -> &Model {
        if self.views.is_empty() {
            return self.model;
        }
        let seed = Rng::stream_seed(self.opts.seed, &[(step as u64, 0x9A3E_5EED_C0F1_6000)]);
        let pick = Rng::new(seed).next_u64() % self.views.len() as u64;
        &self.views[pick as usize]
    }

    /// The model the held-out evaluation reads.
    fn evaluated(&self) -> &Model {
        self.views.last().unwrap_or(self.model)
    }
}

/// Where [`run_steps`] left a run.
pub(crate) struct Done {
    /// Steps planned.
    pub total: usize,
    /// Steps done (below `total` when stopped early).
    pub stop: usize,
    /// Steps per pass over the training split.
    pub per_epoch: usize,
    /// The step the run resumed from.
    pub resumed_from: Option<usize>,
    /// Loss of the last step.
    pub last_loss: f32,
    /// Throughput of this process.
    pub samples_per_sec: f64,
    /// The EMA of the weights, when asked for.
    pub ema: Option<Ema>,
}

/// The one training loop: seeded batches, the loss of the task (or of the teacher), AdamW on
/// the schedule, EMA, `metrics.jsonl`, an evaluation per epoch and the resumable state every
/// `save_every` steps. Every trainer (`adapt`, the TLEG/SWS aux nets) runs it.
pub(crate) fn run_steps(run: &Steps<'_>, reporter: &dyn Reporter) -> Result<Done> {
    let (model, opts) = (run.model, run.opts);
    let per_epoch = run.train.len().div_ceil(opts.batch_size);
    let total = opts
        .steps
        .unwrap_or_else(|| opts.epochs.unwrap_or(1) * per_epoch);
    let warmup = opts
        .warmup_epochs
        .map_or(opts.warmup, |e| (e * per_epoch as f64).round() as usize);
    let schedule = Schedule {
        total,
        warmup,
        start: opts.warmup_lr,
        peak: opts.lr,
        min: opts.min_lr.unwrap_or(opts.lr * 0.01),
    };
    let vars = model.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWConfig {
            weight_decay: opts.weight_decay,
            eps: opts.adam_eps,
            ..AdamWConfig::default()
        },
    )?;
    let mut ema = opts.ema.map(|d| Ema::new(model, d)).transpose()?;
    let mut start = 0;
    let mut resumed_from = None;
    let mut last_loss = f32::NAN;
    if opts.resume {
        let meta = state::load(run.state_path, model, &mut opt, ema.as_mut())?;
        if meta.total != total || meta.seed != opts.seed {
            return Err(Error::InvalidValue {
                what: "`--resume`".into(),
                value: run.state_path.display().to_string(),
                reason: format!(
                    "the saved run planned {} steps with seed {}, this one {total} with seed {}; pass the same options",
                    meta.total, meta.seed, opts.seed
                ),
            });
        }
        start = meta.step;
        resumed_from = Some(meta.step);
        last_loss = meta.last_loss;
    }
    reporter.report(Event::Start {
        task: run.task.into(),
        total: total as u64,
    });
    if start > 0 {
        reporter.report(Event::Advance {
            amount: start as u64,
            item: Some(format!("resumed at step {start}")),
        });
    }
    let mut log = MetricsLog::open(run.metrics_path, start)?;
    let epoch_of = |done: usize| done as f64 / per_epoch as f64;
    let began = Instant::now();
    let mut seen = 0usize;
    let mut order = EpochOrder::new(run.train.clone(), opts.seed);
    let stop = opts.stop_after.unwrap_or(total).min(total);
    for step in start..stop {
        let batch = order.batch(step, opts.batch_size);
        let (loss, agreement) = step_loss(run, &batch, step)?;
        let lr = schedule.at(step);
        opt.backward_step(&loss, opts.max_grad_norm, lr)?;
        if let Some(e) = ema.as_mut() {
            e.update(model)?;
        }
        last_loss = loss.to_scalar::<f32>()?;
        if !last_loss.is_finite() {
            return Err(Error::InvalidValue {
                what: "`--lr`".into(),
                value: opts.lr.to_string(),
                reason: format!(
                    "the loss became {last_loss} at step {step}; lower the learning rate"
                ),
            });
        }
        seen += batch.len();
        let rate = seen as f64 / began.elapsed().as_secs_f64().max(1e-9);
        let agree = agreement.map_or(String::new(), |a| {
            format!(" · teacher agreement {:.1}%", 100.0 * a)
        });
        reporter.report(Event::Advance {
            amount: 1,
            item: Some(format!("loss {last_loss:.4}{agree} · {rate:.0} samples/s")),
        });
        let done = step + 1;
        log.append(&StepRecord {
            step: done,
            epoch: epoch_of(done),
            loss: last_loss,
            lr,
            samples_per_sec: rate,
            agreement,
        })?;
        let epoch_end = opts.eval_every_epoch && done % per_epoch == 0;
        let interval = opts.eval_every.is_some_and(|n| n > 0 && done % n == 0);
        if (epoch_end || interval) && done < total {
            log.append(&serde_json::json!({
                "step": done,
                "epoch": epoch_of(done),
                "eval": evaluate_run(run, run.eval_idx)?,
            }))?;
        }
        if done % opts.save_every.max(1) == 0 || done == stop {
            let meta = StateMeta {
                step: done,
                total,
                seed: opts.seed,
                last_loss,
            };
            state::save(run.state_path, model, &opt, ema.as_ref(), &meta)?;
        }
    }
    Ok(Done {
        total,
        stop,
        per_epoch,
        resumed_from,
        last_loss,
        samples_per_sec: seen as f64 / began.elapsed().as_secs_f64().max(1e-9),
        ema,
    })
}

/// The loss of one step on `batch`, and the fraction of predictions that agree with the
/// teacher's when there is one.
fn step_loss(run: &Steps<'_>, batch: &[usize], step: usize) -> Result<(Tensor, Option<f32>)> {
    let (model, opts) = (run.model_at(step), run.opts);
    match run.set {
        Data::Images(s) => {
            let (x, y) = s.batch(batch, &model.device)?;
            let mut rng = augment::step_rng(opts.seed, step);
            let b = augment::apply(&x, &y, &opts.augment, &mut rng)?;
            let hooks = Hooks {
                drop_path: Some(DropPath {
                    rate: opts.drop_path,
                    seed: rng.next_u64(),
                }),
                dropout: Some(Dropout {
                    rate: opts.dropout,
                    seed: rng.next_u64(),
                }),
                ..Hooks::default()
            };
            let input = Input::Images(b.x.clone());
            let hooks = run.teacher.map_or(hooks, |t| t.student_hooks(hooks));
            let out = model.forward_with(&input, Mode::Train, hooks)?;
            match run.teacher {
                None => Ok((augment::loss(&out.output, &b, &opts.augment)?, None)),
                Some(t) => t.logits_loss(&out, &input, None, || {
                    augment::loss(&out.output, &b, &opts.augment)
                }),
            }
        }
        Data::Text(t) => {
            let (x, y) = t.batch(batch, &model.device)?;
            let input = Input::Tokens { ids: x, mask: None };
            let hooks = run
                .teacher
                .map_or(Hooks::default(), |t| t.student_hooks(Hooks::default()));
            let out = model.forward_with(&input, Mode::Train, hooks)?;
            match run.teacher {
                None => Ok((lm_loss(&out.output, &y)?, None)),
                Some(teacher) => {
                    teacher.logits_loss(&out, &input, Some(batch), || lm_loss(&out.output, &y))
                }
            }
        }
        Data::Pairs { pairs, tok } => match run.teacher {
            None => Ok((pair_loss(model, tok, pairs, batch)?, None)),
            Some(teacher) => {
                let texts = pair_texts(pairs, batch);
                teacher.hidden_loss(model, tok, &texts)
            }
        },
    }
}

/// Both sentences of the pairs `batch`, firsts then seconds.
pub(crate) fn pair_texts<'a>(pairs: &'a [(String, String)], batch: &[usize]) -> Vec<&'a str> {
    let chosen: Vec<&(String, String)> = batch.iter().filter_map(|&i| pairs.get(i)).collect();
    chosen
        .iter()
        .map(|p| p.0.as_str())
        .chain(chosen.iter().map(|p| p.1.as_str()))
        .collect()
}

/// The held-out evaluation of a run: the task's metric, and against the teacher when there
/// is one.
fn evaluate_run(run: &Steps<'_>, idx: &[usize]) -> Result<serde_json::Value> {
    match run.teacher {
        None => Ok(serde_json::to_value(validate(
            run.evaluated(),
            run.set,
            idx,
        )?)?),
        Some(t) => Ok(serde_json::to_value(t.held_out(
            run.evaluated(),
            run.set,
            idx,
        )?)?),
    }
}

/// The model's metric on the examples `idx` of `set`.
pub(crate) fn validate(model: &Model, set: &Data, idx: &[usize]) -> Result<Metrics> {
    let quiet = &crate::progress::Silent;
    match set {
        Data::Images(s) => accuracy(model, s, idx, 256, quiet),
        Data::Text(t) => perplexity(model, t, idx, 1, quiet),
        Data::Pairs { pairs, tok } => {
            let held: Vec<(String, String)> =
                idx.iter().filter_map(|&i| pairs.get(i).cloned()).collect();
            similarities(model, tok, &as_strs(&held))
        }
    }
}

/// The batch order: epoch `e` visits the training indices in a shuffle seeded by
/// `seed + e`, so any step's batch depends only on the seed and the step.
struct EpochOrder {
    train: Vec<usize>,
    seed: u64,
    epoch: Option<(usize, Vec<usize>)>,
}

impl EpochOrder {
    fn new(train: Vec<usize>, seed: u64) -> EpochOrder {
        EpochOrder {
            train,
            seed,
            epoch: None,
        }
    }

    fn batch(&mut self, step: usize, size: usize) -> Vec<usize> {
        let n = self.train.len();
        (step * size..(step + 1) * size)
            .map(|p| {
                let (e, i) = (p / n, p % n);
                if self.epoch.as_ref().is_none_or(|(cur, _)| *cur != e) {
                    let mut perm = self.train.clone();
                    Rng::new(self.seed.wrapping_add(1000 + e as u64)).shuffle(&mut perm);
                    self.epoch = Some((e, perm));
                }
                self.epoch.as_ref().map_or(0, |(_, perm)| perm[i])
            })
            .collect()
    }
}

#[allow(clippy::too_many_arguments)]
fn write_output(
    model: &mut Model,
    ckpt: &crate::checkpoint::Checkpoint,
    out: &Path,
    opts: &AdaptOptions,
    metrics: &Metrics,
    ema: Option<&Ema>,
    (steps, loss): (usize, f32),
    metrics_log: Option<&Path>,
) -> Result<PathBuf> {
    let staged = StagedDir::new(out, opts.force)?;
    if let Some(log) = metrics_log {
        staged.copy_file(METRICS_FILE, log)?;
    }
    let config = ckpt
        .config
        .clone()
        .unwrap_or_else(|| crate::nn::init::config_json(&model.config));
    let config_bytes = serde_json::to_vec_pretty(&config)?;
    staged.write_file("config.json", &config_bytes)?;
    model
        .write_weights(staged.path())
        .map_err(|e| staged.in_target_terms(e))?;
    if let Some(e) = ema {
        let dir = staged.path().join(EMA_DIR);
        fs_err::create_dir_all(&dir)?;
        crate::fsutil::write_atomic(&dir.join("config.json"), &config_bytes)?;
        let kept = e.swap_in(model)?;
        let written = model.write_weights(&dir);
        Ema::restore(model, &kept)?;
        written.map_err(|e| staged.in_target_terms(e))?;
    }
    for side in &ckpt.side_files {
        match side {
            SideFile::Copy { name, path } => staged.copy_file(name, path)?,
            SideFile::Bytes { name, bytes } => staged.write_file(name, bytes)?,
        }
    }
    let card = format!(
        "# {name}\n\nFine-tuned by `lgreg adapt` from `{from}`.\n\n| | |\n| --- | --- |\n| family | {family} |\n| steps | {steps} |\n| peak learning rate | {lr} |\n| batch size | {batch} |\n| precision | {precision} |\n| seed | {seed} |\n| final training loss | {loss:.4} |\n| validation | `{metrics}` |\n",
        name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        from = ckpt.path.display(),
        family = model.config.family,
        lr = opts.lr,
        batch = opts.batch_size,
        precision = opts.precision,
        seed = opts.seed,
        metrics = serde_json::to_string(metrics)?,
    );
    let card = match ema {
        Some(e) => format!(
            "{card}| EMA of the weights | decay {}, in `{EMA_DIR}/` |\n",
            e.decay
        ),
        None => card,
    };
    staged.write_file("README.md", card.as_bytes())?;
    staged.commit()
}
