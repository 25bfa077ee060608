//! The one door through which lgreg memory-maps files. This is the only `unsafe` in the crate.

use std::path::Path;

use crate::error::Result;

/// A read-only memory map of a whole file.
#[derive(Debug)]
pub struct Mapped {
    map: Option<memmap2::Mmap>,
    /// The open file behind the map, kept so that its bytes can also be copied in the kernel.
    file: fs_err::File,
}

impl Mapped {
    /// Map `path` read-only. An empty file maps to an empty slice.
    pub fn open(path: &Path) -> Result<Mapped> {
        let file = fs_err::File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Mapped { map: None, file });
        }
        // SAFETY: the map is read-only and lgreg never writes to a file it has mapped: every
        // output goes to a fresh temp file that is renamed into place, so the mapped inode is
        // never truncated by us. Another process truncating the file underneath is outside
        // what any mmap user can guard against; lgreg documents that inputs must not change
        // while it runs.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(file.file())? };
        Ok(Mapped {
            map: Some(map),
            file,
        })
    }

    /// Tell the kernel that `range` will not be needed soon, so its pages leave this process's
    /// resident set (they stay in the page cache and are re-read on the next access).
    ///
    /// This keeps peak RSS at about one tensor when a whole model is streamed through.
    pub fn release(&self, range: std::ops::Range<usize>) {
        let Some(map) = &self.map else { return };
        let page = page_size();
        // Only whole pages inside the range, so neighbouring tensors are untouched.
        let start = range.start.div_ceil(page) * page;
        let end = (range.end.min(map.len()) / page) * page;
        if end <= start {
            return;
        }
        // SAFETY: MADV_DONTNEED on a read-only, file-backed mapping only drops the cached page
        // table entries; the next access faults the same bytes back in from the file. No Rust
        // reference can observe a change, because the file content is not changed by this.
        #[allow(unsafe_code)]
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
    }

    /// Map the pages of `range` in one call, ahead of reading them, instead of one fault per
    /// few pages (Linux 5.14+: `MADV_POPULATE_READ`; elsewhere, or on an older kernel, this
    /// does nothing and the pages fault in as they are read).
    pub fn prefetch(&self, range: std::ops::Range<usize>) {
        #[cfg(target_os = "linux")]
        if let Some(map) = &self.map {
            let end = range.end.min(map.len());
            if range.start < end {
                // A hint: when it fails the pages are simply faulted in on first access.
                let _ = map.advise_range(
                    memmap2::Advice::PopulateRead,
                    range.start,
                    end - range.start,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = range;
    }

    /// The file that is mapped.
    pub fn file(&self) -> &std::fs::File {
        self.file.file()
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

fn page_size() -> usize {
    // 4 KiB pages on every platform lgreg targets; a larger real page size only makes
    // `release` round more conservatively, never incorrectly, because `start` is rounded up
    // and `end` down to this multiple.
    4096
}
