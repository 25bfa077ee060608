//! Typed errors of the registry, wrapped by [`crate::Error::Registry`].
//!
//! Messages follow the crate style: lowercase, no trailing period, values in backticks, and the
//! path or digest that is at fault.

use std::path::PathBuf;

use super::digest::Digest;

/// Every way a registry operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry directory does not exist (read verbs never create it).
    #[error("no registry at `{path}`")]
    RegistryMissing {
        /// The registry root.
        path: PathBuf,
    },

    /// The directory exists but is not an OCI image layout that lgreg can use.
    #[error("`{path}` is not an OCI image layout: {reason}")]
    NotALayout {
        /// The registry root.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },

    /// `index.json` is unreadable, truncated or not an OCI image index.
    #[error("`{path}` is corrupt: {reason}")]
    IndexCorrupt {
        /// The index file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },

    /// A string is not a `sha256:<64 lowercase hex>` digest.
    #[error("invalid digest `{value}`: {reason}")]
    InvalidDigest {
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// A gene reference does not parse.
    #[error("invalid reference `{value}`: {reason}")]
    InvalidReference {
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// A gene name breaks the repository-name grammar.
    #[error("invalid gene name `{value}`: {reason}")]
    InvalidName {
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// A version is not semver or not a valid OCI tag.
    #[error("invalid version `{value}`: {reason}")]
    InvalidVersion {
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// No tag or manifest matches the reference.
    #[error("gene `{reference}` is not in the registry at `{root}`")]
    GeneNotFound {
        /// The reference that was looked up.
        reference: String,
        /// The registry root.
        root: PathBuf,
    },

    /// `name` alone was given where a single tag is needed.
    #[error("reference `{reference}` is ambiguous: it names {count} versions ({versions})")]
    AmbiguousReference {
        /// The reference given.
        reference: String,
        /// How many tags match.
        count: usize,
        /// The matching versions.
        versions: String,
    },

    /// A tag exists and points at other content; versions are immutable.
    #[error("`{tag}` already exists with other content (`{existing}`, new `{new}`)")]
    VersionExists {
        /// The tag, `name:version`.
        tag: String,
        /// What it points at.
        existing: Digest,
        /// What the new content hashes to.
        new: Digest,
    },

    /// A blob's bytes do not hash to its digest.
    #[error("blob `{digest}` is corrupt: its bytes hash to `{actual}` (path: `{path}`)")]
    DigestMismatch {
        /// The expected digest.
        digest: Digest,
        /// What the bytes hash to.
        actual: Digest,
        /// The blob file.
        path: PathBuf,
    },

    /// A blob has the wrong number of bytes.
    #[error("blob `{digest}` has {actual} bytes, expected {expected} (path: `{path}`)")]
    SizeMismatch {
        /// The blob's digest.
        digest: Digest,
        /// The size its descriptor states.
        expected: u64,
        /// The size on disk.
        actual: u64,
        /// The blob file.
        path: PathBuf,
    },

    /// A referenced blob is not on disk.
    #[error("blob `{digest}` is missing (expected at `{path}`)")]
    BlobMissing {
        /// The blob's digest.
        digest: Digest,
        /// Where it should be.
        path: PathBuf,
    },

    /// A blob is larger than lgreg reads into memory.
    #[error("blob `{digest}` has {size} bytes, over the {limit}-byte limit for a {what}")]
    BlobTooLarge {
        /// The blob's digest.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
        /// What it was read as.
        what: &'static str,
    },

    /// A manifest or gene card does not parse or breaks the format.
    #[error("manifest `{digest}` is invalid: {reason}")]
    InvalidManifest {
        /// The manifest digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },

    /// A gene directory lacks `gene.json`.
    #[error("`{path}` is not a gene directory: `gene.json` is missing")]
    GeneJsonMissing {
        /// The directory.
        path: PathBuf,
    },

    /// A gene directory is malformed.
    #[error("gene directory `{path}`: {reason}")]
    InvalidGeneDir {
        /// The offending file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A gene card carries a `schema_version` this build does not read.
    #[error("`{what}` has `schema_version` {found}; this lgreg reads version {supported}")]
    UnsupportedSchemaVersion {
        /// The file or digest.
        what: String,
        /// The version found.
        found: u64,
        /// The version this build supports.
        supported: u32,
    },
}

impl Error {
    /// A one-line suggestion of how to fix the problem, when there is one.
    pub fn hint(&self) -> Option<String> {
        let h = match self {
            Error::RegistryMissing { .. } => {
                "publish a gene first with `lgreg publish DIR --name N --version V`, or pass `--registry DIR`"
            }
            Error::NotALayout { .. } => {
                "pass `--registry` an lgreg registry, or a missing or empty directory to create one there"
            }
            Error::IndexCorrupt { .. } => {
                "restore `index.json` from a backup; the blobs are untouched, and `lgreg verify` lists them"
            }
            Error::InvalidDigest { .. } => {
                "a digest is `sha256:` followed by 64 lowercase hex digits"
            }
            Error::InvalidReference { .. } => {
                "a reference is `name:version`, `name` (the highest version) or `name@sha256:<hex>`"
            }
            Error::InvalidName { .. } => {
                "gene names are lowercase letters and digits, separated by single `.`, `_` or `-`"
            }
            Error::InvalidVersion { .. } => {
                "versions are semver without build metadata, e.g. `0.1.0` or `1.2.0-rc.1`"
            }
            Error::GeneNotFound { .. } => "run `lgreg ls` to see the genes in this registry",
            Error::AmbiguousReference { .. } => "name one version: `name:version`",
            Error::VersionExists { .. } => {
                "published versions are immutable: publish under a new version"
            }
            Error::DigestMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::BlobMissing { .. } => {
                "run `lgreg verify` to list every damaged blob, then re-publish the genes that use it"
            }
            Error::GeneJsonMissing { .. } | Error::InvalidGeneDir { .. } => {
                "a gene directory holds `gene.json` and one `<unit>.safetensors` per unit, as `lgreg export` writes it"
            }
            Error::UnsupportedSchemaVersion { .. } => "upgrade lgreg to read this gene",
            _ => return None,
        };
        Some(h.to_string())
    }
}
