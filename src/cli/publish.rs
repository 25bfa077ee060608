//! `lgreg publish DIR --name N --version V`.

use std::path::PathBuf;

use lgreg::registry::{Published, Registry};

use super::progress::Bars;
use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Publish a gene directory (`gene.json` plus safetensors units) into the local registry.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The gene directory, as `lgreg export` writes it.
    dir: PathBuf,
    /// The gene name (lowercase letters, digits, `.`, `_`, `-`).
    #[arg(long)]
    name: String,
    /// The version (semver, immutable once published).
    #[arg(long)]
    version: String,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let registry = Registry::open_or_init(&registry_root(global)?)?;
    let published = registry.publish(&args.dir, &args.name, &args.version, &Bars::new(global))?;
    Ok(Box::new(PublishOut(published)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct PublishOut(Published);

impl Output for PublishOut {
    fn command(&self) -> &'static str {
        "publish"
    }

    fn text(&self) -> String {
        let p = &self.0;
        let what = if p.unchanged {
            "already published".to_string()
        } else {
            format!("published, {} new bytes stored", p.new_bytes)
        };
        format!(
            "{} {}\n  {} units, {} bytes: {what}",
            p.reference, p.digest, p.units, p.bytes
        )
    }
}
