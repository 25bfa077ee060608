//! `lgreg compare RUN...`: curves of several run directories in one figure and one table.

use std::path::{Path, PathBuf};

use lgreg::config::compare::{Comparison, compare, plot_run, table};

use super::GlobalArgs;
use super::env::font;
use super::render::{Output, note};

/// Draw the runs' validation metric against epochs, their training loss, and their final
/// metric against the fraction of training data (`compare.svg`, `compare.png`); print, per
/// curve, the final and best metric and the epochs it needs to reach a target.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Run directories (the `OUTPUT_DIR` of `lgreg train` or `lgreg adapt` runs).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where the figure goes.
    #[arg(long, short, default_value = ".", value_name = "DIR")]
    out: PathBuf,
    /// The metric value to count epochs to (default: the final value of the random-init arm,
    /// else the worst final value among the runs).
    #[arg(long)]
    target: Option<f64>,
}

pub(crate) fn run(args: &Args, _global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let done = compare(&args.runs, &args.out, args.target, font().as_deref())?;
    Ok(Box::new(Compared(done)))
}

/// Draw a finished run's own figure; a run that cannot be drawn is a note, never a failure.
pub(crate) fn plot_finished_run(dir: &Path, global: &GlobalArgs) {
    match plot_run(dir, font().as_deref()) {
        Ok(w) => note(
            global,
            &format!("figure: {} and {}", w.svg.display(), w.png.display()),
        ),
        Err(e) => note(global, &format!("no figure for {}: {e}", dir.display())),
    }
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Compared(Comparison);

impl Output for Compared {
    fn command(&self) -> &'static str {
        "compare"
    }

    fn text(&self) -> String {
        format!(
            "{}\nfigure: {} and {}",
            table(&self.0),
            self.0.figure.svg.display(),
            self.0.figure.png.display()
        )
    }
}
