//! `lgreg lineage REF`.

use std::fmt::Write;

use lgreg::registry::{Lineage, LineageNode, Reference, Registry};

use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Show where a gene comes from and what derives from it.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `name:version`, `name` (the highest version) or `name@sha256:<hex>`.
    reference: String,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let reference = Reference::parse(&args.reference).map_err(lgreg::Error::from)?;
    let registry = Registry::open(&registry_root(global)?)?;
    Ok(Box::new(LineageOut(registry.lineage(&reference)?)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct LineageOut(Lineage);

fn node(n: &LineageNode) -> String {
    let tags = if n.tags.is_empty() {
        "(untagged)".to_string()
    } else {
        n.tags.join(", ")
    };
    format!(
        "{tags} {} [{}]",
        n.digest,
        n.algorithm.as_deref().unwrap_or("?")
    )
}

impl Output for LineageOut {
    fn command(&self) -> &'static str {
        "lineage"
    }

    fn text(&self) -> String {
        let l = &self.0;
        let mut s = String::new();
        if let Some(a) = &l.ancestor {
            let _ = writeln!(s, "ancestor  {}@{}", a.repo, a.commit);
        }
        for p in l.parents.iter().rev() {
            let _ = writeln!(s, "parent    {}", node(p));
        }
        let _ = writeln!(s, "gene      {}", node(&l.gene));
        for c in &l.children {
            let _ = writeln!(s, "child     {}", node(c));
        }
        s
    }
}
