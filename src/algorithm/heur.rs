//! Heur: placeholder until its extractor lands.

use super::blueprint::{Blueprint, GrowRequest};
use super::builder::GeneBuilder;
use super::{Algorithm, ExtractJob, GeneView};
use crate::error::{Error, Result};

/// The heur algorithm.
#[derive(Debug)]
pub struct Heur;

fn pending() -> Error {
    Error::Algorithm {
        algorithm: "heur".into(),
        reason: "not built yet".into(),
        fix: "use tleg or sws".into(),
    }
}

impl Algorithm for Heur {
    fn name(&self) -> &'static str {
        "heur"
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
