//! [`Sink`]: the file a checkpoint writer appends to.
//!
//! Two things make a durable write of a large file cost little more than a plain copy, on
//! Linux:
//! - bytes that already lie verbatim in another file (a tensor of a memory-mapped gene unit)
//!   are copied file to file in the kernel (`copy_file_range`), never passing through this
//!   process;
//! - for a durable file, the disk writeback of every few MiB starts as soon as they are
//!   written (`posix_fadvise(DONTNEED)`, which queues dirty pages for writeback without
//!   waiting), so the closing fsync waits for I/O already under way instead of starting all of
//!   it at the end.
//!
//! Elsewhere both fall back to plain writes and one fsync at the end.

use std::io::Write;
use std::path::Path;

use crate::error::Result;

/// Bytes written between two starts of the writeback, and the most one in-kernel copy moves.
const WRITEBACK_EVERY: u64 = 4 << 20;

/// A file written front to back.
#[derive(Debug)]
pub struct Sink {
    file: fs_err::File,
    /// Bytes written so far.
    len: u64,
    /// Bytes whose writeback was started.
    kicked: u64,
    /// fsync at the end, and start the writeback while writing.
    durable: bool,
}

impl Sink {
    /// Create (or truncate) the file at `path`.
    pub fn create(path: &Path, durable: bool) -> Result<Sink> {
        Ok(Sink {
            file: fs_err::File::create(path)?,
            len: 0,
            kicked: 0,
            durable,
        })
    }

    /// Reserve room for `len` bytes on the disk up front, so that a disk without room fails
    /// at once instead of part way through (Linux `fallocate`, keeping the file size; where
    /// the file system cannot, the file simply grows as it is written).
    pub fn reserve(&mut self, len: u64) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{FallocateFlags, fallocate};
            use rustix::io::Errno;
            match fallocate(self.file.file(), FallocateFlags::KEEP_SIZE, 0, len) {
                Ok(()) | Err(Errno::OPNOTSUPP | Errno::NOSYS) => {}
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = len;
        Ok(())
    }

    /// Append `len` bytes of `from`, starting at its byte `offset`, copied in the kernel.
    ///
    /// Returns `false`, having written nothing, when the kernel or the file systems cannot do
    /// that (another OS, an old kernel, two file systems that refuse): the caller then writes
    /// the bytes itself.
    pub fn copy_from(&mut self, from: &std::fs::File, offset: u64, len: u64) -> Result<bool> {
        #[cfg(target_os = "linux")]
        {
            self.copy_in_kernel(from, offset, len)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (from, offset, len);
            Ok(false)
        }
    }

    #[cfg(target_os = "linux")]
    fn copy_in_kernel(&mut self, from: &std::fs::File, offset: u64, len: u64) -> Result<bool> {
        use rustix::io::Errno;
        let mut at = offset;
        let end = offset.saturating_add(len);
        while at < end {
            let want = usize::try_from((end - at).min(WRITEBACK_EVERY)).unwrap_or(usize::MAX);
            // No output offset: the copy appends at the file position, as `write` does.
            match rustix::fs::copy_file_range(from, Some(&mut at), self.file.file(), None, want) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the source file ended at byte {at}, before byte {end} (was it \
                             truncated while lgreg read it?)"
                        ),
                    )
                    .into());
                }
                Ok(n) => {
                    self.len += n as u64;
                    self.start_writeback();
                }
                Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP)
                    if at == offset =>
                {
                    return Ok(false);
                }
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        }
        Ok(true)
    }

    /// Start the writeback of the bytes written since the last start, once there are enough.
    fn start_writeback(&mut self) {
        if !self.durable || self.len - self.kicked < WRITEBACK_EVERY {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            // A hint: when it fails, the fsync at the end writes everything.
            let _ = rustix::fs::fadvise(
                self.file.file(),
                self.kicked,
                std::num::NonZeroU64::new(self.len - self.kicked),
                rustix::fs::Advice::DontNeed,
            );
        }
        self.kicked = self.len;
    }

    /// fsync a durable file, and give it back.
    pub fn finish(self) -> Result<fs_err::File> {
        if self.durable {
            self.file.sync_all()?;
        }
        Ok(self.file)
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.len += n as u64;
        self.start_writeback();
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_kernel_copies_interleave_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let from_path = dir.path().join("from");
        let from_bytes: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        fs_err::write(&from_path, &from_bytes).unwrap();
        let from = fs_err::File::open(&from_path).unwrap();
        let out_path = dir.path().join("out");
        let mut sink = Sink::create(&out_path, true).unwrap();
        sink.write_all(b"head").unwrap();
        let copied = sink.copy_from(from.file(), 3, 5 << 20).unwrap();
        if !copied {
            sink.write_all(&from_bytes[3..3 + (5 << 20)]).unwrap();
        }
        sink.write_all(b"tail").unwrap();
        sink.finish().unwrap();
        let mut want = b"head".to_vec();
        want.extend_from_slice(&from_bytes[3..3 + (5 << 20)]);
        want.extend_from_slice(b"tail");
        assert_eq!(fs_err::read(&out_path).unwrap(), want);
        #[cfg(target_os = "linux")]
        assert!(
            copied,
            "copy_file_range should work within one Linux file system"
        );
    }

    #[test]
    fn a_copy_past_the_end_of_the_source_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let from_path = dir.path().join("from");
        fs_err::write(&from_path, [7u8; 100]).unwrap();
        let from = fs_err::File::open(&from_path).unwrap();
        let mut sink = Sink::create(&dir.path().join("out"), false).unwrap();
        #[cfg(target_os = "linux")]
        {
            let err = sink.copy_from(from.file(), 50, 100).unwrap_err();
            assert!(err.to_string().contains("ended at byte 100"), "{err}");
        }
        #[cfg(not(target_os = "linux"))]
        assert!(!sink.copy_from(from.file(), 50, 100).unwrap());
    }
}
