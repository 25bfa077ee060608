//! What a config asks of the verbs: [`ancestor_run`] turns an `ancestor_*` config into the
//! extraction `lgreg train` runs, [`descendant_run`] turns a `descendant_*` config into the
//! spawn and fine-tune `lgreg adapt --config` runs. Defaults follow the toolbox where it has
//! one (`SEED` 42, `outputs/<METHOD_FAMILY>/…`).

use std::path::PathBuf;

use serde_json::Value;

use super::size::{self, SizeName};
use super::{Config, Method};
use crate::algorithm::{ExtractRequest, GrowOptions};
use crate::error::Result;
use crate::nn::Precision;
use crate::registry::manifest::GeneCard;
use crate::train::AdaptOptions;
use crate::train::augment::Augment;
use crate::train::randaugment::RandAugment;

/// The toolbox's default seed.
const DEFAULT_SEED: u64 = 42;

/// DeiT scales the learning rate by the batch over this (`lr * batch / 512`).
const DEIT_LR_BATCH: f64 = 512.0;

/// An extraction asked for by an `ancestor_*` config.
#[derive(Debug, Clone)]
pub struct AncestorRun {
    /// The method.
    pub method: Method,
    /// `GENE.ANCESTOR_MODEL_PATH` as written: a Hub id, a directory or a checkpoint file.
    pub ancestor: String,
    /// The extraction, its `ancestor` still to be resolved by the caller.
    pub request: ExtractRequest,
    /// The run directory.
    pub output_dir: PathBuf,
}

/// A spawn and fine-tune asked for by a `descendant_*` config.
#[derive(Debug, Clone)]
pub struct DescendantRun {
    /// The method.
    pub method: Method,
    /// `MODEL.LOAD_GENE` as written.
    pub gene: String,
    /// The descendant's depth.
    pub layers: usize,
    /// What `MODEL.TYPE` says of the size.
    pub size: Option<SizeName>,
    /// Algorithm options of the growth.
    pub grow: GrowOptions,
    /// The training data.
    pub data: PathBuf,
    /// The fine-tuning.
    pub adapt: AdaptOptions,
    /// `DATASET.INPUT_SIZE`, checked against the model.
    pub input_size: Option<usize>,
    /// The run directory.
    pub output_dir: PathBuf,
}

impl DescendantRun {
    /// The descendant as spawned from the gene, before fine-tuning.
    pub fn init_dir(&self) -> PathBuf {
        self.output_dir.join("init")
    }

    /// The fine-tuned descendant.
    pub fn model_dir(&self) -> PathBuf {
        self.output_dir.join("model")
    }
}

pub(crate) fn seed(cfg: &Config) -> u64 {
    cfg.int("SEED").unwrap_or(DEFAULT_SEED)
}

fn default_output(cfg: &Config, method: &Method, role: &str) -> PathBuf {
    let what = cfg.str("MODEL.TYPE").unwrap_or(method.family.as_str());
    PathBuf::from(format!("outputs/{}/{role}_{what}", method.name()))
}

pub(crate) fn output_dir(cfg: &Config, method: &Method, role: &str) -> PathBuf {
    cfg.path("OUTPUT_DIR")
        .unwrap_or_else(|| default_output(cfg, method, role))
}

/// `GENE.PARAMS` as the recipe's `key=value` overrides.
fn recipe_sets(cfg: &Config) -> Vec<String> {
    match cfg.get("GENE.PARAMS") {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        _ => Vec::new(),
    }
}

/// The extraction an `ancestor_*` config asks for.
pub fn ancestor_run(cfg: &Config) -> Result<AncestorRun> {
    let method = cfg.method()?;
    cfg.mode()?;
    let ancestor = match cfg.str("DISTILL.TEACHER") {
        Some(teacher) => teacher,
        None => cfg.required_str(
            "GENE.ANCESTOR_MODEL_PATH",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
        )?,
    }
    .to_string();
    let request = ExtractRequest {
        ancestor: PathBuf::from(&ancestor),
        hub_repo: None,
        algorithm: method.algorithm.clone(),
        recipe: cfg.path("GENE.RECIPE"),
        sets: recipe_sets(cfg),
        data: cfg.path("DATASET.PATH"),
        seed: seed(cfg),
        name: cfg.str("GENE.NAME").map(str::to_string),
        version: cfg.str("GENE.VERSION").map(str::to_string),
        run_config: Some(cfg.resolved()),
    };
    Ok(AncestorRun {
        output_dir: output_dir(cfg, &method, "ancestor"),
        method,
        ancestor,
        request,
    })
}

fn layers(cfg: &Config, size: Option<&SizeName>) -> Result<usize> {
    let from_type = size.and_then(|s| s.depth);
    let layers = cfg.int("MODEL.LAYERS").map(|n| n as usize).or(from_type);
    match layers {
        Some(0) => Err(cfg.error("MODEL.LAYERS", "0 layers: a descendant needs at least one")),
        Some(n) => Ok(n),
        None => Err(cfg.error(
            "MODEL.TYPE",
            "does not give the descendant's depth: end it in `_L<N>` (e.g. `deit_tiny_patch16_224_L6`) or set MODEL.LAYERS",
        )),
    }
}

fn stages(cfg: &Config) -> Result<Option<Vec<usize>>> {
    let Some(Value::Array(items)) = cfg.get("MODEL.STAGES") else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| {
            v.as_u64().map(|n| n as usize).ok_or_else(|| {
                cfg.error(
                    "MODEL.STAGES",
                    format!("{v} is not a layer count; give a list such as [3, 3, 2]"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn precision(cfg: &Config) -> Result<Precision> {
    match cfg.str("TRAIN.PRECISION") {
        None => Ok(Precision::F32),
        Some(p) => Precision::parse(p).map_err(|e| cfg.error("TRAIN.PRECISION", e.to_string())),
    }
}

/// The peak learning rate: `TRAIN.LR`, times `BATCH_SIZE / 512` when the config says
/// `UNSCALE_LR: false` as the toolbox's DeiT configs do.
fn peak_lr(cfg: &Config, batch: usize) -> Result<f64> {
    Ok(scaled_lr(cfg, "TRAIN.LR", batch)?.unwrap_or(1e-3))
}

/// The learning rate at `key`, if set, scaled as `TRAIN.LR` is (`UNSCALE_LR: false`: times
/// `batch / 512`).
pub(crate) fn scaled_lr(cfg: &Config, key: &str, batch: usize) -> Result<Option<f64>> {
    let Some(lr) = cfg.float(key) else {
        return Ok(None);
    };
    if lr <= 0.0 || !lr.is_finite() {
        return Err(cfg.error(key, format!("{lr} is not a positive learning rate")));
    }
    Ok(Some(match cfg.bool("TRAIN.UNSCALE_LR") {
        Some(false) => lr * batch as f64 / DEIT_LR_BATCH,
        _ => lr,
    }))
}

pub(crate) fn adapt_options(cfg: &Config) -> Result<AdaptOptions> {
    let defaults = AdaptOptions::default();
    let batch_size = cfg
        .int("TRAIN.BATCH_SIZE")
        .map_or(defaults.batch_size, |b| b as usize);
    let lr = peak_lr(cfg, batch_size)?;
    Ok(AdaptOptions {
        steps: cfg.int("TRAIN.STEPS").map(|n| n as usize),
        epochs: cfg.int("TRAIN.EPOCHS").map(|n| n as usize),
        lr,
        min_lr: cfg.float("TRAIN.MIN_LR"),
        warmup_epochs: cfg.float("TRAIN.WARMUP_EPOCHS"),
        warmup_lr: cfg.float("TRAIN.WARMUP_LR").unwrap_or(0.0),
        adam_eps: cfg.float("TRAIN.OPT_EPS").unwrap_or(defaults.adam_eps),
        batch_size,
        weight_decay: cfg
            .float("TRAIN.WEIGHT_DECAY")
            .unwrap_or(defaults.weight_decay),
        max_grad_norm: cfg
            .float("TRAIN.MAX_GRAD_NORM")
            .unwrap_or(defaults.max_grad_norm),
        val_fraction: cfg
            .float("DATASET.VAL_FRACTION")
            .unwrap_or(defaults.val_fraction),
        limit: cfg.int("DATASET.LIMIT").map(|n| n as usize),
        seq_len: cfg
            .int("DATASET.SEQ_LEN")
            .map_or(defaults.seq_len, |n| n as usize),
        seed: seed(cfg),
        save_every: cfg
            .int("TRAIN.SAVE_EVERY")
            .map_or(defaults.save_every, |n| n as usize),
        cuda: cfg.cuda()?,
        precision: precision(cfg)?,
        augment: augment(cfg)?,
        eval_every_epoch: cfg.bool("TRAIN.EVAL_EVERY_EPOCH").unwrap_or(true),
        drop_path: cfg.float("MODEL.DROP_PATH").unwrap_or(0.0),
        dropout: cfg.float("MODEL.DROP").unwrap_or(0.0),
        ema: cfg
            .bool("MODEL.EMA")
            .unwrap_or(false)
            .then(|| cfg.float("MODEL.EMA_DECAY").unwrap_or(DEIT_EMA_DECAY)),
        ..defaults
    })
}

/// DeiT's EMA decay per step.
const DEIT_EMA_DECAY: f64 = 0.99996;

/// The probability at `key` (default `default`), checked to lie in [0, 1].
fn probability(cfg: &Config, key: &str, default: f64) -> Result<f64> {
    let p = cfg.float(key).unwrap_or(default);
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(cfg.error(key, format!("{p} is not a probability in [0, 1]")))
    }
}

/// The augmentations of `TRAIN.SMOOTHING`, `MIXUP`, `CUTMIX`, `MIXUP_PROB`,
/// `MIXUP_SWITCH_PROB`, `REPROB`, `AA` and `COLOR_JITTER`.
fn augment(cfg: &Config) -> Result<Augment> {
    let alpha = |key: &str| -> Result<f64> {
        let a = cfg.float(key).unwrap_or(0.0);
        if a >= 0.0 && a.is_finite() {
            Ok(a)
        } else {
            Err(cfg.error(key, format!("{a}: must be 0 (off) or positive")))
        }
    };
    let defaults = Augment::default();
    let rand_augment = RandAugment::parse(cfg.str("TRAIN.AA").unwrap_or(""))
        .map_err(|why| cfg.error("TRAIN.AA", why))?;
    let jitter = alpha("TRAIN.COLOR_JITTER")?;
    let aug = Augment {
        smoothing: probability(cfg, "TRAIN.SMOOTHING", 0.0)?,
        mixup: alpha("TRAIN.MIXUP")?,
        cutmix: alpha("TRAIN.CUTMIX")?,
        mix_prob: probability(cfg, "TRAIN.MIXUP_PROB", defaults.mix_prob)?,
        switch_prob: probability(cfg, "TRAIN.MIXUP_SWITCH_PROB", defaults.switch_prob)?,
        erase_prob: probability(cfg, "TRAIN.REPROB", 0.0)?,
        rand_augment,
        color_jitter: 0.0,
    };
    Ok(aug.with_color_jitter(jitter))
}

/// The spawn and fine-tune a `descendant_*` config asks for.
pub fn descendant_run(cfg: &Config) -> Result<DescendantRun> {
    let method = cfg.method()?;
    let gene = cfg
        .required_str("MODEL.LOAD_GENE", "smollm2-135m-tleg:0.1.0")?
        .to_string();
    let size = match cfg.str("MODEL.TYPE") {
        Some(name) => Some(
            size::parse(name)
                .ok_or_else(|| cfg.error("MODEL.TYPE", format!("'{name}' is not a size name")))?,
        ),
        None => None,
    };
    if let Some(f) = size.as_ref().and_then(|s| s.family)
        && f != method.family
    {
        return Err(cfg.error(
            "MODEL.TYPE",
            format!(
                "names a {f} but METHOD_FAMILY is `{}`; pick a size of the same family",
                method.name()
            ),
        ));
    }
    let data = PathBuf::from(cfg.required_str("DATASET.PATH", "data/train.txt")?);
    Ok(DescendantRun {
        layers: layers(cfg, size.as_ref())?,
        grow: GrowOptions {
            stages: stages(cfg)?,
            ..GrowOptions::default()
        },
        adapt: adapt_options(cfg)?,
        input_size: cfg.int("DATASET.INPUT_SIZE").map(|n| n as usize),
        output_dir: output_dir(cfg, &method, "descendant"),
        method,
        gene,
        size,
        data,
    })
}

/// The hidden width a gene card records for its ancestor.
fn card_width(card: &GeneCard) -> Option<u64> {
    let config = card.family.hyper_parameters.get("config")?;
    ["hidden_size", "dim", "n_embd", "embed_dim"]
        .iter()
        .find_map(|k| config.get(k).and_then(Value::as_u64))
}

/// Refuse a `MODEL.TYPE` whose width differs from the gene's: descendants keep the gene's
/// width until width selection lands.
pub fn check_width(cfg: &Config, run: &DescendantRun, card: &GeneCard) -> Result<()> {
    let (Some(want), Some(have)) = (run.size.as_ref().and_then(|s| s.width), card_width(card))
    else {
        return Ok(());
    };
    if want as u64 == have {
        return Ok(());
    }
    Err(cfg.error(
        "MODEL.TYPE",
        format!(
            "asks for width {want}, but gene `{}` has width {have}; descendants keep the gene's width for now, so pick a size of width {have}",
            run.gene
        ),
    ))
}
