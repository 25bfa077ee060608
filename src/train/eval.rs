//! Evaluation: perplexity for llama on text, accuracy for vit on images, cosine similarity of
//! sentence pairs for bert.

use std::path::Path;

use candle_core::{D, Tensor};
use serde::Serialize;

use super::data::read_images;
use super::loss::{correct, lm_loss};
use super::text::{TextBlocks, Tokenizer, read_pairs};
use crate::anatomy::Family;
use crate::checkpoint::{Checkpoint, SideFile, open};
use crate::error::{Error, Result};
use crate::nn::{Input, Mode, Model, device, mean_pool};
use crate::progress::{Event, Reporter};

/// Options of [`evaluate`].
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Tokens per block for perplexity.
    pub seq_len: usize,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Evaluate at most this many examples (blocks, images or pairs).
    pub limit: Option<usize>,
    /// Run on the first CUDA GPU.
    pub cuda: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            seq_len: 256,
            batch_size: 64,
            limit: None,
            cuda: false,
        }
    }
}

/// A model's quality on some data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Metrics {
    /// Language models.
    Perplexity {
        /// `exp` of the mean next-token loss.
        perplexity: f64,
        /// The mean next-token loss (nats).
        loss: f64,
        /// Tokens scored.
        tokens: usize,
    },
    /// Classifiers.
    Accuracy {
        /// Fraction correct.
        accuracy: f64,
        /// Images scored.
        examples: usize,
    },
    /// Encoders on sentence pairs.
    Similarity {
        /// Cosine similarity of each pair's mean-pooled embeddings.
        similarities: Vec<f64>,
        /// Their mean.
        mean_similarity: f64,
        /// The fraction of pairs whose first sentence is closer to its own second than to any
        /// other pair's second.
        retrieval_accuracy: f64,
    },
}

impl Metrics {
    /// The one number a table shows: accuracy, perplexity or the mean similarity.
    pub fn headline(&self) -> f64 {
        match self {
            Metrics::Perplexity { perplexity, .. } => *perplexity,
            Metrics::Accuracy { accuracy, .. } => *accuracy,
            Metrics::Similarity {
                mean_similarity, ..
            } => *mean_similarity,
        }
    }
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The model evaluated.
    pub model: String,
    /// The data.
    pub data: String,
    /// Its family.
    pub family: Family,
    /// The metrics.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The tokenizer that travels with a checkpoint (`tokenizer.json`, or the one a GGUF carries).
pub fn checkpoint_tokenizer(ckpt: &Checkpoint) -> Result<Tokenizer> {
    for side in &ckpt.side_files {
        match side {
            SideFile::Copy { name, path } if name == "tokenizer.json" => {
                return Tokenizer::load(path);
            }
            SideFile::Bytes { name, bytes } if name == "tokenizer.json" => {
                return Tokenizer::from_bytes(bytes, &ckpt.path);
            }
            _ => {}
        }
    }
    Err(Error::NotFound {
        path: ckpt.path.join("tokenizer.json"),
    })
}

/// Evaluate the model at `model_path` on `data`.
pub fn evaluate(
    model_path: &Path,
    data: &Path,
    opts: &EvalOptions,
    reporter: &dyn Reporter,
) -> Result<EvalReport> {
    let ckpt = open(model_path)?;
    let model = Model::load(&ckpt, &device(opts.cuda)?)?;
    let metrics = evaluate_model(&model, &ckpt, data, opts, reporter)?;
    Ok(EvalReport {
        model: model_path.display().to_string(),
        data: data.display().to_string(),
        family: model.config.family,
        metrics,
    })
}

/// Evaluate a loaded `model` (whose checkpoint `ckpt` gives the tokenizer) on `data`.
pub fn evaluate_model(
    model: &Model,
    ckpt: &Checkpoint,
    data: &Path,
    opts: &EvalOptions,
    reporter: &dyn Reporter,
) -> Result<Metrics> {
    match model.config.family {
        Family::Llama => {
            let tok = checkpoint_tokenizer(ckpt)?;
            let blocks = TextBlocks::read(data, &tok, opts.seq_len)?;
            let n = opts.limit.map_or(blocks.len(), |l| l.min(blocks.len()));
            let idx: Vec<usize> = (0..n).collect();
            perplexity(model, &blocks, &idx, 1, reporter)
        }
        Family::Vit => {
            let mut set = read_images(data)?;
            set.check_shape(model.config.channels, model.config.image_size)?;
            set.check_labels(model.config.classes)?;
            if let Some(l) = opts.limit {
                set.truncate(l);
            }
            let idx: Vec<usize> = (0..set.len()).collect();
            accuracy(model, &set, &idx, opts.batch_size, reporter)
        }
        Family::Bert => {
            let tok = checkpoint_tokenizer(ckpt)?;
            similarity(model, &tok, data, opts.limit)
        }
    }
}

/// Sum `score(chunk)` over `idx` in chunks of `batch`, reporting progress as "eval".
fn sum_over_chunks(
    idx: &[usize],
    batch: usize,
    reporter: &dyn Reporter,
    mut score: impl FnMut(&[usize]) -> Result<f64>,
) -> Result<f64> {
    reporter.report(Event::Start {
        task: "eval".into(),
        total: idx.len() as u64,
    });
    let mut total = 0.0f64;
    for chunk in idx.chunks(batch.max(1)) {
        total += score(chunk)?;
        reporter.report(Event::Advance {
            amount: chunk.len() as u64,
            item: None,
        });
    }
    reporter.report(Event::Finish);
    Ok(total)
}

/// Perplexity of `model` over the blocks `idx`, `batch` blocks per pass.
pub fn perplexity(
    model: &Model,
    blocks: &TextBlocks,
    idx: &[usize],
    batch: usize,
    reporter: &dyn Reporter,
) -> Result<Metrics> {
    let logits = |input: &Input| Ok(model.forward(input, Mode::Infer, false)?.output);
    perplexity_of(logits, &model.device, blocks, idx, batch, reporter)
}

/// [`perplexity`] of a model whose logits `logits` computes (a model run one block at a time,
/// [`crate::nn::layerwise::Layerwise::output`]), its inputs made on `device`.
pub fn perplexity_of(
    logits: impl Fn(&Input) -> Result<Tensor>,
    device: &candle_core::Device,
    blocks: &TextBlocks,
    idx: &[usize],
    batch: usize,
    reporter: &dyn Reporter,
) -> Result<Metrics> {
    let total = sum_over_chunks(idx, batch, reporter, |chunk| {
        let (x, y) = blocks.batch(chunk, device)?;
        let out = logits(&Input::Tokens { ids: x, mask: None })?;
        let loss = lm_loss(&out, &y)?.to_scalar::<f32>()?;
        Ok(f64::from(loss) * chunk.len() as f64)
    })?;
    let loss = total / idx.len().max(1) as f64;
    Ok(Metrics::Perplexity {
        perplexity: loss.exp(),
        loss,
        tokens: idx.len() * blocks.block,
    })
}

/// Accuracy of `model` on the images `idx` of `set`.
pub(crate) fn accuracy(
    model: &Model,
    set: &super::data::ImageSet,
    idx: &[usize],
    batch: usize,
    reporter: &dyn Reporter,
) -> Result<Metrics> {
    let hits = sum_over_chunks(idx, batch, reporter, |chunk| {
        let (x, y) = set.batch(chunk, &model.device)?;
        let out = model.forward(&Input::Images(x), Mode::Infer, false)?;
        Ok(correct(&out.output, &y)? as f64)
    })?;
    Ok(Metrics::Accuracy {
        accuracy: hits / idx.len().max(1) as f64,
        examples: idx.len(),
    })
}

/// L2-normalised mean-pooled sentence embeddings `[n, hidden]` of `texts`.
pub fn embed(model: &Model, tok: &Tokenizer, texts: &[&str]) -> Result<Tensor> {
    embed_in(model, tok, texts, Mode::Infer)
}

/// [`embed`] with the ops of `mode` (`Mode::Train` keeps the graph for gradients).
pub(crate) fn embed_in(
    model: &Model,
    tok: &Tokenizer,
    texts: &[&str],
    mode: Mode,
) -> Result<Tensor> {
    let (ids, mask) = tok.encode_batch(texts, &model.device)?;
    let out = model.forward(
        &Input::Tokens {
            ids,
            mask: Some(mask.clone()),
        },
        mode,
        false,
    )?;
    l2_normalize(&mean_pool(&out.output, &mask)?)
}

fn similarity(
    model: &Model,
    tok: &Tokenizer,
    data: &Path,
    limit: Option<usize>,
) -> Result<Metrics> {
    let mut pairs = read_pairs(data)?;
    if let Some(l) = limit {
        pairs.truncate(l.max(1));
    }
    similarities(model, tok, &as_strs(&pairs))
}

/// Borrowed views of owned pairs.
pub fn as_strs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

/// Rows scaled to unit length.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&norm.clamp(1e-12, f64::MAX)?)?)
}

/// [`embed`] in chunks of 32 texts, concatenated.
fn embed_all(model: &Model, tok: &Tokenizer, texts: &[&str]) -> Result<Tensor> {
    let parts = texts
        .chunks(32)
        .map(|chunk| embed(model, tok, chunk))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// Cosine similarity of each pair's mean-pooled embeddings, their mean, and how often a first
/// sentence is closest to its own second among all the seconds (top-1 retrieval).
pub fn similarities(model: &Model, tok: &Tokenizer, pairs: &[(&str, &str)]) -> Result<Metrics> {
    let firsts: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let seconds: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    let a = embed_all(model, tok, &firsts)?;
    let b = embed_all(model, tok, &seconds)?;
    let scores = a.matmul(&b.t()?)?;
    let sims: Vec<f64> = (a * b)?
        .sum(D::Minus1)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect();
    let best = scores.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let hits = best
        .iter()
        .enumerate()
        .filter(|(i, j)| *i == **j as usize)
        .count();
    let n = sims.len().max(1) as f64;
    Ok(Metrics::Similarity {
        mean_similarity: sims.iter().sum::<f64>() / n,
        similarities: sims,
        retrieval_accuracy: hits as f64 / n,
    })
}
