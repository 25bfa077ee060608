//! `pull oci://...`: fetch a manifest by tag or digest, stream each missing blob through the
//! store's hashing stage, and keep it only when it hashes to its descriptor; then store the
//! manifest bytes unchanged and tag it `name:version`.
//!
//! Each blob is hashed once, with ring, as it is written into the store's temp file (see
//! [`store::stage`]); `oci-client` fetches it with a whole-blob range request so that its own
//! sha2 check does not hash the bytes a second time (a registry that ignores the range gets
//! both checks).
//!
//! Blobs already present are skipped, so rerunning an interrupted pull resumes it: completed
//! blobs stay, a partial one restarts. A blob that fails its digest or size check never enters
//! `blobs/`, and the manifest and tag are written only after every blob is in place.

use std::io::Read;

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use oci_client::RegistryOperation;
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;

use super::{Connection, MAX_MANIFEST_SIZE, Remote, RemoteRef};
use crate::error::Error;
use crate::progress::{Event, Reporter};
use crate::registry::manifest::MANIFEST_MEDIA_TYPE;
use crate::registry::{Digest, Reference, Registry, index, store};

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullRemoteOptions {
    /// Where and how to connect.
    pub connection: Connection,
    /// The local tag `name:version` (default: the repository's last path segment and the
    /// remote tag; a pull by digest without it stays untagged).
    pub as_tag: Option<String>,
}

/// What a remote pull did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PulledGene {
    /// The remote reference pulled.
    pub reference: String,
    /// The manifest digest.
    pub digest: Digest,
    /// The local tag, when one was set.
    pub tag: Option<String>,
    /// Blobs downloaded.
    pub blobs_downloaded: usize,
    /// Blobs already present locally.
    pub blobs_skipped: usize,
    /// Bytes downloaded.
    pub bytes_downloaded: u64,
}

/// A blocking reader over a byte stream. A stream error ends the read early and is kept, so
/// the caller can judge the bytes by their hash first.
struct StreamReader<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: BoxStream<'static, std::io::Result<Bytes>>,
    buf: Bytes,
    error: Option<std::io::Error>,
}

impl Read for StreamReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            if self.error.is_some() {
                return Ok(0);
            }
            match self.rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => self.error = Some(e),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        Ok(n)
    }
}

impl Registry {
    /// Pull the manifest `src` names, and its blobs, into this registry.
    pub fn pull_remote(
        &self,
        src: &RemoteRef,
        opts: &PullRemoteOptions,
        reporter: &dyn Reporter,
    ) -> crate::Result<PulledGene> {
        let local = match (&opts.as_tag, &src.tag) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(t)) => Some(format!("{}:{t}", src.last_segment())),
            (None, None) => None,
        };
        let (name, local) = match &local {
            Some(t) => match Reference::parse(t) {
                Ok(r @ Reference::Tag { .. }) => (r.name().to_string(), Some(r.to_string())),
                _ => {
                    return Err(Error::InvalidLocalTag {
                        reference: src.to_string(),
                        tag: t.clone(),
                    });
                }
            },
            None => (src.last_segment().to_string(), None),
        };
        let remote = Remote::connect(src, &opts.connection, false)?;
        let target = src.client_ref();
        let what = src.to_string();
        let (bytes, _) = remote
            .rt
            .block_on(async {
                remote
                    .client
                    .auth(&target, &remote.auth, RegistryOperation::Pull)
                    .await?;
                remote
                    .client
                    .pull_manifest_raw(&target, &remote.auth, &[MANIFEST_MEDIA_TYPE])
                    .await
            })
            .map_err(|e| remote.error(&what, e))?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::RemoteProtocol {
                reference: what,
                reason: format!(
                    "the manifest is {} bytes, over the limit of {MAX_MANIFEST_SIZE}",
                    bytes.len()
                ),
            });
        }
        let digest = Digest::of(&bytes);
        if let Some(want) = &src.digest
            && want != &digest
        {
            return Err(Error::RemoteDigestMismatch {
                reference: what,
                expected: want.to_string(),
                actual: digest.to_string(),
            });
        }
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::RemoteProtocol {
                reference: what.clone(),
                reason: format!("not an OCI image manifest ({e})"),
            })?;
        let mut blobs = Vec::new();
        for d in std::iter::once(manifest.config()).chain(manifest.layers().iter()) {
            let dg = Digest::parse(d.digest().as_ref()).map_err(|e| Error::RemoteProtocol {
                reference: what.clone(),
                reason: e.to_string(),
            })?;
            let title = d
                .annotations()
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.title").cloned());
            blobs.push((dg, d.size(), d.media_type().to_string(), title));
        }

        let _writer = index::writer_lock(&self.layout)?;
        let total = blobs.iter().map(|b| b.1).sum();
        reporter.report(Event::Start {
            task: format!("pull {what}"),
            total,
        });
        let mut report = PulledGene {
            reference: what.clone(),
            digest: digest.clone(),
            tag: None,
            blobs_downloaded: 0,
            blobs_skipped: 0,
            bytes_downloaded: 0,
        };
        for (dg, size, media_type, title) in blobs {
            let item = title.unwrap_or_else(|| dg.to_string());
            reporter.report(Event::ItemStart {
                item: item.clone(),
                total: size,
            });
            if store::has_blob(&self.layout, &dg, size) {
                report.blobs_skipped += 1;
                reporter.report(Event::Advance {
                    amount: size,
                    item: None,
                });
            } else {
                self.fetch_blob(&remote, &target, &dg, size, media_type, &item, reporter)?;
                report.blobs_downloaded += 1;
                report.bytes_downloaded += size;
            }
            reporter.report(Event::ItemFinish { item });
        }
        store::sync_blobs(&self.layout)?;
        store::put_bytes(&self.layout, &bytes)?;
        if let Some(tag) = local {
            let source = Reference::Digest {
                name,
                digest: digest.clone(),
            };
            report.tag = Some(self.tag(&source, &tag)?);
        }
        reporter.report(Event::Finish);
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    fn fetch_blob(
        &self,
        remote: &Remote,
        target: &oci_client::Reference,
        digest: &Digest,
        size: u64,
        media_type: String,
        item: &str,
        reporter: &dyn Reporter,
    ) -> crate::Result<()> {
        let what = format!("{}/{}@{digest}", target.registry(), target.repository());
        let desc = OciDescriptor {
            media_type,
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        // A ranged request for the whole blob: a registry that honours it (206) sends an
        // unverified stream, so the bytes are hashed once, by the store's stage below; one that
        // answers 200 gets `oci-client`'s verifying stream as well. Either way nothing enters
        // `blobs/` unless the stage's digest and size match the descriptor.
        let sized = remote
            .rt
            .block_on(async {
                if size == 0 {
                    return remote.client.pull_blob_stream(target, &desc).await;
                }
                match remote
                    .client
                    .pull_blob_stream_partial(target, &desc, 0, Some(size))
                    .await?
                {
                    BlobResponse::Full(s) | BlobResponse::Partial(s) => Ok(s),
                }
            })
            .map_err(|e| remote.error(&what, e))?;
        let mut reader = StreamReader {
            rt: &remote.rt,
            stream: sized.stream,
            buf: Bytes::new(),
            error: None,
        };
        let staged = store::stage(&self.layout, &mut reader, &mut |n| {
            reporter.report(Event::ItemAdvance {
                item: item.to_string(),
                amount: n,
            });
            reporter.report(Event::Advance {
                amount: n,
                item: None,
            });
        })?;
        if &staged.digest != digest || staged.size != size {
            if reader.error.is_some() && staged.size < size {
                return Err(Error::RemoteTransfer {
                    reference: what,
                    reason: format!(
                        "the download broke off after {} of {size} bytes; run the same command again to resume",
                        staged.size
                    ),
                });
            }
            return Err(Error::RemoteDigestMismatch {
                reference: what,
                expected: format!("{digest} ({size} bytes)"),
                actual: format!("{} ({} bytes)", staged.digest, staged.size),
            });
        }
        if let Some(e) = reader.error {
            return Err(Error::RemoteTransfer {
                reference: what,
                reason: remote.scrub(&e.to_string()),
            });
        }
        staged.commit()?;
        Ok(())
    }
}
