//! [`GeneView`]: a published gene opened for growing: its card, and each unit memory-mapped
//! straight from the registry blob after its digest has been checked.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ancestor::Key;
use crate::anatomy::{Family, FamilyRules, Naming, rules, stitch_slot};
use crate::checkpoint::TensorSource;
use crate::checkpoint::safetensors::SafetensorsFile;
use crate::error::{Error, Result};
use crate::registry::manifest::{Descriptor, GeneCard};
use crate::registry::{Digest, Reference, Registry, store};

/// A gene read back from the registry.
pub struct GeneView {
    /// The reference it was opened by.
    pub reference: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// Its card.
    pub card: GeneCard,
    /// The family of its ancestor.
    pub family: Family,
    /// The naming of its tensors.
    pub naming: Naming,
    /// The ancestor's `config.json`.
    pub config: Value,
    /// Its units by title, memory-mapped.
    pub units: BTreeMap<String, SafetensorsFile>,
    /// Unit titles in manifest order, with their blob digests.
    pub unit_digests: Vec<(String, Digest)>,
    layers: Vec<Descriptor>,
}

impl std::fmt::Debug for GeneView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneView")
            .field("reference", &self.reference)
            .field("digest", &self.digest)
            .field("units", &self.unit_digests)
            .finish()
    }
}

fn bad_gene(reference: &str, reason: String) -> Error {
    Error::Algorithm {
        algorithm: "spawn".into(),
        reason: format!("gene `{reference}`: {reason}"),
        fix: "spawn from a gene made by `lgreg extract` (check it with `lgreg show` and `lgreg verify`)".into(),
    }
}

/// Check every unit blob, two at a time, failing on the first mismatch; a blob whose seal
/// matches the file (see [`crate::registry::seal`]) is not hashed again.
fn verify_units(registry: &Registry, layers: &[Descriptor]) -> Result<()> {
    let layout = registry.layout();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(d) = layers.get(i) else {
                            return Ok(());
                        };
                        store::check_sealed(layout, &d.digest, d.size)?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join().unwrap_or_else(|_| {
                Err(Error::Io(std::io::Error::other(
                    "a hashing thread panicked",
                )))
            })
        })
    })
}

/// `name:version` for a tag or the latest version, `name@sha256:...` for a digest, so that
/// the same gene is always named the same way in what spawn writes.
fn canonical(parsed: &Reference, tags: &[String]) -> String {
    match parsed {
        Reference::Latest { name } => tags
            .iter()
            .filter_map(|t| {
                let version = t.strip_prefix(name.as_str())?.strip_prefix(':')?;
                Some((semver::Version::parse(version).ok()?, t))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map_or_else(|| parsed.to_string(), |(_, t)| t.clone()),
        _ => parsed.to_string(),
    }
}

impl GeneView {
    /// Open `reference` from `registry`, checking every unit's digest.
    pub fn open(registry: &Registry, reference: &str) -> Result<GeneView> {
        let gene = GeneView::open_unchecked(registry, reference)?;
        gene.verify(registry)?;
        Ok(gene)
    }

    /// Check every unit blob against its digest and size (two threads), trusting seals.
    pub fn verify(&self, registry: &Registry) -> Result<()> {
        verify_units(registry, &self.layers)
    }

    /// Open `reference` without hashing its units yet: the caller must call
    /// [`GeneView::verify`] before anything made from them becomes visible.
    pub fn open_unchecked(registry: &Registry, reference: &str) -> Result<GeneView> {
        let parsed = Reference::parse(reference)?;
        let resolved = registry.resolve(&parsed)?;
        let manifest = registry.read_manifest(&resolved.digest)?;
        let card = registry.read_card(&resolved.digest, &manifest)?;
        let hyper = &card.family.hyper_parameters;
        let family = crate::anatomy::FAMILIES
            .iter()
            .find(|f| f.name() == card.family.name)
            .map(|f| f.family())
            .ok_or_else(|| bad_gene(reference, format!("unknown family `{}`", card.family.name)))?;
        let naming: Naming = serde_json::from_value(
            hyper.get("naming").cloned().unwrap_or(Value::Null),
        )
        .map_err(|_| {
            bad_gene(
                reference,
                "its card has no `naming`; it was not made by `lgreg extract`".into(),
            )
        })?;
        let config = hyper.get("config").cloned().unwrap_or(Value::Null);
        let mut units = BTreeMap::new();
        let mut unit_digests = Vec::new();
        for layer in &manifest.layers {
            let title = layer.title().ok_or_else(|| {
                bad_gene(reference, format!("layer {} has no title", layer.digest))
            })?;
            let file = SafetensorsFile::open(&registry.layout().blob(&layer.digest))?;
            units.insert(title.to_string(), file);
            unit_digests.push((title.to_string(), layer.digest.clone()));
        }
        Ok(GeneView {
            reference: canonical(&parsed, &resolved.tags),
            digest: resolved.digest,
            card,
            family,
            naming,
            config,
            units,
            unit_digests,
            layers: manifest.layers,
        })
    }

    /// The algorithm that made the gene.
    pub fn algorithm(&self) -> &str {
        &self.card.algorithm
    }

    /// The family rules.
    pub fn rules(&self) -> &'static dyn FamilyRules {
        rules(self.family)
    }

    /// A unit by title.
    pub fn unit(&self, title: &str) -> Result<&SafetensorsFile> {
        self.units
            .get(title)
            .ok_or_else(|| bad_gene(&self.reference, format!("it has no unit `{title}`")))
    }

    /// The tensors of a block unit by (role, param): every name must be a layer-0 name.
    pub fn block(&self, title: &str) -> Result<BTreeMap<Key, String>> {
        let unit = self.unit(title)?;
        let mut out = BTreeMap::new();
        for info in unit.tensors() {
            let slot = stitch_slot(&info.name)
                .or_else(|| self.rules().classify(&info.name, self.naming))
                .filter(|s| s.layer == Some(0))
                .ok_or_else(|| {
                    bad_gene(
                        &self.reference,
                        format!(
                            "tensor `{}` of unit `{title}` is not a layer-0 tensor",
                            info.name
                        ),
                    )
                })?;
            out.insert((slot.role, slot.param), info.name.clone());
        }
        Ok(out)
    }

    /// A diagnostic of the card, parsed.
    pub fn diagnostic<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let value = self.card.diagnostics.get(key).cloned().ok_or_else(|| {
            bad_gene(
                &self.reference,
                format!("its card has no diagnostic `{key}`"),
            )
        })?;
        serde_json::from_value(value).map_err(|e| {
            bad_gene(
                &self.reference,
                format!("diagnostic `{key}` is invalid: {e}"),
            )
        })
    }

    /// The block units: titles that start with `prefix`, in manifest order.
    pub fn units_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.unit_digests
            .iter()
            .map(|(t, _)| t.clone())
            .filter(|t| t.starts_with(prefix))
            .collect()
    }
}
