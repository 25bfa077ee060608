//! `export`: a gene back to plain files (`gene.json` plus one safetensors file per unit),
//! staged in a hidden sibling, every blob checked against its digest while it is copied.

use std::path::Path;

use super::digest::Digest;
use super::error::Error;
use super::reference::Reference;
use super::{Registry, store};
use crate::fsutil::StagedDir;
use crate::gene::{GENE_JSON, check_unit_name, gene_json_bytes};
use crate::progress::{Event, Reporter};

/// What `export` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    /// The directory written.
    pub output: String,
    /// The manifest digest.
    pub digest: Digest,
    /// The unit files, in order.
    pub units: Vec<String>,
    /// Bytes of the units.
    pub bytes: u64,
}

impl Registry {
    /// Write the gene `reference` to the new directory `out` (replaced only with `force`).
    pub fn export(
        &self,
        reference: &Reference,
        out: &Path,
        force: bool,
        reporter: &dyn Reporter,
    ) -> crate::Result<Exported> {
        let r = self.resolve(reference)?;
        let m = self.read_manifest(&r.digest)?;
        let card = self.read_card(&r.digest, &m)?;
        let mut units = Vec::new();
        for layer in &m.layers {
            let title = layer.title().unwrap_or_default();
            check_unit_name(title).map_err(|reason| Error::InvalidManifest {
                digest: r.digest.clone(),
                reason,
            })?;
            units.push(title.to_string());
        }
        let staged = StagedDir::new(out, force)?;
        let total = m.layers.iter().map(|l| l.size).sum();
        reporter.report(Event::Start {
            task: "export".into(),
            total,
        });
        for (layer, title) in m.layers.iter().zip(&units) {
            let mut file = fs_err::File::create(staged.path().join(title))?;
            let mut progress = |n| {
                reporter.report(Event::Advance {
                    amount: n,
                    item: Some(title.clone()),
                })
            };
            let writer: &mut dyn std::io::Write = &mut file;
            store::copy_verified(
                &self.layout,
                &layer.digest,
                Some(layer.size),
                Some(writer),
                &mut progress,
            )?;
            file.sync_all()?;
        }
        staged.write_file(GENE_JSON, &gene_json_bytes(&card, &units)?)?;
        let output = staged.commit()?;
        reporter.report(Event::Finish);
        Ok(Exported {
            output: output.display().to_string(),
            digest: r.digest,
            units,
            bytes: total,
        })
    }
}
