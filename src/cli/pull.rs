//! `lgreg pull ORG/NAME[@REVISION]`.

use std::fmt::Write;

use lgreg::hub::{PullOptions, PullReport, Selection, pull};

use super::GlobalArgs;
use super::env::{HubArgs, hub_config};
use super::progress::Bars;
use super::render::Output;

/// Download a model from the Hugging Face Hub into the cache shared with Python.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `org/name[@revision]` on the Hub (`oci://` references are not supported yet).
    reference: String,
    /// Branch, tag or commit (overrides `@revision`; default `main`).
    #[arg(long)]
    revision: Option<String>,
    /// Fetch the files matching this glob instead of the default set (repeatable).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Skip files matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Fetch every file of the repo.
    #[arg(long, conflicts_with = "include")]
    all: bool,
    #[command(flatten)]
    hub: HubArgs,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let cfg = hub_config(&args.hub);
    let opts = PullOptions {
        revision: args.revision.clone(),
        selection: Selection {
            include: args.include.clone(),
            exclude: args.exclude.clone(),
            all: args.all,
        },
    };
    let report = pull(&args.reference, &opts, &cfg, &Bars::new(global))?;
    Ok(Box::new(Pulled(report)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Pulled(PullReport);

impl Output for Pulled {
    fn command(&self) -> &'static str {
        "pull"
    }

    fn text(&self) -> String {
        let r = &self.0;
        let mut s = String::new();
        let _ = writeln!(s, "{}", r.snapshot.display());
        let _ = writeln!(
            s,
            "  {} at `{}` = commit {}{}",
            r.repo,
            r.revision,
            r.commit,
            if r.offline {
                " (offline, from the cache)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "  {} files, {} bytes downloaded, {} bytes already cached",
            r.files.len(),
            r.bytes_downloaded,
            r.bytes_reused
        );
        for f in &r.files {
            let _ = writeln!(s, "  {:<40} {:>12}", f.name, f.size);
        }
        s
    }
}

/// A verb's model argument: a local path as is, or `org/name[@rev]` resolved from the Hub cache
/// (pulled first when missing and online).
pub(crate) fn resolve_input(
    input: &std::path::Path,
    hub: &HubArgs,
    global: &GlobalArgs,
) -> anyhow::Result<std::path::PathBuf> {
    let Some(spec) = input.to_str() else {
        return Ok(input.to_path_buf());
    };
    if input.exists() || !lgreg::hub::RepoRef::looks_like(spec) {
        return Ok(input.to_path_buf());
    }
    let cfg = hub_config(hub);
    Ok(lgreg::hub::resolve_ancestor(
        spec,
        &cfg,
        &Bars::new(global),
    )?)
}
