//! `publish`: a gene directory becomes blobs, a manifest and a tag.
//!
//! Order: validate everything (name, version, `gene.json`, every unit) before writing; stream
//! each unit into a temp file with a running hash; compute the manifest digest; refuse a tag
//! that exists with other content (the temp files vanish, nothing changed); rename the blobs
//! into place; write the card and manifest blobs; then tag under the index lock. A unit whose
//! title and size match a unit of another version of the same gene is hashed first without
//! writing, so re-publishing identical content only reads it.

use std::collections::HashMap;
use std::path::Path;

use super::digest::Digest;
use super::error::Error;
use super::manifest::{
    Descriptor, GENE_ARTIFACT_TYPE, GENE_CONFIG_MEDIA_TYPE, ImageManifest, MANIFEST_MEDIA_TYPE,
    REF_NAME_ANNOTATION, TENSORS_MEDIA_TYPE, TITLE_ANNOTATION,
};
use super::reference::Reference;
use super::store::StagedBlob;
use super::{Registry, index, store};
use crate::gene::GeneDir;
use crate::progress::{Event, Reporter};

/// What `publish` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    /// `name:version`.
    pub reference: String,
    /// The manifest digest (the gene's identity).
    pub digest: Digest,
    /// Number of units.
    pub units: usize,
    /// Bytes of all units.
    pub bytes: u64,
    /// Bytes of units newly stored (the rest were already present).
    pub new_bytes: u64,
    /// The tag already pointed at identical content; nothing was written.
    pub unchanged: bool,
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        artifact_type: None,
        annotations: Default::default(),
    }
}

impl Registry {
    /// Publish the gene in `dir` as `name:version`.
    pub fn publish(
        &self,
        dir: &Path,
        name: &str,
        version: &str,
        reporter: &dyn Reporter,
    ) -> crate::Result<Published> {
        let tag = Reference::tag(name, version)?.to_string();
        let gene = GeneDir::read(dir)?;
        let subject = match &gene.card.derived_from {
            Some(d) => Some(self.manifest_descriptor(d)?),
            None => None,
        };
        let config = gene.card.canonical_bytes()?;
        let layout = &self.layout;
        let _writer = index::writer_lock(layout)?;
        store::clean_tmp(layout)?;
        let existing = self.tag_digest(&tag)?;
        let hints = self.unit_hints(name);

        let mut total = 0;
        let mut sizes = Vec::with_capacity(gene.units.len());
        for unit in &gene.units {
            let size = fs_err::metadata(gene.unit_path(unit))?.len();
            sizes.push(size);
            total += size;
        }
        reporter.report(Event::Start {
            task: "publish".into(),
            total,
        });
        // Units are hashed (and staged) on a few threads at once; each is one stream.
        let work = |unit: &String, size: u64| -> crate::Result<(Descriptor, Option<StagedBlob>)> {
            let path = gene.unit_path(unit);
            let mut progress = |n| {
                reporter.report(Event::Advance {
                    amount: n,
                    item: Some(unit.clone()),
                })
            };
            let mut found = None;
            if let Some(hint) = hints.get(&(unit.clone(), size))
                && store::has_blob(layout, hint, size)
            {
                let (digest, n) = store::hash_file(&path, &mut progress)?;
                if &digest == hint && n == size {
                    found = Some((digest, n));
                }
            }
            let (digest, n, blob) = match found {
                Some((d, n)) => (d, n, None),
                None => {
                    let mut file = fs_err::File::open(&path)?;
                    let blob = store::stage(layout, &mut file, &mut progress)?;
                    (blob.digest.clone(), blob.size, Some(blob))
                }
            };
            let mut layer = descriptor(TENSORS_MEDIA_TYPE, digest, n);
            layer
                .annotations
                .insert(TITLE_ANNOTATION.into(), unit.clone());
            Ok((layer, blob))
        };
        let results = parallel_map(&gene.units, &sizes, &work);
        let mut layers = Vec::new();
        let mut staged = Vec::new();
        for r in results {
            let (layer, blob) = r?;
            layers.push(layer);
            staged.extend(blob);
        }
        let (config_digest, config_size) = (Digest::of(&config), config.len() as u64);
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.into(),
            artifact_type: Some(GENE_ARTIFACT_TYPE.into()),
            config: descriptor(GENE_CONFIG_MEDIA_TYPE, config_digest, config_size),
            layers,
            subject,
            annotations: Default::default(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let digest = Digest::of(&manifest_bytes);
        let mut published = Published {
            reference: tag.clone(),
            digest: digest.clone(),
            units: gene.units.len(),
            bytes: total,
            new_bytes: 0,
            unchanged: false,
        };
        if let Some(existing) = existing {
            if existing == digest && store::has_blob(layout, &digest, manifest_bytes.len() as u64) {
                published.unchanged = true;
                reporter.report(Event::Finish);
                return Ok(published);
            }
            if existing != digest {
                return Err(Error::VersionExists {
                    tag,
                    existing,
                    new: digest,
                }
                .into());
            }
        }
        let mut new_bytes = 0;
        for blob in staged {
            let present = store::has_blob(layout, &blob.digest, blob.size);
            let (_, n) = blob.commit()?;
            if !present {
                new_bytes += n;
            }
        }
        store::sync_blobs(layout)?;
        store::put_bytes(layout, &config)?;
        let (_, manifest_size) = store::put_bytes(layout, &manifest_bytes)?;
        let mut entry = descriptor(MANIFEST_MEDIA_TYPE, digest.clone(), manifest_size);
        entry.artifact_type = Some(GENE_ARTIFACT_TYPE.into());
        entry
            .annotations
            .insert(REF_NAME_ANNOTATION.into(), tag.clone());
        index::update(layout, |idx| {
            match idx
                .manifests
                .iter()
                .find(|d| d.ref_name() == Some(tag.as_str()))
            {
                Some(d) if d.digest == digest => Ok((false, ())),
                Some(d) => Err(Error::VersionExists {
                    tag: tag.clone(),
                    existing: d.digest.clone(),
                    new: digest.clone(),
                }
                .into()),
                None => {
                    idx.manifests.push(entry);
                    Ok((true, ()))
                }
            }
        })?;
        published.new_bytes = new_bytes;
        reporter.report(Event::Finish);
        Ok(published)
    }

    /// The digest a tag points at, if it exists.
    pub(crate) fn tag_digest(&self, tag: &str) -> crate::Result<Option<Digest>> {
        let idx = index::load(&self.layout)?;
        Ok(idx
            .manifests
            .iter()
            .find(|d| d.ref_name() == Some(tag))
            .map(|d| d.digest.clone()))
    }

    /// `(title, size) -> digest` of the units of every tagged version of `name`, to recognise
    /// unchanged units without writing them. Unreadable manifests are skipped.
    fn unit_hints(&self, name: &str) -> HashMap<(String, u64), Digest> {
        let mut hints = HashMap::new();
        let Ok(idx) = index::load(&self.layout) else {
            return hints;
        };
        let prefix = format!("{name}:");
        for entry in &idx.manifests {
            if !entry.ref_name().is_some_and(|r| r.starts_with(&prefix)) {
                continue;
            }
            let Ok(m) = self.read_manifest(&entry.digest) else {
                continue;
            };
            for layer in m.layers {
                if let Some(title) = layer.title() {
                    hints.insert((title.to_string(), layer.size), layer.digest.clone());
                }
            }
        }
        hints
    }
}

/// Threads used to hash units at once.
const MAX_THREADS: usize = 4;

/// Apply `f` to every `(unit, size)` on up to [`MAX_THREADS`] threads; results keep the order.
fn parallel_map<T: Send>(
    units: &[String],
    sizes: &[u64],
    f: &(dyn Fn(&String, u64) -> T + Sync),
) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(units.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<T>>> =
        units.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (Some(unit), Some(size)) = (units.get(i), sizes.get(i)) else {
                        break;
                    };
                    let out = f(unit, *size);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(out);
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}
