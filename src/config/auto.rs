//! `MODE: faithful` for auto, the Auto Learngene paper's description (`fidelity:
//! as-described`; no code of the paper is public): train a *pseudo-descendant* from scratch on
//! the descendant's side of the data, then keep the window of whole ancestor layers most similar
//! to it.
//!
//! 1. The pseudo-descendant is the ancestor's shape at `GENE.PARAMS.pseudo_layers` blocks (the
//!    recipe's default otherwise), seeded random values (`SEED`), trained by the one training
//!    loop of `adapt` on `DATASET.PATH` with the budget and optimiser of `TRAIN.*`;
//! 2. the auto extractor (`rule: trained`) compares every ancestor layer with every
//!    pseudo-descendant layer by linear CKA on calibration samples of the same data, and keeps
//!    the best-aligned window (`GENE.PARAMS.layers`, `samples`, `token_norm`);
//! 3. the gene is published, and the CKA matrix drawn as a heat map.
//!
//! The run directory holds `config.yaml`, `pseudo-init/` (the seeded start), `pseudo/` (the
//! trained pseudo-descendant, a plain model with its `metrics.jsonl` and curves; its resumable
//! state `.pseudo.adapt-state/` until it is written), `cka.svg` / `cka.png` and `gene.json`.
//! `--resume` continues the pseudo-descendant's training, or, once it is written, goes on to the
//! selection.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Config;
use super::faithful::{check_run_dir, write_aux};
use super::plan::{AncestorRun, adapt_options};
use super::run::{Trained, write_run_config};
use crate::algorithm::auto::pseudo_depth;
use crate::algorithm::check_tag_free;
use crate::checkpoint::{Checkpoint, open};
use crate::error::{Error, Result};
use crate::nn::init::random_plain;
use crate::nn::{Model, ModelConfig, device};
use crate::plot::{Heatmap, Written, write_heatmap};
use crate::progress::Reporter;
use crate::recipe::Recipe;
use crate::registry::Registry;
use crate::train::{AdaptReport, adapt, state_dir};

/// The seeded, untrained pseudo-descendant in the run directory.
const INIT_DIR: &str = "pseudo-init";
/// The trained pseudo-descendant in the run directory.
const PSEUDO_DIR: &str = "pseudo";
/// The heat map's file stem in the run directory.
const HEATMAP: &str = "cka";

/// The pseudo-descendant's sizes: the ancestor's, at the recipe's `pseudo_layers` blocks.
fn pseudo_config(run: &AncestorRun, ancestor: &ModelConfig) -> Result<ModelConfig> {
    let recipe = Recipe::resolve(
        "auto",
        &ancestor.family.to_string(),
        run.request.recipe.as_ref(),
        &run.request.sets,
    )?;
    Ok(ModelConfig {
        layers: pseudo_depth(&recipe)?,
        ..ancestor.clone()
    })
}

/// Write the seeded random pseudo-descendant of `ancestor`'s shape to `target`.
fn write_init(
    run: &AncestorRun,
    ancestor: &Checkpoint,
    seed: u64,
    target: &Path,
) -> Result<PathBuf> {
    let cpu = candle_core::Device::Cpu;
    let config = pseudo_config(run, &ModelConfig::of(ancestor)?)?;
    let params = random_plain(&config, seed, &cpu)?;
    let model = Model::new(config, Box::new(params), cpu);
    write_aux(&model, ancestor, target)
}

/// Train the pseudo-descendant (or, resuming after it was written, find it) in `dir`.
fn train_pseudo(
    cfg: &Config,
    run: &AncestorRun,
    ancestor: &Checkpoint,
    data: &Path,
    resume: bool,
    reporter: &dyn Reporter,
) -> Result<(PathBuf, Option<AdaptReport>)> {
    let pseudo = run.output_dir.join(PSEUDO_DIR);
    if resume && pseudo.join("config.json").exists() {
        return Ok((pseudo, None));
    }
    let mut opts = adapt_options(cfg)?;
    device(opts.cuda)?;
    let init = write_init(run, ancestor, opts.seed, &run.output_dir.join(INIT_DIR))?;
    opts.resume = resume && crate::train::state::exists(&state_dir(&pseudo));
    let report = adapt(&init, data, &pseudo, &opts, reporter)?;
    if report.output.is_none() {
        return Err(Error::InvalidValue {
            what: "the pseudo-descendant's training".into(),
            value: format!("{} of {} steps", report.steps, report.total_steps),
            reason: format!(
                "it stopped early; continue it with `lgreg train --resume` (state in `{}`)",
                state_dir(&pseudo).display()
            ),
        });
    }
    Ok((pseudo, Some(report)))
}

/// The CKA matrix of a published auto gene's card, as rows of numbers.
fn cka_rows(diagnostics: &serde_json::Map<String, Value>) -> Vec<Vec<f64>> {
    let Some(Value::Array(rows)) = diagnostics.get("cka") else {
        return Vec::new();
    };
    rows.iter()
        .map(|row| {
            row.as_array()
                .map(|r| r.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
                .unwrap_or_default()
        })
        .collect()
}

/// Draw the gene's CKA matrix (ancestor layers down, pseudo-descendant layers across) into the
/// run directory.
pub fn draw_cka(
    diagnostics: &serde_json::Map<String, Value>,
    dir: &Path,
    font: Option<&Path>,
) -> Result<Written> {
    let map = Heatmap {
        title: "linear CKA".into(),
        x_label: "pseudo-descendant layer".into(),
        y_label: "ancestor layer".into(),
        rows: cka_rows(diagnostics),
    };
    write_heatmap(&map, &dir.join(HEATMAP), font)
}

/// Run a faithful auto `ancestor_*` config on the ancestor at `ancestor_path` (the caller
/// resolves it): train the pseudo-descendant, select the layers, publish the gene to `registry`.
/// The heat map is the caller's to draw ([`draw_cka`]), as figures need a font.
pub fn train_auto(
    cfg: &Config,
    mut run: AncestorRun,
    ancestor_path: PathBuf,
    registry: &Registry,
    resume: bool,
    reporter: &dyn Reporter,
) -> Result<Trained> {
    let asked = cfg
        .get("GENE.PARAMS")
        .and_then(|p| p.get("rule"))
        .and_then(Value::as_str);
    if let Some(rule) = asked.filter(|r| *r != "trained") {
        return Err(cfg.error(
            "GENE.PARAMS",
            format!("rule '{rule}' under MODE: faithful, which trains a pseudo-descendant (rule: trained); run the `{rule}` ablation with MODE: approximate"),
        ));
    }
    let dir = run.output_dir.clone();
    let pseudo_dir = dir.join(PSEUDO_DIR);
    check_run_dir(cfg, &dir, resume, &state_dir(&pseudo_dir), &pseudo_dir)?;
    check_tag_free(&run.request, registry)?;
    let data =
        PathBuf::from(cfg.required_str("DATASET.PATH", "target/fixtures/mnist/digits.json")?);
    let ancestor = open(&ancestor_path)?;
    write_run_config(cfg, &dir)?;
    let (pseudo, report) = train_pseudo(cfg, &run, &ancestor, &data, resume, reporter)?;
    let pseudo = fs_err::canonicalize(&pseudo)?;
    run.request.sets.push("rule=trained".into());
    run.request
        .sets
        .push(format!("pseudo={}", pseudo.display()));
    run.request.data = Some(data);
    let mut trained = super::run::train(cfg, run, ancestor_path, registry, reporter)?;
    trained.pseudo = report;
    Ok(trained)
}
