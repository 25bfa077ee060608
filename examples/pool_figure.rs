//! The Learngene Pool experiment's figure: held-out accuracy against parameters for several
//! pool runs and a set of controls, on one plot.
//!
//! Usage: `pool_figure OUT_STEM LABEL=RUN_DIR... [LABEL=POINTS.json...]`: a directory is a
//! finished `MODE: faithful` pool run (its `configurations.json`, every configuration drawn);
//! a `.json` file is a list of `[parameters, accuracy]` pairs (e.g. random-init models of the
//! same sizes).

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

use lgreg::config::pool::{draw_pool, run_points};

fn points_file(path: &Path) -> lgreg::Result<Vec<(f64, f64)>> {
    let pairs: Vec<(f64, f64)> =
        serde_json::from_slice(&fs_err::read(path)?).map_err(|e| lgreg::Error::Config {
            path: path.to_path_buf(),
            reason: format!("not a list of [parameters, accuracy] pairs: {e}"),
        })?;
    Ok(pairs.into_iter().map(|(p, a)| (p / 1e6, a)).collect())
}

fn main() -> lgreg::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((stem, rest)) = args.split_first() else {
        return Err(lgreg::Error::InvalidValue {
            what: "arguments".into(),
            value: String::new(),
            reason: "usage: pool_figure OUT_STEM LABEL=RUN_DIR... [LABEL=POINTS.json...]".into(),
        });
    };
    let mut arms = Vec::new();
    for arg in rest {
        let (label, path) = arg
            .split_once('=')
            .ok_or_else(|| lgreg::Error::InvalidValue {
                what: "an arm".into(),
                value: arg.clone(),
                reason: "write it LABEL=PATH".into(),
            })?;
        let path = PathBuf::from(path);
        if path.is_dir() {
            let [instances, stitched] = run_points(&path)?;
            let mut all = instances;
            all.extend(stitched);
            arms.push((label.to_string(), all));
        } else {
            arms.push((label.to_string(), points_file(&path)?));
        }
    }
    let font = lgreg::plot::find_font();
    let written = draw_pool(&arms, "accuracy", Path::new(stem), font.as_deref())?;
    println!("{}", written.png.display());
    Ok(())
}
