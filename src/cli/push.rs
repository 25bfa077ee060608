//! `lgreg push REF oci://HOST[:PORT]/REPO[:TAG]`.

use lgreg::registry::remote::{PushOptions, PushedGene};
use lgreg::registry::{Reference, Registry, RemoteRef};

use super::env::{RemoteArgs, connection};
use super::progress::Bars;
use super::render::Output;
use super::{GlobalArgs, registry_root};

/// Push a gene to an OCI registry; the manifest digest stays the same.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The local gene: `name:version`, `name` or `name@sha256:...`.
    reference: String,
    /// `oci://HOST[:PORT]/REPO[:TAG]` (the tag defaults to the gene's version).
    destination: String,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Also push the artifacts derived from the gene, tagged `<name>-<version>`.
    #[arg(long)]
    with_lineage: bool,
    /// Upload in chunks of SIZE bytes (suffixes `k`, `m`; at most 4m) instead of one request.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    chunk_size: Option<usize>,
    /// Mount blobs the registry already holds in this repository instead of uploading them.
    #[arg(long, value_name = "REPO")]
    mount_from: Option<String>,
}

fn parse_size(value: &str) -> Result<usize, String> {
    let v = value.trim().to_ascii_lowercase();
    let v = v.trim_end_matches("ib").trim_end_matches('b');
    let (num, mul) = match v.chars().last() {
        Some('k') => (&v[..v.len() - 1], 1 << 10),
        Some('m') => (&v[..v.len() - 1], 1 << 20),
        _ => (v, 1),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{value}` is not a size like `1048576`, `512k` or `4m`"))?;
    match n.checked_mul(mul) {
        Some(s) if (1..=4 << 20).contains(&s) => Ok(s),
        _ => Err(format!("`{value}` must be between 1 byte and 4m")),
    }
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let reference = Reference::parse(&args.reference)?;
    let dest = RemoteRef::parse(&args.destination)?;
    let opts = PushOptions {
        connection: connection(&args.remote, &dest.host)?,
        chunk_size: args.chunk_size,
        mount_from: args.mount_from.clone(),
        with_lineage: args.with_lineage,
    };
    let registry = Registry::open(&registry_root(global)?)?;
    let pushed = registry.push(&reference, &dest, &opts, &Bars::new(global))?;
    Ok(Box::new(PushOut(pushed)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct PushOut(PushedGene);

impl Output for PushOut {
    fn command(&self) -> &'static str {
        "push"
    }

    fn text(&self) -> String {
        let p = &self.0;
        let mut s = format!(
            "{} {}\n  {} blobs uploaded ({} bytes), {} mounted, {} already there\n",
            p.reference,
            p.digest,
            p.blobs_uploaded,
            p.bytes_uploaded,
            p.blobs_mounted,
            p.blobs_skipped
        );
        for l in &p.lineage {
            s.push_str(&format!("  lineage {} {}\n", l.reference, l.digest));
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(super::parse_size("4MiB").unwrap(), 4 << 20);
        assert!(super::parse_size("5m").is_err());
        assert!(super::parse_size("x").is_err());
    }
}
