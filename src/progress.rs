//! Progress events: the library never prints, it reports [`Event`]s to a [`Reporter`].
//!
//! The CLI renders them as indicatif bars; tests and `--json` runs use [`Silent`].

/// Something worth showing the user while a long operation runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A task with a known amount of work (bytes or items) starts.
    Start {
        /// What is being done, e.g. `convert`.
        task: String,
        /// Total units of work.
        total: u64,
    },
    /// `amount` more units of the current task are done.
    Advance {
        /// Units just completed.
        amount: u64,
        /// What is being worked on now, e.g. a tensor name.
        item: Option<String>,
    },
    /// The current task finished successfully (never sent on error).
    Finish,
    /// One item of the current task (a file of a download), with its own total, starts.
    /// Items run in parallel; their progress also counts in the task's [`Event::Advance`].
    ItemStart {
        /// The item, e.g. a file name; unique within the task.
        item: String,
        /// Its total units of work.
        total: u64,
    },
    /// `amount` more units of `item` are done.
    ItemAdvance {
        /// The item.
        item: String,
        /// Units just completed.
        amount: u64,
    },
    /// `item` finished successfully.
    ItemFinish {
        /// The item.
        item: String,
    },
}

/// Receives progress events. The default implementation ignores them.
pub trait Reporter: Send + Sync {
    /// Handle one event.
    fn report(&self, _event: Event) {}
}

/// A reporter that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {}
