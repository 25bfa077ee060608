//! Blobs: written as a stream with a running sha256 into a temp file on the same file system,
//! fsynced, checked, then renamed into `blobs/sha256/<hex>`; read back only through a hash check
//! (or, for [`check_sealed`], a seal from an earlier full hash of the same file version).
//!
//! A blob pulled from a remote registry goes through a [`PartialBlob`] instead: its temp file
//! is named after the digest it should have, so a pull that broke off leaves it for the next
//! pull to continue, which first hashes the bytes already there.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::digest::{Digest, Hasher, copy_hashed, copy_into_hasher};
use super::error::Error as RegError;
use super::index::{Lock, lock_file};
use super::layout::Layout;
use super::seal;
use crate::error::Result;
use crate::fsutil::sync_dir;

/// A verified blob in a temp file, not yet visible in the registry; dropped, it is removed.
#[derive(Debug)]
pub struct StagedBlob {
    tmp: Option<PathBuf>,
    blob: PathBuf,
    /// The digest of the bytes written.
    pub digest: Digest,
    /// The number of bytes written.
    pub size: u64,
    /// The lock of a partial download, released only after the temp file is renamed or removed.
    lock: Option<BlobLock>,
}

/// The lock on one blob's partial download, `.lgreg/tmp/<hex>.partial.lock`.
#[derive(Debug)]
struct BlobLock {
    _lock: Lock,
    path: PathBuf,
}

impl BlobLock {
    /// Once the blob is stored, the lock file can go: a process still waiting on it finds the
    /// blob stored when it gets the lock, and touches nothing. After a failure it must stay,
    /// since a waiter would otherwise write the partial file beside a newcomer.
    fn remove_after_commit(self) {
        let _ = fs_err::remove_file(&self.path);
    }
}

impl StagedBlob {
    /// Rename the blob into place, or drop it when an intact copy exists (dedupe). The caller
    /// fsyncs the blobs directory afterwards with [`sync_blobs`].
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        let Some(tmp) = self.tmp.take() else {
            return Ok((self.digest.clone(), self.size));
        };
        let intact = fs_err::metadata(&self.blob).is_ok_and(|m| m.len() == self.size);
        if intact {
            fs_err::remove_file(&tmp)?;
        } else {
            fs_err::rename(&tmp, &self.blob)?;
        }
        if let Some(lock) = self.lock.take() {
            lock.remove_after_commit();
        }
        Ok((self.digest.clone(), self.size))
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs_err::remove_file(tmp);
        }
    }
}

fn new_tmp(layout: &Layout) -> Result<(fs_err::File, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = layout.tmp_file(pid, n);
        match fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Stream `reader` into a temp file, hashing as it goes, and fsync it.
pub fn stage(
    layout: &Layout,
    reader: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
) -> Result<StagedBlob> {
    let (mut file, path) = new_tmp(layout)?;
    let mut staged = StagedBlob {
        tmp: Some(path),
        blob: PathBuf::new(),
        digest: Digest::of(b""),
        size: 0,
        lock: None,
    };
    let (digest, size) = copy_hashed(reader, Some(&mut file as &mut dyn Write), progress)?;
    file.sync_all()?;
    staged.blob = layout.blob(&digest);
    staged.digest = digest;
    staged.size = size;
    Ok(staged)
}

/// A blob being downloaded into `.lgreg/tmp/<hex>.partial` under an exclusive lock. The bytes
/// it already holds are hashed when it is opened, so the digest of the finished file covers
/// every byte, whichever run wrote it.
#[derive(Debug)]
pub struct PartialBlob {
    lock: BlobLock,
    file: fs_err::File,
    path: PathBuf,
    hasher: Hasher,
    len: u64,
    size: u64,
}

impl PartialBlob {
    /// Lock the download of `digest` (waiting while another process writes it) and hash what
    /// an earlier run left; more than `size` bytes are dropped. `None` when the blob is stored
    /// already, e.g. by the process this one waited for.
    pub fn open(layout: &Layout, digest: &Digest, size: u64) -> Result<Option<PartialBlob>> {
        if has_blob(layout, digest, size) {
            return Ok(None);
        }
        let path = layout.partial_lock(digest);
        let lock = BlobLock {
            _lock: lock_file(&path, true)?,
            path,
        };
        if has_blob(layout, digest, size) {
            return Ok(None);
        }
        let path = layout.partial_blob(digest);
        let file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let mut partial = PartialBlob {
            lock,
            file,
            path,
            hasher: Hasher::new(),
            len: 0,
            size,
        };
        if partial.file.metadata()?.len() > size {
            partial.restart()?;
        } else {
            let mut existing = fs_err::File::open(&partial.path)?;
            partial.len = copy_into_hasher(&mut existing, None, &mut partial.hasher, &mut |_| {})?;
        }
        Ok(Some(partial))
    }

    /// The bytes held (all hashed).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte is held yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drop the bytes held and start from byte 0 (a server that ignored the range).
    pub fn restart(&mut self) -> Result<()> {
        self.file.set_len(0)?;
        self.hasher = Hasher::new();
        self.len = 0;
        Ok(())
    }

    /// Append `reader` to the end, hashing on the way, but never more than one byte past the
    /// expected size (so an endless stream is cut and then fails the size check). Returns the
    /// bytes appended.
    pub fn append(&mut self, reader: &mut dyn Read, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        let room = self.size.saturating_sub(self.len) + 1;
        let mut limited = reader.take(room);
        let n = copy_into_hasher(
            &mut limited,
            Some(&mut self.file as &mut dyn Write),
            &mut self.hasher,
            progress,
        )?;
        self.len += n;
        Ok(n)
    }

    /// fsync and keep the file for the next run; the lock is released.
    pub fn keep(self) -> Result<()> {
        self.file.sync_all()?;
        Ok(())
    }

    /// fsync and hand the bytes over as a staged blob: committed, it moves into `blobs/`;
    /// dropped (when its digest is not the one expected), the partial file is removed.
    pub fn finish(self, layout: &Layout) -> Result<StagedBlob> {
        self.file.sync_all()?;
        let digest = self.hasher.finish();
        Ok(StagedBlob {
            tmp: Some(self.path),
            blob: layout.blob(&digest),
            digest,
            size: self.len,
            lock: Some(self.lock),
        })
    }
}

/// Store a small blob held in memory; returns its digest and size.
pub fn put_bytes(layout: &Layout, bytes: &[u8]) -> Result<(Digest, u64)> {
    let digest = Digest::of(bytes);
    let size = bytes.len() as u64;
    if fs_err::metadata(layout.blob(&digest)).is_ok_and(|m| m.len() == size) {
        return Ok((digest, size));
    }
    let staged = stage(layout, &mut &bytes[..], &mut |_| {})?;
    let out = staged.commit()?;
    sync_blobs(layout)?;
    Ok(out)
}

/// fsync the blobs directory, making renames into it durable.
pub fn sync_blobs(layout: &Layout) -> Result<()> {
    sync_dir(&layout.blobs_dir())
}

/// Whether an intact-sized blob with `digest` is present.
pub fn has_blob(layout: &Layout, digest: &Digest, size: u64) -> bool {
    fs_err::metadata(layout.blob(digest)).is_ok_and(|m| m.len() == size)
}

fn open_blob(layout: &Layout, digest: &Digest) -> Result<(fs_err::File, u64)> {
    let path = layout.blob(digest);
    match fs_err::File::open(&path) {
        Ok(f) => {
            let len = f.metadata()?.len();
            Ok((f, len))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegError::BlobMissing {
            digest: digest.clone(),
            path,
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

fn check(layout: &Layout, digest: &Digest, actual: Digest, size: u64, len: u64) -> Result<()> {
    if &actual != digest {
        return Err(RegError::DigestMismatch {
            digest: digest.clone(),
            actual,
            path: layout.blob(digest),
        }
        .into());
    }
    if size != len {
        return Err(RegError::SizeMismatch {
            digest: digest.clone(),
            expected: size,
            actual: len,
            path: layout.blob(digest),
        }
        .into());
    }
    Ok(())
}

/// Stream the blob into `writer` (or nowhere), failing unless its bytes hash to `digest` and
/// number `size` (when known). Returns the byte count.
pub fn copy_verified(
    layout: &Layout,
    digest: &Digest,
    size: Option<u64>,
    writer: Option<&mut dyn Write>,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let (mut file, len) = open_blob(layout, digest)?;
    if let Some(size) = size
        && size != len
    {
        return Err(RegError::SizeMismatch {
            digest: digest.clone(),
            expected: size,
            actual: len,
            path: layout.blob(digest),
        }
        .into());
    }
    let (actual, n) = copy_hashed(&mut file, writer, progress)?;
    check(layout, digest, actual, n, len)?;
    Ok(n)
}

/// Check the blob against `digest` and `size`, trusting its seal when the file is exactly the
/// version that was last hashed in full, and otherwise hashing it, then sealing it (or, when it
/// does not match, dropping its seal). Returns whether the bytes were hashed. The only reader
/// that writes seals; every other read hashes and changes nothing.
pub fn check_sealed(layout: &Layout, digest: &Digest, size: u64) -> Result<bool> {
    let meta = match fs_err::metadata(layout.blob(digest)) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegError::BlobMissing {
                digest: digest.clone(),
                path: layout.blob(digest),
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if meta.len() == size && seal::is_sealed(layout, digest, &meta) {
        return Ok(false);
    }
    let hashed_at = SystemTime::now();
    copy_verified(layout, digest, Some(size), None, &mut |_| {})
        .inspect_err(|_| seal::unseal(layout, digest))?;
    seal::seal(layout, digest, &meta, hashed_at);
    Ok(true)
}

/// Read a small blob into memory, verifying its digest; refuses blobs over `limit` bytes.
pub fn read_verified(
    layout: &Layout,
    digest: &Digest,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>> {
    let (mut file, len) = open_blob(layout, digest)?;
    if len > limit {
        return Err(RegError::BlobTooLarge {
            digest: digest.clone(),
            size: len,
            limit,
            what,
        }
        .into());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)?;
    check(layout, digest, Digest::of(&bytes), bytes.len() as u64, len)?;
    Ok(bytes)
}

/// Hash a file without storing it.
pub fn hash_file(path: &std::path::Path, progress: &mut dyn FnMut(u64)) -> Result<(Digest, u64)> {
    let mut file = fs_err::File::open(path)?;
    Ok(copy_hashed(&mut file, None, progress)?)
}

/// Remove temp files left by dead writers: those whose process is gone (Linux `/proc`), and
/// any older than a day. Partial downloads and their locks stay for the next pull to resume
/// (`gc` removes them). Returns the bytes removed.
pub fn clean_tmp(layout: &Layout) -> Result<u64> {
    let dir = layout.tmp_dir();
    let Ok(entries) = fs_err::read_dir(&dir) else {
        return Ok(0);
    };
    let have_proc = Layout::proc_dir(std::process::id()).exists();
    let mut freed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(Layout::is_partial) {
            continue;
        }
        let owner = name.to_str().and_then(Layout::tmp_owner);
        let meta = entry.metadata().ok();
        let old = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(24 * 3600));
        let dead = match owner {
            Some(pid) => have_proc && !Layout::proc_dir(pid).exists(),
            None => true,
        };
        if (dead || old) && fs_err::remove_file(entry.path()).is_ok() {
            freed += meta.map_or(0, |m| m.len());
        }
    }
    Ok(freed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        fs_err::create_dir_all(layout.tmp_dir()).unwrap();
        fs_err::create_dir_all(layout.blobs_dir()).unwrap();
        (dir, layout)
    }

    #[test]
    fn partial_blob_resumes_and_its_digest_covers_every_byte() {
        let (_dir, layout) = layout();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        let mut first = PartialBlob::open(&layout, &digest, size).unwrap().unwrap();
        assert!(first.is_empty());
        first.append(&mut &data[..4000], &mut |_| {}).unwrap();
        first.keep().unwrap();
        // A sweep of dead writers' temp files leaves the partial download alone.
        clean_tmp(&layout).unwrap();
        let mut again = PartialBlob::open(&layout, &digest, size).unwrap().unwrap();
        assert_eq!(again.len(), 4000);
        let mut seen = 0;
        assert_eq!(
            again
                .append(&mut &data[4000..], &mut |n| seen += n)
                .unwrap(),
            6000
        );
        assert_eq!(seen, 6000);
        let staged = again.finish(&layout).unwrap();
        assert_eq!((&staged.digest, staged.size), (&digest, size));
        staged.commit().unwrap();
        assert_eq!(fs_err::read(layout.blob(&digest)).unwrap(), data);
        // Stored: nothing left in tmp, and opening again says so.
        assert_eq!(fs_err::read_dir(layout.tmp_dir()).unwrap().count(), 0);
        assert!(PartialBlob::open(&layout, &digest, size).unwrap().is_none());
    }

    #[test]
    fn partial_blob_drops_extra_bytes_and_removes_a_wrong_one() {
        let (_dir, layout) = layout();
        let data = b"the right bytes".to_vec();
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        fs_err::write(layout.partial_blob(&digest), vec![1u8; 40]).unwrap();
        let mut p = PartialBlob::open(&layout, &digest, size).unwrap().unwrap();
        assert!(p.is_empty(), "longer than the blob: starts over");
        // A stream that goes on and on is cut one byte past the size.
        let mut endless = std::io::repeat(b'x');
        assert_eq!(p.append(&mut endless, &mut |_| {}).unwrap(), size + 1);
        let staged = p.finish(&layout).unwrap();
        assert_ne!(staged.digest, digest);
        assert_eq!(staged.size, size + 1);
        drop(staged);
        assert!(!layout.partial_blob(&digest).exists());
        assert!(!layout.blob(&digest).exists());
        // Restart forgets what was there.
        let mut p = PartialBlob::open(&layout, &digest, size).unwrap().unwrap();
        p.append(&mut &b"junk"[..], &mut |_| {}).unwrap();
        p.restart().unwrap();
        p.append(&mut &data[..], &mut |_| {}).unwrap();
        let staged = p.finish(&layout).unwrap();
        assert_eq!(staged.digest, digest);
    }
}
