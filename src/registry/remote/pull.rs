//! `pull oci://...`: fetch a manifest by tag or digest, stream each missing blob into the
//! store, and keep it only when it hashes to its descriptor; then store the manifest bytes
//! unchanged and tag it `name:version`.
//!
//! Each blob downloads into its [`PartialBlob`], `.lgreg/tmp/<hex>.partial`, hashed once, with
//! ring, as it is written. `oci-client` fetches it with a range request from the first byte the
//! file lacks, so its own sha2 check does not hash the bytes a second time (a registry that
//! ignores the range answers 200 with the whole blob: the partial file starts over, and that
//! stream is checked by `oci-client` as well).
//!
//! Rerunning an interrupted pull resumes it: complete blobs are skipped, and a blob that broke
//! off continues from its partial file, whose bytes are hashed first, so the final check still
//! covers every byte. A blob that fails its digest or size check never enters `blobs/` and its
//! partial file is removed; the manifest and tag are written only after every blob is in place.

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
use crate::registry::store::PartialBlob;
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
            let progress = Progress {
                reporter,
                item: &item,
            };
            let blob = BlobRef {
                target: &target,
                digest: &dg,
                size,
                media_type,
            };
            match self.fetch_blob(&remote, &blob, &progress)? {
                Some(n) => {
                    report.blobs_downloaded += 1;
                    report.bytes_downloaded += n;
                }
                None => {
                    report.blobs_skipped += 1;
                    progress.advance(size);
                }
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

    /// Download one blob into the store, resuming its partial file. `None` when it is stored
    /// already; else the bytes that came over the network.
    fn fetch_blob(
        &self,
        remote: &Remote,
        blob: &BlobRef<'_>,
        progress: &Progress<'_>,
    ) -> crate::Result<Option<u64>> {
        let Some(mut partial) = PartialBlob::open(&self.layout, blob.digest, blob.size)? else {
            return Ok(None);
        };
        let what = blob.describe();
        let (downloaded, broke_off) = if partial.len() < blob.size {
            blob.download_rest(remote, &mut partial, progress)?
        } else {
            progress.advance(partial.len());
            (0, None)
        };
        if partial.len() < blob.size {
            let got = partial.len();
            partial.keep()?;
            let cause = broke_off.map_or_else(
                || "the registry sent too few bytes".to_string(),
                |e| remote.scrub(&e.to_string()),
            );
            return Err(Error::RemoteTransfer {
                reference: what,
                reason: format!(
                    "the download broke off after {got} of {} bytes ({cause}); the partial file is kept: run the same command again to resume",
                    blob.size
                ),
            });
        }
        // Dropped unless committed: a blob with the wrong digest or size is removed.
        let staged = partial.finish(&self.layout)?;
        if &staged.digest != blob.digest || staged.size != blob.size {
            return Err(Error::RemoteDigestMismatch {
                reference: what,
                expected: format!("{} ({} bytes)", blob.digest, blob.size),
                actual: format!("{} ({} bytes)", staged.digest, staged.size),
            });
        }
        staged.commit()?;
        Ok(Some(downloaded))
    }
}

/// One blob of the manifest being pulled.
struct BlobRef<'a> {
    target: &'a oci_client::Reference,
    digest: &'a Digest,
    size: u64,
    media_type: String,
}

impl BlobRef<'_> {
    /// `host/repo@digest`, for messages.
    fn describe(&self) -> String {
        format!(
            "{}/{}@{}",
            self.target.registry(),
            self.target.repository(),
            self.digest
        )
    }

    /// Append the bytes `partial` lacks, from a range request (or from the whole blob, when
    /// the registry ignores the range). Returns the bytes that came, and the error that ended
    /// the stream early, if one did.
    fn download_rest(
        &self,
        remote: &Remote,
        partial: &mut PartialBlob,
        progress: &Progress<'_>,
    ) -> crate::Result<(u64, Option<std::io::Error>)> {
        let (stream, whole) = self.request(remote, partial.len())?;
        if whole {
            partial.restart()?;
        }
        progress.advance(partial.len());
        let mut reader = StreamReader {
            rt: &remote.rt,
            stream,
            buf: Bytes::new(),
            error: None,
        };
        let n = partial.append(&mut reader, &mut |n| progress.advance(n))?;
        Ok((n, reader.error))
    }

    /// Ask for the bytes from `offset` to the end. Returns the body and whether it is the whole
    /// blob (the registry ignored the range); a whole body is also checked by `oci-client`.
    fn request(
        &self,
        remote: &Remote,
        offset: u64,
    ) -> crate::Result<(BoxStream<'static, std::io::Result<Bytes>>, bool)> {
        let desc = OciDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.to_string(),
            size: i64::try_from(self.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let length = self.size - offset;
        let response = remote
            .rt
            .block_on(remote.client.pull_blob_stream_partial(
                self.target,
                &desc,
                offset,
                Some(length),
            ))
            .map_err(|e| remote.error(&self.describe(), e))?;
        Ok(match response {
            BlobResponse::Full(s) => (s.stream, true),
            BlobResponse::Partial(s) => (s.stream, false),
        })
    }
}

/// Progress of one blob, reported to the bar of the item and to the total.
struct Progress<'a> {
    reporter: &'a dyn Reporter,
    item: &'a str,
}

impl Progress<'_> {
    fn advance(&self, amount: u64) {
        if amount == 0 {
            return;
        }
        self.reporter.report(Event::ItemAdvance {
            item: self.item.to_string(),
            amount,
        });
        self.reporter.report(Event::Advance { amount, item: None });
    }
}
