//! The loopback fake Hugging Face Hub of the tests, serving one directory as a model repo, for
//! `scripts/bench-pull.sh`.
//!
//! Usage: `fake_hub ORG/NAME DIR [TOKEN]`. With TOKEN the repo is gated (401 without a token,
//! 403 with another). Prints `HUB_URL COMMIT` on one line, then serves until killed.

#![allow(
    clippy::print_stdout,
    clippy::disallowed_methods,
    clippy::print_stderr,
    clippy::unwrap_used,
    missing_docs
)]

#[path = "../tests/it/support/hub.rs"]
mod hub;

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(repo), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: fake_hub ORG/NAME DIR [TOKEN]");
        std::process::exit(2);
    };
    let hub = hub::FakeHub::start();
    let commit = hub.add_dir(repo, std::path::Path::new(dir));
    if let Some(token) = args.get(2) {
        hub.gate(repo, &[token.as_str()]);
    }
    println!("{} {}", hub.url, commit);
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
