//! Heur Learngene as its paper trains it, on the VGG family (`heur_vgg`).
//!
//! The ancestor, the *collective model*, learns a sequence of tasks, each a random subset of the
//! ancestor's classes, and is widened by Net2WiderNet after each task ([`widen`]). While it
//! trains, the gradient criterion r_l is recorded for every conv layer, task and epoch
//! ([`criterion`]); the learngene is the suffix of layers whose r_l stays stable across tasks
//! ([`gene`]). Descendants stack a random lower part, the gene blocks and a random N-way
//! classifier, and fine-tune on few-shot tasks with an optional EWC term on the gene
//! ([`descendant`]). [`collective`] runs the ancestor; [`task`] holds what both share.

pub mod collective;
pub mod criterion;
pub mod descendant;
pub mod gene;
pub mod task;
pub mod vgg;
pub mod widen;
