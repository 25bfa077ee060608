//! The Hugging Face cache layout, shared with Python's `huggingface_hub`. This is the only code
//! that joins cache paths.
//!
//! ```text
//! $HF_HUB_CACHE/
//!   .locks/models--ORG--NAME/<etag>.lock        one lock file per blob
//!   models--ORG--NAME/
//!     blobs/<etag>                               file contents, named by the Hub's etag
//!     blobs/<etag>.incomplete                    a download in progress (resumed with Range)
//!     refs/<revision>                            text file: the commit a branch or tag pointed at
//!     snapshots/<commit>/<path> -> ../../blobs/<etag>   relative symlinks, one per repo file
//! ```
//!
//! The etag is the git blob id for small files and the sha256 (LFS oid) for large ones, as the
//! Hub reports it in `X-Linked-Etag` or `ETag`.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{sync_dir, write_atomic};

/// The cache root (`$HF_HUB_CACHE`, by default `$HF_HOME/hub`).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// One model repo inside the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    root: PathBuf,
    folder: String,
}

impl Cache {
    /// A cache rooted at `root` (nothing is created yet).
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of model repo `org/name`: `models--org--name`.
    pub fn repo(&self, repo_id: &str) -> RepoCache {
        RepoCache {
            root: self.root.clone(),
            folder: format!("models--{}", repo_id.replace('/', "--")),
        }
    }
}

impl RepoCache {
    /// `models--ORG--NAME`.
    pub fn folder(&self) -> &str {
        &self.folder
    }

    /// `$CACHE/models--ORG--NAME`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.folder)
    }

    /// `blobs/<etag>`.
    pub fn blob(&self, etag: &str) -> Result<PathBuf> {
        check_name("etag", etag)?;
        Ok(self.dir().join("blobs").join(etag))
    }

    /// `blobs/<etag>.incomplete`: where a download of that blob accumulates.
    pub fn incomplete(&self, etag: &str) -> Result<PathBuf> {
        check_name("etag", etag)?;
        Ok(self.dir().join("blobs").join(format!("{etag}.incomplete")))
    }

    /// `$CACHE/.locks/models--ORG--NAME/<etag>.lock`, where `huggingface_hub` locks too.
    pub fn lock(&self, etag: &str) -> Result<PathBuf> {
        check_name("etag", etag)?;
        Ok(self
            .root
            .join(".locks")
            .join(&self.folder)
            .join(format!("{etag}.lock")))
    }

    /// `refs/<revision>` (a revision such as `refs/pr/1` nests).
    pub fn ref_path(&self, revision: &str) -> Result<PathBuf> {
        Ok(self
            .dir()
            .join("refs")
            .join(relative("revision", revision)?))
    }

    /// `snapshots/<commit>`.
    pub fn snapshot(&self, commit: &str) -> Result<PathBuf> {
        check_name("commit", commit)?;
        Ok(self.dir().join("snapshots").join(commit))
    }

    /// `snapshots/<commit>/<file>`; refuses absolute paths and `..`.
    pub fn snapshot_file(&self, commit: &str, file: &str) -> Result<PathBuf> {
        Ok(self.snapshot(commit)?.join(relative("file name", file)?))
    }

    /// The commit `refs/<revision>` points at, if the ref exists.
    pub fn read_ref(&self, revision: &str) -> Result<Option<String>> {
        let path = self.ref_path(revision)?;
        match fs_err::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Point `refs/<revision>` at `commit` (atomically; Python writes the bare hash, no newline).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit || self.read_ref(revision)?.as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.ref_path(revision)?;
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        write_atomic(&path, commit.as_bytes())
    }

    /// Make `snapshots/<commit>/<file>` a relative symlink to `blobs/<etag>` (replacing an old
    /// link atomically), exactly as `huggingface_hub` does.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let link = self.snapshot_file(commit, file)?;
        let blob = self.blob(etag)?;
        let parent = link.parent().unwrap_or(Path::new("."));
        fs_err::create_dir_all(parent)?;
        let depth = Path::new(file).components().count() - 1;
        let mut target = PathBuf::from("../..");
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if fs_err::symlink_metadata(&link).is_ok() && fs_err::read_link(&link)? == target {
            return Ok(link);
        }
        debug_assert!(blob.exists());
        let tmp = parent.join(format!(
            ".lgreg-link-{}-{}",
            std::process::id(),
            link.file_name().and_then(|n| n.to_str()).unwrap_or("f")
        ));
        let _ = fs_err::remove_file(&tmp);
        symlink(&target, &tmp)?;
        fs_err::rename(&tmp, &link)?;
        sync_dir(parent)?;
        Ok(link)
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> Result<()> {
    fs_err::os::unix::fs::symlink(target, link)?;
    Ok(())
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> Result<()> {
    // Without symlinks, huggingface_hub copies the blob; do the same.
    let abs = link.parent().unwrap_or(Path::new(".")).join(target);
    fs_err::copy(abs, link)?;
    Ok(())
}

/// A single path component (etag, commit): no separators, not empty, not `.`/`..`.
fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.len() > 255;
    if bad {
        return Err(Error::HubProtocol {
            url: String::new(),
            reason: format!("{what} `{name}` cannot be used as a file name in the cache"),
        });
    }
    Ok(())
}

/// A relative path with only normal components (a repo file name or a revision).
fn relative<'a>(what: &str, path: &'a str) -> Result<&'a Path> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.contains(['\\', '\0'])
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(Error::HubProtocol {
            url: String::new(),
            reason: format!("{what} `{path}` is not a plain relative path"),
        });
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_huggingface_hub() {
        let c = Cache::new("/c");
        let r = c.repo("org/name");
        assert_eq!(r.dir(), Path::new("/c/models--org--name"));
        assert_eq!(
            r.blob("e").unwrap(),
            Path::new("/c/models--org--name/blobs/e")
        );
        assert_eq!(
            r.lock("e").unwrap(),
            Path::new("/c/.locks/models--org--name/e.lock")
        );
        assert_eq!(
            r.ref_path("refs/pr/1").unwrap(),
            Path::new("/c/models--org--name/refs/refs/pr/1")
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        let r = Cache::new("/c").repo("o/n");
        assert!(r.snapshot_file("abc", "../../etc/passwd").is_err());
        assert!(r.snapshot_file("abc", "/etc/passwd").is_err());
        assert!(r.blob("../x").is_err());
        assert!(r.snapshot("..").is_err());
        assert!(r.snapshot_file("abc", "1_Pooling/config.json").is_ok());
    }

    #[test]
    fn links_are_relative_and_nested() {
        let d = tempfile::tempdir().unwrap();
        let r = Cache::new(d.path()).repo("o/n");
        fs_err::create_dir_all(r.dir().join("blobs")).unwrap();
        fs_err::write(r.blob("e1").unwrap(), b"x").unwrap();
        let l = r.link("c0", "a/b.json", "e1").unwrap();
        assert_eq!(
            fs_err::read_link(&l).unwrap(),
            Path::new("../../../blobs/e1")
        );
        assert_eq!(fs_err::read(&l).unwrap(), b"x");
        r.write_ref("main", "c0").unwrap();
        assert_eq!(r.read_ref("main").unwrap().as_deref(), Some("c0"));
    }
}
