//! A seeded stand-in for a published llama-family checkpoint, laid out exactly as its shard index
//! publishes it (names, shapes, dtypes and the shard split), for tests and benchmarks at the
//! ancestors' real sizes without the Hub (see `scripts/make-7b-ancestor.sh`).
//!
//! Usage: `seeded_ancestor OUT CONFIG_JSON INDEX_JSON [LAYERS] [SEED]`. LAYERS keeps the first
//! layers only (0 or absent: all); the values are drawn from SEED (default 0). Prints OUT.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use lgreg::checkpoint::DType;
use lgreg::checkpoint::seeded::PublishedLayout;

fn usage(value: &str) -> lgreg::Error {
    lgreg::Error::InvalidValue {
        what: "arguments".into(),
        value: value.into(),
        reason: "usage: seeded_ancestor OUT CONFIG_JSON INDEX_JSON [LAYERS] [SEED]".into(),
    }
}

fn number(args: &[String], i: usize) -> lgreg::Result<u64> {
    match args.get(i) {
        None => Ok(0),
        Some(a) => a.parse().map_err(|_| usage(a)),
    }
}

fn read_json(path: &str) -> lgreg::Result<serde_json::Value> {
    let bytes = fs_err::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| lgreg::Error::InvalidValue {
        what: "JSON file".into(),
        value: path.into(),
        reason: e.to_string(),
    })
}

fn main() -> lgreg::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, config, index] = [0, 1, 2].map(|i| args.get(i).cloned());
    let (Some(out), Some(config), Some(index)) = (out, config, index) else {
        return Err(usage(&args.join(" ")));
    };
    let layers = Some(number(&args, 3)? as usize).filter(|l| *l > 0);
    let seed = number(&args, 4)?;
    let layout = PublishedLayout::llama(
        &read_json(&config)?,
        &read_json(&index)?,
        layers,
        DType::F16,
    )?;
    let out = PathBuf::from(out);
    fs_err::create_dir_all(&out)?;
    let written = layout.write(&out, seed, &lgreg::progress::Silent)?;
    eprintln!(
        "wrote {} tensors, {} bytes, in {}",
        written.tensors,
        written.total_bytes,
        written.files.join(", ")
    );
    println!("{}", out.display());
    Ok(())
}
