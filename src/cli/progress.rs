//! indicatif rendering of library progress events, on stderr, only when it is a terminal.
//!
//! One bar per task; tasks with parallel items (the files of a `pull`) get one bar per item
//! under the overall bar, through a `MultiProgress`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lgreg::progress::{Event, Reporter};

use super::GlobalArgs;

/// A reporter that draws one bar per task and one per running item.
#[derive(Debug)]
pub(crate) struct Bars {
    state: Mutex<State>,
    enabled: bool,
}

#[derive(Debug)]
struct State {
    multi: MultiProgress,
    main: Option<ProgressBar>,
    items: HashMap<String, ProgressBar>,
}

impl Bars {
    /// Bars are hidden by `--json`, `--quiet`, `--no-progress`, and whenever stderr is not a
    /// terminal.
    pub(crate) fn new(global: &GlobalArgs) -> Bars {
        let enabled =
            !(global.json || global.quiet || global.no_progress) && std::io::stderr().is_terminal();
        Bars {
            state: Mutex::new(State {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                main: None,
                items: HashMap::new(),
            }),
            enabled,
        }
    }
}

fn style(task: &str) -> ProgressStyle {
    // Training and evaluation count steps or examples; everything else counts bytes.
    let template = match task {
        "adapt" | "eval" | "collective model" | "descendants" => {
            "{msg:>10} [{bar:30}] {pos}/{len} eta {eta} {prefix}"
        }
        _ => "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {prefix}",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn item_style() -> ProgressStyle {
    ProgressStyle::with_template("  {msg:<40!} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Reporter for Bars {
    fn report(&self, event: Event) {
        if !self.enabled {
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match event {
            Event::Start { task, total } => {
                let bar = st.multi.add(ProgressBar::new(total));
                bar.set_style(style(&task));
                bar.set_message(task);
                st.main = Some(bar);
            }
            Event::Advance { amount, item } => {
                if let Some(bar) = st.main.as_ref() {
                    bar.inc(amount);
                    if let Some(item) = item {
                        bar.set_prefix(item);
                    }
                }
            }
            Event::Finish => {
                if let Some(bar) = st.main.take() {
                    bar.finish_and_clear();
                }
                for (_, bar) in st.items.drain() {
                    bar.finish_and_clear();
                }
            }
            Event::ItemStart { item, total } => {
                let bar = st.multi.add(ProgressBar::new(total));
                bar.set_style(item_style());
                bar.set_message(item.clone());
                if let Some(old) = st.items.insert(item, bar) {
                    old.finish_and_clear();
                }
            }
            Event::ItemAdvance { item, amount } => {
                if let Some(bar) = st.items.get(&item) {
                    bar.inc(amount);
                }
            }
            Event::ItemFinish { item } => {
                if let Some(bar) = st.items.remove(&item) {
                    bar.finish_and_clear();
                    st.multi.remove(&bar);
                }
            }
        }
    }
}
