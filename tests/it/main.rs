//! lgreg's integration tests: one binary, modules by feature.

mod pickle;
mod support;
