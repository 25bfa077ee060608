//! indicatif rendering of library progress events, on stderr, only when it is a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lgreg::progress::{Event, Reporter};

use super::GlobalArgs;

/// A reporter that draws one bar per task.
#[derive(Debug)]
pub(crate) struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl Bars {
    /// Bars are hidden by `--json`, `--quiet`, `--no-progress`, `NO_COLOR`-free of any effect,
    /// and whenever stderr is not a terminal.
    pub(crate) fn new(global: &GlobalArgs) -> Bars {
        let enabled =
            !(global.json || global.quiet || global.no_progress) && std::io::stderr().is_terminal();
        Bars {
            bar: Mutex::new(None),
            enabled,
        }
    }
}

fn style(task: &str) -> ProgressStyle {
    // Training and evaluation count steps or examples; everything else counts bytes.
    let template = match task {
        "adapt" | "eval" => "{msg:>10} [{bar:30}] {pos}/{len} eta {eta} {prefix}",
        _ => "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {prefix}",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Reporter for Bars {
    fn report(&self, event: Event) {
        if !self.enabled {
            return;
        }
        let Ok(mut slot) = self.bar.lock() else {
            return;
        };
        match event {
            Event::Start { task, total } => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                bar.set_style(style(&task));
                bar.set_message(task);
                *slot = Some(bar);
            }
            Event::Advance { amount, item } => {
                if let Some(bar) = slot.as_ref() {
                    bar.inc(amount);
                    if let Some(item) = item {
                        bar.set_prefix(item);
                    }
                }
            }
            Event::Finish => {
                if let Some(bar) = slot.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}
