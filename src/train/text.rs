//! Text for language models: a `tokenizer.json` through the `tokenizers` crate, a text file cut
//! into non-overlapping fixed-length blocks, and sentence pairs for encoders.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// A tokenizer loaded from a `tokenizer.json`.
pub struct Tokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl Tokenizer {
    /// Load `tokenizer.json` from a file, or from inside a model directory.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        if !file.is_file() {
            return Err(Error::NotFound { path: file });
        }
        let inner = tokenizers::Tokenizer::from_file(&file).map_err(|e| Error::Tokenizer {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        Ok(Tokenizer::unpadded(file, inner))
    }

    /// Padding is lgreg's job (with a mask): a `tokenizer.json` that pads to a fixed length
    /// (sentence-transformers ship `Fixed(128)`) would otherwise count pads as tokens.
    fn unpadded(path: PathBuf, mut inner: tokenizers::Tokenizer) -> Tokenizer {
        inner.with_padding(None);
        Tokenizer { path, inner }
    }

    /// A tokenizer from the bytes of a `tokenizer.json`; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Tokenizer::unpadded(origin.to_path_buf(), inner))
    }

    /// Token ids of `text`, with or without the tokenizer's special tokens.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids `[n, max_len]` padded with 0 and the mask `[n, max_len]` for a batch of texts.
    pub fn encode_batch(&self, texts: &[&str], device: &Device) -> Result<(Tensor, Tensor)> {
        let encoded: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.encode(t, true))
            .collect::<Result<_>>()?;
        let len = encoded.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for e in &encoded {
            ids.extend(
                e.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, len - e.len())),
            );
            mask.extend((0..len).map(|i| u32::from(i < e.len())));
        }
        let n = texts.len();
        Ok((
            Tensor::from_vec(ids, (n, len), device)?,
            Tensor::from_vec(mask, (n, len), device)?,
        ))
    }
}

/// Corpora up to this many bytes are read and tokenised whole; larger ones are streamed.
pub const IN_MEMORY_BYTES: u64 = 8 << 20;

/// The text of a streamed corpus is tokenised this many bytes at a time (cut at blank lines).
const STREAM_CHUNK_BYTES: usize = 1 << 20;

/// Token ids: in memory, or, for a streamed corpus, in a memory-mapped temporary file of
/// little-endian u32 (deleted when the blocks are dropped).
#[derive(Debug)]
pub enum Tokens {
    /// Ids held in memory.
    Owned(Vec<u32>),
    /// Ids in a mapped file; the file is kept for as long as the map.
    Mapped {
        /// The map of the file.
        map: crate::checkpoint::mmap::Mapped,
        /// The file, removed on drop.
        file: tempfile::NamedTempFile,
    },
}

impl Tokens {
    /// The ids.
    pub fn as_slice(&self) -> &[u32] {
        match self {
            Tokens::Owned(v) => v,
            // A map starts on a page boundary and holds whole u32s, so the cast cannot fail.
            Tokens::Mapped { map, .. } => bytemuck::try_cast_slice(map.bytes()).unwrap_or(&[]),
        }
    }
}

/// A token stream cut into blocks of `block + 1` tokens (inputs and shifted targets).
#[derive(Debug)]
pub struct TextBlocks {
    /// The token ids, `blocks · (block + 1)` long… stored as one stream.
    pub tokens: Tokens,
    /// Tokens per block (input length).
    pub block: usize,
}

impl TextBlocks {
    /// Blocks of `block` tokens over `tokens`.
    pub fn from_tokens(tokens: Vec<u32>, block: usize) -> TextBlocks {
        TextBlocks {
            tokens: Tokens::Owned(tokens),
            block,
        }
    }

    /// Tokenise the text `path` names (a file, a directory, a glob or JSON Lines; see
    /// [`super::corpus`]) and cut it into non-overlapping blocks. A corpus larger than
    /// [`IN_MEMORY_BYTES`] is streamed: read and tokenised a megabyte at a time into a temporary
    /// file under `$TMPDIR`, which is then memory-mapped, so memory follows the chunk, not the
    /// corpus.
    pub fn read(path: &Path, tokenizer: &Tokenizer, block: usize) -> Result<TextBlocks> {
        Self::read_streaming_above(path, tokenizer, block, IN_MEMORY_BYTES)
    }

    /// [`TextBlocks::read`], streaming corpora larger than `in_memory_bytes`.
    pub fn read_streaming_above(
        path: &Path,
        tokenizer: &Tokenizer,
        block: usize,
        in_memory_bytes: u64,
    ) -> Result<TextBlocks> {
        if block == 0 {
            return Err(Error::InvalidValue {
                what: "`--seq-len`".into(),
                value: "0".into(),
                reason: "a block needs at least one token".into(),
            });
        }
        let tokens = if super::corpus::data_bytes(path)? <= in_memory_bytes {
            Tokens::Owned(tokenizer.encode(&super::corpus::read_text(path)?, false)?)
        } else {
            stream_tokens(path, tokenizer)?
        };
        let count = tokens.as_slice().len();
        if count < block + 1 {
            return Err(Error::TextTooShort {
                path: path.to_path_buf(),
                tokens: count,
                block,
            });
        }
        Ok(TextBlocks { tokens, block })
    }

    /// Number of whole blocks (each `block` inputs plus one target beyond).
    pub fn len(&self) -> usize {
        self.tokens.as_slice().len().saturating_sub(1) / self.block
    }

    /// Whether there is no whole block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inputs `[n, block]` and targets `[n, block]` for the given block indices.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let mut xs = Vec::with_capacity(indices.len() * self.block);
        let mut ys = Vec::with_capacity(indices.len() * self.block);
        let tokens = self.tokens.as_slice();
        for &i in indices {
            let start = i * self.block;
            xs.extend_from_slice(&tokens[start..start + self.block]);
            ys.extend_from_slice(&tokens[start + 1..start + self.block + 1]);
        }
        let n = indices.len();
        Ok((
            Tensor::from_vec(xs, (n, self.block), device)?,
            Tensor::from_vec(ys, (n, self.block), device)?,
        ))
    }
}

/// Tokenise the corpus `path` a chunk at a time into a temporary file of little-endian u32
/// ids, then map it.
fn stream_tokens(path: &Path, tokenizer: &Tokenizer) -> Result<Tokens> {
    use std::io::Write;
    let file = tempfile::Builder::new()
        .prefix("lgreg-tokens-")
        .tempfile()
        .map_err(|e| Error::Dataset {
            path: std::env::temp_dir(),
            reason: format!("cannot create the temporary token file for a streamed corpus: {e}; set TMPDIR to a directory with room"),
        })?;
    let mut out = std::io::BufWriter::new(file.as_file());
    super::corpus::for_each_chunk(path, STREAM_CHUNK_BYTES, &mut |chunk: &str| {
        for id in tokenizer.encode(chunk, false)? {
            out.write_all(&id.to_le_bytes())?;
        }
        Ok(())
    })?;
    out.flush()?;
    drop(out);
    file.as_file().sync_all()?;
    let map = crate::checkpoint::mmap::Mapped::open(file.path())?;
    Ok(Tokens::Mapped { map, file })
}

/// Sentence pairs from `path`: one `first<TAB>second` pair per line, blank lines skipped.
pub fn read_pairs(path: &Path) -> Result<Vec<(String, String)>> {
    let text = super::corpus::read_text(path)?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((a, b)) = line.split_once('\t') else {
            return Err(Error::Dataset {
                path: path.to_path_buf(),
                reason: format!(
                    "line {} has no tab between the two sentences (one `first<TAB>second` pair per line)",
                    i + 1
                ),
            });
        };
        pairs.push((a.to_string(), b.to_string()));
    }
    if pairs.is_empty() {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            reason: "no sentence pairs (one `first<TAB>second` pair per line)".into(),
        });
    }
    Ok(pairs)
}
