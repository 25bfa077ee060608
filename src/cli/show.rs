//! `lgreg show REF`.

use std::fmt::Write;

use lgreg::registry::{GeneInfo, Reference, Registry};

use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Show a gene: its card, the tensors of each unit, sizes and lineage.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `name:version`, `name` (the highest version) or `name@sha256:<hex>`.
    reference: String,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let reference = Reference::parse(&args.reference).map_err(lgreg::Error::from)?;
    let registry = Registry::open(&registry_root(global)?)?;
    Ok(Box::new(Shown(registry.show(&reference)?)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Shown(GeneInfo);

impl Output for Shown {
    fn command(&self) -> &'static str {
        "show"
    }

    fn text(&self) -> String {
        let g = &self.0;
        let c = &g.card;
        let mut s = String::new();
        let _ = writeln!(s, "{} {}", g.tags.join(", "), g.digest);
        let _ = writeln!(s, "  algorithm  {} ({:?})", c.algorithm, c.fidelity);
        let _ = writeln!(s, "  recipe     {} {}", c.recipe.name, c.recipe.version);
        let _ = writeln!(s, "  family     {}", c.family.name);
        if let Some(a) = &c.ancestor {
            let _ = writeln!(s, "  ancestor   {}@{}", a.repo, a.commit);
        }
        if let Some(d) = &c.derived_from {
            let _ = writeln!(s, "  derived    from {d}");
        }
        let _ = writeln!(s, "  lgreg      {}", c.lgreg_version);
        if let Some(t) = &c.created {
            let _ = writeln!(s, "  created    {t}");
        }
        let _ = writeln!(s, "  bytes      {}", g.bytes);
        for u in &g.units {
            let _ = writeln!(s, "  unit {} ({} bytes, {})", u.title, u.size, u.digest);
            for t in &u.tensors {
                let _ = writeln!(s, "    {:<48} {:<5} {:?}", t.name, t.dtype, t.shape);
            }
        }
        for c in &g.lineage.children {
            let _ = writeln!(s, "  child      {} {}", c.tags.join(", "), c.digest);
        }
        s
    }
}
