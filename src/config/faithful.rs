//! `MODE: faithful` for tleg and sws: build the algorithm's aux net (sizes from `AUX.*` and
//! `MODEL.TYPE`, the init from `AUX.INIT`), distil it from the teacher (`DISTILL.*`, the data
//! at `DATASET.PATH`, the budget and optimiser from `TRAIN.*`), write it out as a plain model
//! (`aux/` in the run directory, loadable as any checkpoint) and publish its trained free
//! parameters as a `faithful` gene in the unit format `spawn` reads.
//!
//! The run directory holds `config.yaml`, `metrics.jsonl` (steps with the teacher agreement,
//! and the held-out comparison per epoch), the resumable state `.aux-state/` until the gene is
//! published, `aux/` and `gene.json`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::Config;
use super::plan::{AncestorRun, adapt_options};
use super::run::{Trained, check_same_run, write_run_config};
use super::size;
use crate::algorithm::faithful::{AuxInit, AuxNet, AuxRequest, materialise};
use crate::algorithm::{check_tag_free, find, publish_trained};
use crate::anatomy::Family;
use crate::checkpoint::{Checkpoint, SideFile, open};
use crate::error::{Error, Result};
use crate::fsutil::{StagedDir, write_atomic};
use crate::nn::init::config_json;
use crate::nn::{Model, ModelConfig, WithExtras, device};
use crate::progress::Reporter;
use crate::registry::Registry;
use crate::train::distill::{
    DistillLoss, DistillOptions, DistillPaths, DistillReport, KlReduction, Teacher, distill,
};
use crate::train::features::{FeatureMatch, Positions};
use crate::train::metrics::METRICS_FILE;

/// The resumable state's directory in the run directory.
const STATE_DIR: &str = ".aux-state";
/// The trained aux net's directory in the run directory.
const AUX_DIR: &str = "aux";
/// The papers' virtual layers: TLEG 12, SWS 16.
const TLEG_LAYERS: u64 = 12;
const SWS_LAYERS: u64 = 16;
/// SWS's stage ratio.
const SWS_RATIO: [usize; 5] = [3, 3, 4, 3, 3];

/// The loss of `DISTILL.*`, checked.
pub(super) fn distill_options(cfg: &Config, family: Family) -> Result<DistillOptions> {
    let defaults = DistillOptions::default();
    let alpha = cfg.float("DISTILL.ALPHA").unwrap_or(defaults.alpha);
    if !(0.0..=1.0).contains(&alpha) {
        return Err(cfg.error(
            "DISTILL.ALPHA",
            format!("{alpha} is not a weight in [0, 1]"),
        ));
    }
    let tau = cfg.float("DISTILL.TAU").unwrap_or(defaults.tau);
    if !(tau > 0.0 && tau.is_finite()) {
        return Err(cfg.error(
            "DISTILL.TAU",
            format!("{tau} is not a positive temperature"),
        ));
    }
    let reduction = match cfg.str("DISTILL.REDUCTION").unwrap_or("mean") {
        "mean" => KlReduction::Mean,
        "deit" => KlReduction::Deit,
        other => {
            return Err(cfg.error(
                "DISTILL.REDUCTION",
                format!("'{other}' is neither `mean` (per example) nor `deit` (sum over batch x classes)"),
            ));
        }
    };
    let loss = match (family, cfg.str("DISTILL.LOSS")) {
        (Family::Bert, None | Some("mse")) => DistillLoss::Mse,
        (Family::Bert, Some("cosine")) => DistillLoss::Cosine,
        (Family::Bert, Some(other)) => {
            return Err(cfg.error(
                "DISTILL.LOSS",
                format!("'{other}': bert has no logits, so its last hidden states are distilled with `mse` or `cosine`"),
            ));
        }
        (_, None | Some("kl")) => DistillLoss::Kl,
        (_, Some(other)) => {
            return Err(cfg.error(
                "DISTILL.LOSS",
                format!("'{other}': {family} is distilled on its logits with `kl`"),
            ));
        }
    };
    let top_k = cfg.int("DISTILL.TOP_K").unwrap_or(0) as usize;
    if top_k > 0 && family != Family::Llama {
        return Err(cfg.error(
            "DISTILL.TOP_K",
            format!("{top_k}: the teacher-logit cache is for text models (llama); {family} is distilled from the teacher on every step, so set it to 0"),
        ));
    }
    Ok(DistillOptions {
        alpha,
        tau,
        reduction,
        loss,
        top_k,
    })
}

/// `DISTILL.FEATURES`, checked against the family and the cache.
pub(super) fn feature_positions(
    cfg: &Config,
    family: Family,
    top_k: usize,
) -> Result<Option<Positions>> {
    let Some(text) = cfg.str("DISTILL.FEATURES") else {
        return Ok(None);
    };
    let positions = Positions::parse(text).map_err(|why| cfg.error("DISTILL.FEATURES", why))?;
    if family == Family::Bert {
        return Err(cfg.error(
            "DISTILL.FEATURES",
            format!("'{text}': bert is distilled on its last hidden states already; remove it"),
        ));
    }
    if top_k > 0 {
        return Err(cfg.error(
            "DISTILL.FEATURES",
            format!("'{text}': feature matching runs the teacher on every step, so the teacher-logit cache (DISTILL.TOP_K) cannot stand in for it; set DISTILL.TOP_K to 0"),
        ));
    }
    Ok(Some(positions))
}

/// Where teacher-logit caches live: `DISTILL.CACHE_DIR`, else `cache/teacher-logits` beside
/// the registry (`$LGREG_HOME/cache/teacher-logits` by default).
fn cache_root(cfg: &Config, registry: &Registry) -> PathBuf {
    match cfg.str("DISTILL.CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => registry
            .root()
            .parent()
            .unwrap_or(registry.root())
            .join("cache")
            .join("teacher-logits"),
    }
}

/// A positive integer key, or `default`.
fn positive(cfg: &Config, key: &str, default: usize) -> Result<usize> {
    match cfg.int(key) {
        Some(0) => Err(cfg.error(key, "0: must be at least 1")),
        Some(n) => Ok(n as usize),
        None => Ok(default),
    }
}

/// The aux net's sizes: the teacher's, with the virtual depth and the widths the config asks
/// for (`AUX.*`, else the width and heads `MODEL.TYPE` names); unset widths keep the teacher's
/// head width, grouping and MLP ratio.
fn aux_config(cfg: &Config, algorithm: &str, teacher: &ModelConfig) -> Result<ModelConfig> {
    let named = cfg.str("MODEL.TYPE").and_then(size::parse);
    let depth = match algorithm {
        "sws" => SWS_LAYERS,
        _ => TLEG_LAYERS,
    };
    let layers = positive(cfg, "AUX.LAYERS", depth as usize)?;
    let name_width = named.as_ref().and_then(|s| s.width);
    let hidden = positive(cfg, "AUX.HIDDEN", name_width.unwrap_or(teacher.hidden))?;
    let kept_heads = (hidden / teacher.head_dim().max(1)).max(1);
    let heads = positive(
        cfg,
        "AUX.HEADS",
        named.as_ref().and_then(|s| s.heads).unwrap_or(kept_heads),
    )?;
    let group = (teacher.heads / teacher.kv_heads.max(1)).max(1);
    let kv_heads = positive(cfg, "AUX.KV_HEADS", (heads / group).max(1))?;
    let ffn = teacher.intermediate * hidden / teacher.hidden.max(1);
    let intermediate = positive(cfg, "AUX.FFN", ffn)?;
    if hidden % heads != 0 || heads % kv_heads != 0 {
        return Err(cfg.error(
            "AUX.HEADS",
            format!("{heads} heads and {kv_heads} key/value heads do not divide width {hidden} into whole heads and groups; set AUX.HEADS / AUX.KV_HEADS so that they do"),
        ));
    }
    Ok(ModelConfig {
        layers,
        hidden,
        heads,
        kv_heads,
        intermediate,
        ..teacher.clone()
    })
}

/// `AUX.STAGES` (sws), default 3:3:4:3:3.
fn stage_ratio(cfg: &Config) -> Result<Vec<usize>> {
    let Some(Value::Array(items)) = cfg.get("AUX.STAGES") else {
        return Ok(SWS_RATIO.to_vec());
    };
    items
        .iter()
        .map(|v| match v.as_u64() {
            Some(n) if n > 0 => Ok(n as usize),
            _ => Err(cfg.error(
                "AUX.STAGES",
                format!("{v} is not a positive share; give a ratio such as [3, 3, 4, 3, 3]"),
            )),
        })
        .collect()
}

/// The run directory `dir` checked against `resume`: a new run refuses a directory that holds
/// an unfinished run (`state`) or the trained model it makes (`product`).
pub(super) fn check_run_dir(
    cfg: &Config,
    dir: &Path,
    resume: bool,
    state: &Path,
    product: &Path,
) -> Result<()> {
    if resume {
        return check_same_run(cfg, dir);
    }
    if state.exists() {
        return Err(cfg.error(
            "OUTPUT_DIR",
            format!("'{}' holds an unfinished run (`{}`); continue it with `lgreg train --resume`, or choose another OUTPUT_DIR", dir.display(), state.display()),
        ));
    }
    if product.exists() {
        return Err(cfg.error(
            "OUTPUT_DIR",
            format!("'{}' already holds a trained model (`{}`); choose another OUTPUT_DIR, or remove it to train again", dir.display(), product.display()),
        ));
    }
    Ok(())
}

/// `DATASET.INPUT_SIZE` must be the teacher's image size: images are not resized.
pub(super) fn check_input_size(cfg: &Config, teacher: &ModelConfig) -> Result<()> {
    match cfg.int("DATASET.INPUT_SIZE") {
        Some(side) if teacher.family == Family::Vit && side as usize != teacher.image_size => {
            Err(cfg.error(
                "DATASET.INPUT_SIZE",
                format!(
                    "{side} differs from the teacher's image size {}; images are used at their stored size, so set it to {}",
                    teacher.image_size, teacher.image_size
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The `config.json` keys that carry a model's sizes (HF and timm spellings).
const SIZE_KEYS: &[&str] = &[
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
];

/// The teacher's `config.json` with the aux net's sizes written over it (and the keys it
/// lacks added); everything else (token ids, RoPE, dtypes) stays the teacher's.
pub(super) fn aux_config_json(teacher: &Checkpoint, aux: &ModelConfig) -> Value {
    let mut merged = match &teacher.config {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if let Value::Object(own) = config_json(aux) {
        for (key, value) in own {
            if SIZE_KEYS.contains(&key.as_str()) || !merged.contains_key(&key) {
                merged.insert(key, value);
            }
        }
    }
    if merged.contains_key("head_dim") {
        merged.insert("head_dim".into(), Value::from(aux.head_dim()));
    }
    Value::Object(merged)
}

/// Write a model (a trained aux net, its layers expanded, or a pseudo-descendant) as a plain
/// model directory at `target`, with the teacher's tokenizer and side files.
pub(super) fn write_aux(student: &Model, teacher: &Checkpoint, target: &Path) -> Result<PathBuf> {
    let staged = StagedDir::new(target, true)?;
    let config = aux_config_json(teacher, &student.config);
    staged.write_file("config.json", &serde_json::to_vec_pretty(&config)?)?;
    let plain = Model::new(
        student.config.clone(),
        Box::new(materialise(student)?),
        student.device.clone(),
    );
    plain
        .write_weights(staged.path())
        .map_err(|e| staged.in_target_terms(e))?;
    for side in &teacher.side_files {
        match side {
            SideFile::Copy { name, path } => staged.copy_file(name, path)?,
            SideFile::Bytes { name, bytes } => staged.write_file(name, bytes)?,
        }
    }
    staged.commit()
}

/// What the card records of the distillation.
fn card_diagnostics(
    report: &DistillReport,
    options: &DistillOptions,
    init: AuxInit,
    aux: &ModelConfig,
    teacher: &str,
) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    out.insert(
        "distill".into(),
        json!({
            "teacher": teacher,
            "init": init,
            "steps": report.total_steps,
            "examples_seen": report.examples_seen,
            "tokens_seen": report.tokens_seen,
            "final_loss": report.final_loss,
            "held_out": report.held_out,
            "data_digest": report.data_digest,
            "loss_curve": report.loss_curve,
            "teacher_cache": report.teacher_cache,
            "loss": options,
            "aux": {
                "layers": aux.layers,
                "hidden": aux.hidden,
                "heads": aux.heads,
                "kv_heads": aux.kv_heads,
                "intermediate": aux.intermediate,
            },
        }),
    );
    out.insert("aux_init".into(), serde_json::to_value(init)?);
    Ok(out)
}

/// Run a faithful `ancestor_*` config: distil the aux net from the teacher at `teacher_path`
/// (the caller resolves it) and publish its gene to `registry`.
pub fn train_aux(
    cfg: &Config,
    run: AncestorRun,
    teacher_path: PathBuf,
    registry: &Registry,
    resume: bool,
    reporter: &dyn Reporter,
) -> Result<Trained> {
    let algorithm = find(&run.method.algorithm)?;
    let teacher_ckpt = open(&teacher_path)?;
    if algorithm.imports(&teacher_ckpt).is_some() {
        // An official TLEG checkpoint is the trained aux net already: it is imported as it is.
        return super::run::train(cfg, run, teacher_path, registry, reporter);
    }
    let dir = run.output_dir.clone();
    check_run_dir(cfg, &dir, resume, &dir.join(STATE_DIR), &dir.join(AUX_DIR))?;
    if !resume {
        check_tag_free(&run.request, registry)?;
    }
    let data = cfg.required_str("DATASET.PATH", "target/fixtures/shakespeare/train.txt")?;
    let mut opts = adapt_options(cfg)?;
    let dev = device(opts.cuda)?;
    let teacher_model = Model::load(&teacher_ckpt, &dev)?.with_precision(opts.precision);
    let family = teacher_model.config.family;
    check_input_size(cfg, &teacher_model.config)?;
    let options = distill_options(cfg, family)?;
    let aux_cfg = aux_config(cfg, algorithm.name(), &teacher_model.config)?;
    let init = AuxInit::parse(cfg.str("AUX.INIT").unwrap_or("random"))
        .map_err(|why| cfg.error("AUX.INIT", why))?;
    let ratio = stage_ratio(cfg)?;
    let aux: Box<dyn AuxNet> = algorithm.aux_net(&AuxRequest {
        config: &aux_cfg,
        teacher: &teacher_model,
        init,
        seed: opts.seed,
        ratio: &ratio,
    })?;
    let mut teacher = Teacher::new(teacher_model, options);
    let params = match feature_positions(cfg, family, options.top_k)? {
        None => aux.params(),
        Some(positions) => {
            let features =
                FeatureMatch::new(&aux_cfg, &teacher.model.config, positions, opts.seed, &dev)?;
            let extras = features.vars();
            teacher.features = Some(features);
            Box::new(WithExtras {
                inner: aux.params(),
                extras,
            })
        }
    };
    let student = Model::new(aux_cfg.clone(), params, dev).with_precision(opts.precision);
    let cache_root = cache_root(cfg, registry);
    write_run_config(cfg, &dir)?;
    let state = dir.join(STATE_DIR);
    opts.resume = resume && crate::train::state::exists(&state);
    let paths = DistillPaths {
        data: Path::new(data),
        state: &state,
        metrics: &dir.join(METRICS_FILE),
        cache_root: &cache_root,
    };
    let report = distill(&student, &teacher, &teacher_ckpt, paths, &opts, reporter)?;
    if !report.finished() {
        return Err(Error::InvalidValue {
            what: "the aux-net run".into(),
            value: format!("{} of {} steps", report.steps, report.total_steps),
            reason: format!(
                "it stopped early; continue it with `lgreg train --resume` (state in `{}`)",
                state.display()
            ),
        });
    }
    let aux_dir = write_aux(&student, &teacher_ckpt, &dir.join(AUX_DIR))?;
    let mut diagnostics = card_diagnostics(&report, &options, init, &aux_cfg, &run.ancestor)?;
    if let Some(f) = &teacher.features {
        diagnostics.insert(
            "feature_match".into(),
            json!({ "positions": f.positions, "pairs": f.pairs }),
        );
    }
    let gene = publish_trained(
        &run.request,
        &aux_dir,
        &teacher_ckpt,
        &|ancestor, out| aux.write_units(ancestor, out),
        diagnostics,
        registry,
        reporter,
    )?;
    write_atomic(&dir.join("gene.json"), &serde_json::to_vec_pretty(&gene)?)?;
    let _ = fs_err::remove_dir_all(&state);
    Ok(Trained {
        run_dir: dir.display().to_string(),
        gene,
        distilled: Some(report),
        pseudo: None,
        notes: cfg.notes.clone(),
    })
}
