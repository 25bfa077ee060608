//! Reads: resolve references, list tags, show a gene, walk its lineage. Every blob read here
//! is checked against its digest.

use std::collections::BTreeSet;

use super::digest::Digest;
use super::error::Error;
use super::manifest::{
    Ancestor, Descriptor, GENE_CONFIG_MEDIA_TYPE, GeneCard, ImageManifest, MANIFEST_MEDIA_TYPE,
};
use super::reference::{Reference, parse_version};
use super::{Registry, index, store};
use crate::checkpoint::TensorSource;
use crate::checkpoint::safetensors::SafetensorsFile;
use crate::gene::{CardError, card_from_value};

/// Largest manifest lgreg reads.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest gene card lgreg reads.
pub const MAX_CARD_SIZE: u64 = 16 << 20;

/// A reference resolved to a manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Resolved {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest size.
    pub size: u64,
    /// Every tag that points at it.
    pub tags: Vec<String>,
}

/// One tag, as `ls` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TagEntry {
    /// `name:version`.
    pub tag: String,
    /// The manifest digest.
    pub digest: Digest,
    /// Number of units.
    pub units: usize,
    /// Bytes of the card and units.
    pub bytes: u64,
}

/// One tensor of a unit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorSummary {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// One unit (layer) of a gene.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnitInfo {
    /// Its title (file name).
    pub title: String,
    /// Its blob digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its tensors.
    pub tensors: Vec<TensorSummary>,
}

/// A gene in a lineage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LineageNode {
    /// Manifest digest.
    pub digest: Digest,
    /// Tags that point at it.
    pub tags: Vec<String>,
    /// Its algorithm, when its card is readable.
    pub algorithm: Option<String>,
}

/// Where a gene comes from and what derives from it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lineage {
    /// The gene asked about.
    pub gene: LineageNode,
    /// The hub ancestor of the oldest gene in the chain.
    pub ancestor: Option<Ancestor>,
    /// The genes it derives from, nearest first.
    pub parents: Vec<LineageNode>,
    /// Artifacts in this registry that derive from it directly.
    pub children: Vec<LineageNode>,
}

/// Everything `show` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeneInfo {
    /// The manifest digest.
    pub digest: Digest,
    /// Tags that point at it.
    pub tags: Vec<String>,
    /// The gene card.
    pub card: GeneCard,
    /// The units, in order.
    pub units: Vec<UnitInfo>,
    /// Bytes of the manifest, card and units.
    pub bytes: u64,
    /// Lineage.
    pub lineage: Lineage,
}

fn invalid(digest: &Digest, reason: String) -> crate::Error {
    Error::InvalidManifest {
        digest: digest.clone(),
        reason,
    }
    .into()
}

/// Split a tag `name:version` into its parts.
pub(crate) fn split_tag(tag: &str) -> Option<(&str, semver::Version)> {
    let (name, version) = tag.split_once(':')?;
    Some((name, parse_version(version).ok()?))
}

impl Registry {
    /// Read and check a manifest blob.
    pub fn read_manifest(&self, digest: &Digest) -> crate::Result<ImageManifest> {
        let bytes = store::read_verified(&self.layout, digest, MAX_MANIFEST_SIZE, "manifest")?;
        let m: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(digest, format!("not an OCI image manifest ({e})")))?;
        if m.schema_version != 2 || m.media_type != MANIFEST_MEDIA_TYPE {
            return Err(invalid(digest, "not an OCI image manifest v2".into()));
        }
        Ok(m)
    }

    /// Read and check the gene card of a manifest.
    pub fn read_card(&self, digest: &Digest, m: &ImageManifest) -> crate::Result<GeneCard> {
        if m.config.media_type != GENE_CONFIG_MEDIA_TYPE {
            let reason = format!(
                "config media type is `{}`, not a gene card",
                m.config.media_type
            );
            return Err(invalid(digest, reason));
        }
        let bytes =
            store::read_verified(&self.layout, &m.config.digest, MAX_CARD_SIZE, "gene card")?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(digest, format!("gene card is not JSON ({e})")))?;
        card_from_value(&m.config.digest.to_string(), value).map_err(|e| match e {
            CardError::Schema(e) => e.into(),
            CardError::Parse(reason) => invalid(digest, reason),
        })
    }

    /// A descriptor of a manifest that is present (for `subject`).
    pub(crate) fn manifest_descriptor(&self, digest: &Digest) -> crate::Result<Descriptor> {
        let m = self.read_manifest(digest)?;
        let size = serde_json::to_vec(&m).map(|b| b.len() as u64).unwrap_or(0);
        let size = fs_err::metadata(self.layout.blob(digest)).map_or(size, |m| m.len());
        Ok(Descriptor {
            media_type: MANIFEST_MEDIA_TYPE.into(),
            digest: digest.clone(),
            size,
            artifact_type: m.artifact_type,
            annotations: Default::default(),
        })
    }

    /// Resolve a reference to a manifest.
    pub fn resolve(&self, reference: &Reference) -> crate::Result<Resolved> {
        let idx = index::load(&self.layout)?;
        let not_found = || Error::GeneNotFound {
            reference: reference.to_string(),
            root: self.root().to_path_buf(),
        };
        let digest = match reference {
            Reference::Tag { .. } => {
                let tag = reference.to_string();
                let d = idx
                    .manifests
                    .iter()
                    .find(|d| d.ref_name() == Some(tag.as_str()));
                d.ok_or_else(not_found)?.digest.clone()
            }
            Reference::Latest { name } => {
                let best = idx
                    .manifests
                    .iter()
                    .filter_map(|d| {
                        let (n, v) = split_tag(d.ref_name()?)?;
                        (n == name).then_some((v.pre.is_empty(), v, &d.digest))
                    })
                    .max();
                best.ok_or_else(not_found)?.2.clone()
            }
            Reference::Digest { digest, .. } => {
                if !self.layout.blob(digest).is_file() {
                    return Err(not_found().into());
                }
                digest.clone()
            }
        };
        let size = fs_err::metadata(self.layout.blob(&digest)).map_or(0, |m| m.len());
        let tags = idx
            .manifests
            .iter()
            .filter(|d| d.digest == digest)
            .filter_map(|d| d.ref_name().map(String::from))
            .collect();
        Ok(Resolved { digest, size, tags })
    }

    /// Every tag, sorted by name then version.
    pub fn list(&self) -> crate::Result<Vec<TagEntry>> {
        let idx = index::load(&self.layout)?;
        let mut out = Vec::new();
        for d in &idx.manifests {
            let Some(tag) = d.ref_name() else { continue };
            let m = self.read_manifest(&d.digest)?;
            out.push(TagEntry {
                tag: tag.to_string(),
                digest: d.digest.clone(),
                units: m.layers.len(),
                bytes: m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
            });
        }
        out.sort_by(|a, b| {
            let ka = split_tag(&a.tag).map(|(n, v)| (n.to_string(), v));
            let kb = split_tag(&b.tag).map(|(n, v)| (n.to_string(), v));
            ka.cmp(&kb).then(a.tag.cmp(&b.tag))
        });
        Ok(out)
    }

    /// The card, the tensors of every unit (each unit's digest is checked), sizes and lineage.
    pub fn show(&self, reference: &Reference) -> crate::Result<GeneInfo> {
        let r = self.resolve(reference)?;
        let m = self.read_manifest(&r.digest)?;
        let card = self.read_card(&r.digest, &m)?;
        let mut units = Vec::new();
        for layer in &m.layers {
            store::copy_verified(
                &self.layout,
                &layer.digest,
                Some(layer.size),
                None,
                &mut |_| {},
            )?;
            let st = SafetensorsFile::open(&self.layout.blob(&layer.digest))?;
            let tensors = st
                .tensors()
                .iter()
                .map(|t| TensorSummary {
                    name: t.name.clone(),
                    dtype: t.dtype.to_string(),
                    shape: t.shape.clone(),
                })
                .collect();
            units.push(UnitInfo {
                title: layer.title().unwrap_or_default().to_string(),
                digest: layer.digest.clone(),
                size: layer.size,
                tensors,
            });
        }
        let bytes = r.size + m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
        let lineage = self.lineage(reference)?;
        Ok(GeneInfo {
            digest: r.digest,
            tags: r.tags,
            card,
            units,
            bytes,
            lineage,
        })
    }

    fn node(
        &self,
        digest: &Digest,
        tags: Vec<String>,
    ) -> (LineageNode, Option<GeneCard>, Option<ImageManifest>) {
        let m = self.read_manifest(digest).ok();
        let card = m.as_ref().and_then(|m| self.read_card(digest, m).ok());
        let node = LineageNode {
            digest: digest.clone(),
            tags,
            algorithm: card.as_ref().map(|c| c.algorithm.clone()),
        };
        (node, card, m)
    }

    /// The gene's parents (via `derived_from` and `subject`) and its direct children.
    pub fn lineage(&self, reference: &Reference) -> crate::Result<Lineage> {
        let r = self.resolve(reference)?;
        let idx = index::load(&self.layout)?;
        let tags_of = |d: &Digest| -> Vec<String> {
            idx.manifests
                .iter()
                .filter(|e| &e.digest == d)
                .filter_map(|e| e.ref_name().map(String::from))
                .collect()
        };
        let m = self.read_manifest(&r.digest)?;
        let card = self.read_card(&r.digest, &m)?;
        let gene = LineageNode {
            digest: r.digest.clone(),
            tags: r.tags.clone(),
            algorithm: Some(card.algorithm.clone()),
        };
        let mut ancestor = card.ancestor.clone();
        let mut parents = Vec::new();
        let mut next = card.derived_from.clone().or(m.subject.map(|s| s.digest));
        let mut seen = BTreeSet::from([r.digest.clone()]);
        while let Some(d) = next.take() {
            if !seen.insert(d.clone()) || parents.len() > 64 {
                break;
            }
            let (node, card, m) = self.node(&d, tags_of(&d));
            if let Some(a) = card.as_ref().and_then(|c| c.ancestor.clone()) {
                ancestor = Some(a);
            }
            next = card
                .and_then(|c| c.derived_from)
                .or(m.and_then(|m| m.subject.map(|s| s.digest)));
            parents.push(node);
        }
        let mut children = Vec::new();
        let distinct: BTreeSet<&Digest> = idx.manifests.iter().map(|e| &e.digest).collect();
        for d in distinct {
            let (node, card, m) = self.node(d, tags_of(d));
            let by_card = card.and_then(|c| c.derived_from).as_ref() == Some(&r.digest);
            let by_subject =
                m.and_then(|m| m.subject).map(|s| s.digest).as_ref() == Some(&r.digest);
            if by_card || by_subject {
                children.push(node);
            }
        }
        Ok(Lineage {
            gene,
            ancestor,
            parents,
            children,
        })
    }
}
