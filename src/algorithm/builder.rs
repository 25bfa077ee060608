//! [`GeneBuilder`]: collects a gene's units in a private temp directory, with their roles and
//! diagnostics, and writes `gene.json` so that [`crate::registry::Registry::publish`] can take it.
//!
//! The units are scratch files: verified, but not fsynced, because `publish` copies them into
//! the registry's blobs (temp file, fsync, hash check, rename) and the directory is deleted
//! afterwards; a crash before that leaves the registry as it was.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Map, Value};

use super::ancestor::{AncestorModel, Key};
use crate::checkpoint::memory::MemorySource;
use crate::checkpoint::write::{Planned, WriteOptions, plan_one, write_scratch_file_at};
use crate::checkpoint::{DType, SideFile, TensorInfo, TensorSource, f32_le_bytes};
use crate::error::{Error, Result};
use crate::gene::{check_unit_name, gene_json_bytes};
use crate::progress::Silent;
use crate::registry::manifest::{Fidelity, GeneCard};

/// The unit with the embeddings, final norm, head and buffers.
pub const GLOBALS_UNIT: &str = "globals.safetensors";
/// The unit with the ancestor's tokenizer and other side files, as `U8` tensors.
pub const FILES_UNIT: &str = "files.safetensors";

/// A gene under construction.
#[derive(Debug)]
pub struct GeneBuilder {
    dir: tempfile::TempDir,
    units: Vec<String>,
    /// Tensor name → role, for the card.
    pub roles: BTreeMap<String, String>,
    /// Fit diagnostics and everything `grow` needs to know.
    pub diagnostics: Map<String, Value>,
    /// Overrides the recipe's fidelity (e.g. an imported official checkpoint is faithful).
    pub fidelity: Option<Fidelity>,
    /// Wall time of each build step in seconds, in the order recorded. `extract` reports them;
    /// they never enter the card, whose content must not depend on how fast it was built.
    pub steps: Map<String, Value>,
}

fn role_name(key: Key) -> String {
    serde_json::to_value(key.0)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Layer tensors computed when the unit writer asks for them.
struct Computed<F> {
    infos: Vec<TensorInfo>,
    by_name: BTreeMap<String, Key>,
    compute: Mutex<F>,
}

impl<F: FnMut(Key) -> Result<Vec<u8>> + Send> TensorSource for Computed<F> {
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let key = self.by_name.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
        let mut compute = self.compute.lock().map_err(|_| Error::InvalidValue {
            what: "gene unit".into(),
            value: name.to_string(),
            reason: "an earlier tensor's computation panicked".into(),
        })?;
        Ok(Cow::Owned((*compute)(*key)?))
    }
}

impl GeneBuilder {
    /// An empty gene in a new temp directory.
    pub fn new() -> Result<GeneBuilder> {
        Ok(GeneBuilder {
            dir: tempfile::Builder::new().prefix("lgreg-gene-").tempdir()?,
            units: Vec::new(),
            roles: BTreeMap::new(),
            diagnostics: Map::new(),
            fidelity: None,
            steps: Map::new(),
        })
    }

    /// The directory the gene is written to.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The units written so far.
    pub fn units(&self) -> &[String] {
        &self.units
    }

    /// Record a diagnostic.
    pub fn diagnostic(&mut self, key: &str, value: impl serde::Serialize) -> Result<()> {
        self.diagnostics
            .insert(key.to_string(), serde_json::to_value(value)?);
        Ok(())
    }

    /// Record the wall time of one build step, from `started` until now.
    pub fn record_step(&mut self, step: &str, started: Instant) {
        self.record_seconds(step, started.elapsed().as_secs_f64());
    }

    /// Record the wall time of one build step that was measured in pieces.
    pub fn record_seconds(&mut self, step: &str, seconds: f64) {
        self.steps.insert(step.to_string(), Value::from(seconds));
    }

    fn add_unit(
        &mut self,
        unit: &str,
        source: &dyn TensorSource,
        plan: Vec<Planned>,
    ) -> Result<()> {
        check_unit_name(unit).map_err(|reason| Error::InvalidValue {
            what: "gene unit name".into(),
            value: unit.to_string(),
            reason,
        })?;
        if self.units.iter().any(|u| u == unit) {
            return Err(Error::InvalidValue {
                what: "gene unit name".into(),
                value: unit.to_string(),
                reason: "the gene already has a unit of that name".into(),
            });
        }
        write_scratch_file_at(&self.dir.path().join(unit), source, plan, &Silent)?;
        self.units.push(unit.to_string());
        Ok(())
    }

    /// Copy the ancestor's global tensors into [`GLOBALS_UNIT`], under their own names.
    pub fn add_globals(&mut self, ancestor: &AncestorModel<'_>) -> Result<()> {
        self.copy_globals(GLOBALS_UNIT, ancestor)
    }

    /// Copy a model's global tensors into `unit`, under their own names (a trained pool keeps
    /// one such unit per instance).
    pub fn copy_globals(&mut self, unit: &str, ancestor: &AncestorModel<'_>) -> Result<()> {
        let source = ancestor.ckpt.source.as_ref();
        let mut plan = Vec::new();
        for name in ancestor.globals() {
            let info = source.require(name)?;
            plan.push(plan_one(info, name, &WriteOptions::default()));
            if let Some(slot) = ancestor.anatomy.slots.get(name) {
                self.roles
                    .insert(name.to_string(), role_name((slot.role, slot.param)));
            }
        }
        self.add_unit(unit, source, plan)
    }

    /// Copy the ancestor's side files (tokenizer, generation config) into [`FILES_UNIT`].
    pub fn add_side_files(&mut self, ancestor: &AncestorModel<'_>) -> Result<()> {
        let mut mem = MemorySource::new();
        for side in &ancestor.ckpt.side_files {
            let bytes = match side {
                SideFile::Copy { path, .. } => fs_err::read(path)?,
                SideFile::Bytes { bytes, .. } => bytes.clone(),
            };
            mem.insert(side.name(), DType::U8, &[bytes.len()], bytes)?;
        }
        if mem.tensors().is_empty() {
            return Ok(());
        }
        let plan = crate::checkpoint::write::plan_all(&mem, &WriteOptions::default());
        self.add_unit(FILES_UNIT, &mem, plan)
    }

    /// Copy ancestor layer `layer` into a block unit, unchanged, its tensors named as layer 0.
    pub fn copy_layer(
        &mut self,
        unit: &str,
        ancestor: &AncestorModel<'_>,
        layer: usize,
    ) -> Result<()> {
        let source = ancestor.ckpt.source.as_ref();
        let mut plan = Vec::new();
        for key in ancestor.keys() {
            let info = source.require(ancestor.tensor(layer, key)?)?;
            let name = ancestor.unit_name(key)?;
            plan.push(plan_one(info, &name, &WriteOptions::default()));
            self.roles.insert(name, role_name(key));
        }
        self.add_unit(unit, source, plan)
    }

    /// Copy tensors of `source` into a unit unchanged, under new names, with their roles:
    /// `(name in the unit, name in source, role)` (e.g. an imported official gene).
    pub fn copy_renamed(
        &mut self,
        unit: &str,
        source: &dyn TensorSource,
        tensors: &[(String, String, Key)],
    ) -> Result<()> {
        let mut plan = Vec::new();
        for (name, from, key) in tensors {
            let info = source.require(from)?;
            plan.push(plan_one(info, name, &WriteOptions::default()));
            self.roles.insert(name.clone(), role_name(*key));
        }
        self.add_unit(unit, source, plan)
    }

    /// Write computed per-layer tensors (f32) into a block unit, named as layer 0.
    pub fn put_layer(
        &mut self,
        unit: &str,
        ancestor: &AncestorModel<'_>,
        tensors: &BTreeMap<Key, Vec<f32>>,
    ) -> Result<()> {
        self.put_layer_computed(unit, ancestor, tensors.keys().copied().collect(), |key| {
            let values = tensors.get(&key).ok_or_else(|| Error::MissingTensor {
                name: format!("{:?} {:?}", key.0, key.1),
            })?;
            Ok(f32_le_bytes(values))
        })
    }

    /// Write a block unit of the layer tensors `keys`, named as layer 0, each computed by
    /// `compute` (as f32 little-endian bytes) only when the writer reaches it, so that about
    /// one of them is in memory at a time.
    pub fn put_layer_computed(
        &mut self,
        unit: &str,
        ancestor: &AncestorModel<'_>,
        keys: Vec<Key>,
        compute: impl FnMut(Key) -> Result<Vec<u8>> + Send,
    ) -> Result<()> {
        let mut infos = Vec::with_capacity(keys.len());
        let mut by_name = BTreeMap::new();
        for key in keys {
            let name = ancestor.unit_name(key)?;
            infos.push(TensorInfo {
                name: name.clone(),
                dtype: DType::F32,
                shape: ancestor.shape(key)?,
            });
            self.roles.insert(name.clone(), role_name(key));
            by_name.insert(name, key);
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let source = Computed {
            infos,
            by_name,
            compute: Mutex::new(compute),
        };
        let plan = crate::checkpoint::write::plan_all(&source, &WriteOptions::default());
        self.add_unit(unit, &source, plan)
    }

    /// Write arbitrary named f32 tensors into a unit (e.g. stitch layers).
    pub fn put_tensors(
        &mut self,
        unit: &str,
        tensors: &[(String, Vec<usize>, Vec<f32>)],
    ) -> Result<()> {
        let mut mem = MemorySource::new();
        for (name, shape, values) in tensors {
            mem.insert_f32(name, shape, values)?;
        }
        let plan = crate::checkpoint::write::plan_all(&mem, &WriteOptions::default());
        self.add_unit(unit, &mem, plan)
    }

    /// Write `gene.json` for `card`; the directory is then ready to publish.
    pub fn finish(&self, card: &GeneCard) -> Result<()> {
        let bytes = gene_json_bytes(card, &self.units)?;
        let path = self.dir.path().join(crate::gene::GENE_JSON);
        fs_err::write(&path, bytes)?;
        Ok(())
    }
}
