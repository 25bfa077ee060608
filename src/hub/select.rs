//! Which repo files a pull fetches.
//!
//! By default, what lgreg reads: `config.json`, `generation_config.json`, the tokenizer files,
//! and the top-level weights with their index: the safetensors files when there are any, else the
//! PyTorch pickles (`.bin`, `.pth`, `.pt`). `--include` globs replace that default set,
//! `--all` takes every file, and `--exclude` globs then remove files from whichever set was
//! chosen. Globs match the whole repo path (`*` does not cross `/`).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Small files lgreg reads next to the weights.
const ALWAYS: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
];

/// The choice of files, as the user gave it.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Globs that replace the default set.
    pub include: Vec<String>,
    /// Globs removed from the chosen set.
    pub exclude: Vec<String>,
    /// Take every file.
    pub all: bool,
}

impl Selection {
    /// The repo files to fetch, in repo order.
    pub fn pick<'a>(&self, files: &'a [String]) -> Result<Vec<&'a str>> {
        let include = globs("--include", &self.include)?;
        let exclude = globs("--exclude", &self.exclude)?;
        let chosen: Vec<&str> = if self.all {
            files.iter().map(String::as_str).collect()
        } else if !self.include.is_empty() {
            files
                .iter()
                .map(String::as_str)
                .filter(|f| include.is_match(f))
                .collect()
        } else {
            default_set(files)
        };
        Ok(chosen
            .into_iter()
            .filter(|f| !exclude.is_match(f))
            .collect())
    }
}

fn globs(flag: &str, patterns: &[String]) -> Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob: Glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::InvalidValue {
                what: flag.into(),
                value: p.clone(),
                reason: e.to_string(),
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| Error::InvalidValue {
        what: flag.into(),
        value: patterns.join(" "),
        reason: e.to_string(),
    })
}

fn default_set(files: &[String]) -> Vec<&str> {
    let top = |f: &&str| !f.contains('/');
    let has_safetensors = files
        .iter()
        .any(|f| !f.contains('/') && f.ends_with(".safetensors"));
    files
        .iter()
        .map(String::as_str)
        .filter(top)
        .filter(|f| {
            ALWAYS.contains(f)
                || if has_safetensors {
                    f.ends_with(".safetensors") || *f == "model.safetensors.index.json"
                } else {
                    f.ends_with(".bin")
                        || f.ends_with(".pth")
                        || f.ends_with(".pt")
                        || f.ends_with(".bin.index.json")
                }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_prefers_safetensors_and_skips_subfolders() {
        let files = names(&[
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "onnx/model.onnx",
            "1_Pooling/config.json",
            "tokenizer.json",
            "README.md",
        ]);
        let got = Selection::default().pick(&files).unwrap();
        assert_eq!(got, ["config.json", "model.safetensors", "tokenizer.json"]);
    }

    #[test]
    fn pickles_when_no_safetensors() {
        let files = names(&[
            "config.json",
            "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin",
            "pytorch_model.bin.index.json",
        ]);
        assert_eq!(Selection::default().pick(&files).unwrap().len(), 4);
    }

    #[test]
    fn include_replaces_exclude_removes_all_takes_everything() {
        let files = names(&[
            "config.json",
            "model.safetensors",
            "onnx/model.onnx",
            "README.md",
        ]);
        let sel = Selection {
            include: vec!["*.json".into(), "onnx/*".into()],
            ..Default::default()
        };
        assert_eq!(
            sel.pick(&files).unwrap(),
            ["config.json", "onnx/model.onnx"]
        );
        let sel = Selection {
            all: true,
            exclude: vec!["*.md".into()],
            ..Default::default()
        };
        assert_eq!(sel.pick(&files).unwrap().len(), 3);
        let bad = Selection {
            include: vec!["[".into()],
            ..Default::default()
        };
        assert!(bad.pick(&files).is_err());
    }
}
