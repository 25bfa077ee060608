//! The `lgreg` binary: parse, dispatch, render, exit. All work happens in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
