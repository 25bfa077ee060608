//! The smoke metric of a freshly spawned descendant: perplexity on a short built-in text
//! (llama), cosine similarity of built-in sentence pairs (bert), or accuracy on images the user
//! names (vit).

use std::path::Path;

use crate::anatomy::Family;
use crate::checkpoint::{Checkpoint, open};
use crate::error::Result;
use crate::nn::layerwise::{LAYERWISE_ABOVE, Layerwise};
use crate::nn::{Input, Model, ModelConfig, device};
use crate::progress::Silent;
use crate::train::eval::{Metrics, perplexity, perplexity_of, similarities};
use crate::train::text::TextBlocks;
use crate::train::{EvalOptions, checkpoint_tokenizer, evaluate_model};

/// The built-in English sample, written for lgreg (plain prose about tools and maps).
pub const SAMPLE_TEXT: &str = "The old harbour town kept its maps in a stone house by the water. \
Every morning the keeper opened the shutters, swept the floor and checked the charts for damp. \
Sailors came in to ask about the tides, the sandbanks to the north and the safest way past the \
rocks at the mouth of the bay. The keeper answered slowly, pointing at the lines on the paper, \
and when the sailors left he wrote down what they had told him in return: a new wreck, a buoy \
that had drifted, a channel that was deeper than the chart said. Over the years the maps grew \
crowded with small notes in brown ink. Children from the school were sometimes allowed to look \
at them, and they liked the drawings of whales in the empty corners best. In winter, when the \
boats stayed in, the keeper copied the oldest charts onto fresh sheets so that the notes would \
not be lost, and he lit a small fire to keep his hands warm while he worked.";

/// Sentence pairs for bert: the first two are paraphrases, the last is unrelated.
pub const SAMPLE_PAIRS: &[(&str, &str)] = &[
    (
        "The keeper opened the shutters in the morning.",
        "In the morning the shutters were opened by the keeper.",
    ),
    (
        "Sailors asked about the tides.",
        "The sailors wanted to know when the tide would turn.",
    ),
    (
        "The children liked the whales on the maps.",
        "Interest rates rose again this quarter.",
    ),
];

/// Tokens per block of the llama sample.
const SAMPLE_BLOCK: usize = 64;

fn has_tokenizer(ckpt: &Checkpoint) -> bool {
    ckpt.side_files.iter().any(|f| f.name() == "tokenizer.json")
}

/// The built-in sample in blocks of the checkpoint's tokens.
fn sample_blocks(ckpt: &Checkpoint) -> Result<TextBlocks> {
    let tokens = checkpoint_tokenizer(ckpt)?.encode(SAMPLE_TEXT, false)?;
    Ok(TextBlocks::from_tokens(tokens, SAMPLE_BLOCK))
}

/// The perplexity of a large llama checkpoint on the sample, run one block at a time.
pub fn llama_by_blocks(ckpt: &Checkpoint) -> Result<Option<Metrics>> {
    if !has_tokenizer(ckpt) {
        return Ok(None);
    }
    let cpu = device(false)?;
    let model = Layerwise::new(ckpt, &cpu)?;
    let blocks = sample_blocks(ckpt)?;
    let idx: Vec<usize> = (0..blocks.len()).collect();
    let logits = |input: &Input| model.output(input);
    let metric = perplexity_of(logits, &cpu, &blocks, &idx, idx.len().max(1), &Silent)?;
    Ok(Some(metric))
}

/// Measure the model in `dir`; `images` gives vit data. `None` when nothing applies. A llama
/// descendant whose f32 weights exceed [`LAYERWISE_ABOVE`] runs one block at a time.
pub fn smoke_metric(dir: &Path, images: Option<&Path>) -> Result<Option<Metrics>> {
    let ckpt = open(dir)?;
    let f32_bytes: u64 = ckpt
        .source
        .tensors()
        .iter()
        .map(|t| 4 * t.numel() as u64)
        .sum();
    if f32_bytes > LAYERWISE_ABOVE && ModelConfig::of(&ckpt)?.family == Family::Llama {
        return llama_by_blocks(&ckpt);
    }
    let model = Model::load(&ckpt, &device(false)?)?;
    Ok(match model.config.family {
        Family::Llama | Family::Bert if !has_tokenizer(&ckpt) => None,
        Family::Llama => {
            let blocks = sample_blocks(&ckpt)?;
            let idx: Vec<usize> = (0..blocks.len()).collect();
            Some(perplexity(
                &model,
                &blocks,
                &idx,
                idx.len().max(1),
                &Silent,
            )?)
        }
        Family::Bert => {
            let tok = checkpoint_tokenizer(&ckpt)?;
            Some(similarities(&model, &tok, SAMPLE_PAIRS)?)
        }
        Family::Vit => match images {
            Some(path) => {
                let opts = EvalOptions {
                    limit: Some(256),
                    ..EvalOptions::default()
                };
                Some(evaluate_model(&model, &ckpt, path, &opts, &Silent)?)
            }
            None => None,
        },
    })
}
