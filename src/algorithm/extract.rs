//! `lgreg extract`: open the ancestor, run one algorithm, write the gene card and publish the
//! gene. Nothing reaches the registry unless every step succeeded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};

use super::ancestor::AncestorModel;
use super::builder::GeneBuilder;
use super::{Algorithm, find};
use crate::anatomy::{Family, Hyper, Naming};
use crate::checkpoint::{Checkpoint, open};
use crate::error::{Error, Result};
use crate::progress::{Event, Reporter};
use crate::recipe::Recipe;
use crate::registry::manifest::{
    Ancestor, Family as CardFamily, Fidelity, GENE_SCHEMA_VERSION, GeneCard,
};
use crate::registry::{Digest, Registry};

/// What the user asked `extract` for.
#[derive(Debug, Clone)]
pub struct ExtractRequest {
    /// The ancestor: a model directory or checkpoint file (hub ids are resolved before).
    pub ancestor: PathBuf,
    /// The Hub id the ancestor came from, when it did (`org/name`).
    pub hub_repo: Option<String>,
    /// The algorithm name.
    pub algorithm: String,
    /// `--recipe FILE`.
    pub recipe: Option<PathBuf>,
    /// `--set key=value` overrides.
    pub sets: Vec<String>,
    /// `--data PATH`.
    pub data: Option<PathBuf>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Gene name (default: ancestor name + algorithm).
    pub name: Option<String>,
    /// Gene version (default `0.1.0`).
    pub version: Option<String>,
    /// The resolved run config (`lgreg train --config`), recorded in the card.
    pub run_config: Option<Value>,
}

/// Everything an algorithm's `extract` reads.
pub struct ExtractJob<'a> {
    /// The ancestor.
    pub ancestor: &'a AncestorModel<'a>,
    /// The resolved recipe.
    pub recipe: &'a Recipe,
    /// Data for data-driven algorithms.
    pub data: Option<&'a Path>,
    /// Seed.
    pub seed: u64,
    /// Progress.
    pub reporter: &'a dyn Reporter,
}

impl ExtractJob<'_> {
    /// The data path, or an error naming the algorithm that needs it.
    pub fn require_data(&self, algorithm: &str) -> Result<&Path> {
        self.data.ok_or_else(|| Error::Algorithm {
            algorithm: algorithm.to_string(),
            reason: "it computes its selection on data, and no `--data` was given".into(),
            fix: "pass `--data PATH`: a text file for llama and bert, images (IDX, MNIST JSON or a folder) for vit".into(),
        })
    }
}

/// What `extract` published.
#[derive(Debug, Clone, Serialize)]
pub struct Extracted {
    /// `name:version`.
    pub reference: String,
    /// The manifest digest.
    pub digest: Digest,
    /// The algorithm.
    pub algorithm: String,
    /// Faithful or approximate.
    pub fidelity: Fidelity,
    /// The recipe used (`name` and digest).
    pub recipe: String,
    /// Unit file names.
    pub units: Vec<String>,
    /// Bytes of all units.
    pub bytes: u64,
    /// The card's diagnostics.
    pub diagnostics: Map<String, Value>,
    /// Wall time of building the gene (reading the ancestor and running the algorithm).
    pub extract_seconds: f64,
    /// `extract_seconds` by step, in seconds: `globals` (copying the global tensors into their
    /// unit), `side_files` (the tokenizer unit) and `algorithm` (the algorithm's whole
    /// extraction). An algorithm may also report parts of its own step; tleg reports `fit`
    /// (reading every layer tensor, accumulating the sums and solving) and `units` (writing
    /// the base and slope units). Empty for an imported gene.
    pub extract_steps: Map<String, Value>,
    /// Wall time of hashing the ancestor's files (on a second thread, during the build).
    pub hash_seconds: f64,
    /// Wall time of publishing (hashing and storing the units).
    pub publish_seconds: f64,
}

/// What the gene card says about the family of a gene's descendants.
#[derive(Debug, Clone)]
pub struct Lineage {
    /// The family.
    pub family: Family,
    /// The naming of the gene's tensors.
    pub naming: Naming,
    /// The sizes.
    pub hyper: Hyper,
    /// The `config.json` descendants start from.
    pub config: Option<Value>,
}

impl Lineage {
    /// The lineage of an ancestor: its own family, sizes and config.
    pub fn of(ancestor: &AncestorModel<'_>) -> Lineage {
        Lineage {
            family: ancestor.family(),
            naming: ancestor.naming(),
            hyper: ancestor.anatomy.hyper.clone(),
            config: ancestor.ckpt.config.clone(),
        }
    }
}

/// A gene read from an algorithm's own published checkpoint format instead of extracted
/// from an ancestor (see [`Algorithm::imports`]).
#[derive(Debug)]
pub struct Imported {
    /// Its units, roles, diagnostics and fidelity.
    pub gene: GeneBuilder,
    /// The family of its descendants.
    pub lineage: Lineage,
}

/// Extract a gene and publish it to `registry`.
pub fn extract(
    request: &ExtractRequest,
    registry: &Registry,
    reporter: &dyn Reporter,
) -> Result<Extracted> {
    let algorithm = find(&request.algorithm)?;
    let ckpt = open(&request.ancestor)?;
    if let Some(family) = algorithm.imports(&ckpt) {
        let recipe = resolve_recipe(algorithm, family, request)?;
        gene_tag(request, algorithm)?;
        let started = Instant::now();
        let imported = algorithm.import(&ckpt, &recipe)?;
        let extract_seconds = started.elapsed().as_secs_f64();
        let files = ancestor_files(&ckpt)?;
        let timings = (
            extract_seconds,
            started.elapsed().as_secs_f64() - extract_seconds,
        );
        let gene = Gene {
            algorithm,
            recipe: &recipe,
            lineage: &imported.lineage,
            builder: &imported.gene,
        };
        return publish(&gene, &ckpt, request, registry, reporter, files, timings);
    }
    let ancestor = AncestorModel::new(&ckpt)?;
    let recipe = resolve_recipe(algorithm, ancestor.family(), request)?;
    gene_tag(request, algorithm)?;
    let started = Instant::now();
    let (built, files) = std::thread::scope(|scope| {
        let hashing = scope.spawn(|| {
            let t = Instant::now();
            ancestor_files(&ckpt).map(|f| (f, t.elapsed().as_secs_f64()))
        });
        let built = build(algorithm, &ancestor, &recipe, request, reporter)
            .map(|b| (b, started.elapsed().as_secs_f64()));
        let files = hashing
            .join()
            .unwrap_or_else(|_| Err(Error::Io(std::io::Error::other("hashing thread panicked"))));
        (built, files)
    });
    let (builder, extract_seconds) = built?;
    let (files, hash_seconds) = files?;
    let gene = Gene {
        algorithm,
        recipe: &recipe,
        lineage: &Lineage::of(&ancestor),
        builder: &builder,
    };
    let timings = (extract_seconds, hash_seconds);
    publish(&gene, &ckpt, request, registry, reporter, files, timings)
}

/// Publish a gene trained rather than extracted (the TLEG/SWS aux nets, `MODE: faithful`):
/// `aux_dir` is the trained aux net written as a plain model, which gives the gene its globals,
/// side files, tensor names and descendant family; `write_units` writes the trained layer
/// units; the card names `teacher` as the ancestor and says `faithful`.
pub fn publish_trained(
    request: &ExtractRequest,
    aux_dir: &Path,
    teacher: &Checkpoint,
    write_units: &dyn Fn(&AncestorModel<'_>, &mut GeneBuilder) -> Result<()>,
    diagnostics: Map<String, Value>,
    registry: &Registry,
    reporter: &dyn Reporter,
) -> Result<Extracted> {
    let algorithm = find(&request.algorithm)?;
    let aux_ckpt = open(aux_dir)?;
    let aux = AncestorModel::new(&aux_ckpt)?;
    let recipe = resolve_recipe(algorithm, aux.family(), request)?;
    gene_tag(request, algorithm)?;
    let started = Instant::now();
    let mut builder = GeneBuilder::new()?;
    builder.add_globals(&aux)?;
    builder.add_side_files(&aux)?;
    write_units(&aux, &mut builder)?;
    builder.diagnostics.extend(diagnostics);
    builder.fidelity = Some(Fidelity::Faithful);
    let built = started.elapsed().as_secs_f64();
    let hashing = Instant::now();
    let files = ancestor_files(teacher)?;
    let gene = Gene {
        algorithm,
        recipe: &recipe,
        lineage: &Lineage::of(&aux),
        builder: &builder,
    };
    let timings = (built, hashing.elapsed().as_secs_f64());
    publish(&gene, teacher, request, registry, reporter, files, timings)
}

/// Refuse, before a long training run, a gene tag the registry already holds (published
/// versions are immutable, so the run could not publish its gene).
pub fn check_tag_free(request: &ExtractRequest, registry: &Registry) -> Result<()> {
    let (name, version) = gene_tag(request, find(&request.algorithm)?)?;
    let tag = crate::registry::Reference::tag(&name, &version)?;
    if registry.resolve(&tag).is_err() {
        return Ok(());
    }
    Err(Error::InvalidValue {
        what: "GENE.NAME / GENE.VERSION".into(),
        value: format!("{name}:{version}"),
        reason: "the registry already holds this gene and published versions are immutable; set another GENE.VERSION or GENE.NAME".into(),
    })
}

fn resolve_recipe(
    algorithm: &dyn Algorithm,
    family: Family,
    request: &ExtractRequest,
) -> Result<Recipe> {
    Recipe::resolve(
        algorithm.name(),
        &family.to_string(),
        request.recipe.as_ref(),
        &request.sets,
    )
}

/// The gene's `(name, version)`, checked to make a valid tag.
fn gene_tag(request: &ExtractRequest, algorithm: &dyn Algorithm) -> Result<(String, String)> {
    let name = match &request.name {
        Some(n) => n.clone(),
        None => default_name(request, algorithm.name()),
    };
    let version = request.version.clone().unwrap_or_else(|| "0.1.0".into());
    crate::registry::Reference::tag(&name, &version)?;
    Ok((name, version))
}

/// A built gene and what its card says about it.
struct Gene<'a> {
    algorithm: &'a dyn Algorithm,
    recipe: &'a Recipe,
    lineage: &'a Lineage,
    builder: &'a GeneBuilder,
}

/// Write the card of a built gene and publish it.
fn publish(
    gene: &Gene<'_>,
    ckpt: &Checkpoint,
    request: &ExtractRequest,
    registry: &Registry,
    reporter: &dyn Reporter,
    files: BTreeMap<String, String>,
    (extract_seconds, hash_seconds): (f64, f64),
) -> Result<Extracted> {
    let (name, version) = gene_tag(request, gene.algorithm)?;
    let card = gene_card(gene, &ckpt.path, request, files)?;
    gene.builder.finish(&card)?;
    let publishing = Instant::now();
    let published = registry.publish(gene.builder.path(), &name, &version, reporter)?;
    Ok(Extracted {
        reference: published.reference,
        digest: published.digest,
        algorithm: gene.algorithm.name().to_string(),
        fidelity: card.fidelity,
        recipe: gene.recipe.name(),
        units: gene.builder.units().to_vec(),
        bytes: published.bytes,
        diagnostics: card.diagnostics,
        extract_seconds,
        extract_steps: gene.builder.steps.clone(),
        hash_seconds,
        publish_seconds: publishing.elapsed().as_secs_f64(),
    })
}

fn build(
    algorithm: &dyn Algorithm,
    ancestor: &AncestorModel<'_>,
    recipe: &Recipe,
    request: &ExtractRequest,
    reporter: &dyn Reporter,
) -> Result<GeneBuilder> {
    reporter.report(Event::Start {
        task: format!("extract {}", algorithm.name()),
        total: 0,
    });
    let mut builder = GeneBuilder::new()?;
    let started = Instant::now();
    builder.add_globals(ancestor)?;
    builder.record_step("globals", started);
    let started = Instant::now();
    builder.add_side_files(ancestor)?;
    builder.record_step("side_files", started);
    let job = ExtractJob {
        ancestor,
        recipe,
        data: request.data.as_deref(),
        seed: request.seed,
        reporter,
    };
    let started = Instant::now();
    algorithm.extract(&job, &mut builder)?;
    builder.record_step("algorithm", started);
    reporter.report(Event::Finish);
    Ok(builder)
}

fn gene_card(
    gene: &Gene<'_>,
    path: &Path,
    request: &ExtractRequest,
    files: BTreeMap<String, String>,
) -> Result<GeneCard> {
    let lineage = gene.lineage;
    let mut hyper = match serde_json::to_value(&lineage.hyper)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    hyper.insert("naming".into(), serde_json::to_value(lineage.naming)?);
    hyper.insert(
        "config".into(),
        lineage.config.clone().unwrap_or(Value::Null),
    );
    let (repo, commit) = origin(path, request.hub_repo.as_deref());
    let mut params = gene.recipe.card_entry();
    params
        .params
        .insert("seed".into(), Value::from(request.seed));
    Ok(GeneCard {
        schema_version: GENE_SCHEMA_VERSION,
        algorithm: gene.algorithm.name().to_string(),
        fidelity: gene.builder.fidelity.unwrap_or(gene.recipe.fidelity),
        recipe: params,
        ancestor: Some(Ancestor {
            repo,
            commit,
            files,
        }),
        family: CardFamily {
            name: lineage.family.to_string(),
            hyper_parameters: hyper,
        },
        roles: gene.builder.roles.clone(),
        diagnostics: run_diagnostics(&gene.builder.diagnostics, request),
        metrics: Map::new(),
        lgreg_version: env!("CARGO_PKG_VERSION").to_string(),
        created: None,
        derived_from: None,
    })
}

/// The algorithm's diagnostics, with the run config (when there is one) as `run_config`.
fn run_diagnostics(
    diagnostics: &Map<String, Value>,
    request: &ExtractRequest,
) -> Map<String, Value> {
    let mut out = diagnostics.clone();
    if let Some(config) = &request.run_config {
        out.insert("run_config".into(), config.clone());
    }
    out
}

/// `(repo, commit)` of the ancestor: from the Hub cache path when it is a snapshot, else
/// `local:<name>` and `none`.
fn origin(path: &Path, hub_repo: Option<&str>) -> (String, String) {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(i) = parts.iter().position(|p| p == "snapshots")
        && let (Some(folder), Some(commit)) = (
            i.checked_sub(1).and_then(|j| parts.get(j)),
            parts.get(i + 1),
        )
        && let Some(repo) = folder.strip_prefix("models--")
    {
        let repo = hub_repo.map_or_else(|| repo.replacen("--", "/", 1), str::to_string);
        return (repo, commit.clone());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (format!("local:{name}"), "none".into())
}

/// The sha256 of every file of the ancestor: the blob name for Hub cache LFS files, else a
/// fresh hash.
pub(crate) fn ancestor_files(ckpt: &Checkpoint) -> Result<BTreeMap<String, String>> {
    let path = &ckpt.path;
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = fs_err::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_model_file(p))
            .collect();
        v.sort();
        v
    } else {
        vec![path.clone()]
    };
    let mut out = BTreeMap::new();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.insert(name, file_sha256(&file)?);
    }
    Ok(out)
}

fn is_model_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.ends_with(".safetensors")
        || name.ends_with(".bin")
        || name.ends_with(".gguf")
        || name.ends_with(".pth")
        || name.ends_with(".json")
        || name == "tokenizer.model"
        || name == "vocab.txt"
        || name == "merges.txt"
}

fn file_sha256(path: &Path) -> Result<String> {
    if let Ok(target) = fs_err::read_link(path)
        && let Some(etag) = target.file_name().and_then(|n| n.to_str())
        && etag.len() == 64
        && etag.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Ok(etag.to_string());
    }
    let (digest, _) = crate::registry::store::hash_file(path, &mut |_| {})?;
    Ok(digest.hex().to_string())
}

/// `smollm2-135m-tleg` from `HuggingFaceTB/SmolLM2-135M`, or from a directory or file name.
fn default_name(request: &ExtractRequest, algorithm: &str) -> String {
    let base = match &request.hub_repo {
        Some(repo) => repo.rsplit('/').next().unwrap_or(repo).to_string(),
        None => {
            let p = &request.ancestor;
            let stem = if p.is_dir() {
                p.file_name()
            } else {
                p.file_stem()
            };
            stem.map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "gene".into())
        }
    };
    let mut name = String::new();
    for c in base.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-');
    let name = if name.is_empty() { "gene" } else { name };
    format!("{name}-{algorithm}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_origins() {
        let mut r = ExtractRequest {
            ancestor: PathBuf::from("/x/SmolLM2 135M.Q4_1.gguf"),
            hub_repo: None,
            algorithm: "tleg".into(),
            recipe: None,
            sets: vec![],
            data: None,
            seed: 0,
            name: None,
            version: None,
            run_config: None,
        };
        assert_eq!(default_name(&r, "tleg"), "smollm2-135m-q4-1-tleg");
        r.hub_repo = Some("HuggingFaceTB/SmolLM2-135M".into());
        assert_eq!(default_name(&r, "sws"), "smollm2-135m-sws");
        let p = Path::new("/h/hub/models--HuggingFaceTB--SmolLM2-135M/snapshots/abc123");
        assert_eq!(
            origin(p, None),
            ("HuggingFaceTB/SmolLM2-135M".into(), "abc123".into())
        );
        assert_eq!(origin(Path::new("/a/minilm"), None).0, "local:minilm");
    }
}
