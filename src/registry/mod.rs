//! The local gene registry: a content-addressed OCI image layout.
//!
//! See `registry/FORMAT.md` for the format. In short: `oci-layout`, `index.json` (one entry per
//! `name:version` tag) and `blobs/sha256/<hex>`; a gene is an image manifest whose config is
//! the gene card and whose layers are safetensors units.
//!
//! Guarantees: every blob is hashed while it is written into a temp file on the same file
//! system, fsynced, and renamed into place only when complete; `index.json` changes by rename
//! under an exclusive lock; every read checks the digest; `gc` and writers exclude each other
//! through a second lock, so a sweep never removes a blob that a publish is about to tag.
//!
//! - [`layout`] builds every path; [`digest`] hashes; [`store`] reads and writes blobs;
//!   [`index`] changes tags; [`manifest`] holds the serde types; [`reference`] parses refs;
//!   [`remote`] pushes to and pulls from OCI distribution registries.

pub mod digest;
pub mod error;
pub mod index;
pub mod layout;
pub mod manifest;
pub mod reference;
pub mod remote;
pub mod seal;
pub mod store;

mod export;
mod gc;
mod publish;
mod query;
mod tags;
mod verify;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use digest::Digest;
pub use error::Error;
pub use export::Exported;
pub use gc::GcReport;
pub use layout::Layout;
pub use publish::Published;
pub use query::{GeneInfo, Lineage, LineageNode, Resolved, TagEntry, TensorSummary, UnitInfo};
pub use reference::Reference;
pub use remote::{Connection, Credentials, RemoteRef};
pub use verify::{Problem, VerifyReport};

use crate::fsutil::write_atomic;
use manifest::ImageIndex;

/// The registry root for an environment: `$LGREG_HOME/registry`, else
/// `$XDG_DATA_HOME/lgreg/registry`, else `$HOME/.local/share/lgreg/registry`. `env` looks up
/// one variable (the CLI passes its one environment door).
pub fn default_root(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = nonempty("LGREG_HOME")
        .or_else(|| nonempty("XDG_DATA_HOME").map(|d| d.join("lgreg")))
        .or_else(|| nonempty("HOME").map(|h| h.join(".local").join("share").join("lgreg")))?;
    Some(home.join("registry"))
}

/// A local registry.
#[derive(Debug, Clone)]
pub struct Registry {
    layout: Layout,
}

/// Entries lgreg itself may leave in a root that is not yet a layout (an interrupted init).
fn is_own_entry(name: &str) -> bool {
    matches!(name, ".lgreg" | "blobs" | "index.json" | "oci-layout")
        || name.starts_with(Layout::ROOT_TMP_PREFIX)
}

impl Registry {
    /// Open an existing registry; fails when `root` is missing or not an OCI image layout.
    pub fn open(root: &Path) -> crate::Result<Registry> {
        if !root.exists() {
            return Err(Error::RegistryMissing {
                path: root.to_path_buf(),
            }
            .into());
        }
        let reg = Registry {
            layout: Layout::new(root),
        };
        reg.check_layout()?;
        Ok(reg)
    }

    /// Open the registry, creating it when `root` is missing or holds nothing but lgreg's own
    /// leftovers. Safe to run from many processes at once.
    pub fn open_or_init(root: &Path) -> crate::Result<Registry> {
        let reg = Registry {
            layout: Layout::new(root),
        };
        let layout = &reg.layout;
        if layout.oci_layout().exists() {
            reg.check_layout()?;
            reg.ensure_private()?;
            return Ok(reg);
        }
        if root.exists() {
            if !root.is_dir() {
                return Err(reg.not_a_layout("it is not a directory"));
            }
            for entry in fs_err::read_dir(root)? {
                let name = entry?.file_name();
                if !name.to_str().is_some_and(is_own_entry) {
                    let reason = format!(
                        "it holds `{}` but no `oci-layout`; lgreg only creates a registry in a missing or empty directory",
                        name.to_string_lossy()
                    );
                    return Err(reg.not_a_layout(&reason));
                }
            }
        }
        reg.ensure_private()?;
        let _lock = index::lock_index(layout)?;
        if !layout.oci_layout().exists() {
            fs_err::create_dir_all(layout.blobs_dir())?;
            if !layout.index().exists() {
                write_atomic(&layout.index(), &index::encode(&ImageIndex::default())?)?;
            }
            write_atomic(&layout.oci_layout(), layout::OCI_LAYOUT_CONTENT.as_bytes())?;
        }
        drop(_lock);
        reg.check_layout()?;
        Ok(reg)
    }

    /// The paths of this registry.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The registry root.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    fn not_a_layout(&self, reason: &str) -> crate::Error {
        Error::NotALayout {
            path: self.root().to_path_buf(),
            reason: reason.to_string(),
        }
        .into()
    }

    fn check_layout(&self) -> crate::Result<()> {
        let l = &self.layout;
        if !l.root().is_dir() {
            return Err(self.not_a_layout("it is not a directory"));
        }
        let Ok(text) = fs_err::read(l.oci_layout()) else {
            return Err(self.not_a_layout("`oci-layout` is missing"));
        };
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
        if !v.get("imageLayoutVersion").is_some_and(|v| v.is_string()) {
            return Err(self.not_a_layout("`oci-layout` has no `imageLayoutVersion`"));
        }
        if !l.index().is_file() {
            return Err(self.not_a_layout("`index.json` is missing"));
        }
        if !l.blobs_dir().is_dir() {
            return Err(self.not_a_layout("`blobs/sha256` is missing"));
        }
        Ok(())
    }

    /// Create lgreg's private directory (locks, temp files) when it is absent.
    fn ensure_private(&self) -> crate::Result<()> {
        fs_err::create_dir_all(self.layout.tmp_dir())?;
        Ok(())
    }
}
