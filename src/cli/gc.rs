//! `lgreg gc [--dry-run]`.

use lgreg::registry::{GcReport, Registry};

use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Remove blobs that no tag reaches, and stale temp files.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Report what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let registry = Registry::open(&registry_root(global)?)?;
    Ok(Box::new(GcOut(registry.gc(args.dry_run)?)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct GcOut(GcReport);

impl Output for GcOut {
    fn command(&self) -> &'static str {
        "gc"
    }

    fn text(&self) -> String {
        let r = &self.0;
        let verb = if r.dry_run { "would free" } else { "freed" };
        format!(
            "{verb} {} bytes in {} blobs ({} kept), {} bytes of temp files",
            r.bytes_freed,
            r.removed.len(),
            r.kept,
            r.tmp_bytes_freed
        )
    }
}
