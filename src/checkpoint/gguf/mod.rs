//! GGUF v2/v3 reader: llama.cpp checkpoints served under Hugging Face names as f32.
//!
//! [`GgufFile::open`] maps the file, parses and validates the header and tensor table
//! ([`parse`]), and maps every llama.cpp tensor name to its HF name. [`TensorSource::read`]
//! then dequantises one tensor at a time and undoes llama.cpp's q/k RoPE permutation, so
//! the whole model is never held in memory. [`GgufFile::hf_config`] and
//! [`GgufFile::tokenizer_json`] rebuild `config.json` and `tokenizer.json` from the metadata.

mod dequant;
mod llama;
pub mod parse;
mod tokenizer;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::mmap::Mapped;
use super::{DType, TensorInfo, TensorSource};
use crate::error::{Error, Result};
use llama::Fixup;
use parse::{Parsed, Value};

/// A GGUF file whose tensors are served under HF names, dequantised to f32.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Mapped,
    parsed: Parsed,
    /// Sorted by name.
    infos: Vec<TensorInfo>,
    /// For each entry of `infos`: the index into `parsed.tensors` and the fix-up to apply.
    sources: Sources,
}

impl GgufFile {
    /// Open and validate a GGUF file.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let map = Mapped::open(path)?;
        let bad = |reason: String| Error::Gguf {
            path: path.to_path_buf(),
            reason,
        };
        let parsed = parse::parse(map.bytes()).map_err(bad)?;
        let (infos, sources) = hf_tensors(&parsed).map_err(bad)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            parsed,
            infos,
            sources,
        })
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.parsed.version
    }

    /// A metadata value by key (`general.architecture`, `llama.block_count`, ...).
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.parsed.get(key)
    }

    /// A Hugging Face `config.json` derived from the GGUF metadata.
    pub fn hf_config(&self) -> Result<serde_json::Value> {
        llama::hf_config(&self.parsed).map_err(|reason| self.error(reason))
    }

    /// A `tokenizer.json` built from the tokenizer the GGUF carries, if any.
    ///
    /// `None` when the file has no tokenizer or one lgreg cannot rebuild exactly.
    pub fn tokenizer_json(&self) -> Result<Option<Vec<u8>>> {
        let doc = tokenizer::tokenizer_json(&self.parsed).map_err(|reason| self.error(reason))?;
        match doc {
            None => Ok(None),
            Some(doc) => {
                let mut bytes = serde_json::to_vec_pretty(&doc)?;
                bytes.push(b'\n');
                Ok(Some(bytes))
            }
        }
    }

    fn error(&self, reason: String) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            reason,
        }
    }
}

/// For each HF tensor: the index into `Parsed::tensors` and the fix-up to apply.
type Sources = Vec<(usize, Fixup)>;

/// The HF tensor infos (sorted) and where each comes from.
fn hf_tensors(parsed: &Parsed) -> Result<(Vec<TensorInfo>, Sources), String> {
    let arch = match parsed.get("general.architecture") {
        Some(v) => v
            .as_str()
            .ok_or_else(|| format!("`general.architecture` is {v:?}; expected a string"))?,
        None => return Err("metadata key `general.architecture` is missing".into()),
    };
    if arch != "llama" {
        return Err(format!(
            "architecture `{arch}` is not supported; only `llama` GGUF files can be converted"
        ));
    }
    let (heads, kv_heads) = llama::head_counts(parsed)?;
    let mut tagged = Vec::with_capacity(parsed.tensors.len());
    for (i, t) in parsed.tensors.iter().enumerate() {
        let name = llama::hf_name(&t.name).ok_or_else(|| {
            format!(
                "tensor `{}` has no Hugging Face name in the llama architecture",
                t.name
            )
        })?;
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let fixup = llama::fixup(&t.name, heads, kv_heads);
        if let Fixup::Unpermute(n) = fixup {
            let rows = shape.first().copied().unwrap_or(1);
            if rows % (2 * n) != 0 {
                return Err(format!(
                    "tensor `{}` has {rows} rows, not a multiple of 2 x {n} heads, so its RoPE permutation cannot be undone",
                    t.name
                ));
            }
        }
        tagged.push((
            TensorInfo {
                name,
                dtype: DType::F32,
                shape,
            },
            (i, fixup),
        ));
    }
    // The order `sort_infos` gives, kept together with the sources.
    tagged.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    if let Some(w) = tagged.windows(2).find(|w| w[0].0.name == w[1].0.name) {
        return Err(format!(
            "two tensors map to the Hugging Face name `{}`",
            w[0].0.name
        ));
    }
    let (infos, sources): (Vec<TensorInfo>, Sources) = tagged.into_iter().unzip();
    Ok((infos, sources))
}

impl TensorSource for GgufFile {
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let i = self
            .infos
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .map_err(|_| Error::MissingTensor {
                name: name.to_string(),
            })?;
        let (raw, fixup) = self.sources[i];
        let t = &self.parsed.tensors[raw];
        let src = self
            .map
            .bytes()
            .get(t.start..t.start + t.len)
            .ok_or_else(|| {
                self.error(format!("truncated: tensor `{}` lies past the end", t.name))
            })?;
        let mut out = dequant::dequantize(t.ggml_type, src)
            .filter(|out| out.len() as u64 == t.numel * 4)
            .ok_or_else(|| {
                self.error(format!(
                    "tensor `{}` of type {} could not be dequantised",
                    t.name,
                    t.ggml_type.name()
                ))
            })?;
        if let Fixup::Unpermute(n) = fixup {
            let rows = self.infos[i].shape.first().copied().unwrap_or(1);
            let row_bytes = out.len() / rows.max(1);
            out = llama::unpermute_rows(&out, rows, n, row_bytes);
        }
        Ok(Cow::Owned(out))
    }
}

#[cfg(test)]
mod tests;
