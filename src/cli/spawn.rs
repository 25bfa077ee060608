//! `lgreg spawn GENE --layers N -o DIR`.

use std::path::PathBuf;

use lgreg::algorithm::{GrowOptions, GrowRequest};
use lgreg::checkpoint::DType;
use lgreg::descendant::{Baseline, SpawnRequest, Spawned, spawn};
use lgreg::registry::Registry;

use super::progress::Bars;
use super::render::Output;
use super::{GlobalArgs, registry_root, size};

/// Build a descendant model of any size from a gene, as a Hugging Face model directory.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The gene: `name[:version]` or `name@sha256:...`.
    gene: String,
    /// Number of layers of the descendant.
    #[arg(long)]
    layers: usize,
    /// The directory to create (default: `<gene name>-l<N>`).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Cast the weights to this dtype (f32, f16, bf16).
    #[arg(long)]
    dtype: Option<DType>,
    /// Seed of every random part.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// sws: descendant layers per stage, e.g. `3,3,2,2,2` (0 drops a stage).
    #[arg(long, value_delimiter = ',')]
    stages: Option<Vec<usize>>,
    /// pool: the front instance.
    #[arg(long)]
    front: Option<String>,
    /// pool: the end instance.
    #[arg(long)]
    end: Option<String>,
    /// pool: the stitch `I,J` (front blocks 0..=I, then end blocks J..).
    #[arg(long, value_parser = parse_pair)]
    stitch: Option<(usize, usize)>,
    /// Split the weights into shards of at most this size (default 5GB).
    #[arg(long, value_parser = size::parse_size)]
    shard_size: Option<u64>,
    /// Skip the smoke metric.
    #[arg(long)]
    no_smoke: bool,
    /// Images for the vit smoke metric.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Draw every tensor at random instead (same shapes, nothing inherited): a baseline.
    #[arg(long, conflicts_with = "random_layers")]
    random_baseline: bool,
    /// Draw the layers at random but keep the gene's embeddings, norms and head: the control
    /// that shows what the globals alone give.
    #[arg(long)]
    random_layers: bool,
    /// Replace the output directory if it exists.
    #[arg(long)]
    force: bool,
}

fn parse_pair(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("`{s}` is not `I,J`"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{x}` in `{s}` is not a block index"))
    };
    Ok((num(a)?, num(b)?))
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let registry = Registry::open(&registry_root(global)?)?;
    let output = args.output.clone().unwrap_or_else(|| {
        let name = args.gene.split([':', '@']).next().unwrap_or("descendant");
        PathBuf::from(format!("{name}-l{}", args.layers))
    });
    let request = SpawnRequest {
        gene: args.gene.clone(),
        grow: GrowRequest {
            layers: args.layers,
            seed: args.seed,
            options: GrowOptions {
                stages: args.stages.clone(),
                front: args.front.clone(),
                end: args.end.clone(),
                stitch: args.stitch,
            },
        },
        output,
        dtype: args.dtype,
        shard_size: args.shard_size,
        force: args.force,
        smoke: !args.no_smoke,
        eval_data: args.eval_data.clone(),
        baseline: if args.random_baseline {
            Some(Baseline::Random)
        } else if args.random_layers {
            Some(Baseline::RandomLayers)
        } else {
            None
        },
    };
    let spawned = spawn(&registry, &request, &Bars::new(global))?;
    Ok(Box::new(SpawnOut(spawned)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct SpawnOut(Spawned);

impl Output for SpawnOut {
    fn command(&self) -> &'static str {
        "spawn"
    }

    fn text(&self) -> String {
        let s = &self.0;
        let smoke = s
            .smoke
            .as_ref()
            .and_then(|m| serde_json::to_value(m).ok())
            .map(|v| format!("\n  smoke: {v}"))
            .unwrap_or_default();
        format!(
            "{}\n  {} layers from {} ({}), {} parameters, {} bytes\n  recorded as {} {}{smoke}",
            s.output,
            s.layers,
            s.gene,
            s.algorithm,
            s.parameters,
            s.bytes,
            s.record,
            s.record_digest
        )
    }
}
