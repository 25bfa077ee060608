//! `index.json`: read without a lock (it only ever changes by rename), changed under an
//! exclusive file lock by writing a temp file and renaming it over the old one.

use super::error::Error as RegError;
use super::layout::Layout;
use super::manifest::ImageIndex;
use crate::error::Result;
use crate::fsutil::write_atomic;

/// Largest `index.json` lgreg reads.
pub const MAX_INDEX_SIZE: u64 = 64 << 20;

/// Read and parse `index.json`.
pub fn load(layout: &Layout) -> Result<ImageIndex> {
    let path = layout.index();
    let corrupt = |reason: String| RegError::IndexCorrupt {
        path: path.clone(),
        reason,
    };
    let len = fs_err::metadata(&path)?.len();
    if len > MAX_INDEX_SIZE {
        return Err(corrupt(format!(
            "it has {len} bytes, over the {MAX_INDEX_SIZE}-byte limit"
        ))
        .into());
    }
    let bytes = fs_err::read(&path)?;
    let index: ImageIndex = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("it is not a valid OCI image index ({e})")))?;
    if index.schema_version != 2 {
        return Err(corrupt(format!(
            "`schemaVersion` is {}, expected 2",
            index.schema_version
        ))
        .into());
    }
    Ok(index)
}

/// Serialise an index the way lgreg writes it: pretty JSON with a trailing newline.
pub fn encode(index: &ImageIndex) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(index)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A held file lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: fs_err::File,
}

/// Open (creating it when absent) and lock `path`, waiting for other holders.
pub(crate) fn lock_file(path: &std::path::Path, exclusive: bool) -> Result<Lock> {
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let res = if exclusive {
        file.file().lock()
    } else {
        file.file().lock_shared()
    };
    res.map_err(|e| crate::fsutil::with_path(e, path))?;
    Ok(Lock { _file: file })
}

/// Hold the gc lock shared: blobs written meanwhile are safe from a concurrent sweep.
pub fn writer_lock(layout: &Layout) -> Result<Lock> {
    lock_file(&layout.gc_lock(), false)
}

/// Hold the gc lock exclusively: no writer is between writing blobs and tagging them.
pub fn gc_lock(layout: &Layout) -> Result<Lock> {
    lock_file(&layout.gc_lock(), true)
}

/// Hold the index lock exclusively.
pub fn lock_index(layout: &Layout) -> Result<Lock> {
    lock_file(&layout.index_lock(), true)
}

/// Change `index.json` under the exclusive index lock. `change` sees the current index and
/// returns `true` when it modified it; only then is the file rewritten. Temp files that a
/// killed holder of the lock left in the root are removed first.
pub fn update<T>(
    layout: &Layout,
    change: impl FnOnce(&mut ImageIndex) -> Result<(bool, T)>,
) -> Result<T> {
    let _lock = lock_index(layout)?;
    remove_root_tmp(layout);
    let mut index = load(layout)?;
    let (changed, out) = change(&mut index)?;
    if changed {
        index.manifests.sort_by(|a, b| {
            a.ref_name()
                .cmp(&b.ref_name())
                .then(a.digest.cmp(&b.digest))
        });
        write_atomic(&layout.index(), &encode(&index)?)?;
    }
    Ok(out)
}

/// Temp files of [`write_atomic`] in the root belong to the index lock holder; while we hold
/// the lock, any that exist are left over from a killed process.
fn remove_root_tmp(layout: &Layout) {
    let Ok(entries) = fs_err::read_dir(layout.root()) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(Layout::ROOT_TMP_PREFIX));
        if stale {
            let _ = fs_err::remove_file(entry.path());
        }
    }
}
