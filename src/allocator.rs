//! The one allocator setting that training needs, applied before anything else runs.
//!
//! The binaries allocate through mimalloc, which hands freed memory back to the kernel
//! `purge_delay` after it was freed (1 s by default). A training step that takes longer than
//! that frees its activation and gradient buffers, and the next step faults every page of them
//! back in, zero-filled: a quarter of a ViT-Tiny step on a 2-core machine (BENCHMARKS.md).
//! mimalloc reads its options from the environment once, as the process starts, and setting
//! one from inside needs an `unsafe` call, so [`start_with_purge_delay`] starts the program
//! again, once, with `MIMALLOC_PURGE_DELAY` set to [`PURGE_DELAY_MS`]: memory that lies unused
//! for ten seconds still goes back to the kernel, and a training loop keeps its buffers.

/// The purge delay the binaries run with, in milliseconds.
pub const PURGE_DELAY_MS: &str = "10000";

/// The environment variable mimalloc reads its purge delay from.
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// Execute this program again, with the same arguments and `MIMALLOC_PURGE_DELAY` set to
/// [`PURGE_DELAY_MS`], unless the environment (read through `env`) already sets the variable:
/// a user's choice, or the second start. Returns only when it does not start again: the
/// variable was set, or the executable cannot be found or run (it was replaced while running,
/// say); the caller then goes on with mimalloc's defaults.
#[cfg(unix)]
pub fn start_with_purge_delay(env: impl Fn(&str) -> Option<std::ffi::OsString>) {
    use std::os::unix::process::CommandExt;
    if env(PURGE_DELAY_VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(name) = args.next() {
        again.arg0(name);
    }
    // `exec` returns only if it failed; the program then runs as it is.
    let _failed = again.args(args).env(PURGE_DELAY_VAR, PURGE_DELAY_MS).exec();
}

/// Elsewhere the program runs with mimalloc's defaults.
#[cfg(not(unix))]
pub fn start_with_purge_delay(_env: impl Fn(&str) -> Option<std::ffi::OsString>) {}
