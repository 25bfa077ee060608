//! Opening any supported checkpoint: a file or a model directory, in any format.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::gguf::GgufFile;
use super::pickle::PickleFile;
use super::safetensors::SafetensorsFile;
use super::{TensorInfo, TensorSource, index_of, sort_infos};
use crate::error::{Error, Result};

/// Largest shard index or config file lgreg will parse.
const MAX_JSON_FILE: u64 = 64 << 20;

/// The on-disk format a checkpoint was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// safetensors, single file or sharded.
    Safetensors,
    /// PyTorch pickle (`.bin`, `.pt`, `.pth`), zip or legacy.
    Pytorch,
    /// llama.cpp GGUF.
    Gguf,
}

/// A file that travels with the weights (tokenizer, generation config).
#[derive(Debug, Clone)]
pub enum SideFile {
    /// Copy this file as it is.
    Copy {
        /// File name in the output directory.
        name: String,
        /// Where it is now.
        path: PathBuf,
    },
    /// Write these bytes (made by lgreg, e.g. `tokenizer.json` from a GGUF).
    Bytes {
        /// File name in the output directory.
        name: String,
        /// The content.
        bytes: Vec<u8>,
    },
}

impl SideFile {
    /// The file name in the output directory.
    pub fn name(&self) -> &str {
        match self {
            SideFile::Copy { name, .. } | SideFile::Bytes { name, .. } => name,
        }
    }
}

/// An opened checkpoint: its tensors, its config and the files that belong with it.
pub struct Checkpoint {
    /// The path the user gave.
    pub path: PathBuf,
    /// The format of the weights.
    pub format: Format,
    /// The tensors, read lazily.
    pub source: Box<dyn TensorSource>,
    /// `config.json`, read from the directory or derived from GGUF metadata.
    pub config: Option<serde_json::Value>,
    /// Tokenizer and other side files.
    pub side_files: Vec<SideFile>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tensors", &self.source.tensors().len())
            .finish()
    }
}

/// Files copied next to converted weights when they exist.
const SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "preprocessor_config.json",
];

/// Open a checkpoint file or model directory.
pub fn open(path: &Path) -> Result<Checkpoint> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_path_buf(),
        });
    }
    if path.is_dir() {
        open_dir(path)
    } else {
        open_file(path)
    }
}

fn open_file(path: &Path) -> Result<Checkpoint> {
    let (format, source, config, side_files): (Format, Box<dyn TensorSource>, _, _) =
        match sniff(path)? {
            Format::Gguf => {
                let gguf = GgufFile::open(path)?;
                let config = Some(gguf.hf_config()?);
                let side = match gguf.tokenizer_json()? {
                    Some(bytes) => vec![SideFile::Bytes {
                        name: "tokenizer.json".into(),
                        bytes,
                    }],
                    None => Vec::new(),
                };
                (Format::Gguf, Box::new(gguf), config, side)
            }
            Format::Safetensors => (
                Format::Safetensors,
                Box::new(SafetensorsFile::open(path)?),
                None,
                Vec::new(),
            ),
            Format::Pytorch => (
                Format::Pytorch,
                Box::new(PickleFile::open(path)?),
                None,
                Vec::new(),
            ),
        };
    let mut ckpt = Checkpoint {
        path: path.to_path_buf(),
        format,
        source,
        config,
        side_files,
    };
    // A weights file inside a model directory brings that directory's config and tokenizer.
    if ckpt.config.is_none()
        && let Some(dir) = path.parent()
    {
        ckpt.config = read_config(dir)?;
        ckpt.side_files = side_files_in(dir);
    }
    Ok(ckpt)
}

fn open_dir(dir: &Path) -> Result<Checkpoint> {
    let candidates: [(&str, Format); 4] = [
        ("model.safetensors.index.json", Format::Safetensors),
        ("model.safetensors", Format::Safetensors),
        ("pytorch_model.bin.index.json", Format::Pytorch),
        ("pytorch_model.bin", Format::Pytorch),
    ];
    for (name, format) in candidates {
        let p = dir.join(name);
        if !p.is_file() {
            continue;
        }
        let source: Box<dyn TensorSource> = if name.ends_with(".index.json") {
            Box::new(Sharded::open(&p, format)?)
        } else {
            open_single(&p, format)?
        };
        return Ok(Checkpoint {
            path: dir.to_path_buf(),
            format,
            source,
            config: read_config(dir)?,
            side_files: side_files_in(dir),
        });
    }
    if let Some(gguf) = single_gguf_in(dir)? {
        return open_file(&gguf);
    }
    Err(Error::NoWeights {
        path: dir.to_path_buf(),
        looked_for: "`model.safetensors[.index.json]`, `pytorch_model.bin[.index.json]`, `*.gguf`"
            .into(),
    })
}

fn open_single(path: &Path, format: Format) -> Result<Box<dyn TensorSource>> {
    Ok(match format {
        Format::Safetensors => Box::new(SafetensorsFile::open(path)?),
        Format::Pytorch => Box::new(PickleFile::open(path)?),
        Format::Gguf => Box::new(GgufFile::open(path)?),
    })
}

fn single_gguf_in(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(Error::InvalidValue {
            what: "model directory".into(),
            value: dir.display().to_string(),
            reason: format!("it holds {n} `.gguf` files; name the one to read"),
        }),
    }
}

/// Guess a file's format from its first bytes, then its extension.
fn sniff(path: &Path) -> Result<Format> {
    let mut head = [0u8; 8];
    let mut file = fs_err::File::open(path)?;
    let n = read_up_to(&mut file, &mut head)?;
    let head = &head[..n];
    if head.starts_with(b"GGUF") {
        return Ok(Format::Gguf);
    }
    // zip archives (torch >= 1.6) and legacy pickles (protocol 2 starts with 0x80 0x02).
    if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
        return Ok(Format::Pytorch);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "safetensors" => Ok(Format::Safetensors),
        "bin" | "pt" | "pth" | "ckpt" => Ok(Format::Pytorch),
        "gguf" => Ok(Format::Gguf),
        _ if n == 8 => Ok(Format::Safetensors),
        _ => Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            reason: format!("it is {n} bytes long and has no known magic or extension"),
        }),
    }
}

fn read_up_to(file: &mut fs_err::File, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Read a JSON file of at most [`MAX_JSON_FILE`] bytes.
pub(crate) fn read_json_file(path: &Path) -> Result<serde_json::Value> {
    let len = fs_err::metadata(path)?.len();
    if len > MAX_JSON_FILE {
        return Err(Error::Config {
            path: path.to_path_buf(),
            reason: format!("file is {len} bytes, above the {MAX_JSON_FILE}-byte limit for JSON"),
        });
    }
    let text = fs_err::read(path)?;
    serde_json::from_slice(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

fn read_config(dir: &Path) -> Result<Option<serde_json::Value>> {
    let p = dir.join("config.json");
    if p.is_file() {
        Ok(Some(read_json_file(&p)?))
    } else {
        Ok(None)
    }
}

fn side_files_in(dir: &Path) -> Vec<SideFile> {
    SIDE_FILES
        .iter()
        .map(|name| dir.join(name))
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            Some(SideFile::Copy { name, path: p })
        })
        .collect()
}

/// Several shard files behind one `*.index.json`, seen as one source.
struct Sharded {
    shards: Vec<Box<dyn TensorSource>>,
    /// For each entry of `infos`, the shard that holds it.
    owner: Vec<usize>,
    infos: Vec<TensorInfo>,
}

impl Sharded {
    /// The shard holding tensor `name`.
    fn shard_of(&self, name: &str) -> Option<&dyn TensorSource> {
        let i = index_of(&self.infos, name).ok()?;
        Some(self.shards[self.owner[i]].as_ref())
    }

    fn open(index_path: &Path, format: Format) -> Result<Sharded> {
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let weight_map = read_weight_map(index_path)?;
        let mut files: Vec<&String> = weight_map.values().collect();
        files.sort();
        files.dedup();
        let mut shards = Vec::with_capacity(files.len());
        for file in &files {
            let shard_path = dir.join(file);
            if !shard_path.is_file() {
                return Err(Error::Safetensors {
                    path: index_path.to_path_buf(),
                    reason: format!(
                        "the index names shard `{file}`, but `{}` is missing",
                        shard_path.display()
                    ),
                });
            }
            shards.push(open_single(&shard_path, format)?);
        }
        let mut tagged: Vec<(TensorInfo, usize)> = Vec::with_capacity(weight_map.len());
        for (name, file) in &weight_map {
            let shard = files.binary_search(&file).unwrap_or(0);
            let info = shards[shard]
                .info(name)
                .cloned()
                .ok_or_else(|| Error::Safetensors {
                    path: index_path.to_path_buf(),
                    reason: format!("the index maps `{name}` to `{file}`, which does not hold it"),
                })?;
            tagged.push((info, shard));
        }
        let mut infos: Vec<TensorInfo> = tagged.iter().map(|(i, _)| i.clone()).collect();
        sort_infos(&mut infos);
        tagged.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let owner = tagged.into_iter().map(|(_, s)| s).collect();
        Ok(Sharded {
            shards,
            owner,
            infos,
        })
    }
}

/// Parse `weight_map` from a shard index, refusing shard names that leave the directory.
fn read_weight_map(index_path: &Path) -> Result<BTreeMap<String, String>> {
    let json = read_json_file(index_path)?;
    let bad = |reason: String| Error::Safetensors {
        path: index_path.to_path_buf(),
        reason,
    };
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object in the index".into()))?;
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("`weight_map[{name}]` is not a string")))?;
        if !is_plain_file_name(file) {
            return Err(bad(format!(
                "shard name `{file}` is not a plain file name in the same directory"
            )));
        }
        out.insert(name.clone(), file.to_string());
    }
    Ok(out)
}

/// True for a single path component that is not `.`/`..` and has no separators.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with('.')
}

impl TensorSource for Sharded {
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let i = index_of(&self.infos, name)?;
        self.shards[self.owner[i]].read(name)
    }

    fn release(&self, name: &str) {
        if let Some(shard) = self.shard_of(name) {
            shard.release(name);
        }
    }

    fn release_range(&self, name: &str, range: std::ops::Range<usize>) {
        if let Some(shard) = self.shard_of(name) {
            shard.release_range(name, range);
        }
    }

    fn prefetch_range(&self, name: &str, range: std::ops::Range<usize>) {
        if let Some(shard) = self.shard_of(name) {
            shard.prefetch_range(name, range);
        }
    }

    fn stored_at(&self, name: &str) -> Option<super::Stored<'_>> {
        self.shard_of(name)?.stored_at(name)
    }
}
