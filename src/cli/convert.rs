//! `lgreg convert INPUT OUTPUT_DIR`.

use std::path::PathBuf;

use lgreg::checkpoint::DType;
use lgreg::convert::{ConvertOptions, ConvertReport, convert};

use super::env::HubArgs;
use super::progress::Bars;
use super::pull::resolve_input;
use super::render::Output;
use super::{GlobalArgs, size};

/// Convert a checkpoint into a Hugging Face model directory.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A checkpoint file (.safetensors, .bin/.pt/.pth, .gguf), a model directory, or
    /// `org/name[@rev]` from the Hugging Face cache (pulled first when missing).
    input: PathBuf,
    /// The directory to create.
    output: PathBuf,
    /// Cast floating-point tensors to this dtype (f32, f16, bf16).
    #[arg(long)]
    dtype: Option<DType>,
    /// Split the weights into shards of at most this size (e.g. `2GB`, `500MiB`).
    #[arg(long, value_parser = size::parse_size)]
    shard_size: Option<u64>,
    /// Replace OUTPUT_DIR if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    hub: HubArgs,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let opts = ConvertOptions {
        dtype: args.dtype,
        shard_size: args.shard_size,
        force: args.force,
    };
    let input = resolve_input(&args.input, &args.hub, global)?;
    let report = convert(&input, &args.output, &opts, &Bars::new(global))?;
    Ok(Box::new(Converted(report)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Converted(ConvertReport);

impl Output for Converted {
    fn command(&self) -> &'static str {
        "convert"
    }

    fn text(&self) -> String {
        let r = &self.0;
        format!(
            "{}\n  {} tensors, {} bytes, {} family, from {:?}\n  files: {}",
            r.output,
            r.tensors,
            r.bytes,
            r.family,
            r.input_format,
            r.weight_files
                .iter()
                .chain(&r.other_files)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}
