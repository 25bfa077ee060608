//! lgreg's integration tests: one binary, modules by feature.

mod gguf;
mod support;
