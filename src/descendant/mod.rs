//! `lgreg spawn`: materialise a descendant of a requested size from a gene, as a Hugging Face
//! model directory (`config.json`, `model.safetensors`, the ancestor's tokenizer files and a
//! `README.md` model card), and record it in the registry with `subject` → its gene.
//!
//! The directory is staged beside its final place and renamed in only after the weights are
//! written and verified, the smoke metric ran and the registry record was published.

mod card;
mod smoke;
mod source;

pub use smoke::{SAMPLE_PAIRS, SAMPLE_TEXT, llama_by_blocks, smoke_metric};
pub use source::DescendantSource;

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::algorithm::builder::FILES_UNIT;
use crate::algorithm::{Blueprint, GeneView, GlobalsFrom, GrowRequest, LayerSource, find};
use crate::anatomy::with_depth;
use crate::checkpoint::memory::MemorySource;
use crate::checkpoint::write::{WriteOptions, plan_all, write_file_at, write_model};
use crate::checkpoint::{DType, TensorSource};
use crate::error::{Error, Result};
use crate::fsutil::StagedDir;
use crate::progress::{Reporter, Silent};
use crate::registry::manifest::{GENE_SCHEMA_VERSION, GeneCard, Recipe};
use crate::registry::{Digest, Reference, Registry};
use crate::train::eval::Metrics;

/// Shards above this size, as `transformers` does by default.
pub const DEFAULT_SHARD_SIZE: u64 = 5_000_000_000;

/// What the user asked `spawn` for.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// The gene reference (`name[:version]` or `name@sha256:...`).
    pub gene: String,
    /// Size, seed and algorithm options.
    pub grow: GrowRequest,
    /// The directory to create.
    pub output: PathBuf,
    /// Cast the weights to this dtype.
    pub dtype: Option<DType>,
    /// Shard size (default [`DEFAULT_SHARD_SIZE`]).
    pub shard_size: Option<u64>,
    /// Replace an existing output directory.
    pub force: bool,
    /// Run the smoke metric.
    pub smoke: bool,
    /// Images for the vit smoke metric.
    pub eval_data: Option<PathBuf>,
    /// A control instead of the gene's layers: every tensor at random, or the layers at random
    /// with the gene's globals.
    pub baseline: Option<Baseline>,
}

/// The controls a descendant is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// Every tensor drawn at random (same shapes, nothing inherited).
    Random,
    /// The layers drawn at random; the gene's globals (embeddings, norms, head) inherited: what
    /// the globals alone give.
    RandomLayers,
}

impl Baseline {
    /// The card's and the record name's word for it.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Random => "random",
            Baseline::RandomLayers => "random-layers",
        }
    }

    /// What it inherits, for the card.
    pub fn meaning(self) -> &'static str {
        match self {
            Baseline::Random => "random: nothing inherited",
            Baseline::RandomLayers => {
                "random layers: the gene's embeddings, norms and head inherited"
            }
        }
    }
}

/// What `spawn` made.
#[derive(Debug, Clone, Serialize)]
pub struct Spawned {
    /// The output directory.
    pub output: String,
    /// The gene it came from.
    pub gene: String,
    /// The gene's manifest digest.
    pub gene_digest: Digest,
    /// The algorithm.
    pub algorithm: String,
    /// Number of layers.
    pub layers: usize,
    /// Learnable scalars written.
    pub parameters: u64,
    /// Bytes of weights.
    pub bytes: u64,
    /// Weight files.
    pub files: Vec<String>,
    /// The registry record (`name:version`) of the descendant.
    pub record: String,
    /// Its manifest digest.
    pub record_digest: Digest,
    /// The smoke metric.
    pub smoke: Option<Metrics>,
    /// Where each layer came from.
    pub blueprint: Blueprint,
}

fn option_error(algorithm: &str, option: &str) -> Error {
    let owner = crate::algorithm::ALL
        .iter()
        .find(|a| a.grow_options().contains(&option))
        .map_or("another algorithm", |a| a.name());
    Error::Algorithm {
        algorithm: "spawn".into(),
        reason: format!(
            "`--{option}` is an option of {owner} genes, but this gene was made by {algorithm}"
        ),
        fix: format!("drop `--{option}`, or spawn from a {owner} gene"),
    }
}

/// Spawn a descendant of the gene `request.gene` from `registry`.
pub fn spawn(
    registry: &Registry,
    request: &SpawnRequest,
    reporter: &dyn Reporter,
) -> Result<Spawned> {
    if request.grow.layers == 0 && request.grow.options.max_params.is_none() {
        return Err(Error::Algorithm {
            algorithm: "spawn".into(),
            reason: "`--layers 0` was asked for, but a descendant needs at least one layer".into(),
            fix: "pass `--layers 1` or more".into(),
        });
    }
    // The units are hashed while the weights are written; the output stays staged (invisible)
    // until both are done, so a corrupt unit still leaves nothing behind.
    let gene = GeneView::open_unchecked(registry, &request.gene)?;
    let algorithm = find(gene.algorithm())?;
    for option in request.grow.options.given() {
        if !algorithm.grow_options().contains(&option) {
            return Err(option_error(algorithm.name(), option));
        }
    }
    let mut blueprint = algorithm.grow(&gene, &request.grow)?;
    // A budget (`--max-params`) leaves the depth to the algorithm: the rest of the spawn, its
    // record and its name see the depth it chose.
    let resolved = SpawnRequest {
        grow: GrowRequest {
            layers: blueprint.layers.len(),
            ..request.grow.clone()
        },
        ..request.clone()
    };
    let request = &resolved;
    if let Some(baseline) = request.baseline {
        blueprint = baseline_of(blueprint, request.grow.layers);
        blueprint
            .notes
            .insert("baseline".into(), Value::from(baseline.meaning()));
    }
    let staged = StagedDir::new(&request.output, request.force)?;
    let source = DescendantSource::new(
        &gene,
        &blueprint,
        request.grow.seed,
        request.baseline != Some(Baseline::Random),
    )?;
    let opts = WriteOptions {
        dtype: request.dtype,
        shard_size: Some(request.shard_size.unwrap_or(DEFAULT_SHARD_SIZE)),
    };
    let plan = plan_all(&source, &opts);
    let (verified, written) = std::thread::scope(|scope| {
        let verifying = scope.spawn(|| gene.verify(registry));
        let written = write_model(staged.path(), &source, plan, &opts, reporter)
            .map_err(|e| staged.in_target_terms(e));
        let verified = verifying.join().unwrap_or_else(|_| {
            Err(Error::Io(std::io::Error::other(
                "the hashing thread panicked",
            )))
        });
        (verified, written)
    });
    verified?;
    let written = written?;
    let config = descendant_config(&gene, &blueprint)?;
    staged.write_file("config.json", &pretty(&config)?)?;
    write_side_files(&gene, &staged)?;
    let smoke = if request.smoke {
        smoke_metric(staged.path(), request.eval_data.as_deref())?
    } else {
        None
    };
    let parameters = source.tensors().iter().map(|t| t.numel() as u64).sum();
    let readme = card::model_card(&gene, request, &blueprint, smoke.as_ref(), parameters);
    staged.write_file("README.md", readme.as_bytes())?;
    let (record, record_digest) = record(
        registry,
        &gene,
        request,
        &blueprint,
        &config,
        &readme,
        smoke.as_ref(),
    )?;
    let output = staged.commit()?;
    Ok(Spawned {
        output: output.display().to_string(),
        gene: gene.reference.clone(),
        gene_digest: gene.digest.clone(),
        algorithm: algorithm.name().to_string(),
        layers: blueprint.layers.len(),
        parameters,
        bytes: written.total_bytes,
        files: written.files,
        record,
        record_digest,
        smoke,
        blueprint,
    })
}

/// The random-init control of `bp`: every layer drawn at random. A descendant whose globals
/// are its own (a trained pool's, whose widths differ by layer) keeps every shape, its
/// `config.json` and its stitches, drawn at random too (the globals follow `--random-baseline`
/// or `--random-layers`); any other is `layers` random layers of the gene's shape.
fn baseline_of(bp: Blueprint, layers: usize) -> Blueprint {
    if bp.globals == GlobalsFrom::Gene {
        return Blueprint::of(vec![LayerSource::Random; layers]);
    }
    let mut stitches = bp.stitches;
    for st in &mut stitches {
        st.random = true;
    }
    // The configuration stays in the notes (and the record's name); its metric is not the
    // control's.
    let mut notes = bp.notes;
    notes.remove("pool_metric");
    Blueprint {
        layers: bp.layers.iter().map(LayerSource::randomised).collect(),
        stitches,
        notes,
        ..bp
    }
}

fn pretty(value: &Value) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The ancestor's `config.json` with the new depth (and the stitch positions, if any).
fn descendant_config(gene: &GeneView, bp: &Blueprint) -> Result<Value> {
    if !gene.config.is_object() {
        return Err(Error::Algorithm {
            algorithm: "spawn".into(),
            reason: format!("gene `{}` carries no ancestor config.json", gene.reference),
            fix: "re-extract the gene from an ancestor with a config.json (or a GGUF file)".into(),
        });
    }
    let mut config = with_depth(&gene.config, gene.naming, bp.layers.len());
    if let Some(map) = config.as_object_mut() {
        map.extend(bp.config.clone());
    }
    if !bp.stitches.is_empty()
        && let Some(map) = config.as_object_mut()
    {
        let after: Vec<usize> = bp.stitches.iter().map(|s| s.after).collect();
        map.insert(
            "lgreg_stitch_after_layers".into(),
            serde_json::to_value(after)?,
        );
    }
    Ok(config)
}

/// Files spawn writes itself, which a gene's side files may not replace.
fn is_reserved(name: &str) -> bool {
    matches!(name, "config.json" | "README.md")
        || name.starts_with("model.safetensors")
        || name.starts_with("model-")
}

/// Unpack the tokenizer and other side files the gene carries.
fn write_side_files(gene: &GeneView, staged: &StagedDir) -> Result<()> {
    let Ok(files) = gene.unit(FILES_UNIT) else {
        return Ok(());
    };
    for info in files.tensors() {
        let refused = |reason: String| Error::Algorithm {
            algorithm: "spawn".into(),
            reason: format!(
                "gene `{}` carries side file `{}`: {reason}",
                gene.reference, info.name
            ),
            fix: "do not use this gene: re-extract it, or pull it from a source you trust".into(),
        };
        crate::gene::check_side_file_name(&info.name).map_err(refused)?;
        if is_reserved(&info.name) {
            return Err(refused("spawn writes that file itself".into()));
        }
        staged.write_file(&info.name, &files.read(&info.name)?)?;
    }
    Ok(())
}

/// Publish the descendant's record: its config and model card, with `subject` → the gene.
fn record(
    registry: &Registry,
    gene: &GeneView,
    request: &SpawnRequest,
    bp: &Blueprint,
    config: &Value,
    readme: &str,
    smoke: Option<&Metrics>,
) -> Result<(String, Digest)> {
    let dir = tempfile::Builder::new()
        .prefix("lgreg-descendant-")
        .tempdir()?;
    let mut mem = MemorySource::new();
    let config_bytes = pretty(config)?;
    mem.insert(
        "config.json",
        DType::U8,
        &[config_bytes.len()],
        config_bytes,
    )?;
    mem.insert(
        "README.md",
        DType::U8,
        &[readme.len()],
        readme.as_bytes().to_vec(),
    )?;
    let unit = "descendant.safetensors";
    write_file_at(
        &dir.path().join(unit),
        &mem,
        plan_all(&mem, &WriteOptions::default()),
        &Silent,
    )?;
    let mut params = Map::new();
    params.insert("layers".into(), Value::from(request.grow.layers));
    params.insert("seed".into(), Value::from(request.grow.seed));
    if let Some(d) = request.dtype {
        params.insert("dtype".into(), Value::from(d.safetensors_name()));
    }
    if let Some(baseline) = request.baseline {
        params.insert("baseline".into(), Value::from(baseline.name()));
    }
    let mut family = gene.card.family.clone();
    family
        .hyper_parameters
        .insert("config".into(), config.clone());
    let mut diagnostics = Map::new();
    diagnostics.insert("blueprint".into(), serde_json::to_value(bp)?);
    let mut metrics = Map::new();
    if let Some(m) = smoke {
        metrics.insert("smoke".into(), serde_json::to_value(m)?);
    }
    let card = GeneCard {
        schema_version: GENE_SCHEMA_VERSION,
        algorithm: gene.card.algorithm.clone(),
        fidelity: gene.card.fidelity,
        recipe: Recipe {
            name: "spawn".into(),
            version: "1".into(),
            params,
            digest: None,
        },
        ancestor: gene.card.ancestor.clone(),
        family,
        roles: Default::default(),
        diagnostics,
        metrics,
        lgreg_version: env!("CARGO_PKG_VERSION").to_string(),
        created: None,
        derived_from: Some(gene.digest.clone()),
    };
    let bytes = crate::gene::gene_json_bytes(&card, &[unit.to_string()])?;
    fs_err::write(dir.path().join(crate::gene::GENE_JSON), bytes)?;
    let (name, version) = record_tag(registry, gene, request, bp)?;
    let published = registry.publish(dir.path(), &name, &version, &Silent)?;
    Ok((published.reference, published.digest))
}

/// What tells apart the descendants of one depth that a gene can give: a pool's instance
/// (`-a`) or stitch configuration (`-ab-0-1`); empty for the other algorithms.
fn variant(bp: &Blueprint) -> String {
    if let Some(Value::String(instance)) = bp.notes.get("pool_instance") {
        return format!("-{instance}");
    }
    match bp.notes.get("pool_configuration") {
        Some(c) => format!(
            "-{}{}-{}-{}",
            c["front"].as_str().unwrap_or_default(),
            c["end"].as_str().unwrap_or_default(),
            c["i"],
            c["j"]
        ),
        None => String::new(),
    }
}

/// `<gene>-l<N>[-<variant>]-s<seed>[-<dtype>]` at the gene's version.
fn record_tag(
    registry: &Registry,
    gene: &GeneView,
    request: &SpawnRequest,
    bp: &Blueprint,
) -> Result<(String, String)> {
    let reference = Reference::parse(&gene.reference)?;
    let version = match &reference {
        Reference::Tag { version, .. } => version.to_string(),
        _ => registry
            .resolve(&reference)?
            .tags
            .iter()
            .filter_map(|t| t.split_once(':').map(|(_, v)| v.to_string()))
            .next_back()
            .unwrap_or_else(|| "0.1.0".into()),
    };
    let mut name = format!(
        "{}-l{}{}-s{}",
        reference.name(),
        request.grow.layers,
        variant(bp),
        request.grow.seed
    );
    if let Some(d) = request.dtype {
        name.push('-');
        name.push_str(&d.safetensors_name().to_lowercase());
    }
    if let Some(baseline) = request.baseline {
        name.push('-');
        name.push_str(baseline.name());
    }
    Ok((name, version))
}
