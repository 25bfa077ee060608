//! `lgreg pull ORG/NAME[@REVISION]` (Hugging Face Hub) and `lgreg pull oci://HOST/REPO:TAG`
//! (a gene from an OCI registry into the local registry).

use std::fmt::Write;

use lgreg::hub::{PullOptions, PullReport, Selection, pull};

use lgreg::registry::remote::{PullRemoteOptions, PulledGene};
use lgreg::registry::{Registry, RemoteRef};

use super::env::{HubArgs, RemoteArgs, connection, hub_config};
use super::progress::Bars;
use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Download a model from the Hugging Face Hub into the cache shared with Python, or a gene from
/// an OCI registry into the local registry.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `org/name[@revision]` on the Hub, or `oci://HOST[:PORT]/REPO(:TAG|@sha256:...)`.
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
    #[command(flatten)]
    remote: RemoteArgs,
    /// With `oci://`: the local tag `NAME:VERSION` (default: the repository's last path
    /// segment and the remote tag).
    #[arg(long = "as", value_name = "NAME:VERSION")]
    as_tag: Option<String>,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    if RemoteRef::looks_like(&args.reference) {
        return run_oci(args, global);
    }
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

fn run_oci(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let src = RemoteRef::parse(&args.reference)?;
    let opts = PullRemoteOptions {
        connection: connection(&args.remote, &src.host)?,
        as_tag: args.as_tag.clone(),
    };
    let registry = Registry::open_or_init(&registry_root(global)?)?;
    let pulled = registry.pull_remote(&src, &opts, &Bars::new(global))?;
    Ok(Box::new(PulledOci(pulled)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct PulledOci(PulledGene);

impl Output for PulledOci {
    fn command(&self) -> &'static str {
        "pull"
    }

    fn text(&self) -> String {
        let p = &self.0;
        format!(
            "{} {}\n  tagged {}\n  {} blobs downloaded ({} bytes), {} already present\n",
            p.reference,
            p.digest,
            p.tag.as_deref().unwrap_or("(untagged)"),
            p.blobs_downloaded,
            p.bytes_downloaded,
            p.blobs_skipped
        )
    }
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
