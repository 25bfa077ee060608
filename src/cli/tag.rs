//! `lgreg tag REF NEW` and `lgreg rm REF`.

use lgreg::registry::{Reference, Registry};

use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Add a tag `name:version` to an existing gene.
#[derive(Debug, clap::Args)]
pub(crate) struct TagArgs {
    /// The gene: `name:version`, `name` or `name@sha256:<hex>`.
    reference: String,
    /// The new tag, `name:version`.
    new: String,
}

/// Remove a tag; the blobs stay until `lgreg gc`.
#[derive(Debug, clap::Args)]
pub(crate) struct RmArgs {
    /// `name:version`, `name@sha256:<hex>` (every tag of `name` on it) or `name` (its only tag).
    reference: String,
}

pub(crate) fn run_tag(args: &TagArgs, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let reference = Reference::parse(&args.reference).map_err(lgreg::Error::from)?;
    let registry = Registry::open(&registry_root(global)?)?;
    let tag = registry.tag(&reference, &args.new)?;
    Ok(Box::new(Tagged {
        command: "tag",
        tags: vec![tag],
    }))
}

pub(crate) fn run_rm(args: &RmArgs, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let reference = Reference::parse(&args.reference).map_err(lgreg::Error::from)?;
    let registry = Registry::open(&registry_root(global)?)?;
    let tags = registry.remove(&reference)?;
    Ok(Box::new(Tagged {
        command: "rm",
        tags,
    }))
}

#[derive(serde::Serialize)]
struct Tagged {
    #[serde(skip)]
    command: &'static str,
    tags: Vec<String>,
}

impl Output for Tagged {
    fn command(&self) -> &'static str {
        self.command
    }

    fn text(&self) -> String {
        let verb = if self.command == "rm" {
            "removed"
        } else {
            "tagged"
        };
        format!("{verb} {}", self.tags.join(", "))
    }
}
