//! lgreg: a model-zoo checkpoint converter and learngene registry.
//!
//! # Map
//! - [`checkpoint`]: read safetensors (mmap, shards), PyTorch pickles (no code execution) and
//!   GGUF (dequantised); write streaming, sharded, deterministic safetensors.
//! - [`anatomy`]: architecture families (llama, vit, bert): layers, tensor roles, `config.json`.
//! - [`convert`] and [`inspect`]: the first verbs, over the two modules above.
//! - [`nn`]: llama, vit and bert models on candle, with pluggable weight parametrisations
//!   (plain, TLEG, SWS, Pool stitches), hidden-state and weight-gradient hooks.
//! - [`train`]: datasets, AdamW, schedules, resumable training state, losses; the `adapt` and
//!   `eval` verbs.
//! - [`progress`]: events the library reports instead of printing.
//! - [`error`]: typed errors with hints.
//! - [`fsutil`]: temp-file + fsync + rename writes.
//!
//! # Files lgreg touches
//! - Input checkpoints: read only, memory-mapped ([`checkpoint::mmap`]).
//! - Output model directories: staged in a hidden sibling and renamed into place
//!   ([`fsutil::StagedDir`]).

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod anatomy;
pub mod checkpoint;
pub mod convert;
pub mod error;
pub mod fsutil;
pub mod inspect;
pub mod nn;
pub mod progress;
pub mod train;

pub use error::{Error, Result};
