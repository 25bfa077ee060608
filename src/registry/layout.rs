//! Every path inside a registry. This is the only code that joins registry paths.
//!
//! ```text
//! <root>/
//!   oci-layout                   {"imageLayoutVersion": "1.0.0"}
//!   index.json                   the tags: an OCI image index
//!   blobs/sha256/<hex>           manifests, gene cards and safetensors units, immutable
//!   .lgreg/index.lock            exclusive while `index.json` changes
//!   .lgreg/gc.lock               shared by writers, exclusive while `gc` sweeps
//!   .lgreg/tmp/<pid>-<n>.tmp     blobs being written; renamed into `blobs/sha256/` when verified
//!   .lgreg/tmp/<hex>.partial     a pulled blob being downloaded, kept when the pull breaks off
//!                                so that the next pull resumes it
//!   .lgreg/tmp/<hex>.partial.lock  held while `<hex>.partial` is written; removed once the
//!                                blob is stored, else by `gc`
//!   .lgreg/seals/<hex>           blobs hashed in full, with the identity of the file hashed
//!                                (a cache; see `seal`)
//! ```

use std::path::{Path, PathBuf};

use super::digest::Digest;

/// The contents of the `oci-layout` marker file.
pub const OCI_LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

/// The paths of one registry root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at `root` (nothing is checked or created).
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// The registry root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `oci-layout`, the format marker.
    pub fn oci_layout(&self) -> PathBuf {
        self.root.join("oci-layout")
    }

    /// `index.json`, the tag list.
    pub fn index(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// `blobs/sha256`, the directory of all blobs.
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Where the blob with `digest` lives.
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// `.lgreg`, lgreg's private directory (locks and temp files).
    pub fn private_dir(&self) -> PathBuf {
        self.root.join(".lgreg")
    }

    /// The lock held exclusively while `index.json` changes.
    pub fn index_lock(&self) -> PathBuf {
        self.private_dir().join("index.lock")
    }

    /// The lock writers hold shared and `gc` holds exclusively.
    pub fn gc_lock(&self) -> PathBuf {
        self.private_dir().join("gc.lock")
    }

    /// The directory of temp files, on the same file system as the blobs.
    pub fn tmp_dir(&self) -> PathBuf {
        self.private_dir().join("tmp")
    }

    /// The directory of seals ([`super::seal`]).
    pub fn seals_dir(&self) -> PathBuf {
        self.private_dir().join("seals")
    }

    /// A temp file name owned by process `pid`.
    pub fn tmp_file(&self, pid: u32, n: u64) -> PathBuf {
        self.tmp_dir().join(format!("{pid}-{n}.tmp"))
    }

    /// Where a pulled blob is downloaded, under a name derived from its digest so that a rerun
    /// of an interrupted pull finds it and resumes.
    pub fn partial_blob(&self, digest: &Digest) -> PathBuf {
        self.tmp_dir()
            .join(format!("{}{}", digest.hex(), Self::PARTIAL_SUFFIX))
    }

    /// The lock held while [`Layout::partial_blob`] is written.
    pub fn partial_lock(&self, digest: &Digest) -> PathBuf {
        self.tmp_dir()
            .join(format!("{}{}", digest.hex(), Self::PARTIAL_LOCK_SUFFIX))
    }

    /// Whether a temp file name belongs to a resumable download (its data or its lock): the
    /// sweep of dead writers' temp files leaves those; `gc`, which runs while no writer does,
    /// removes them.
    pub fn is_partial(name: &str) -> bool {
        name.ends_with(Self::PARTIAL_SUFFIX) || name.ends_with(Self::PARTIAL_LOCK_SUFFIX)
    }

    const PARTIAL_SUFFIX: &'static str = ".partial";
    const PARTIAL_LOCK_SUFFIX: &'static str = ".partial.lock";

    /// The process id a temp file name carries, if it is one of ours.
    pub fn tmp_owner(name: &str) -> Option<u32> {
        name.strip_suffix(".tmp")?.split_once('-')?.0.parse().ok()
    }

    /// The prefix [`crate::fsutil::write_atomic`] gives its temp files in the root.
    pub const ROOT_TMP_PREFIX: &'static str = ".lgreg-tmp-";

    /// `/proc/<pid>`, to tell whether a temp file's writer is still alive (Linux).
    pub fn proc_dir(pid: u32) -> PathBuf {
        Path::new("/proc").join(pid.to_string())
    }
}
