//! `lgreg extract --algo ALGO ANCESTOR`.

use std::path::PathBuf;

use lgreg::algorithm::{ExtractRequest, Extracted, extract};
use lgreg::registry::Registry;

use super::env::HubArgs;
use super::progress::Bars;
use super::pull::resolve_input;
use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Extract a learngene from an ancestor and publish it to the local registry.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The algorithm: heur, auto, pool, tleg or sws.
    #[arg(long)]
    algo: String,
    /// The ancestor: `org/name[@rev]` from the Hugging Face cache (pulled when missing), a
    /// model directory, or a checkpoint file (.safetensors, .bin/.pth, .gguf).
    ancestor: PathBuf,
    /// The gene name (default: the ancestor's name and the algorithm, e.g. `smollm2-135m-tleg`).
    #[arg(long)]
    name: Option<String>,
    /// The gene version (semver; default 0.1.0).
    #[arg(long)]
    version: Option<String>,
    /// Data for heur, auto and pool: a text file (llama, bert) or images (vit).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A recipe file instead of the embedded one (see `recipes/`).
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Override one recipe parameter, e.g. `--set align=true` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    hub: HubArgs,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let hub_repo = args
        .ancestor
        .to_str()
        .filter(|s| !args.ancestor.exists() && lgreg::hub::RepoRef::looks_like(s))
        .map(|s| s.split('@').next().unwrap_or(s).to_string());
    lgreg::algorithm::find(&args.algo)?;
    let ancestor = resolve_input(&args.ancestor, &args.hub, global)?;
    let request = ExtractRequest {
        ancestor,
        hub_repo,
        algorithm: args.algo.clone(),
        recipe: args.recipe.clone(),
        sets: args.sets.clone(),
        data: args.data.clone(),
        seed: args.seed,
        name: args.name.clone(),
        version: args.version.clone(),
        run_config: None,
    };
    let registry = Registry::open_or_init(&registry_root(global)?)?;
    let extracted = extract(&request, &registry, &Bars::new(global))?;
    Ok(Box::new(ExtractOut(extracted)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct ExtractOut(Extracted);

impl Output for ExtractOut {
    fn command(&self) -> &'static str {
        "extract"
    }

    fn text(&self) -> String {
        let e = &self.0;
        let mut s = format!(
            "{} {}\n  {} gene ({:?}), recipe {}, {} units, {} bytes",
            e.reference,
            e.digest,
            e.algorithm,
            e.fidelity,
            e.recipe,
            e.units.len(),
            e.bytes
        );
        if let Some(r2) = e.diagnostics.get("r2_mean") {
            s.push_str(&format!("\n  mean R² {r2}"));
        }
        if let Some(r2) = e.diagnostics.get("r2_unaligned_mean") {
            s.push_str(&format!(", unaligned {r2}"));
        }
        s
    }
}
