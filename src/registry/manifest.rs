//! The serde types of the format: the OCI image index, manifest and descriptor, and the gene
//! card (the config blob). These types are the source of truth for `registry/FORMAT.md` and
//! `registry/schema/gene-config.v1.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::digest::Digest;

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// `artifactType` of a gene manifest.
pub const GENE_ARTIFACT_TYPE: &str = "application/vnd.lgreg.gene.v1";
/// Media type of the gene card (config blob).
pub const GENE_CONFIG_MEDIA_TYPE: &str = "application/vnd.lgreg.gene.config.v1+json";
/// Media type of a safetensors unit (layer blob).
pub const TENSORS_MEDIA_TYPE: &str = "application/vnd.lgreg.tensors.v1+safetensors";
/// Annotation naming a layer's file.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// Annotation naming a tag in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The gene card version this build writes and reads.
pub const GENE_SCHEMA_VERSION: u32 = 1;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// The content digest.
    pub digest: Digest,
    /// The content size in bytes.
    pub size: u64,
    /// The artifact type, for manifests of artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The `org.opencontainers.image.title` annotation.
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(TITLE_ANNOTATION).map(String::as_str)
    }

    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(REF_NAME_ANNOTATION)
            .map(String::as_str)
    }
}

/// An OCI image manifest: one gene (or a derived artifact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// Always [`MANIFEST_MEDIA_TYPE`].
    pub media_type: String,
    /// [`GENE_ARTIFACT_TYPE`] for genes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The gene card.
    pub config: Descriptor,
    /// The safetensors units, in order.
    pub layers: Vec<Descriptor>,
    /// The gene this artifact derives from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index: `index.json`, whose entries are the tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// [`INDEX_MEDIA_TYPE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One descriptor per tag.
    pub manifests: Vec<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ImageIndex {
    fn default() -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.into()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// How closely a gene follows its paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fidelity {
    /// Made the way the paper makes it (e.g. trained by distillation).
    Faithful,
    /// Made by a training-free stand-in.
    Approximate,
    /// Made as the paper's text describes it, where no code of the paper is public (Auto
    /// Learngene's condensing step): trained, but the details are lgreg's reading.
    #[serde(rename = "as-described")]
    AsDescribed,
}

impl std::fmt::Display for Fidelity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fidelity::Faithful => "faithful",
            Fidelity::Approximate => "approximate",
            Fidelity::AsDescribed => "as-described",
        })
    }
}

/// The recipe a gene was made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Recipe name, e.g. `tleg-llama`.
    pub name: String,
    /// Recipe version.
    pub version: String,
    /// Resolved parameters.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// `sha256:<hex>` of the recipe file, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The ancestor model a gene was extracted from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ancestor {
    /// Hugging Face Hub repository, e.g. `HuggingFaceTB/SmolLM2-135M`.
    pub repo: String,
    /// The resolved commit.
    pub commit: String,
    /// The sha256 (64 hex digits) of each file read, by file name.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// The model family and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Family {
    /// Family name: `llama`, `vit`, `bert`, ...
    pub name: String,
    /// Hyper-parameters (hidden size, heads, ...).
    #[serde(default)]
    pub hyper_parameters: Map<String, Value>,
}

/// The gene card: the config blob of a gene manifest (`application/vnd.lgreg.gene.config.v1+json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneCard {
    /// The card format version; this build reads and writes 1.
    pub schema_version: u32,
    /// The learngene algorithm: `heur`, `auto`, `pool`, `tleg`, `sws`, ...
    pub algorithm: String,
    /// `faithful`, `approximate`, or `as-described` (auto: trained as the paper's text describes).
    pub fidelity: Fidelity,
    /// The recipe.
    pub recipe: Recipe,
    /// The ancestor, when the gene was extracted from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ancestor: Option<Ancestor>,
    /// The family and its hyper-parameters.
    pub family: Family,
    /// Tensor roles, by tensor name.
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// Fit diagnostics.
    #[serde(default)]
    pub diagnostics: Map<String, Value>,
    /// Metrics.
    #[serde(default)]
    pub metrics: Map<String, Value>,
    /// The lgreg version that made the gene.
    pub lgreg_version: String,
    /// When the gene was made (RFC 3339), set by its maker; publish never invents it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Manifest digest of the gene this artifact derives from (lineage on any registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub derived_from: Option<Digest>,
}

impl GeneCard {
    /// The canonical bytes of the card: compact JSON, object keys sorted at every depth.
    pub fn canonical_bytes(&self) -> serde_json::Result<Vec<u8>> {
        let mut value = serde_json::to_value(self)?;
        sort_keys(&mut value);
        serde_json::to_vec(&value)
    }
}

/// Sort the keys of every object in `value`, so equal cards give equal bytes.
pub fn sort_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut v) in entries {
                sort_keys(&mut v);
                map.insert(k, v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// The JSON Schema of the gene card, as committed in `registry/schema/gene-config.v1.json`.
pub fn gene_card_schema() -> String {
    let schema = schemars::schema_for!(GeneCard);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
