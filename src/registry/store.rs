//! Blobs: written as a stream with a running sha256 into a temp file on the same file system,
//! fsynced, checked, then renamed into `blobs/sha256/<hex>`; read back only through a hash check
//! (or, for [`check_sealed`], a seal from an earlier full hash of the same file version).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::digest::{Digest, copy_hashed};
use super::error::Error as RegError;
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
    };
    let (digest, size) = copy_hashed(reader, Some(&mut file as &mut dyn Write), progress)?;
    file.sync_all()?;
    staged.blob = layout.blob(&digest);
    staged.digest = digest;
    staged.size = size;
    Ok(staged)
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
    let before = file.metadata()?;
    let hashed_at = SystemTime::now();
    let (actual, n) = copy_hashed(&mut file, writer, progress)?;
    check(layout, digest, actual, n, len).inspect_err(|_| seal::unseal(layout, digest))?;
    seal::seal(layout, digest, &before, hashed_at);
    Ok(n)
}

/// Check the blob against `digest` and `size`, trusting its seal when the file is exactly the
/// version that was last hashed in full, and hashing it (and sealing it) otherwise. Returns
/// whether the bytes were hashed.
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
    copy_verified(layout, digest, Some(size), None, &mut |_| {})?;
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
/// any older than a day. Returns the bytes removed.
pub fn clean_tmp(layout: &Layout) -> Result<u64> {
    let dir = layout.tmp_dir();
    let Ok(entries) = fs_err::read_dir(&dir) else {
        return Ok(0);
    };
    let have_proc = Layout::proc_dir(std::process::id()).exists();
    let mut freed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
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
