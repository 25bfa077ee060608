//! `tag` and `rm`: add and remove `name:version` entries of `index.json`. Tags are immutable:
//! an existing tag is never moved; `rm` removes it and leaves the blobs to `gc`.

use super::error::Error;
use super::manifest::{Descriptor, MANIFEST_MEDIA_TYPE, REF_NAME_ANNOTATION};
use super::query::split_tag;
use super::reference::Reference;
use super::{Registry, index};

impl Registry {
    /// Point the new tag `new` (`name:version`) at the manifest `source` resolves to.
    /// Returns the tag; a tag that already points there is left as it is.
    pub fn tag(&self, source: &Reference, new: &str) -> crate::Result<String> {
        let target = match Reference::parse(new)? {
            t @ Reference::Tag { .. } => t.to_string(),
            _ => {
                return Err(Error::InvalidReference {
                    value: new.to_string(),
                    reason: "a new tag must be `name:version`".into(),
                }
                .into());
            }
        };
        let _writer = index::writer_lock(&self.layout)?;
        let r = self.resolve(source)?;
        let m = self.read_manifest(&r.digest)?;
        let mut entry = Descriptor {
            media_type: MANIFEST_MEDIA_TYPE.into(),
            digest: r.digest.clone(),
            size: r.size,
            artifact_type: m.artifact_type,
            annotations: Default::default(),
        };
        entry
            .annotations
            .insert(REF_NAME_ANNOTATION.into(), target.clone());
        index::update(&self.layout, |idx| {
            match idx.manifests.iter().find(|d| d.ref_name() == Some(&target)) {
                Some(d) if d.digest == r.digest => Ok((false, ())),
                Some(d) => Err(Error::VersionExists {
                    tag: target.clone(),
                    existing: d.digest.clone(),
                    new: r.digest.clone(),
                }
                .into()),
                None => {
                    idx.manifests.push(entry);
                    Ok((true, ()))
                }
            }
        })?;
        Ok(target)
    }

    /// Remove tags: `name:version` removes that tag, `name@sha256:...` every tag of `name` on
    /// that manifest, and `name` its only tag (several versions are ambiguous). Returns the
    /// removed tags. Blobs stay until `gc`.
    pub fn remove(&self, reference: &Reference) -> crate::Result<Vec<String>> {
        let _writer = index::writer_lock(&self.layout)?;
        let not_found = || Error::GeneNotFound {
            reference: reference.to_string(),
            root: self.root().to_path_buf(),
        };
        index::update(&self.layout, |idx| {
            let name = reference.name();
            let matches = |d: &Descriptor| -> bool {
                let Some((n, v)) = d.ref_name().and_then(split_tag) else {
                    return false;
                };
                match reference {
                    Reference::Tag { version, .. } => n == name && &v == version,
                    Reference::Latest { .. } => n == name,
                    Reference::Digest { digest, .. } => n == name && &d.digest == digest,
                }
            };
            let hits: Vec<String> = idx
                .manifests
                .iter()
                .filter(|d| matches(d))
                .filter_map(|d| d.ref_name().map(String::from))
                .collect();
            if hits.is_empty() {
                return Err(not_found().into());
            }
            if matches!(reference, Reference::Latest { .. }) && hits.len() > 1 {
                return Err(Error::AmbiguousReference {
                    reference: reference.to_string(),
                    count: hits.len(),
                    versions: hits.join(", "),
                }
                .into());
            }
            idx.manifests.retain(|d| !matches(d));
            Ok((true, hits))
        })
    }
}
