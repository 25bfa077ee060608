//! `lgreg export REF -o DIR`.

use std::path::PathBuf;

use lgreg::registry::{Exported, Reference, Registry};

use super::progress::Bars;
use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Write a gene out as plain files (`gene.json` plus safetensors units).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `name:version`, `name` (the highest version) or `name@sha256:<hex>`.
    reference: String,
    /// The directory to create.
    #[arg(short, long)]
    output: PathBuf,
    /// Replace the directory if it exists.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let reference = Reference::parse(&args.reference).map_err(lgreg::Error::from)?;
    let registry = Registry::open(&registry_root(global)?)?;
    let out = registry.export(&reference, &args.output, args.force, &Bars::new(global))?;
    Ok(Box::new(ExportOut(out)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct ExportOut(Exported);

impl Output for ExportOut {
    fn command(&self) -> &'static str {
        "export"
    }

    fn text(&self) -> String {
        let e = &self.0;
        format!(
            "{}\n  {} units, {} bytes, {}",
            e.output,
            e.units.len(),
            e.bytes,
            e.digest
        )
    }
}
