//! Recipes: the defaults of one algorithm on one family, as YAML files in `recipes/`.
//!
//! Every recipe is embedded in the binary ([`EMBEDDED`]); `--recipe FILE` replaces it and
//! `--set key=value` overrides one parameter. Unknown top-level fields are refused here; each
//! algorithm refuses unknown parameters when it parses [`Recipe::params`].

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::registry::Digest;
use crate::registry::manifest::Fidelity;

/// A parsed recipe.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The algorithm it drives (`tleg`, `sws`, `heur`, `auto`, `pool`).
    pub algorithm: String,
    /// The family it is written for (`llama`, `vit`, `bert`).
    pub family: String,
    /// The recipe's own version.
    pub version: String,
    /// The paper the algorithm comes from.
    pub paper: String,
    /// Whether a gene made with this recipe is faithful to the paper.
    pub fidelity: Fidelity,
    /// Where and why the recipe departs from the paper.
    pub deviations: String,
    /// Algorithm parameters.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// `sha256:` of the recipe text (filled in by lgreg).
    #[serde(skip)]
    pub digest: Option<Digest>,
    /// Where it came from (`embedded:<file>` or a path).
    #[serde(skip)]
    pub origin: String,
}

macro_rules! embedded {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../recipes/", $file)))),*]
    };
}

/// Every recipe shipped with lgreg: file name and text.
pub const EMBEDDED: &[(&str, &str)] = embedded!(
    "auto-bert.yaml",
    "auto-llama.yaml",
    "auto-vit.yaml",
    "heur-bert.yaml",
    "heur-llama.yaml",
    "heur-vit.yaml",
    "pool-bert.yaml",
    "pool-llama.yaml",
    "pool-vit.yaml",
    "sws-bert.yaml",
    "sws-llama.yaml",
    "sws-vit.yaml",
    "tleg-bert.yaml",
    "tleg-llama.yaml",
    "tleg-vit.yaml",
);

fn recipe_error(origin: &str, reason: impl Into<String>) -> Error {
    Error::Recipe {
        origin: origin.to_string(),
        reason: reason.into(),
    }
}

impl Recipe {
    /// Parse recipe text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Recipe> {
        let mut recipe: Recipe =
            serde_saphyr::from_str(text).map_err(|e| recipe_error(origin, e.to_string()))?;
        recipe.digest = Some(Digest::of(text.as_bytes()));
        recipe.origin = origin.to_string();
        Ok(recipe)
    }

    /// The embedded recipe of `algorithm` on `family`.
    pub fn embedded(algorithm: &str, family: &str) -> Result<Recipe> {
        let file = format!("{algorithm}-{family}.yaml");
        let origin = format!("embedded:{file}");
        let (_, text) = EMBEDDED
            .iter()
            .find(|(name, _)| *name == file)
            .ok_or_else(|| recipe_error(&origin, "lgreg ships no such recipe"))?;
        Recipe::parse(text, &origin)
    }

    /// Read a recipe file.
    pub fn from_file(path: &Path) -> Result<Recipe> {
        let meta = fs_err::metadata(path)?;
        if meta.len() > 1 << 20 {
            return Err(recipe_error(
                &path.display().to_string(),
                format!("it has {} bytes; a recipe is at most 1 MiB", meta.len()),
            ));
        }
        let text = fs_err::read_to_string(path)?;
        Recipe::parse(&text, &path.display().to_string())
    }

    /// The recipe to use: `file` when given, else the embedded one; then `sets` applied.
    /// Checks that it is written for `algorithm` and `family`.
    pub fn resolve(
        algorithm: &str,
        family: &str,
        file: Option<&PathBuf>,
        sets: &[String],
    ) -> Result<Recipe> {
        let mut recipe = match file {
            Some(path) => Recipe::from_file(path)?,
            None => Recipe::embedded(algorithm, family)?,
        };
        if recipe.algorithm != algorithm || recipe.family != family {
            return Err(recipe_error(
                &recipe.origin,
                format!(
                    "it is written for `{}` on `{}`, but `{algorithm}` on `{family}` was asked for",
                    recipe.algorithm, recipe.family
                ),
            ));
        }
        for set in sets {
            recipe.set(set)?;
        }
        Ok(recipe)
    }

    /// Apply one `key=value` override; the value is read as a YAML scalar or list.
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let Some((key, raw)) = assignment.split_once('=') else {
            return Err(Error::InvalidValue {
                what: "--set".into(),
                value: assignment.to_string(),
                reason: "expected `key=value`".into(),
            });
        };
        let key = key.trim();
        let value: Value =
            serde_saphyr::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        self.params.insert(key.to_string(), value);
        Ok(())
    }

    /// The recipe's name: `<algorithm>-<family>`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.algorithm, self.family)
    }

    /// Parse the parameters into an algorithm's typed parameter struct, refusing unknown keys.
    pub fn typed<P: serde::de::DeserializeOwned>(&self) -> Result<P> {
        serde_json::from_value(Value::Object(self.params.clone()))
            .map_err(|e| recipe_error(&self.origin, format!("invalid `params`: {e}")))
    }

    /// The card's record of this recipe.
    pub fn card_entry(&self) -> crate::registry::manifest::Recipe {
        crate::registry::manifest::Recipe {
            name: self.name(),
            version: self.version.clone(),
            params: self.params.clone(),
            digest: self.digest.as_ref().map(ToString::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_recipe_parses_and_names_itself() {
        for (file, text) in EMBEDDED {
            let r = Recipe::parse(text, file).expect(file);
            assert_eq!(format!("{}.yaml", r.name()), *file);
            assert!(r.paper.starts_with("https://arxiv.org/abs/"), "{file}");
        }
    }

    #[test]
    fn every_recipe_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let mut files: Vec<String> = fs_err::read_dir(&dir)
            .expect("recipes/")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        files.sort();
        let embedded: Vec<&str> = EMBEDDED.iter().map(|(f, _)| *f).collect();
        assert_eq!(files, embedded);
    }

    #[test]
    fn unknown_fields_and_bad_sets_are_refused() {
        let text = "algorithm: tleg\nfamily: llama\nversion: '1'\npaper: x\nfidelity: approximate\ndeviations: none\ncolour: blue\n";
        let err = Recipe::parse(text, "r.yaml").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        let mut r = Recipe::embedded("tleg", "llama").expect("embedded");
        assert!(r.set("align").is_err());
        r.set("align=true").expect("set");
        assert_eq!(r.params["align"], Value::Bool(true));
    }
}
