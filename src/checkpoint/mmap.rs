//! The one door through which lgreg memory-maps files. This is the only `unsafe` in the crate.

use std::path::Path;

use crate::error::Result;

/// A read-only memory map of a whole file.
#[derive(Debug)]
pub struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl Mapped {
    /// Map `path` read-only. An empty file maps to an empty slice.
    pub fn open(path: &Path) -> Result<Mapped> {
        let file = fs_err::File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Mapped { map: None });
        }
        // SAFETY: the map is read-only and lgreg never writes to a file it has mapped: every
        // output goes to a fresh temp file that is renamed into place, so the mapped inode is
        // never truncated by us. Another process truncating the file underneath is outside
        // what any mmap user can guard against; lgreg documents that inputs must not change
        // while it runs.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(file.file())? };
        Ok(Mapped { map: Some(map) })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}
