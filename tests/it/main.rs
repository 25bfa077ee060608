//! lgreg's integration tests: one binary, modules by feature.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod anatomy;
mod convert;
mod malformed;
mod pull;
mod pull_python;
mod support;
