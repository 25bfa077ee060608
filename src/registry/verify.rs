//! `verify`: re-hash every blob, then check every tag's manifest, card and units. Every
//! problem is reported; nothing is changed. Temp files under `.lgreg/tmp` are not blobs and
//! are not checked.

use std::collections::{BTreeMap, BTreeSet};

use super::digest::Digest;
use super::manifest::{GENE_CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, TENSORS_MEDIA_TYPE};
use super::query::split_tag;
use super::{Registry, index, store};
use crate::gene::check_unit_name;
use crate::progress::{Event, Reporter};

/// One problem `verify` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// The digest, tag or path at fault.
    pub subject: String,
    /// What is wrong.
    pub message: String,
}

/// What `verify` checked and found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub blobs: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Tags checked.
    pub tags: usize,
    /// Every problem.
    pub problems: Vec<Problem>,
}

impl Registry {
    /// Check the whole registry.
    pub fn verify(&self, reporter: &dyn Reporter) -> crate::Result<VerifyReport> {
        let l = &self.layout;
        let mut problems = Vec::new();
        let mut report =
            |subject: String, message: String| problems.push(Problem { subject, message });
        let mut blobs = BTreeMap::new();
        for entry in fs_err::read_dir(l.blobs_dir())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match Digest::from_hex(&name) {
                Ok(d) => {
                    blobs.insert(d, entry.metadata()?.len());
                }
                Err(_) => report(
                    entry.path().display().to_string(),
                    "unexpected file in `blobs/sha256` (not a sha256 hex name)".into(),
                ),
            }
        }
        reporter.report(Event::Start {
            task: "verify".into(),
            total: blobs.values().sum(),
        });
        let mut bad = BTreeSet::new();
        let mut bytes = 0;
        for (digest, size) in &blobs {
            let mut progress = |n| {
                reporter.report(Event::Advance {
                    amount: n,
                    item: None,
                })
            };
            match store::copy_verified(l, digest, Some(*size), None, &mut progress) {
                Ok(n) => bytes += n,
                Err(e) => {
                    bad.insert(digest.clone());
                    report(digest.to_string(), e.to_string());
                }
            }
        }
        let idx = match index::load(l) {
            Ok(idx) => idx,
            Err(e) => {
                report(l.index().display().to_string(), e.to_string());
                reporter.report(Event::Finish);
                return Ok(VerifyReport {
                    blobs: blobs.len(),
                    bytes,
                    tags: 0,
                    problems,
                });
            }
        };
        let check_ref = |tag: &str,
                         what: String,
                         d: &Digest,
                         size: u64,
                         report: &mut dyn FnMut(String, String)| {
            match blobs.get(d) {
                None => report(d.to_string(), format!("{what} of `{tag}` is missing")),
                Some(s) if *s != size => report(
                    d.to_string(),
                    format!("{what} of `{tag}` has {s} bytes, its descriptor says {size}"),
                ),
                Some(_) if bad.contains(d) => {
                    report(d.to_string(), format!("{what} of `{tag}` is corrupt"))
                }
                Some(_) => {}
            }
        };
        for entry in &idx.manifests {
            let tag = entry.ref_name().unwrap_or("(untagged)").to_string();
            if entry.ref_name().and_then(split_tag).is_none() {
                report(
                    tag.clone(),
                    "tag is not `name:version` with a semver version".into(),
                );
            }
            if entry.media_type != MANIFEST_MEDIA_TYPE {
                report(
                    tag.clone(),
                    format!("media type `{}` is not an image manifest", entry.media_type),
                );
            }
            check_ref(
                &tag,
                "manifest".into(),
                &entry.digest,
                entry.size,
                &mut report,
            );
            let mut todo = vec![entry.digest.clone()];
            let mut seen = BTreeSet::new();
            while let Some(d) = todo.pop() {
                if !seen.insert(d.clone()) || !blobs.contains_key(&d) || bad.contains(&d) {
                    continue;
                }
                let m = match self.read_manifest(&d) {
                    Ok(m) => m,
                    Err(e) => {
                        report(d.to_string(), e.to_string());
                        continue;
                    }
                };
                check_ref(
                    &tag,
                    "gene card".into(),
                    &m.config.digest,
                    m.config.size,
                    &mut report,
                );
                if m.config.media_type == GENE_CONFIG_MEDIA_TYPE
                    && blobs.contains_key(&m.config.digest)
                    && !bad.contains(&m.config.digest)
                    && let Err(e) = self.read_card(&d, &m)
                {
                    report(m.config.digest.to_string(), e.to_string());
                }
                for layer in &m.layers {
                    let title = layer.title().unwrap_or_default();
                    if let Err(reason) = check_unit_name(title) {
                        report(layer.digest.to_string(), reason);
                    }
                    if layer.media_type != TENSORS_MEDIA_TYPE {
                        report(
                            layer.digest.to_string(),
                            format!("unit `{title}` has media type `{}`", layer.media_type),
                        );
                    }
                    check_ref(
                        &tag,
                        format!("unit `{title}`"),
                        &layer.digest,
                        layer.size,
                        &mut report,
                    );
                }
                if let Some(s) = &m.subject {
                    check_ref(&tag, "subject".into(), &s.digest, s.size, &mut report);
                    todo.push(s.digest.clone());
                }
            }
        }
        reporter.report(Event::Finish);
        Ok(VerifyReport {
            blobs: blobs.len(),
            bytes,
            tags: idx.manifests.len(),
            problems,
        })
    }
}
