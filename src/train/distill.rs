//! Distillation from a teacher, the training of the TLEG and SWS aux nets: the soft KL loss on
//! logits with a temperature (per-example mean, or DeiT's sum over B·C), MSE or cosine on bert's
//! last hidden states (bert has no logits), optionally mixed with the task's label loss, and
//! [`distill`], which trains a student on it through the one training loop of [`super::adapt`].

use std::cell::OnceCell;
use std::path::Path;

use candle_core::{D, DType, Tensor};
use serde::Serialize;

use super::adapt::{
    AdaptOptions, Data, Steps, check_family_options, check_options, pair_texts, read_data,
    run_steps, split_data, validate,
};
use super::eval::Metrics;
use super::features::FeatureMatch;
use super::logit_cache::{CacheKey, CacheStats, LogitCache};
use super::loss::kl_distill;
use super::text::Tokenizer;
use crate::anatomy::Family;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::nn::{Forward, Hooks, Input, Mode, Model, ModelConfig};
use crate::progress::{Event, Reporter};

/// How the KL term is normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KlReduction {
    /// The mean KL per example (per token for text): `τ²/N · Σ KL`.
    Mean,
    /// DeiT's legacy normalisation, the papers' code: `τ²/(N·C) · Σ KL`, the mean divided by
    /// the number of classes.
    Deit,
}

/// What the student matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DistillLoss {
    /// The teacher's softened output distribution (KL on logits: vit, llama).
    Kl,
    /// The teacher's last hidden states, by mean squared difference per element over the real
    /// tokens (bert, which has no logits).
    Mse,
    /// The teacher's last hidden states, by one minus the cosine of each real token's two
    /// vectors, averaged (bert).
    Cosine,
}

/// The distillation loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DistillOptions {
    /// The weight of the distillation term; the label loss gets `1 − alpha` (the papers: 1).
    pub alpha: f64,
    /// The temperature τ (the papers: 1).
    pub tau: f64,
    /// The KL normalisation.
    pub reduction: KlReduction,
    /// The loss: KL on logits, or MSE / cosine on hidden states.
    pub loss: DistillLoss,
    /// Text: the teacher's log-probabilities kept per token (0: all of them, computed on every
    /// step; k: the top k, cached on disk and reused by later runs).
    pub top_k: usize,
}

impl Default for DistillOptions {
    fn default() -> Self {
        DistillOptions {
            alpha: 1.0,
            tau: 1.0,
            reduction: KlReduction::Mean,
            loss: DistillLoss::Kl,
            top_k: 0,
        }
    }
}

/// A frozen teacher and the loss it is distilled with.
#[derive(Debug)]
pub struct Teacher {
    /// The teacher; it runs without gradients.
    pub model: Model,
    /// The loss.
    pub options: DistillOptions,
    /// Text only: the teacher's top-k log-probabilities kept on disk, opened by [`distill`]
    /// when `options.top_k` is set.
    pub cache: OnceCell<LogitCache>,
    /// Learngene Pool's feature terms, added to the distillation term when set; their maps
    /// must be among the student's variables ([`crate::nn::WithExtras`]) to train.
    pub features: Option<FeatureMatch>,
}

impl Teacher {
    /// `model`, distilled with `options`.
    pub fn new(model: Model, options: DistillOptions) -> Teacher {
        Teacher {
            model,
            options,
            cache: OnceCell::new(),
            features: None,
        }
    }

    /// The hooks a student pass needs for this teacher's loss: its hidden states and attention
    /// branches when features are matched.
    pub fn student_hooks(&self, hooks: Hooks) -> Hooks {
        let features = self.features.is_some();
        Hooks {
            hidden: hooks.hidden || features,
            attention: hooks.attention || features,
            ..hooks
        }
    }
}

/// `logits` as rows `[n, classes]` (text logits `[b, t, vocab]` become `[b·t, vocab]`).
fn rows(logits: &Tensor) -> Result<Tensor> {
    let classes = logits.dim(D::Minus1)?;
    Ok(logits.reshape(((), classes))?)
}

/// The fraction of rows whose arg-max is the same in both.
fn agreement(student: &Tensor, teacher: &Tensor) -> Result<f32> {
    let same = student
        .argmax(D::Minus1)?
        .eq(&teacher.argmax(D::Minus1)?)?
        .to_dtype(DType::F32)?
        .mean_all()?;
    Ok(same.to_scalar::<f32>()?)
}

impl Teacher {
    /// The teacher's output on `input`, detached.
    fn output(&self, input: &Input) -> Result<Tensor> {
        Ok(self
            .model
            .forward(input, Mode::Infer, false)?
            .output
            .detach())
    }

    /// The teacher's logits on `input` as rows `[n, classes]`; for text with a cache, the log-
    /// probabilities rebuilt from the top k of the text `blocks` (the teacher runs only for
    /// blocks the cache lacks).
    fn target(&self, input: &Input, blocks: Option<&[usize]>) -> Result<Tensor> {
        let (Some(cache), Some(blocks), Input::Tokens { ids, .. }) =
            (self.cache.get(), blocks, input)
        else {
            return rows(&self.output(input)?);
        };
        let tokens = ids.dim(D::Minus1)?;
        let vocab = self.model.config.vocab;
        cache.rows(blocks, tokens, vocab, &self.model.device, || {
            self.output(input)
        })
    }

    /// The KL term between rows of logits.
    fn kd(&self, student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
        let kl = kl_distill(student, teacher, self.options.tau)?;
        Ok(match self.options.reduction {
            KlReduction::Deit => kl,
            KlReduction::Mean => (kl * student.dim(D::Minus1)? as f64)?,
        })
    }

    /// The distillation term of a student pass on `input` (the text `blocks`, for the
    /// cache): the KL on logits, plus the feature terms when they are matched; and the
    /// teacher's logits as rows.
    fn distillation_term(
        &self,
        student: &Forward,
        input: &Input,
        blocks: Option<&[usize]>,
    ) -> Result<(Tensor, Tensor)> {
        let student_rows = rows(&student.output)?;
        let Some(features) = &self.features else {
            let teacher = self.target(input, blocks)?;
            return Ok((self.kd(&student_rows, &teacher)?, teacher));
        };
        let hooks = Hooks {
            hidden: true,
            attention: true,
            ..Hooks::default()
        };
        let pass = self.model.forward_with(input, Mode::Infer, hooks)?;
        let teacher = rows(&pass.output.detach())?;
        let kd = self.kd(&student_rows, &teacher)?;
        Ok(((kd + features.loss(student, &pass)?)?, teacher))
    }

    /// The loss of a `student` pass on `input` (the text `blocks`, for the cache) against the
    /// teacher, mixed with the label loss (computed only when `alpha < 1`), and the top-1
    /// agreement.
    pub(crate) fn logits_loss(
        &self,
        student: &Forward,
        input: &Input,
        blocks: Option<&[usize]>,
        label_loss: impl FnOnce() -> Result<Tensor>,
    ) -> Result<(Tensor, Option<f32>)> {
        let (kd, teacher) = self.distillation_term(student, input, blocks)?;
        let student_rows = rows(&student.output)?;
        let agree = agreement(&student_rows.detach(), &teacher)?;
        let alpha = self.options.alpha;
        let loss = if alpha >= 1.0 {
            kd
        } else {
            ((kd * alpha)? + (label_loss()? * (1.0 - alpha))?)?
        };
        Ok((loss, Some(agree)))
    }

    /// The hidden-state loss of `model` against the teacher on `texts` (bert), and the mean
    /// cosine of the two models' token vectors.
    pub(crate) fn hidden_loss(
        &self,
        model: &Model,
        tok: &Tokenizer,
        texts: &[&str],
    ) -> Result<(Tensor, Option<f32>)> {
        let (ids, mask) = tok.encode_batch(texts, &model.device)?;
        let input = Input::Tokens {
            ids,
            mask: Some(mask.clone()),
        };
        let student = model.forward(&input, Mode::Train, false)?.output;
        let teacher = self.output(&input)?;
        let (loss, cosine) = hidden_terms(&student, &teacher, &mask, self.options.loss)?;
        Ok((loss, Some(cosine)))
    }

    /// The held-out comparison of `model` with the teacher on the examples `idx` of `set`.
    pub(crate) fn held_out(&self, model: &Model, set: &Data, idx: &[usize]) -> Result<HeldOut> {
        let metric = validate(model, set, idx)?;
        let mut sums = Sums::default();
        for chunk in idx.chunks(held_out_batch(set)) {
            match set {
                Data::Images(s) => {
                    let (x, _) = s.batch(chunk, &model.device)?;
                    self.compare_logits(model, &Input::Images(x), None, &mut sums)?;
                }
                Data::Text(t) => {
                    let (x, _) = t.batch(chunk, &model.device)?;
                    let input = Input::Tokens { ids: x, mask: None };
                    self.compare_logits(model, &input, Some(chunk), &mut sums)?;
                }
                Data::Pairs { pairs, tok } => {
                    let texts = pair_texts(pairs, chunk);
                    let (ids, mask) = tok.encode_batch(&texts, &model.device)?;
                    let input = Input::Tokens {
                        ids,
                        mask: Some(mask.clone()),
                    };
                    let s = model.forward(&input, Mode::Infer, false)?.output;
                    let t = self.output(&input)?;
                    let (_, cosine) = hidden_terms(&s, &t, &mask, DistillLoss::Cosine)?;
                    sums.add(None, f64::from(cosine), texts.len());
                }
            }
        }
        Ok(sums.finish(set, metric))
    }

    /// Add the KL (τ = 1, per row) and the top-1 matches of `model` and the teacher on `input`
    /// (the text `blocks`, for the cache).
    fn compare_logits(
        &self,
        model: &Model,
        input: &Input,
        blocks: Option<&[usize]>,
        sums: &mut Sums,
    ) -> Result<()> {
        let s = rows(&model.forward(input, Mode::Infer, false)?.output)?;
        let t = self.target(input, blocks)?;
        let (n, classes) = s.dims2()?;
        let kl = kl_distill(&s, &t, 1.0)?.to_scalar::<f32>()?;
        let matched = agreement(&s, &t)?;
        sums.add(
            Some(f64::from(kl) * (n * classes) as f64),
            f64::from(matched) * n as f64,
            n,
        );
        Ok(())
    }
}

/// Examples per held-out pass: one text block at a time (as perplexity), 64 otherwise.
fn held_out_batch(set: &Data) -> usize {
    match set {
        Data::Text(_) => 1,
        _ => 64,
    }
}

/// Running sums of a held-out comparison.
#[derive(Default)]
struct Sums {
    kl: Option<f64>,
    agreement: f64,
    rows: usize,
}

impl Sums {
    fn add(&mut self, kl: Option<f64>, agreement: f64, rows: usize) {
        if let Some(k) = kl {
            *self.kl.get_or_insert(0.0) += k;
        }
        self.agreement += agreement;
        self.rows += rows;
    }

    fn finish(self, set: &Data, metric: Metrics) -> HeldOut {
        let n = self.rows.max(1) as f64;
        HeldOut {
            kl: self.kl.map(|k| k / n),
            agreement: self.agreement / n,
            agreement_kind: match set {
                Data::Pairs { .. } => "mean cosine of the last hidden states",
                _ => "top-1 match",
            },
            compared: self.rows,
            metric,
        }
    }
}

/// The distilled model against its teacher on held-out data.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOut {
    /// The mean KL(teacher ‖ student) per example or token at τ = 1 (logits only).
    pub kl: Option<f64>,
    /// The top-1 agreement (logits) or the mean cosine of the hidden states (bert).
    pub agreement: f64,
    /// What `agreement` measures.
    pub agreement_kind: &'static str,
    /// Rows compared: images, tokens, or sentences.
    pub compared: usize,
    /// The student's own task metric on the same examples.
    pub metric: Metrics,
}

/// The hidden-state loss of `kind` and the mean cosine over the real tokens of `mask`.
fn hidden_terms(
    student: &Tensor,
    teacher: &Tensor,
    mask: &Tensor,
    kind: DistillLoss,
) -> Result<(Tensor, f32)> {
    let m = mask.to_dtype(DType::F32)?;
    let tokens = m.sum_all()?.clamp(1.0, f64::MAX)?;
    let dot = (student * teacher)?.sum(D::Minus1)?;
    let norms = (student.sqr()?.sum(D::Minus1)? * teacher.sqr()?.sum(D::Minus1)?)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    let cosine = (dot / norms)?;
    let mean_cos = (&cosine * &m)?.sum_all()?.div(&tokens)?;
    let loss = match kind {
        DistillLoss::Cosine => mean_cos.affine(-1.0, 1.0)?,
        DistillLoss::Mse | DistillLoss::Kl => {
            let width = student.dim(D::Minus1)? as f64;
            let sq = (student - teacher)?.sqr()?.sum(D::Minus1)?;
            ((sq * &m)?.sum_all()?.div(&tokens)? / width)?
        }
    };
    Ok((loss, mean_cos.detach().to_scalar::<f32>()?))
}

/// What [`distill`] did.
#[derive(Debug, Clone, Serialize)]
pub struct DistillReport {
    /// Steps completed.
    pub steps: usize,
    /// Steps planned.
    pub total_steps: usize,
    /// The step the run resumed from, if it did.
    pub resumed_from: Option<usize>,
    /// The distillation loss of the last step.
    pub final_loss: f32,
    /// Training examples (images, text blocks or sentence pairs) seen over the whole run.
    pub examples_seen: usize,
    /// Training tokens seen (text).
    pub tokens_seen: Option<usize>,
    /// Training throughput of this process.
    pub samples_per_sec: f64,
    /// The held-out comparison with the teacher (absent when the run stopped early).
    pub held_out: Option<HeldOut>,
    /// `sha256:` of the data as read (all of it, training and held-out parts).
    pub data_digest: String,
    /// `(step, loss)` of every step of the run (across resumes), from `metrics.jsonl`; at most
    /// [`CURVE_POINTS`] points, evenly spaced.
    pub loss_curve: Vec<[f64; 2]>,
    /// What this process read from and wrote to the teacher-logit cache, when there is one.
    pub teacher_cache: Option<CacheStats>,
}

/// The most points a card's loss curve keeps.
pub const CURVE_POINTS: usize = 500;

/// The `(step, loss)` records of `metrics`, thinned to at most [`CURVE_POINTS`].
fn loss_curve(metrics: &Path) -> Result<Vec<[f64; 2]>> {
    let points: Vec<[f64; 2]> = super::metrics::read(metrics)?
        .iter()
        .filter_map(|r| Some([r.get("step")?.as_f64()?, r.get("loss")?.as_f64()?]))
        .collect();
    let stride = points.len().div_ceil(CURVE_POINTS).max(1);
    Ok(points
        .iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0 || *i + 1 == points.len())
        .map(|(_, p)| *p)
        .collect())
}

impl DistillReport {
    /// Whether every planned step ran.
    pub fn finished(&self) -> bool {
        self.steps >= self.total_steps
    }
}

/// Refuse a student that cannot be compared with its teacher: another family, another output
/// (classes, vocabulary), another input, or (bert) another width.
pub fn check_student(student: &ModelConfig, teacher: &ModelConfig) -> Result<()> {
    let bad = |what: &str, s: usize, t: usize, fix: &str| Error::InvalidValue {
        what: format!("the aux net's {what}"),
        value: s.to_string(),
        reason: format!(
            "the teacher's is {t}; a student is distilled on the teacher's outputs, so {fix}"
        ),
    };
    if student.family != teacher.family {
        return Err(Error::InvalidValue {
            what: "the aux net's family".into(),
            value: student.family.to_string(),
            reason: format!("the teacher is a {}", teacher.family),
        });
    }
    match student.family {
        Family::Vit => {
            for (what, s, t) in [
                ("classes", student.classes, teacher.classes),
                ("image size", student.image_size, teacher.image_size),
                ("channels", student.channels, teacher.channels),
            ] {
                if s != t {
                    return Err(bad(what, s, t, "they must match"));
                }
            }
        }
        Family::Llama | Family::Bert => {
            if student.vocab != teacher.vocab {
                return Err(bad(
                    "vocabulary",
                    student.vocab,
                    teacher.vocab,
                    "they share it",
                ));
            }
        }
    }
    if student.family == Family::Bert && student.hidden != teacher.hidden {
        return Err(bad(
            "width",
            student.hidden,
            teacher.hidden,
            "bert's hidden-state loss needs the teacher's width",
        ));
    }
    Ok(())
}

/// Where a distillation run keeps its files.
#[derive(Debug, Clone, Copy)]
pub struct DistillPaths<'a> {
    /// The training data.
    pub data: &'a Path,
    /// The resumable state.
    pub state: &'a Path,
    /// The `metrics.jsonl` of the run.
    pub metrics: &'a Path,
    /// Where teacher-logit caches live (used when `DistillOptions::top_k` is set).
    pub cache_root: &'a Path,
}

/// Train `student` to match `teacher` on `paths.data` (read with the tokenizer of
/// `teacher_ckpt`), through the shared loop: budget, optimiser, schedule, augmentation and
/// resume as in `opts`. Returns before the held-out comparison when `opts.stop_after` stops it.
pub fn distill(
    student: &Model,
    teacher: &Teacher,
    teacher_ckpt: &Checkpoint,
    paths: DistillPaths<'_>,
    opts: &AdaptOptions,
    reporter: &dyn Reporter,
) -> Result<DistillReport> {
    distill_views(student, &[], teacher, teacher_ckpt, paths, opts, reporter)
}

/// [`distill`] where each step trains one of `views`, models over `student`'s variables,
/// drawn uniformly with the step's seed (a Learngene Pool fine-tune: `student` holds every
/// variable of the pool, `views` are its configurations). The held-out comparison reads the
/// last view.
pub fn distill_views(
    student: &Model,
    views: &[Model],
    teacher: &Teacher,
    teacher_ckpt: &Checkpoint,
    paths: DistillPaths<'_>,
    opts: &AdaptOptions,
    reporter: &dyn Reporter,
) -> Result<DistillReport> {
    check_options(opts)?;
    check_family_options(&student.config, opts)?;
    check_student(&student.config, &teacher.model.config)?;
    let set = read_data(teacher_ckpt, &teacher.model.config, paths.data, opts)?;
    let (train, held) = split_data(&set, paths.data, opts)?;
    open_cache(teacher, teacher_ckpt, &set, opts, paths.cache_root)?;
    if held.is_empty() {
        return Err(Error::Dataset {
            path: paths.data.to_path_buf(),
            reason: format!(
                "a validation fraction of {} holds out none of its {} examples, and the teacher agreement is measured on held-out data only; raise DATASET.VAL_FRACTION",
                opts.val_fraction,
                train.len()
            ),
        });
    }
    let run = Steps {
        model: student,
        set: &set,
        train,
        eval_idx: &held,
        opts,
        teacher: Some(teacher),
        state_path: paths.state,
        metrics_path: paths.metrics,
        task: "distil",
        views,
    };
    let done = run_steps(&run, reporter)?;
    let examples_seen = done.stop * opts.batch_size;
    let mut report = DistillReport {
        steps: done.stop,
        total_steps: done.total,
        resumed_from: done.resumed_from,
        final_loss: done.last_loss,
        examples_seen,
        tokens_seen: matches!(set, Data::Text(_)).then_some(examples_seen * opts.seq_len),
        samples_per_sec: done.samples_per_sec,
        held_out: None,
        data_digest: set.digest(),
        loss_curve: Vec::new(),
        teacher_cache: None,
    };
    if !report.finished() {
        return Ok(report);
    }
    reporter.report(Event::Finish);
    let held_out = teacher.held_out(views.last().unwrap_or(student), &set, &held)?;
    let mut log = super::metrics::MetricsLog::open(paths.metrics, done.total)?;
    log.append(&serde_json::json!({
        "step": done.total,
        "epoch": done.total as f64 / done.per_epoch as f64,
        "eval": &held_out,
    }))?;
    report.held_out = Some(held_out);
    report.loss_curve = loss_curve(paths.metrics)?;
    report.teacher_cache = teacher.cache.get().map(LogitCache::stats);
    Ok(report)
}

/// The metric of each of `models` (readers of the teacher's input, e.g. a pool's
/// configurations) on the split of `data` that a distillation with `opts` holds out.
pub fn held_out_metrics(
    models: &[Model],
    teacher_ckpt: &Checkpoint,
    teacher: &ModelConfig,
    data: &Path,
    opts: &AdaptOptions,
) -> Result<Vec<Metrics>> {
    let set = read_data(teacher_ckpt, teacher, data, opts)?;
    let (_, held) = split_data(&set, data, opts)?;
    models.iter().map(|m| validate(m, &set, &held)).collect()
}

/// Open the teacher-logit cache of `teacher` on `set` under `root` when its options ask for
/// one; only text distilled on logits has one.
fn open_cache(
    teacher: &Teacher,
    teacher_ckpt: &Checkpoint,
    set: &Data,
    opts: &AdaptOptions,
    root: &Path,
) -> Result<()> {
    let top_k = teacher.options.top_k;
    if top_k == 0 || teacher.cache.get().is_some() {
        return Ok(());
    }
    if !matches!(set, Data::Text(_)) || teacher.options.loss != DistillLoss::Kl {
        return Err(Error::InvalidValue {
            what: "DISTILL.TOP_K".into(),
            value: top_k.to_string(),
            reason: "the teacher-logit cache is for text models distilled on logits (llama); images are augmented anew on every step and bert distils hidden states: set it to 0".into(),
        });
    }
    let key = CacheKey {
        teacher: crate::algorithm::extract::ancestor_files(teacher_ckpt)?,
        data: set.digest(),
        block: opts.seq_len,
        top_k: top_k.min(teacher.model.config.vocab),
        precision: opts.precision.to_string(),
    };
    let _ = teacher.cache.set(LogitCache::open(root, &key)?);
    Ok(())
}
