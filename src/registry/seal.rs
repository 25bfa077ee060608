//! Seals: a note that a blob was hashed in full and matched its digest, tied to the identity of
//! the file that was hashed (device, inode, size, modification and change times, in
//! nanoseconds). A later reader that finds the same identity can skip hashing the blob again,
//! the way git trusts its index and containerd trusts its content store after ingest.
//!
//! Any write to the blob, a rename over it, `touch` or `chmod` changes its change time, which
//! no unprivileged user can set back, so the seal no longer matches and the next reader hashes
//! the blob again. Because the kernel's clock for file times is coarse (a few milliseconds), a
//! blob is sealed only once its change time is [`SETTLE`] in the past, so that a write in the
//! same clock tick as the hash cannot hide behind an unchanged time (git's "racy" rule).
//!
//! Seals are a cache: a missing, unreadable or torn seal only means the blob is hashed again.
//! Only [`super::store::check_sealed`] (spawn's check of gene units) reads and writes them;
//! `lgreg verify` ignores them and hashes every byte.

use std::fs::Metadata;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::digest::Digest;
use super::layout::Layout;

/// How old a blob's change time must be before the blob is sealed.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    /// The identity `meta` describes, or `None` on a platform without inode numbers and change
    /// times (there nothing is ever sealed).
    #[cfg(unix)]
    pub fn of(meta: &Metadata) -> Option<Identity> {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// The identity `meta` describes (never, on this platform).
    #[cfg(not(unix))]
    pub fn of(_meta: &Metadata) -> Option<Identity> {
        None
    }

    fn line(&self) -> String {
        format!(
            "{} {} {} {} {}\n",
            self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns
        )
    }

    fn parse(text: &str) -> Option<Identity> {
        let mut fields = text.strip_suffix('\n')?.split(' ');
        let identity = Identity {
            dev: fields.next()?.parse().ok()?,
            ino: fields.next()?.parse().ok()?,
            size: fields.next()?.parse().ok()?,
            mtime_ns: fields.next()?.parse().ok()?,
            ctime_ns: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(identity)
    }

    /// Whether the change time lies at least [`SETTLE`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let now_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now_ns - self.ctime_ns >= SETTLE.as_nanos() as i128
    }
}

fn seal_path(layout: &Layout, digest: &Digest) -> PathBuf {
    layout.seals_dir().join(digest.hex())
}

/// Whether the blob whose current metadata is `meta` carries a seal for exactly this version.
pub fn is_sealed(layout: &Layout, digest: &Digest, meta: &Metadata) -> bool {
    let Some(current) = Identity::of(meta) else {
        return false;
    };
    fs_err::read_to_string(seal_path(layout, digest))
        .ok()
        .and_then(|text| Identity::parse(&text))
        .is_some_and(|sealed| sealed == current)
}

/// Seal the blob `digest`, which was just hashed in full from a file whose metadata, taken
/// before the hash began at `hashed_at`, is `before`. Nothing is sealed when the change time
/// is too recent, and a failure to write the seal is ignored (the blob is hashed next time).
pub fn seal(layout: &Layout, digest: &Digest, before: &Metadata, hashed_at: SystemTime) {
    let Some(identity) = Identity::of(before) else {
        return;
    };
    if !identity.settled(hashed_at) {
        return;
    }
    let _ = write_seal(layout, digest, &identity);
}

/// Written to a temp name and renamed, without fsync: a seal lost or torn by a crash parses
/// as absent.
fn write_seal(layout: &Layout, digest: &Digest, identity: &Identity) -> std::io::Result<()> {
    let dir = layout.seals_dir();
    fs_err::create_dir_all(&dir)?;
    let path = seal_path(layout, digest);
    let tmp = dir.join(format!(".{}.{}", digest.hex(), std::process::id()));
    fs_err::write(&tmp, identity.line())?;
    fs_err::rename(&tmp, &path).inspect_err(|_| {
        let _ = fs_err::remove_file(&tmp);
    })
}

/// Drop the seal of `digest`, if any (after a failed check, or when the blob is removed).
pub fn unseal(layout: &Layout, digest: &Digest) {
    let _ = fs_err::remove_file(seal_path(layout, digest));
}

/// Drop every seal whose blob is gone, and stray temp files. Returns how many were removed.
pub fn prune(layout: &Layout) -> usize {
    let Ok(entries) = fs_err::read_dir(layout.seals_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let orphan = match name.to_str().map(Digest::from_hex) {
            Some(Ok(d)) => !layout.blob(&d).exists(),
            _ => true,
        };
        if orphan && fs_err::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(dir: &std::path::Path, bytes: &[u8]) -> (Layout, Digest, PathBuf) {
        let layout = Layout::new(dir);
        fs_err::create_dir_all(layout.blobs_dir()).unwrap();
        let digest = Digest::of(bytes);
        let path = layout.blob(&digest);
        fs_err::write(&path, bytes).unwrap();
        (layout, digest, path)
    }

    fn later() -> SystemTime {
        SystemTime::now() + SETTLE + Duration::from_millis(10)
    }

    #[test]
    fn a_sealed_blob_stays_sealed_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, digest, path) = blob(dir.path(), b"weights");
        let meta = fs_err::metadata(&path).unwrap();
        assert!(!is_sealed(&layout, &digest, &meta));
        seal(&layout, &digest, &meta, later());
        assert!(is_sealed(&layout, &digest, &meta));
        fs_err::write(&path, b"WEIGHTS").unwrap();
        let changed = fs_err::metadata(&path).unwrap();
        assert!(!is_sealed(&layout, &digest, &changed));
        unseal(&layout, &digest);
        assert!(!seal_path(&layout, &digest).exists());
    }

    #[test]
    fn a_fresh_blob_is_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, digest, path) = blob(dir.path(), b"fresh");
        let meta = fs_err::metadata(&path).unwrap();
        seal(&layout, &digest, &meta, SystemTime::now());
        assert!(!is_sealed(&layout, &digest, &meta));
    }

    #[test]
    fn torn_seals_parse_as_absent_and_orphans_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, digest, path) = blob(dir.path(), b"x");
        let meta = fs_err::metadata(&path).unwrap();
        seal(&layout, &digest, &meta, later());
        let line = fs_err::read_to_string(seal_path(&layout, &digest)).unwrap();
        fs_err::write(seal_path(&layout, &digest), &line[..line.len() - 3]).unwrap();
        assert!(!is_sealed(&layout, &digest, &meta));
        assert_eq!(Identity::parse(&line), Identity::of(&meta));
        fs_err::remove_file(&path).unwrap();
        fs_err::write(layout.seals_dir().join("not-a-digest"), "").unwrap();
        assert_eq!(prune(&layout), 2);
    }
}
