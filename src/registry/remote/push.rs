//! `push`: send a gene's blobs, then its manifest bytes unchanged, to a remote repository.
//!
//! Each blob is first checked with HEAD and skipped when present; a missing one is mounted from
//! `mount_from` (another repository of the same registry) when asked, else streamed from the
//! local store, whole (one POST and one PUT) or in PATCH chunks. The manifest goes last, as the
//! exact bytes stored locally, so the remote digest equals the local one.

use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use oci_client::RegistryOperation;
use reqwest::header::HeaderValue;

use super::{Connection, MAX_MANIFEST_SIZE, Remote, RemoteRef};
use crate::error::Error;
use crate::progress::{Event, Reporter};
use crate::registry::manifest::{Descriptor, MANIFEST_MEDIA_TYPE};
use crate::registry::query::split_tag;
use crate::registry::{Digest, Reference, Registry, store};

/// How to push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Where and how to connect.
    pub connection: Connection,
    /// Upload in PATCH chunks of this many bytes (at most 4 MiB each, `oci-client`'s limit)
    /// instead of one monolithic PUT.
    pub chunk_size: Option<usize>,
    /// A repository of the same registry to mount missing blobs from.
    pub mount_from: Option<String>,
    /// Also push every artifact that derives from the gene, transitively, tagged
    /// `<name>-<version>` in the same repository.
    pub with_lineage: bool,
}

/// One descendant pushed with `--with-lineage`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushedLineage {
    /// Where it went, `oci://HOST/REPO:TAG`.
    pub reference: String,
    /// Its manifest digest.
    pub digest: Digest,
}

/// What `push` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushedGene {
    /// Where the gene went, `oci://HOST/REPO:TAG`.
    pub reference: String,
    /// The manifest digest (identical locally and remotely).
    pub digest: Digest,
    /// Blobs uploaded.
    pub blobs_uploaded: usize,
    /// Blobs mounted from another repository.
    pub blobs_mounted: usize,
    /// Blobs the registry already had.
    pub blobs_skipped: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Descendants pushed with `--with-lineage`.
    pub lineage: Vec<PushedLineage>,
}

/// Run `fut`, reporting the growth of `counter` every 100 ms through `tick`.
async fn with_progress<F: Future>(
    fut: F,
    counter: &AtomicU64,
    mut tick: impl FnMut(u64),
) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut seen = 0;
    loop {
        tokio::select! {
            out = &mut fut => {
                let n = counter.load(Ordering::Relaxed);
                if n > seen {
                    tick(n - seen);
                }
                return out;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let n = counter.load(Ordering::Relaxed);
                if n > seen {
                    tick(n - seen);
                    seen = n;
                }
            }
        }
    }
}

enum Outcome {
    Skipped,
    Mounted,
    Uploaded(u64),
}

impl Registry {
    /// Push the gene `reference` to `dest` (its tag defaults to the local version).
    pub fn push(
        &self,
        reference: &Reference,
        dest: &RemoteRef,
        opts: &PushOptions,
        reporter: &dyn Reporter,
    ) -> crate::Result<PushedGene> {
        if dest.digest.is_some() {
            return Err(Error::InvalidRemoteReference {
                value: dest.to_string(),
                reason: "a push destination takes a tag, not a digest".into(),
            });
        }
        let resolved = self.resolve(reference)?;
        let tag = match (&dest.tag, reference) {
            (Some(t), _) => t.clone(),
            (None, Reference::Tag { version, .. }) => version.to_string(),
            (None, r) => resolved
                .tags
                .iter()
                .filter_map(|t| split_tag(t))
                .find(|(n, _)| *n == r.name())
                .map(|(_, v)| v.to_string())
                .ok_or_else(|| Error::InvalidRemoteReference {
                    value: dest.to_string(),
                    reason: "no tag given and the gene has no local version to use".into(),
                })?,
        };
        let dest = dest.with_tag(&tag);
        let remote = Remote::connect(&dest, &opts.connection, opts.chunk_size.is_some())?;
        let mut report = PushedGene {
            reference: dest.to_string(),
            digest: resolved.digest.clone(),
            blobs_uploaded: 0,
            blobs_mounted: 0,
            blobs_skipped: 0,
            bytes_uploaded: 0,
            lineage: Vec::new(),
        };
        self.push_one(
            &remote,
            &resolved.digest,
            &dest,
            opts,
            reporter,
            &mut report,
        )?;
        if opts.with_lineage {
            let mut queue = vec![resolved.digest.clone()];
            let mut seen = vec![resolved.digest.clone()];
            while let Some(parent) = queue.pop() {
                let lineage = self.lineage(&Reference::Digest {
                    name: reference.name().to_string(),
                    digest: parent,
                })?;
                for child in lineage.children {
                    if seen.contains(&child.digest) {
                        continue;
                    }
                    seen.push(child.digest.clone());
                    let child_tag = child
                        .tags
                        .first()
                        .and_then(|t| split_tag(t))
                        .map(|(n, v)| format!("{n}-{v}"))
                        .unwrap_or_else(|| format!("lineage-{}", &child.digest.hex()[..16]));
                    let target = dest.with_tag(&child_tag);
                    self.push_one(&remote, &child.digest, &target, opts, reporter, &mut report)?;
                    report.lineage.push(PushedLineage {
                        reference: target.to_string(),
                        digest: child.digest.clone(),
                    });
                    queue.push(child.digest);
                }
            }
        }
        Ok(report)
    }

    fn push_one(
        &self,
        remote: &Remote,
        digest: &Digest,
        dest: &RemoteRef,
        opts: &PushOptions,
        reporter: &dyn Reporter,
        report: &mut PushedGene,
    ) -> crate::Result<()> {
        let manifest = self.read_manifest(digest)?;
        let bytes = store::read_verified(&self.layout, digest, MAX_MANIFEST_SIZE, "manifest")?;
        let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
            .chain(manifest.layers.iter())
            .collect();
        for d in &blobs {
            if !store::has_blob(&self.layout, &d.digest, d.size) {
                return Err(crate::registry::Error::BlobMissing {
                    digest: d.digest.clone(),
                    path: self.layout.blob(&d.digest),
                }
                .into());
            }
        }
        let total: u64 = blobs.iter().map(|d| d.size).sum();
        reporter.report(Event::Start {
            task: format!("push {dest}"),
            total,
        });
        let target = dest.client_ref();
        let what = dest.to_string();
        remote
            .rt
            .block_on(
                remote
                    .client
                    .auth(&target, &remote.auth, RegistryOperation::Push),
            )
            .map_err(|e| remote.error(&what, e))?;
        for d in blobs {
            let item = d.title().map_or_else(|| d.digest.to_string(), String::from);
            reporter.report(Event::ItemStart {
                item: item.clone(),
                total: d.size,
            });
            match self.push_blob(remote, &target, d, opts, reporter, &item)? {
                Outcome::Skipped => report.blobs_skipped += 1,
                Outcome::Mounted => report.blobs_mounted += 1,
                Outcome::Uploaded(n) => {
                    report.blobs_uploaded += 1;
                    report.bytes_uploaded += n;
                }
            }
            reporter.report(Event::ItemFinish { item });
        }
        remote
            .rt
            .block_on(remote.client.push_manifest_raw(
                &target,
                bytes,
                HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            ))
            .map_err(|e| remote.error(&what, e))?;
        reporter.report(Event::Finish);
        Ok(())
    }

    fn push_blob(
        &self,
        remote: &Remote,
        target: &oci_client::Reference,
        d: &Descriptor,
        opts: &PushOptions,
        reporter: &dyn Reporter,
        item: &str,
    ) -> crate::Result<Outcome> {
        let digest = d.digest.to_string();
        let what = format!("{}/{}@{digest}", target.registry(), target.repository());
        let advance = |n: u64| {
            reporter.report(Event::ItemAdvance {
                item: item.to_string(),
                amount: n,
            });
            reporter.report(Event::Advance {
                amount: n,
                item: None,
            });
        };
        let exists = remote
            .rt
            .block_on(remote.client.blob_exists(target, &digest))
            .map_err(|e| remote.error(&what, e))?;
        if exists {
            advance(d.size);
            return Ok(Outcome::Skipped);
        }
        if let Some(from) = &opts.mount_from {
            let source = oci_client::Reference::with_digest(
                target.registry().to_string(),
                from.clone(),
                digest.clone(),
            );
            let mounted = remote.rt.block_on(async {
                remote
                    .client
                    .mount_blob(target, &source, &digest)
                    .await
                    .is_ok()
                    && remote
                        .client
                        .blob_exists(target, &digest)
                        .await
                        .unwrap_or(false)
            });
            if mounted {
                advance(d.size);
                return Ok(Outcome::Mounted);
            }
        }
        let chunk = opts.chunk_size.unwrap_or(1 << 20).clamp(1, 4 << 20);
        let file = fs_err::File::open(self.layout.blob(&d.digest))?;
        let counter = Arc::new(AtomicU64::new(0));
        let sent = Arc::clone(&counter);
        let stream = futures_util::stream::unfold(Some(file), move |state| {
            let sent = Arc::clone(&sent);
            async move {
                let mut file = state?;
                let mut buf = vec![0u8; chunk];
                let mut filled = 0;
                while filled < chunk {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => return Some((Err(e.into()), None)),
                    }
                }
                if filled == 0 {
                    return None;
                }
                buf.truncate(filled);
                sent.fetch_add(filled as u64, Ordering::Relaxed);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
        });
        let push = remote
            .client
            .push_blob_stream(target, stream, &digest, Some(d.size));
        remote
            .rt
            .block_on(with_progress(push, &counter, advance))
            .map_err(|e| remote.error(&what, e))?;
        Ok(Outcome::Uploaded(d.size))
    }
}
