//! Crash-safe file system writes: stage in a temp location on the same file system, fsync,
//! then rename into place, so a reader never sees a partial file or directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::registry::layout::Layout;

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".lgreg-tmp-")
        .tempfile_in(dir)
        .map_err(|e| with_path(e, dir))?;
    tmp.write_all(bytes).map_err(|e| with_path(e, tmp.path()))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| with_path(e, tmp.path()))?;
    tmp.persist(path).map_err(|e| with_path(e.error, path))?;
    sync_dir(dir)
}

/// fsync a directory so that a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs_err::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Attach a path to a bare I/O error.
pub fn with_path(e: std::io::Error, path: &Path) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("{e} (path: `{}`)", path.display()),
    ))
}

/// Whether an I/O error says the disk is full (`ENOSPC`).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Staging directories are named `.lgreg-tmp-<pid>-<random>` after the process writing them.
const STAGING_PREFIX: &str = ".lgreg-tmp-";

/// The writer's process id in a staging directory's name.
fn staging_owner(name: &str) -> Option<u32> {
    name.strip_prefix(STAGING_PREFIX)?
        .split_once('-')?
        .0
        .parse()
        .ok()
}

/// Remove the staging directories in `parent` left by writers that were killed: those whose
/// process is gone (Linux `/proc`). Best effort; a directory that cannot be removed stays.
fn remove_dead_staging(parent: &Path) {
    if !Layout::proc_dir(std::process::id()).exists() {
        return;
    }
    let Ok(entries) = fs_err::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(staging_owner) else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !Layout::proc_dir(pid).exists() {
            let _ = fs_err::remove_dir_all(entry.path());
        }
    }
}

/// An output directory that appears all at once.
///
/// Files are written into a hidden sibling directory; [`StagedDir::commit`] renames it to the
/// final name. Dropping it uncommitted removes everything it wrote; the staging directory of a
/// writer that was killed is removed by the next `StagedDir` in the same parent directory.
#[derive(Debug)]
pub struct StagedDir {
    staging: Option<tempfile::TempDir>,
    target: PathBuf,
    force: bool,
}

impl StagedDir {
    /// Prepare to write `target`. Fails early when it exists and `force` is off.
    pub fn new(target: &Path, force: bool) -> Result<StagedDir> {
        if target.exists() && !force {
            return Err(Error::OutputExists {
                path: target.to_path_buf(),
            });
        }
        let parent = parent_of(target);
        fs_err::create_dir_all(parent)?;
        remove_dead_staging(parent);
        let staging = tempfile::Builder::new()
            .prefix(&format!("{STAGING_PREFIX}{}-", std::process::id()))
            .tempdir_in(parent)
            .map_err(|e| with_path(e, parent))?;
        Ok(StagedDir {
            staging: Some(staging),
            target: target.to_path_buf(),
            force,
        })
    }

    /// Where files go until commit.
    pub fn path(&self) -> &Path {
        self.staging
            .as_ref()
            .map(|t| t.path())
            .unwrap_or(&self.target)
    }

    /// The final directory.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// `e`, with a disk-full error naming the file under its final directory instead of the
    /// staging directory, which is gone once the error reaches the user.
    pub fn in_target_terms(&self, e: Error) -> Error {
        match e {
            Error::DiskFull { path, needed, fix } => {
                let path = match path.strip_prefix(self.path()) {
                    Ok(rest) => self.target.join(rest),
                    Err(_) => path,
                };
                Error::DiskFull { path, needed, fix }
            }
            e => e,
        }
    }

    /// Write one small file into the staging directory (fsynced).
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path().join(name);
        let mut f = fs_err::File::create(&path)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    }

    /// Copy a file into the staging directory (fsynced).
    pub fn copy_file(&self, name: &str, from: &Path) -> Result<()> {
        let to = self.path().join(name);
        fs_err::copy(from, &to)?;
        fs_err::File::open(&to)?.sync_all()?;
        Ok(())
    }

    /// Move the staged directory into place, replacing an old one when `force` was given.
    pub fn commit(mut self) -> Result<PathBuf> {
        let Some(staging) = self.staging.take() else {
            return Ok(self.target.clone());
        };
        let staging = staging.keep();
        sync_dir(&staging)?;
        let parent = parent_of(&self.target).to_path_buf();
        let mut old: Option<PathBuf> = None;
        if self.target.exists() {
            if !self.force {
                let _ = fs_err::remove_dir_all(&staging);
                return Err(Error::OutputExists {
                    path: self.target.clone(),
                });
            }
            let aside = parent.join(format!(
                ".lgreg-old-{}",
                staging
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("out")
            ));
            fs_err::rename(&self.target, &aside)?;
            old = Some(aside);
        }
        fs_err::rename(&staging, &self.target)?;
        sync_dir(&parent)?;
        if let Some(old) = old {
            if old.is_dir() {
                fs_err::remove_dir_all(&old)?;
            } else {
                fs_err::remove_file(&old)?;
            }
        }
        Ok(self.target.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_dir_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        {
            let staged = StagedDir::new(&target, false).unwrap();
            staged.write_file("a.txt", b"hello").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(fs_err::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_only_with_force() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        fs_err::create_dir(&target).unwrap();
        assert!(matches!(
            StagedDir::new(&target, false),
            Err(Error::OutputExists { .. })
        ));
        let staged = StagedDir::new(&target, true).unwrap();
        staged.write_file("a.txt", b"new").unwrap();
        staged.commit().unwrap();
        assert_eq!(fs_err::read(target.join("a.txt")).unwrap(), b"new");
        assert_eq!(fs_err::read_dir(root.path()).unwrap().count(), 1);
    }
}
