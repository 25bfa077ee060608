//! lgreg's integration tests: one binary, modules by feature.

mod support;
