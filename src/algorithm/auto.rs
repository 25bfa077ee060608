//! Auto: placeholder until its extractor lands.

use super::blueprint::{Blueprint, GrowRequest};
use super::builder::GeneBuilder;
use super::{Algorithm, ExtractJob, GeneView};
use crate::error::{Error, Result};

/// The auto algorithm.
#[derive(Debug)]
pub struct Auto;

fn pending() -> Error {
    Error::Algorithm {
        algorithm: "auto".into(),
        reason: "not built yet".into(),
        fix: "use tleg or sws".into(),
    }
}

impl Algorithm for Auto {
    fn name(&self) -> &'static str {
        "auto"
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
