//! A gene as plain files: `gene.json` (the gene card plus the ordered list of `units`) and one
//! `<unit>.safetensors` per unit. `lgreg export` writes this shape and `lgreg publish` reads it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkpoint::safetensors::SafetensorsFile;
use crate::error::Result;
use crate::registry::Error as RegError;
use crate::registry::manifest::{GENE_SCHEMA_VERSION, GeneCard};

/// The card file of a gene directory.
pub const GENE_JSON: &str = "gene.json";

/// Largest `gene.json` lgreg reads.
pub const MAX_GENE_JSON: u64 = 16 << 20;

/// A validated gene directory.
#[derive(Debug, Clone)]
pub struct GeneDir {
    /// The directory.
    pub path: PathBuf,
    /// The gene card (becomes the config blob).
    pub card: GeneCard,
    /// The unit file names, in order (become the layers and their titles).
    pub units: Vec<String>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> RegError {
    RegError::InvalidGeneDir {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl GeneDir {
    /// Read `gene.json`, and check that every unit is a plain name and a valid safetensors file.
    pub fn read(path: &Path) -> Result<GeneDir> {
        if !path.is_dir() {
            return Err(invalid(path, "it is not a directory").into());
        }
        let json = path.join(GENE_JSON);
        let Ok(meta) = fs_err::metadata(&json) else {
            return Err(RegError::GeneJsonMissing {
                path: path.to_path_buf(),
            }
            .into());
        };
        if meta.len() > MAX_GENE_JSON {
            let reason = format!("it has {} bytes, over {MAX_GENE_JSON}", meta.len());
            return Err(invalid(&json, reason).into());
        }
        let text = fs_err::read(&json)?;
        let value: Value = serde_json::from_slice(&text)
            .map_err(|e| invalid(&json, format!("it is not JSON ({e})")))?;
        let (card, units) = split(&json, value)?;
        for unit in &units {
            check_unit_name(unit).map_err(|reason| invalid(&json, reason))?;
            let file = path.join(unit);
            if !file.is_file() {
                return Err(invalid(&file, "unit listed in `units` is missing").into());
            }
            SafetensorsFile::open(&file)?;
        }
        Ok(GeneDir {
            path: path.to_path_buf(),
            card,
            units,
        })
    }

    /// The file of one unit.
    pub fn unit_path(&self, unit: &str) -> PathBuf {
        self.path.join(unit)
    }
}

/// Split a parsed `gene.json` into the card and the unit list.
fn split(json: &Path, value: Value) -> Result<(GeneCard, Vec<String>)> {
    let Value::Object(mut map) = value else {
        return Err(invalid(json, "it is not a JSON object").into());
    };
    let units: Vec<String> = match map.remove("units") {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| invalid(json, format!("`units` is not a list of file names ({e})")))?,
        None => return Err(invalid(json, "`units` is missing").into()),
    };
    if units.is_empty() {
        return Err(invalid(json, "`units` is empty; a gene has at least one unit").into());
    }
    let mut sorted = units.clone();
    sorted.sort();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(json, format!("unit `{}` is listed twice", w[0])).into());
    }
    let card =
        card_from_value(&json.display().to_string(), Value::Object(map)).map_err(|e| match e {
            CardError::Schema(e) => e.into(),
            CardError::Parse(reason) => crate::Error::from(invalid(json, reason)),
        })?;
    Ok((card, units))
}

/// Why a card could not be read.
#[derive(Debug)]
pub enum CardError {
    /// A `schema_version` this build does not read.
    Schema(RegError),
    /// Any other problem, described.
    Parse(String),
}

/// Parse a gene card, refusing unknown `schema_version`s first (with an upgrade hint).
pub fn card_from_value(what: &str, mut value: Value) -> std::result::Result<GeneCard, CardError> {
    let Some(map) = value.as_object_mut() else {
        return Err(CardError::Parse(
            "the gene card is not a JSON object".into(),
        ));
    };
    match map.get("schema_version").map(Value::as_u64) {
        None => return Err(CardError::Parse("`schema_version` is missing".into())),
        Some(Some(v)) if v == u64::from(GENE_SCHEMA_VERSION) => {}
        Some(Some(found)) => {
            return Err(CardError::Schema(RegError::UnsupportedSchemaVersion {
                what: what.to_string(),
                found,
                supported: GENE_SCHEMA_VERSION,
            }));
        }
        Some(None) => return Err(CardError::Parse("`schema_version` is not a number".into())),
    }
    map.entry("lgreg_version")
        .or_insert_with(|| Value::String(env!("CARGO_PKG_VERSION").into()));
    serde_json::from_value(value).map_err(|e| CardError::Parse(format!("invalid gene card ({e})")))
}

/// The bytes of `gene.json` for a card and its units (pretty, keys sorted, `units` last).
pub fn gene_json_bytes(card: &GeneCard, units: &[String]) -> Result<Vec<u8>> {
    let mut value = serde_json::to_value(card)?;
    crate::registry::manifest::sort_keys(&mut value);
    if let Value::Object(map) = &mut value {
        map.insert("units".into(), serde_json::to_value(units)?);
    }
    let mut bytes = serde_json::to_vec_pretty(&value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Whether `name` is a plain file name: ASCII letters, digits, `.`, `_`, `-`, not starting with
/// `.`, without `..`, at most 200 characters (so never a path).
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A unit file name must be a plain `<name>.safetensors`: ASCII letters, digits, `.`, `_`, `-`,
/// not starting with `.`, without `..`, at most 200 characters.
pub fn check_unit_name(name: &str) -> std::result::Result<(), String> {
    if is_plain_file_name(name)
        && name.len() > ".safetensors".len()
        && name.ends_with(".safetensors")
    {
        Ok(())
    } else {
        Err(format!(
            "unit name `{}` is not a plain `<name>.safetensors` file name (letters, digits, `.`, `_`, `-`; no leading `.`, no `..`, no `/`)",
            name.escape_default()
        ))
    }
}

/// A side file carried by a gene (tokenizer, generation config) must have a plain file name,
/// as [`check_unit_name`] describes, so that unpacking it never leaves its directory.
pub fn check_side_file_name(name: &str) -> std::result::Result<(), String> {
    if is_plain_file_name(name) {
        Ok(())
    } else {
        Err(format!(
            "side file name `{}` is not a plain file name (letters, digits, `.`, `_`, `-`; no leading `.`, no `..`, no `/`)",
            name.escape_default()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{check_side_file_name, check_unit_name};

    #[test]
    fn unit_names_are_plain() {
        assert!(check_unit_name("blocks.0.safetensors").is_ok());
        for bad in [
            "../x.safetensors",
            "a/b.safetensors",
            ".hidden.safetensors",
            "x.bin",
            ".safetensors",
            "a b.safetensors",
        ] {
            assert!(check_unit_name(bad).is_err(), "{bad}");
        }
        assert!(check_side_file_name("tokenizer.json").is_ok());
        for bad in ["../tokenizer.json", "a/b", ".env", "x\\y", ""] {
            assert!(check_side_file_name(bad).is_err(), "{bad}");
        }
    }
}
