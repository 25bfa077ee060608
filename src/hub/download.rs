//! One blob into the cache: lock, resume from `.incomplete`, hash while writing, verify, fsync,
//! rename.
//!
//! The lock is `huggingface_hub`'s own lock file, so an lgreg and a Python download of the same
//! blob wait for each other instead of writing the same `.incomplete` twice. The sha256 of LFS
//! files is checked *before* the rename, so a corrupt blob never enters the cache; the
//! `.incomplete` file of a failed transfer stays for the next run to resume, except when its
//! bytes proved wrong.

use std::io::{Read, Write};
use std::path::Path;

use ring::digest::{Context as Sha256, SHA256};

use super::api::{Body, Client, FileMeta, Target};
use super::cache::RepoCache;
use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use crate::progress::{Event, Reporter};

/// Bytes per read from the network.
const CHUNK: usize = 1 << 20;

/// What fetching one blob did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fetched {
    /// Bytes that came over the network in this run.
    pub downloaded: u64,
    /// Bytes already present (a finished blob, or the resumed part of an `.incomplete`).
    pub reused: u64,
}

/// Everything one blob download needs.
pub(crate) struct BlobJob<'a> {
    pub client: &'a Client,
    pub cache: &'a RepoCache,
    pub repo: &'a str,
    pub file: &'a str,
    pub meta: &'a FileMeta,
    /// The LFS oid, when the Hub gave one.
    pub sha256: Option<&'a str>,
    pub reporter: &'a dyn Reporter,
}

impl BlobJob<'_> {
    /// Make sure `blobs/<etag>` exists and is complete.
    pub(crate) fn run(&self) -> Result<Fetched> {
        let blob = self.cache.blob(&self.meta.etag)?;
        if let Some(done) = self.finished(&blob)? {
            return Ok(done);
        }
        let lock_path = self.cache.lock(&self.meta.etag)?;
        if let Some(parent) = lock_path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let lock = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        lock.file()
            .lock()
            .map_err(|e| crate::fsutil::with_path(e, &lock_path))?;
        // Another process may have finished it while we waited.
        if let Some(done) = self.finished(&blob)? {
            return Ok(done);
        }
        let result = self.transfer(&blob);
        drop(lock);
        result
    }

    fn finished(&self, blob: &Path) -> Result<Option<Fetched>> {
        match fs_err::metadata(blob) {
            Ok(m) if m.len() == self.meta.size => {
                self.reporter.report(Event::ItemStart {
                    item: self.file.into(),
                    total: self.meta.size,
                });
                self.advance(self.meta.size);
                self.reporter.report(Event::ItemFinish {
                    item: self.file.into(),
                });
                Ok(Some(Fetched {
                    downloaded: 0,
                    reused: self.meta.size,
                }))
            }
            _ => Ok(None),
        }
    }

    fn advance(&self, amount: u64) {
        self.reporter.report(Event::ItemAdvance {
            item: self.file.into(),
            amount,
        });
        self.reporter.report(Event::Advance { amount, item: None });
    }

    fn transfer(&self, blob: &Path) -> Result<Fetched> {
        let partial = self.cache.incomplete(&self.meta.etag)?;
        if let Some(parent) = partial.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let mut out = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&partial)?;
        let mut offset = out.metadata()?.len();
        let mut prefix = Sha256::new(&SHA256);
        if offset > self.meta.size {
            out.file().set_len(0)?;
            offset = 0;
        } else if offset > 0 && self.sha256.is_some() {
            hash_prefix(&partial, offset, &mut prefix)?;
        }
        let mut hasher = PipeHasher::new(self.sha256.is_some(), prefix);
        let reused = offset;
        self.reporter.report(Event::ItemStart {
            item: self.file.into(),
            total: self.meta.size,
        });
        self.advance(offset);
        let target = Target {
            repo: self.repo,
            revision: &self.meta.commit,
            file: Some(self.file),
        };
        let mut attempt = 0;
        while offset < self.meta.size {
            let failure = match self.client.get_from(&self.meta.url, offset, target) {
                Err(e) => return Err(e),
                Ok(mut resp) => {
                    if resp.status() == 200 && offset > 0 {
                        // The server ignored Range: start over.
                        out.file().set_len(0)?;
                        hasher.send(Msg::Reset);
                        offset = 0;
                    } else if resp.status() != 200 && resp.status() != 206 {
                        return Err(Error::HubTransfer {
                            url: self.meta.url.to_string(),
                            reason: format!("HTTP {}", resp.status()),
                        });
                    }
                    self.copy_body(&mut resp, &mut out, &partial, &mut offset, &mut hasher)?
                }
            };
            if offset >= self.meta.size {
                break;
            }
            let reason = failure.unwrap_or_else(|| "the connection closed early".into());
            if attempt >= self.client.retries() {
                return Err(Error::HubTransfer {
                    url: self.meta.url.to_string(),
                    reason: format!(
                        "{reason} at byte {offset} of {} (after {} attempts; the partial file is kept and resumes next time)",
                        self.meta.size,
                        attempt + 1
                    ),
                });
            }
            self.client.sleep_backoff(attempt);
            attempt += 1;
        }
        if offset != self.meta.size {
            return Err(Error::HubTransfer {
                url: self.meta.url.to_string(),
                reason: format!("received {offset} bytes, expected {}", self.meta.size),
            });
        }
        if let Some(expected) = self.sha256 {
            let actual = hasher.finish().unwrap_or_default();
            if !actual.eq_ignore_ascii_case(expected) {
                drop(out);
                fs_err::remove_file(&partial)?;
                return Err(Error::DigestMismatch {
                    repo: self.repo.into(),
                    file: self.file.into(),
                    expected: expected.into(),
                    actual,
                });
            }
        }
        out.sync_all().map_err(|e| self.write_error(e, &partial))?;
        drop(out);
        fs_err::rename(&partial, blob)?;
        if let Some(dir) = blob.parent() {
            sync_dir(dir)?;
        }
        self.reporter.report(Event::ItemFinish {
            item: self.file.into(),
        });
        Ok(Fetched {
            downloaded: self.meta.size - reused,
            reused,
        })
    }

    /// Stream the body into `out`. Returns `Some(reason)` when the connection broke (retry),
    /// `None` when the body ended; write errors are final.
    fn copy_body(
        &self,
        resp: &mut Body<'_>,
        out: &mut fs_err::File,
        partial: &Path,
        offset: &mut u64,
        hasher: &mut PipeHasher,
    ) -> Result<Option<String>> {
        // Network chunks are small; gather them into large writes.
        let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
        let outcome = loop {
            let chunk = match resp.chunk() {
                Ok(Some(c)) => c,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            // Never write past the announced size, whatever the server sends.
            let left = self.meta.size - *offset - pending.len() as u64;
            let room = left.min(chunk.len() as u64) as usize;
            pending.extend_from_slice(&chunk[..room]);
            if pending.len() >= CHUNK {
                self.flush(&mut pending, out, partial, offset, hasher)?;
            }
            if room < chunk.len() || left == room as u64 {
                break None;
            }
        };
        self.flush(&mut pending, out, partial, offset, hasher)?;
        Ok(outcome)
    }

    fn flush(
        &self,
        pending: &mut Vec<u8>,
        out: &mut fs_err::File,
        partial: &Path,
        offset: &mut u64,
        hasher: &mut PipeHasher,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        out.write_all(pending)
            .map_err(|e| self.write_error(e, partial))?;
        let len = pending.len() as u64;
        *offset += len;
        self.advance(len);
        hasher.send(Msg::Data(std::mem::replace(
            pending,
            Vec::with_capacity(CHUNK),
        )));
        Ok(())
    }

    fn write_error(&self, e: std::io::Error, path: &Path) -> Error {
        if crate::fsutil::is_disk_full(&e) {
            Error::DiskFull {
                path: path.to_path_buf(),
                needed: self.meta.size,
                fix: "free some space, or point `HF_HUB_CACHE` (or `HF_HOME`) at a larger disk; \
                      the partial file resumes on the next run"
                    .into(),
            }
        } else {
            crate::fsutil::with_path(e, path)
        }
    }
}

/// What the hashing thread is told.
enum Msg {
    /// Bytes that follow the ones already hashed.
    Data(Vec<u8>),
    /// The server restarted from byte 0.
    Reset,
}

/// sha256 on a helper thread, so that hashing overlaps the network and the disk (without SHA
/// instructions, hashing alone runs at about curl's loopback speed).
struct PipeHasher {
    tx: Option<std::sync::mpsc::SyncSender<Msg>>,
    handle: Option<std::thread::JoinHandle<Sha256>>,
}

impl PipeHasher {
    /// Continue from `initial`; a disabled hasher ignores everything.
    fn new(enabled: bool, initial: Sha256) -> PipeHasher {
        if !enabled {
            return PipeHasher {
                tx: None,
                handle: None,
            };
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(8);
        let handle = std::thread::spawn(move || {
            let mut h = initial;
            for msg in rx {
                match msg {
                    Msg::Data(bytes) => h.update(&bytes),
                    Msg::Reset => h = Sha256::new(&SHA256),
                }
            }
            h
        });
        PipeHasher {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }

    /// The hex digest of everything sent (`None` when disabled).
    fn finish(&mut self) -> Option<String> {
        drop(self.tx.take());
        let h = self.handle.take()?.join().ok()?;
        Some(hex(h.finish().as_ref()))
    }
}

/// Feed the first `len` bytes of `path` to `hasher` (a resumed download).
fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> Result<()> {
    let mut f = fs_err::File::open(path)?.take(len);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
