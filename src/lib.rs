//! lgreg: a model-zoo checkpoint converter and learngene registry.
//!
//! # Map
//! - [`checkpoint`]: read safetensors (mmap, shards), PyTorch pickles (no code execution) and
//!   GGUF (dequantised); write streaming, sharded, deterministic safetensors.
//! - [`anatomy`]: architecture families (llama, vit, bert): layers, tensor roles, `config.json`.
//! - [`convert`] and [`inspect`]: the first verbs, over the two modules above.
//! - [`hub`]: Hugging Face Hub downloads (`lgreg pull`) into the cache shared with Python.
//! - [`nn`]: llama, vit and bert models on candle, with pluggable weight parametrisations
//!   (plain, TLEG, SWS, Pool stitches), hidden-state and weight-gradient hooks.
//! - [`train`]: datasets, AdamW, schedules, resumable training state, losses; the `adapt` and
//!   `eval` verbs.
//! - [`progress`]: events the library reports instead of printing.
//! - [`error`]: typed errors with hints.
//! - [`fsutil`]: temp-file + fsync + rename writes.
//! - [`registry`]: the local gene registry, an OCI image layout; [`gene`]: a gene as plain files.
//! - [`algorithm`]: the five learngene algorithms (extract and grow); [`recipe`]: their
//!   embedded defaults; [`descendant`]: `lgreg spawn`, a gene grown into a model directory.
//! - [`plot`]: figures of runs (SVG and PNG).
//! - [`config`]: run configs (`configs/`, the toolbox's keys) for `train` and `adapt --config`.
//!
//! # Files lgreg touches
//! - Input checkpoints: read only, memory-mapped ([`checkpoint::mmap`]).
//! - Output model directories: staged in a hidden sibling and renamed into place
//!   ([`fsutil::StagedDir`]).
//! - The gene registry: `$LGREG_HOME/registry` or `--registry DIR`, paths built only by
//!   [`registry::layout`]; format in `registry/FORMAT.md`.
//! - The Hugging Face cache (`$HF_HUB_CACHE`, by default `$HF_HOME/hub`): blobs, snapshots,
//!   refs and `.locks`, laid out exactly as Python's `huggingface_hub` does ([`hub::cache`]).

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod algorithm;
pub mod allocator;
pub mod anatomy;
pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod descendant;
pub mod error;
pub mod fsutil;
pub mod gene;
pub mod hub;
pub mod inspect;
pub mod nn;
pub mod plot;
pub mod progress;
pub mod recipe;
pub mod registry;
pub mod train;

pub use error::{Error, Result};
