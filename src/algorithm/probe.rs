//! Probe and calibration data for the data-driven algorithms (heur, auto, pool): token blocks
//! for llama, sentences for bert, images for vit, drawn as seeded batches of engine inputs.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::ancestor::AncestorModel;
use crate::anatomy::Family;
use crate::error::{Error, Result};
use crate::nn::Input;
use crate::nn::init::Rng;
use crate::train::checkpoint_tokenizer;
use crate::train::data::{ImageSet, read_images};
use crate::train::text::{TextBlocks, Tokenizer};

/// Data to run an ancestor on.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per extraction; boxing the tokenizer buys nothing
pub enum Probe {
    /// llama: token blocks with next-token targets.
    Text(TextBlocks),
    /// bert: sentences (one per non-empty line).
    Sentences {
        /// The ancestor's tokenizer.
        tokenizer: Tokenizer,
        /// The lines.
        lines: Vec<String>,
    },
    /// vit: labelled images.
    Images(ImageSet),
}

/// One batch: the model input and, where the data has them, targets (next tokens or labels).
#[derive(Debug, Clone)]
pub struct ProbeBatch {
    /// What the model reads.
    pub input: Input,
    /// Next-token ids `[batch, seq]` (llama) or labels `[batch]` (vit).
    pub targets: Option<Tensor>,
}

/// Longest line, in characters, fed to bert (keeps batches short).
const MAX_LINE_CHARS: usize = 400;

impl Probe {
    /// Read `data` in the form the ancestor's family needs; `seq_len` is the llama block length.
    pub fn load(ancestor: &AncestorModel<'_>, data: &Path, seq_len: usize) -> Result<Probe> {
        match ancestor.family() {
            Family::Llama => {
                let tok = checkpoint_tokenizer(ancestor.ckpt)?;
                Ok(Probe::Text(TextBlocks::read(data, &tok, seq_len)?))
            }
            Family::Bert => {
                let tokenizer = checkpoint_tokenizer(ancestor.ckpt)?;
                let text = fs_err::read_to_string(data)?;
                let lines: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.split_whitespace().count() >= 3)
                    .map(|l| l.chars().take(MAX_LINE_CHARS).collect())
                    .collect();
                if lines.is_empty() {
                    return Err(Error::Dataset {
                        path: data.to_path_buf(),
                        reason: "no line with at least three words".into(),
                    });
                }
                Ok(Probe::Sentences { tokenizer, lines })
            }
            Family::Vit => Ok(Probe::Images(read_images(data)?)),
        }
    }

    /// Number of examples (blocks, lines or images).
    pub fn len(&self) -> usize {
        match self {
            Probe::Text(t) => t.len(),
            Probe::Sentences { lines, .. } => lines.len(),
            Probe::Images(set) => set.len(),
        }
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `count` batches of `size` examples, drawn without replacement (cycling when the data is
    /// short) in an order fixed by `seed`.
    pub fn batches(
        &self,
        count: usize,
        size: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Vec<ProbeBatch>> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed).shuffle(&mut order);
        let mut out = Vec::with_capacity(count);
        for b in 0..count {
            let idx: Vec<usize> = (0..size)
                .map(|i| order[(b * size + i) % order.len().max(1)])
                .collect();
            out.push(self.batch(&idx, device)?);
        }
        Ok(out)
    }

    fn batch(&self, idx: &[usize], device: &Device) -> Result<ProbeBatch> {
        Ok(match self {
            Probe::Text(blocks) => {
                let (x, y) = blocks.batch(idx, device)?;
                ProbeBatch {
                    input: Input::Tokens { ids: x, mask: None },
                    targets: Some(y),
                }
            }
            Probe::Sentences { tokenizer, lines } => {
                let texts: Vec<&str> = idx.iter().map(|&i| lines[i].as_str()).collect();
                let (ids, mask) = tokenizer.encode_batch(&texts, device)?;
                ProbeBatch {
                    input: Input::Tokens {
                        ids,
                        mask: Some(mask),
                    },
                    targets: None,
                }
            }
            Probe::Images(set) => {
                let (x, y) = set.batch(idx, device)?;
                ProbeBatch {
                    input: Input::Images(x),
                    targets: Some(y),
                }
            }
        })
    }
}
