//! lgreg's integration tests: one binary, modules by feature.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod convert;
mod malformed;
mod support;
