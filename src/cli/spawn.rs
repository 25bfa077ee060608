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
    /// Number of layers of the descendant (pool: optional with `--max-params`).
    #[arg(long, required_unless_present = "max_params")]
    layers: Option<usize>,
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
    /// pool: the largest allowed descendant with at most this many parameters (`25M`, `1.5B`,
    /// `800K` or a plain count); `--front`, `--end` and `--layers` narrow the choice.
    #[arg(long, value_parser = parse_count, conflicts_with = "stitch")]
    max_params: Option<u64>,
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

/// A parameter count: digits, optionally with a decimal part and a K, M or B suffix.
fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (number, scale) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('B') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    match number.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok((x * scale).round() as u64),
        _ => Err(format!(
            "`{s}` is not a parameter count; write e.g. 25M, 1.5B, 800K or 4000000"
        )),
    }
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let registry = Registry::open(&registry_root(global)?)?;
    let output = args.output.clone().unwrap_or_else(|| {
        let name = args.gene.split([':', '@']).next().unwrap_or("descendant");
        match (args.layers, args.max_params) {
            (Some(n), _) => PathBuf::from(format!("{name}-l{n}")),
            (None, budget) => PathBuf::from(format!("{name}-p{}", budget.unwrap_or(0))),
        }
    });
    let request = SpawnRequest {
        gene: args.gene.clone(),
        grow: GrowRequest {
            layers: args.layers.unwrap_or(0),
            seed: args.seed,
            options: GrowOptions {
                stages: args.stages.clone(),
                front: args.front.clone(),
                end: args.end.clone(),
                stitch: args.stitch,
                max_params: args.max_params,
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
