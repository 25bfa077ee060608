//! Probe and calibration data for the data-driven algorithms (heur, auto, pool): token blocks
//! for llama, sentences for bert, images for vit, drawn as seeded batches of engine inputs;
//! the loss a probe batch is differentiated on, and its hidden states as rows of tokens.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::ancestor::AncestorModel;
use crate::anatomy::{Family, Param, Role, Slot};
use crate::error::{Error, Result};
use crate::nn::init::Rng;
use crate::nn::{Forward, Input, Model, ModelConfig};
use crate::train::checkpoint_tokenizer;
use crate::train::data::{ImageSet, read_images};
use crate::train::loss::{cross_entropy, lm_loss};
use crate::train::text::{TextBlocks, Tokenizer};

/// Data to run an ancestor on.
#[derive(Debug)]
pub enum Probe {
    /// llama: token blocks with next-token targets.
    Text(TextBlocks),
    /// bert: sentences (one per non-empty line).
    Sentences {
        /// The ancestor's tokenizer (boxed: it is large).
        tokenizer: Box<Tokenizer>,
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
                let text = crate::train::corpus::read_text(data)?;
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
                Ok(Probe::Sentences {
                    tokenizer: Box::new(tokenizer),
                    lines,
                })
            }
            Family::Vit => Ok(Probe::Images(read_images(data)?)),
        }
    }

    /// Fail unless images fit the model's input (and, with `labels`, its head's classes).
    pub fn check(&self, config: &ModelConfig, labels: bool) -> Result<()> {
        if let Probe::Images(set) = self {
            set.check_shape(config.channels, config.image_size)?;
            if labels {
                set.check_labels(config.classes)?;
            }
        }
        Ok(())
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

impl ProbeBatch {
    /// The padding mask `[batch, seq]` (bert), if any.
    pub fn mask(&self) -> Option<&Tensor> {
        match &self.input {
            Input::Tokens { mask, .. } => mask.as_ref(),
            Input::Images(_) => None,
        }
    }

    /// The tokens of `hidden [batch, seq, dim]` as rows `[n, dim]`, padding left out.
    pub fn rows(&self, hidden: &Tensor) -> Result<Tensor> {
        token_rows(hidden, self.mask())
    }

    /// The loss a probe batch is differentiated on, from `forward`, the model's pass over it:
    /// - llama: next-token cross-entropy;
    /// - vit: cross-entropy of the head's logits against the labels;
    /// - bert (self-supervised proxy, the encoder has no head): cross-entropy of predicting
    ///   each input token from its last hidden state through the word-embedding matrix (tied
    ///   as in BERT's MLM decoder, without its transform layer), padding left out.
    pub fn loss(&self, model: &Model, forward: &Forward) -> Result<Tensor> {
        match (model.config.family, &self.input, &self.targets) {
            (Family::Llama, _, Some(targets)) => lm_loss(&forward.output, targets),
            (Family::Vit, _, Some(labels)) => {
                if model.config.classes == 0 {
                    return Err(no_head());
                }
                cross_entropy(&forward.output, labels)
            }
            (Family::Bert, Input::Tokens { ids, mask }, _) => {
                let embedding = model
                    .params
                    .get(&Slot {
                        layer: None,
                        role: Role::TokenEmbedding,
                        param: Param::Weight,
                    })?
                    .ok_or_else(no_head)?;
                let rows = token_rows(&forward.output, mask.as_ref())?;
                let targets = token_rows(ids, mask.as_ref())?;
                cross_entropy(&rows.matmul(&embedding.t()?)?, &targets)
            }
            (family, _, _) => Err(Error::InvalidValue {
                what: "probe batch".into(),
                value: family.to_string(),
                reason: "it has no targets for this family's loss".into(),
            }),
        }
    }
}

fn no_head() -> Error {
    Error::Algorithm {
        algorithm: "probe".into(),
        reason: "the ancestor has no head (classifier or word embedding) to compute a loss with"
            .into(),
        fix: "use an ancestor with its classification head or word embeddings".into(),
    }
}

/// `x [batch, seq, ...]` flattened to `[batch·seq, ...]`, keeping the positions where `mask
/// [batch, seq]` is 1 (all of them without a mask).
pub fn token_rows(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(Error::InvalidValue {
            what: "token tensor".into(),
            value: format!("{dims:?}"),
            reason: "expected at least `[batch, seq]`".into(),
        });
    }
    let mut flat_dims = vec![dims[0] * dims[1]];
    flat_dims.extend_from_slice(&dims[2..]);
    let flat = x.reshape(flat_dims)?;
    let Some(mask) = mask else {
        return Ok(flat);
    };
    let keep: Vec<u32> = mask
        .flatten_all()?
        .to_dtype(DType::U32)?
        .to_vec1::<u32>()?
        .iter()
        .enumerate()
        .filter(|(_, m)| **m != 0)
        .map(|(i, _)| i as u32)
        .collect();
    let n = keep.len();
    let index = Tensor::from_vec(keep, n, x.device())?;
    Ok(flat.index_select(&index, 0)?)
}
