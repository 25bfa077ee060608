//! `gc`: mark every blob reachable from a tag (manifest, card, units, and the subject chain),
//! sweep the rest (and their seals), and remove every temp file. Runs under the exclusive gc lock, so no writer
//! is between storing blobs and tagging them.

use std::collections::BTreeSet;

use super::digest::Digest;
use super::{Registry, index, seal, store};

/// What `gc` removed (or would remove, with `dry_run`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GcReport {
    /// Nothing was removed.
    pub dry_run: bool,
    /// Blobs still reachable.
    pub kept: usize,
    /// Blobs removed (or to remove).
    pub removed: Vec<Digest>,
    /// Bytes of the removed blobs.
    pub bytes_freed: u64,
    /// Bytes of stale temp files removed.
    pub tmp_bytes_freed: u64,
}

impl Registry {
    /// Remove unreachable blobs. A manifest that cannot be read stops the collection before
    /// anything is removed.
    pub fn gc(&self, dry_run: bool) -> crate::Result<GcReport> {
        self.ensure_private()?;
        let _gc = index::gc_lock(&self.layout)?;
        let _index = index::lock_index(&self.layout)?;
        let idx = index::load(&self.layout)?;
        let mut marked = BTreeSet::new();
        let mut todo: Vec<Digest> = idx.manifests.iter().map(|d| d.digest.clone()).collect();
        while let Some(d) = todo.pop() {
            if !marked.insert(d.clone()) {
                continue;
            }
            let m = self.read_manifest(&d)?;
            marked.insert(m.config.digest.clone());
            marked.extend(m.layers.iter().map(|l| l.digest.clone()));
            if let Some(s) = m.subject {
                todo.push(s.digest);
            }
        }
        let mut report = GcReport {
            dry_run,
            kept: 0,
            removed: Vec::new(),
            bytes_freed: 0,
            tmp_bytes_freed: 0,
        };
        for entry in fs_err::read_dir(self.layout.blobs_dir())? {
            let entry = entry?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            if marked.contains(&digest) {
                report.kept += 1;
                continue;
            }
            let size = entry.metadata()?.len();
            if !dry_run {
                fs_err::remove_file(self.layout.blob(&digest))?;
                seal::unseal(&self.layout, &digest);
            }
            report.removed.push(digest);
            report.bytes_freed += size;
        }
        report.removed.sort();
        if !dry_run {
            store::sync_blobs(&self.layout)?;
            report.tmp_bytes_freed = self.remove_all_tmp()?;
            seal::prune(&self.layout);
        }
        Ok(report)
    }

    /// With the gc lock held exclusively, every temp file is stale.
    fn remove_all_tmp(&self) -> crate::Result<u64> {
        let mut freed = 0;
        for entry in fs_err::read_dir(self.layout.tmp_dir())? {
            let entry = entry?;
            freed += entry.metadata().map_or(0, |m| m.len());
            fs_err::remove_file(entry.path())?;
        }
        Ok(freed)
    }
}
