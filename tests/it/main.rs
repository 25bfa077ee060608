//! lgreg's integration tests: one binary, modules by feature.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod adapt;
mod algo_heur_auto;
mod algo_pool;
mod algo_tleg;
mod anatomy;
mod configs;
mod convert;
mod engine;
mod extract;
mod faithful;
mod faithful_pool;
mod gguf;
mod gguf_cli;
mod heur_vgg;
mod llama7b;
mod malformed;
mod pickle;
mod pull;
mod pull_python;
mod randaugment_pil;
mod registry;
mod registry_crash;
mod registry_format;
mod share;
mod support;
mod train;
