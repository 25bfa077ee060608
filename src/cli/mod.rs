//! Command-line interface: one file per subcommand, each with `Args` and a `run` that calls
//! one library function and returns a value for [`render`] to print.

mod adapt;
mod compare;
mod convert;
mod env;
mod eval;
mod export;
mod extract;
mod gc;
mod inspect;
mod lineage;
mod login;
mod ls;
mod progress;
mod publish;
mod pull;
mod push;
mod render;
mod show;
mod size;
mod spawn;
mod tag;
mod train;
mod verify;

pub(crate) use env::{registry_root, start_with_purge_delay};

use std::path::PathBuf;
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
    /// The gene registry (default: `$LGREG_HOME/registry`, else the platform data dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub registry: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a checkpoint (safetensors, PyTorch, GGUF) into a Hugging Face model directory.
    Convert(convert::Args),
    /// Measure a model: perplexity (llama), accuracy (vit) or pair similarity (bert).
    Eval(eval::Args),
    /// Fine-tune a model on a dataset and write a Hugging Face directory (or run a
    /// `descendant_*` config: spawn from the gene, then fine-tune).
    Adapt(adapt::Args),
    /// Run an `ancestor_*` config: make the gene it describes and publish it.
    Train(train::Args),
    /// Compare run directories: metric and loss curves, data fraction, epochs to a target.
    Compare(compare::Args),
    /// Extract a learngene from an ancestor with one of five algorithms and publish it.
    Extract(extract::Args),
    /// Build a descendant of any size from a gene, as a Hugging Face model directory.
    Spawn(spawn::Args),
    /// Show a checkpoint's family, sizes, parameter count and layers.
    Inspect(inspect::Args),
    /// Publish a gene directory into the local registry as `name:version`.
    Publish(publish::Args),
    /// List the genes in the local registry.
    Ls(ls::Args),
    /// Show a gene: card, tensors per unit, sizes and lineage.
    Show(show::Args),
    /// Write a gene out as plain files.
    Export(export::Args),
    /// Add a tag to a gene.
    Tag(tag::TagArgs),
    /// Remove a tag (blobs stay until `gc`).
    Rm(tag::RmArgs),
    /// Remove blobs no tag reaches.
    Gc(gc::Args),
    /// Re-hash every blob and check every reference; exits 1 on any problem.
    Verify(verify::Args),
    /// Show where a gene comes from and what derives from it.
    Lineage(lineage::Args),
    /// Download a model from the Hugging Face Hub, or a gene from an OCI registry (`oci://...`).
    Pull(pull::Args),
    /// Push a gene to an OCI registry (`oci://HOST[:PORT]/REPO[:TAG]`).
    Push(push::Args),
    /// Check and save credentials for an OCI registry in Docker's `config.json`.
    Login(login::Args),
}

/// Parse the command line, run the command, render its result, and pick the exit code.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let renderer = Renderer::new(&cli.global);
    let result: anyhow::Result<Box<dyn Output>> = match &cli.command {
        Command::Convert(args) => convert::run(args, &cli.global),
        Command::Inspect(args) => inspect::run(args, &cli.global),
        Command::Extract(args) => extract::run(args, &cli.global),
        Command::Spawn(args) => spawn::run(args, &cli.global),
        Command::Publish(args) => publish::run(args, &cli.global),
        Command::Ls(args) => ls::run(args, &cli.global),
        Command::Show(args) => show::run(args, &cli.global),
        Command::Export(args) => export::run(args, &cli.global),
        Command::Tag(args) => tag::run_tag(args, &cli.global),
        Command::Rm(args) => tag::run_rm(args, &cli.global),
        Command::Gc(args) => gc::run(args, &cli.global),
        Command::Verify(args) => verify::run(args, &cli.global),
        Command::Lineage(args) => lineage::run(args, &cli.global),
        Command::Pull(args) => pull::run(args, &cli.global),
        Command::Push(args) => push::run(args, &cli.global),
        Command::Login(args) => login::run(args, &cli.global),
        Command::Eval(args) => eval::run(args, &cli.global),
        Command::Adapt(args) => adapt::run(args, &cli.global),
        Command::Train(args) => train::run(args, &cli.global),
        Command::Compare(args) => compare::run(args, &cli.global),
    };
    match result {
        Ok(output) => renderer.result(output.as_ref()),
        Err(err) => renderer.error(&err),
    }
}
