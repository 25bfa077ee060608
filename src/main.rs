//! The `lgreg` binary: parse, dispatch, render, exit. All work happens in the library.

mod cli;

/// mimalloc keeps freed memory for reuse, where glibc returns each large training buffer to the
/// kernel and page-faults it back in on the next step; [`lgreg::allocator`] sets how long.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::start_with_purge_delay();
    cli::main()
}
