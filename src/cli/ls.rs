//! `lgreg ls`.

use std::fmt::Write;

use lgreg::registry::{Registry, TagEntry};

use super::render::Output;
use super::{GlobalArgs, registry_root};

/// List the genes in the local registry.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let registry = Registry::open(&registry_root(global)?)?;
    Ok(Box::new(Listed {
        genes: registry.list()?,
    }))
}

#[derive(serde::Serialize)]
struct Listed {
    genes: Vec<TagEntry>,
}

impl Output for Listed {
    fn command(&self) -> &'static str {
        "ls"
    }

    fn text(&self) -> String {
        let mut s = String::new();
        for g in &self.genes {
            let short = g.digest.hex().get(..12).unwrap_or_default();
            let _ = writeln!(
                s,
                "{:<40} sha256:{short}  {:>3} units  {:>12} bytes",
                g.tag, g.units, g.bytes
            );
        }
        s
    }
}
