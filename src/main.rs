//! The `lgreg` binary: parse, dispatch, render, exit.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
