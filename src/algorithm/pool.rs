//! Pool: placeholder until its extractor lands.

use super::blueprint::{Blueprint, GrowRequest};
use super::builder::GeneBuilder;
use super::{Algorithm, ExtractJob, GeneView};
use crate::error::{Error, Result};

/// The pool algorithm.
#[derive(Debug)]
pub struct Pool;

fn pending() -> Error {
    Error::Algorithm {
        algorithm: "pool".into(),
        reason: "not built yet".into(),
        fix: "use tleg or sws".into(),
    }
}

impl Algorithm for Pool {
    fn name(&self) -> &'static str {
        "pool"
    }

    fn summary(&self) -> &'static str {
        "pending"
    }

    fn extract(&self, _job: &ExtractJob<'_>, _out: &mut GeneBuilder) -> Result<()> {
        Err(pending())
    }

    fn grow(&self, _gene: &GeneView, _request: &GrowRequest) -> Result<Blueprint> {
        Err(pending())
    }
}
