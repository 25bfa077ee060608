//! `lgreg verify`: exits 1 when any problem is found.

use std::fmt::Write;

use lgreg::registry::{Registry, VerifyReport};

use super::progress::Bars;
use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Re-hash every blob and check every tag's references.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let registry = Registry::open(&registry_root(global)?)?;
    Ok(Box::new(Verified(registry.verify(&Bars::new(global))?)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Verified(VerifyReport);

impl Output for Verified {
    fn command(&self) -> &'static str {
        "verify"
    }

    fn text(&self) -> String {
        let r = &self.0;
        let mut s = String::new();
        for p in &r.problems {
            let _ = writeln!(s, "problem: {}: {}", p.subject, p.message);
        }
        let _ = writeln!(
            s,
            "{} blobs ({} bytes) and {} tags checked: {} problems",
            r.blobs,
            r.bytes,
            r.tags,
            r.problems.len()
        );
        s
    }

    fn failed(&self) -> bool {
        !self.0.problems.is_empty()
    }
}
