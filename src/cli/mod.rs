//! Command-line interface: one file per subcommand, each with `Args` and a `run` that calls
//! one library function and returns a value for [`render`] to print.

mod adapt;
mod convert;
mod eval;
mod inspect;
mod progress;
mod render;
mod size;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use render::{Output, Renderer};

/// Model-zoo checkpoint converter and learngene registry.
#[derive(Debug, Parser)]
#[command(name = "lgreg", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GlobalArgs {
    /// Print machine-readable JSON Lines on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Hide progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Print nothing but results and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a checkpoint (safetensors, PyTorch, GGUF) into a Hugging Face model directory.
    Convert(convert::Args),
    /// Measure a model: perplexity (llama), accuracy (vit) or pair similarity (bert).
    Eval(eval::Args),
    /// Fine-tune a model on a dataset and write a Hugging Face directory.
    Adapt(adapt::Args),
    /// Show a checkpoint's family, sizes, parameter count and layers.
    Inspect(inspect::Args),
}

/// Parse the command line, run the command, render its result, and pick the exit code.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let renderer = Renderer::new(&cli.global);
    let result: anyhow::Result<Box<dyn Output>> = match &cli.command {
        Command::Convert(args) => convert::run(args, &cli.global),
        Command::Inspect(args) => inspect::run(args),
        Command::Eval(args) => eval::run(args, &cli.global),
        Command::Adapt(args) => adapt::run(args, &cli.global),
    };
    match result {
        Ok(output) => renderer.result(output.as_ref()),
        Err(err) => renderer.error(&err),
    }
}
