//! `lgreg adapt MODEL --data PATH -o OUT`, or `lgreg adapt --config FILE` (a `descendant_*`
//! config: spawn from the gene, then fine-tune).

use std::path::PathBuf;

use lgreg::algorithm::heur_vgg::descendant::{Descendants, summary_table};
use lgreg::config::plan::descendant_run;
use lgreg::config::run::{Adapted as ConfigAdapted, adapt as adapt_config};
use lgreg::nn::Precision;
use lgreg::registry::{Registry, RemoteRef};
use lgreg::train::augment::Augment;
use lgreg::train::randaugment::RandAugment;
use lgreg::train::{AdaptOptions, AdaptReport, adapt};

use super::compare::plot_finished_run;
use super::env::RemoteArgs;
use super::eval::metrics_text;
use super::progress::Bars;
use super::render::Output;
use super::train::load_config;
use super::{GlobalArgs, registry_root};

/// Fine-tune a model (vit on labelled images, llama on text) and write a Hugging Face
/// directory whose model card holds the metrics. With `--config`, spawn the descendant a
/// `descendant_*` config describes from its gene first.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A model directory or checkpoint file.
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    model: Option<PathBuf>,
    /// Training data: an image dataset (vit) or a text file (llama).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    data: Option<PathBuf>,
    /// The directory to create.
    #[arg(
        long,
        short,
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    output: Option<PathBuf>,
    /// A `descendant_*` config (see `configs/README.md`); its keys replace the flags below.
    #[arg(long, conflicts_with_all = ["steps", "epochs", "lr", "batch_size", "warmup", "weight_decay", "val_fraction", "limit", "seq_len", "seed", "save_every", "precision"])]
    config: Option<PathBuf>,
    /// With `--config`: override a key, e.g. `--set TRAIN.EPOCHS=1` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", num_args = 1.., requires = "config")]
    sets: Vec<String>,
    /// Optimiser steps.
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Passes over the training split (default 1 when `--steps` is not given).
    #[arg(long)]
    epochs: Option<usize>,
    /// Peak learning rate (cosine schedule with warm-up).
    #[arg(long, default_value_t = 1e-3, allow_hyphen_values = true)]
    lr: f64,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Fraction of the data held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Use only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Tokens per block (llama).
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Seed for the split and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the training state every N steps.
    #[arg(long, default_value_t = 50)]
    save_every: usize,
    /// Also evaluate on the validation split every N steps (into `metrics.jsonl`, for the
    /// curves of `lgreg compare` and steps-to-target).
    #[arg(long, value_name = "STEPS")]
    eval_every: Option<usize>,
    /// Continue an interrupted run from its saved state (same options).
    #[arg(long)]
    resume: bool,
    /// Stop after N steps as if interrupted, keeping the state (for testing resume).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// Run on the first CUDA GPU.
    #[arg(long)]
    cuda: bool,
    /// Matrix products in f32, bf16 or f16 (mixed precision: weights, norms, softmax and loss
    /// stay f32). Reduced precision pays off on CUDA; candle's CPU backend widens bf16 to f32.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
    /// Keep an exponential moving average of the weights with this decay per step (DeiT:
    /// 0.99996); written to OUTPUT/ema/.
    #[arg(long, value_name = "DECAY")]
    ema: Option<f64>,
    /// Stochastic depth rate of the last block (vit; timm's linear rule below it).
    #[arg(long, default_value_t = 0.0)]
    drop_path: f64,
    /// Dropout rate (vit), at timm's ViT sites.
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Label smoothing ε (vit).
    #[arg(long, default_value_t = 0.0)]
    smoothing: f64,
    /// Mixup α (vit; 0: off).
    #[arg(long, default_value_t = 0.0)]
    mixup: f64,
    /// CutMix α (vit; 0: off).
    #[arg(long, default_value_t = 0.0)]
    cutmix: f64,
    /// Random-erasing probability per image (vit).
    #[arg(long, default_value_t = 0.0)]
    reprob: f64,
    /// Colour jitter strength j (vit): brightness, contrast and saturation factors in
    /// [1 − j, 1 + j]; off when --aa is given, as in timm.
    #[arg(long, default_value_t = 0.0, value_parser = parse_strength)]
    color_jitter: f64,
    /// RandAugment policy in timm's notation, e.g. rand-m9-mstd0.5-inc1 (vit).
    #[arg(long, value_parser = parse_rand_augment)]
    aa: Option<RandAugment>,
    #[command(flatten)]
    remote: RemoteArgs,
}

fn parse_strength(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(j) if j >= 0.0 && j.is_finite() => Ok(j),
        _ => Err(format!("'{value}' is not 0 (off) or a positive number")),
    }
}

fn parse_rand_augment(value: &str) -> Result<RandAugment, String> {
    RandAugment::parse(value)?
        .ok_or_else(|| "an empty policy: leave --aa out to train without RandAugment".to_string())
}

fn parse_precision(value: &str) -> Result<Precision, String> {
    Precision::parse(value).map_err(|e| e.to_string())
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    if let Some(file) = &args.config {
        return run_config(file, args, global);
    }
    let (Some(model), Some(data), Some(output)) = (&args.model, &args.data, &args.output) else {
        anyhow::bail!("give MODEL, --data and --output, or --config FILE");
    };
    let opts = AdaptOptions {
        steps: args.steps,
        epochs: args.epochs,
        lr: args.lr,
        batch_size: args.batch_size,
        warmup: args.warmup,
        weight_decay: args.weight_decay,
        max_grad_norm: 1.0,
        val_fraction: args.val_fraction,
        limit: args.limit,
        seq_len: args.seq_len,
        seed: args.seed,
        save_every: args.save_every,
        eval_every: args.eval_every,
        resume: args.resume,
        stop_after: args.stop_after,
        force: args.force,
        cuda: args.cuda,
        precision: args.precision,
        ema: args.ema,
        drop_path: args.drop_path,
        dropout: args.drop,
        augment: Augment {
            smoothing: args.smoothing,
            mixup: args.mixup,
            cutmix: args.cutmix,
            erase_prob: args.reprob,
            rand_augment: args.aa,
            ..Augment::default()
        }
        .with_color_jitter(args.color_jitter),
        ..AdaptOptions::default()
    };
    let report = adapt(model, data, output, &opts, &Bars::new(global))?;
    if report.output.is_some() {
        plot_finished_run(output, global);
    }
    Ok(Box::new(Adapted(report)))
}

fn run_config(
    file: &std::path::Path,
    args: &Args,
    global: &GlobalArgs,
) -> anyhow::Result<Box<dyn Output>> {
    let cfg = load_config(file, &args.sets, args.cuda, global)?;
    let registry = Registry::open_or_init(&registry_root(global)?)?;
    if cfg.is_vgg() {
        cfg.cuda()?;
        let gene = match cfg.str("MODEL.LOAD_GENE") {
            Some(g) => Some(pulled(g, args, &registry, global)?),
            None => None,
        };
        let done = lgreg::config::vgg::adapt(
            &cfg,
            gene.as_deref(),
            &registry,
            args.resume,
            args.force,
            &Bars::new(global),
        )?;
        plot_finished_run(&done.run_dir, global);
        return Ok(Box::new(FewShot(done)));
    }
    let mut plan = descendant_run(&cfg)?;
    plan.gene = pulled(&plan.gene, args, &registry, global)?;
    let done = adapt_config(
        &cfg,
        plan,
        &registry,
        args.resume,
        args.force,
        &Bars::new(global),
    )?;
    plot_finished_run(std::path::Path::new(&done.run_dir), global);
    Ok(Box::new(FromConfig(done)))
}

/// `gene` as a local reference: an `oci://` reference is pulled into `registry` first.
fn pulled(
    gene: &str,
    args: &Args,
    registry: &Registry,
    global: &GlobalArgs,
) -> anyhow::Result<String> {
    if !gene.starts_with("oci://") {
        return Ok(gene.to_string());
    }
    let src = RemoteRef::parse(gene)?;
    let opts = lgreg::registry::remote::PullRemoteOptions {
        connection: super::env::connection(&args.remote, &src.host)?,
        as_tag: None,
    };
    let pulled = registry.pull_remote(&src, &opts, &Bars::new(global))?;
    Ok(pulled.tag.unwrap_or(pulled.reference))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct FromConfig(ConfigAdapted);

impl Output for FromConfig {
    fn command(&self) -> &'static str {
        "adapt"
    }

    fn text(&self) -> String {
        let spawned = match &self.0.spawned {
            Some(s) => format!(
                "spawned {} layers from {} ({})\n",
                s.layers, s.gene, s.algorithm
            ),
            None => "resumed; the spawned descendant was already there\n".into(),
        };
        format!(
            "run directory {}\n{spawned}{}",
            self.0.run_dir,
            Adapted(self.0.adapted.clone()).text()
        )
    }
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct FewShot(Descendants);

impl Output for FewShot {
    fn command(&self) -> &'static str {
        "adapt"
    }

    fn text(&self) -> String {
        format!(
            "run directory {}\n{}",
            self.0.run_dir.display(),
            summary_table(&self.0.summary)
        )
    }
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Adapted(AdaptReport);

impl Output for Adapted {
    fn command(&self) -> &'static str {
        "adapt"
    }

    fn text(&self) -> String {
        let r = &self.0;
        match (&r.output, &r.metrics) {
            (Some(out), Some(m)) => format!(
                "{out}\n  {} steps, final loss {:.4}, {:.0} samples/s\n  validation: {}",
                r.steps,
                r.final_loss,
                r.samples_per_sec,
                metrics_text(m)
            ),
            _ => format!(
                "stopped after step {} of {} (loss {:.4}); continue with `--resume`",
                r.steps, r.total_steps, r.final_loss
            ),
        }
    }
}
