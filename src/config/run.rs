//! Config-driven runs and their run directory: [`train`] (an `ancestor_*` config: extract and
//! publish the gene) and [`adapt`] (a `descendant_*` config: spawn the descendant from the gene
//! and fine-tune it). Every run directory holds the resolved `config.yaml`; a descendant run
//! also holds `init/` (the spawned descendant), `model/` (the fine-tuned one, with the
//! resumable state beside it until it finishes) and `metrics.jsonl`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Config;
use super::plan::{self, AncestorRun, DescendantRun};
use crate::algorithm::extract::ExtractRequest;
use crate::algorithm::{Extracted, GrowRequest, extract};
use crate::descendant::{SpawnRequest, Spawned, spawn};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::progress::Reporter;
use crate::registry::{Reference, Registry};
use crate::train::{AdaptReport, adapt as fine_tune};

/// The resolved config's file name in a run directory.
pub const CONFIG_FILE: &str = "config.yaml";

pub use crate::train::metrics::METRICS_FILE;

/// On `--resume`, the run must go on with the config it started with.
pub(crate) fn check_same_run(cfg: &Config, dir: &Path) -> Result<()> {
    let Ok(text) = fs_err::read_to_string(dir.join(CONFIG_FILE)) else {
        return Ok(());
    };
    let started = Config::parse(&text, &dir.join(CONFIG_FILE), &[])?;
    if started.resolved() == cfg.resolved() {
        return Ok(());
    }
    Err(cfg.error(
        "(file)",
        format!(
            "differs from the config the run in `{}` started with; resume with that config (`--config {}`) or start a new run",
            dir.display(),
            dir.join(CONFIG_FILE).display()
        ),
    ))
}

/// Create the run directory and write the resolved config into it.
pub(crate) fn write_run_config(cfg: &Config, dir: &Path) -> Result<PathBuf> {
    fs_err::create_dir_all(dir)?;
    let path = dir.join(CONFIG_FILE);
    let text = format!(
        "# Resolved by lgreg {} from {} (file and --set).\n{}",
        env!("CARGO_PKG_VERSION"),
        cfg.file.display(),
        cfg.resolved_yaml()?
    );
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// What `lgreg train --config` did.
#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    /// The run directory.
    pub run_dir: String,
    /// The gene published.
    pub gene: Extracted,
    /// The aux net's distillation (`MODE: faithful`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distilled: Option<crate::train::distill::DistillReport>,
    /// The pseudo-descendant's training (auto, `MODE: faithful`; absent when a resumed run
    /// found it trained).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo: Option<crate::train::AdaptReport>,
    /// Keys with no effect in lgreg.
    pub notes: Vec<String>,
}

/// Run an `ancestor_*` config: extract the gene from `ancestor` (the caller resolves
/// `GENE.ANCESTOR_MODEL_PATH` to a local path) and publish it to `registry`.
pub fn train(
    cfg: &Config,
    mut run: AncestorRun,
    ancestor: PathBuf,
    registry: &Registry,
    reporter: &dyn Reporter,
) -> Result<Trained> {
    run.request.ancestor = ancestor;
    let gene = extract(&run.request, registry, reporter)?;
    write_run_config(cfg, &run.output_dir)?;
    let result = serde_json::to_vec_pretty(&gene)?;
    write_atomic(&run.output_dir.join("gene.json"), &result)?;
    Ok(Trained {
        run_dir: run.output_dir.display().to_string(),
        gene,
        distilled: None,
        pseudo: None,
        notes: cfg.notes.clone(),
    })
}

/// What `lgreg adapt --config` did.
#[derive(Debug, Clone, Serialize)]
pub struct Adapted {
    /// The run directory.
    pub run_dir: String,
    /// The spawned descendant (absent when a resumed run found it already spawned).
    pub spawned: Option<Spawned>,
    /// The fine-tuning.
    pub adapted: AdaptReport,
    /// Keys with no effect in lgreg.
    pub notes: Vec<String>,
}

/// The registry reference of `MODEL.LOAD_GENE`: a reference as it is, a gene directory
/// published first (named after the directory, at `GENE.VERSION` or 0.1.0).
fn local_gene(
    cfg: &Config,
    gene: &str,
    registry: &Registry,
    reporter: &dyn Reporter,
) -> Result<String> {
    let path = Path::new(gene);
    if path.is_dir() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_else(|| "gene".into());
        let version = cfg.str("GENE.VERSION").unwrap_or("0.1.0");
        return Ok(registry.publish(path, &name, version, reporter)?.reference);
    }
    if path.extension().is_some_and(|e| e == "pth" || e == "pt") {
        return import_checkpoint(cfg, path, registry, reporter);
    }
    Reference::parse(gene).map_err(|e| {
        cfg.error(
            "MODEL.LOAD_GENE",
            format!("'{gene}' is neither a gene directory nor a registry reference ({e})"),
        )
    })?;
    Ok(gene.to_string())
}

/// An official TLEG `checkpoint.pth` (`MODEL.LOAD_GENE`), imported as a faithful gene and
/// published (named `GENE.NAME`, else after its directory, at `GENE.VERSION` or 0.1.0).
fn import_checkpoint(
    cfg: &Config,
    path: &Path,
    registry: &Registry,
    reporter: &dyn Reporter,
) -> Result<String> {
    let method = cfg.method()?;
    if method.algorithm != "tleg" {
        return Err(cfg.error(
            "MODEL.LOAD_GENE",
            format!(
                "'{}' is a PyTorch checkpoint; lgreg imports the official TLEG checkpoints only, and this config's method is `{}`: extract a gene with `lgreg train` and name it here",
                path.display(),
                method.name()
            ),
        ));
    }
    if !path.is_file() {
        return Err(cfg.error(
            "MODEL.LOAD_GENE",
            format!("'{}' does not exist", path.display()),
        ));
    }
    let parent = path
        .parent()
        .and_then(Path::file_name)
        .map(|n| format!("{}-tleg", n.to_string_lossy().to_ascii_lowercase()));
    let request = ExtractRequest {
        ancestor: path.to_path_buf(),
        hub_repo: None,
        algorithm: method.algorithm.clone(),
        recipe: None,
        sets: Vec::new(),
        data: None,
        seed: plan::seed(cfg),
        name: cfg.str("GENE.NAME").map(str::to_string).or(parent),
        version: cfg.str("GENE.VERSION").map(str::to_string),
        // The gene is the checkpoint's alone: the same file imports to the same gene from
        // every descendant run.
        run_config: None,
    };
    let gene = extract(&request, registry, reporter)
        .map_err(|e| cfg.error("MODEL.LOAD_GENE", e.to_string()))?;
    Ok(gene.reference)
}

/// Run a `descendant_*` config: spawn the descendant of the configured depth from the gene
/// (in the registry, or a gene directory), then fine-tune it on `DATASET.PATH`.
pub fn adapt(
    cfg: &Config,
    mut run: DescendantRun,
    registry: &Registry,
    resume: bool,
    force: bool,
    reporter: &dyn Reporter,
) -> Result<Adapted> {
    run.gene = local_gene(cfg, &run.gene, registry, reporter)?;
    let card = registry.show(&Reference::parse(&run.gene)?)?.card;
    plan::check_width(cfg, &run, &card)?;
    let init = run.init_dir();
    let model = run.model_dir();
    if !resume && !force && (init.exists() || model.exists()) {
        return Err(Error::OutputExists {
            path: run.output_dir.clone(),
        });
    }
    if resume {
        check_same_run(cfg, &run.output_dir)?;
    }
    write_run_config(cfg, &run.output_dir)?;
    let spawned = if resume && init.join("config.json").is_file() {
        None
    } else {
        Some(spawn(
            registry,
            &spawn_request(&run, force || resume),
            reporter,
        )?)
    };
    check_input_size(cfg, &run, &init)?;
    let mut opts = run.adapt.clone();
    opts.resume = resume && crate::train::state::exists(&crate::train::state_dir(&model));
    opts.force = force;
    opts.metrics = Some(run.output_dir.join(METRICS_FILE));
    let adapted = fine_tune(&init, &run.data, &model, &opts, reporter)?;
    Ok(Adapted {
        run_dir: run.output_dir.display().to_string(),
        spawned,
        adapted,
        notes: cfg.notes.clone(),
    })
}

fn spawn_request(run: &DescendantRun, force: bool) -> SpawnRequest {
    SpawnRequest {
        gene: run.gene.clone(),
        grow: GrowRequest {
            layers: run.layers,
            seed: run.adapt.seed,
            options: run.grow.clone(),
        },
        output: run.init_dir(),
        dtype: None,
        shard_size: None,
        force,
        smoke: false,
        eval_data: None,
        baseline: None,
    }
}

/// `DATASET.INPUT_SIZE` must be the descendant's image size: images are not resized.
fn check_input_size(cfg: &Config, run: &DescendantRun, init: &Path) -> Result<()> {
    let Some(want) = run.input_size else {
        return Ok(());
    };
    let ckpt = crate::checkpoint::open(init)?;
    let have = ckpt
        .config
        .as_ref()
        .and_then(|c| c.get("image_size"))
        .and_then(serde_json::Value::as_u64);
    match have {
        Some(side) if side != want as u64 => Err(cfg.error(
            "DATASET.INPUT_SIZE",
            format!("{want} differs from the model's image size {side}; images are used at their stored size, so set it to {side}"),
        )),
        _ => Ok(()),
    }
}
