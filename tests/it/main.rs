//! lgreg's integration tests: one binary, modules by feature.

mod registry;
mod registry_crash;
mod registry_format;
mod support;
