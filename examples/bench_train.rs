//! Engine throughput for the workloads in BENCHMARKS.md, each timed as lgreg runs it:
//! - `vit` — a ViT-Tiny-shaped encoder (width 192, 12 layers, 3 heads, patch 4 on 28×28×1, mean
//!   pool, 10 classes): forward, backward, clipping and the AdamW step of `lgreg adapt`;
//! - `llama DIR` — the same step on the llama at DIR at sequence length 256;
//! - `eval DIR` — the no-gradient forward of `lgreg eval` on the llama at DIR (tokens/s);
//! - `distill DIR` — the llama at DIR as a teacher without gradients, plus the step of a
//!   12-virtual-layer TLEG student of the same width on the KL distillation loss.
//!
//! `--reference` runs every op in its reference form instead of the fused kernels (the engine
//! before them). Prints one JSON line with the rate and the peak RSS.
//! Usage: `bench_train [--reference] vit|llama|eval|distill [DIR] [BATCH] [STEPS]`.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::Instant;

use candle_core::{Device, Tensor};
use lgreg::nn::init::{Rng, VitSpec, random, random_plain};
use lgreg::nn::{Input, LinearExpanded, Mode, Model, reference_only};
use lgreg::train::loss::{cross_entropy, kl_distill, lm_loss};
use lgreg::train::optim::{AdamW, AdamWConfig};

/// The allocator of the `lgreg` binary, with its purge delay (`main`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The peak resident set of this process in MiB, from `/proc/self/status`.
fn peak_rss_mib() -> f64 {
    let status = fs_err::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn vit_model(dev: &Device) -> lgreg::Result<Model> {
    let spec = VitSpec {
        image_size: 28,
        patch_size: 4,
        channels: 1,
        hidden: 192,
        layers: 12,
        heads: 3,
        classes: 10,
        class_token: false,
    };
    random(&spec.config(), 0, dev)
}

/// A TLEG student of `teacher`'s shape with 12 virtual layers from two random end layers.
fn tleg_student(teacher: &Model, dev: &Device) -> lgreg::Result<Model> {
    let mut c = teacher.config.clone();
    c.layers = 2;
    let plain = random_plain(&c, 1, dev)?;
    c.layers = 12;
    let params = LinearExpanded::from_plain(&plain, 12)?;
    Ok(Model::new(c, Box::new(params), dev.clone()))
}

/// Random token ids `[batch, 257]`: inputs are the first 256, targets the last 256.
fn tokens(
    rng: &mut Rng,
    batch: usize,
    vocab: usize,
    dev: &Device,
) -> lgreg::Result<(Tensor, Tensor)> {
    let ids: Vec<u32> = (0..batch * 257).map(|_| rng.below(vocab) as u32).collect();
    let t = Tensor::from_vec(ids, (batch, 257), dev)?;
    Ok((t.narrow(1, 0, 256)?, t.narrow(1, 1, 256)?.contiguous()?))
}

fn bench(args: &[String]) -> lgreg::Result<String> {
    let what = args.first().map_or("vit", String::as_str);
    let dev = Device::Cpu;
    let mut rng = Rng::new(0);
    let number =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (model, batch, steps) = if what == "vit" {
        (vit_model(&dev)?, number(1, 64), number(2, 5))
    } else {
        let dir = std::path::PathBuf::from(args.get(1).map_or("model", String::as_str));
        (
            Model::load(&lgreg::checkpoint::open(&dir)?, &dev)?,
            number(2, 1),
            number(3, 3),
        )
    };
    let student = if what == "distill" {
        Some(tleg_student(&model, &dev)?)
    } else {
        None
    };
    let trained = student.as_ref().unwrap_or(&model);
    let mut opt = AdamW::new(trained.vars(), AdamWConfig::default())?;
    let vocab = model.config.vocab;
    let mut step = |rng: &mut Rng| -> lgreg::Result<()> {
        let loss = match what {
            "vit" => {
                let x: Vec<f32> = (0..batch * 28 * 28).map(|_| rng.normal() as f32).collect();
                let x = Tensor::from_vec(x, (batch, 1, 28, 28), &dev)?;
                let y: Vec<u32> = (0..batch).map(|_| rng.below(10) as u32).collect();
                let y = Tensor::from_vec(y, batch, &dev)?;
                let out = model.forward(&Input::Images(x), Mode::Train, false)?;
                cross_entropy(&out.output, &y)?
            }
            "eval" => {
                let (x, y) = tokens(rng, batch, vocab, &dev)?;
                let out =
                    model.forward(&Input::Tokens { ids: x, mask: None }, Mode::Infer, false)?;
                lm_loss(&out.output, &y)?.to_scalar::<f32>()?;
                return Ok(());
            }
            "distill" => {
                let (x, _) = tokens(rng, batch, vocab, &dev)?;
                let input = Input::Tokens { ids: x, mask: None };
                let teacher = model.forward(&input, Mode::Infer, false)?.output.detach();
                let out = trained.forward(&input, Mode::Train, false)?;
                kl_distill(&out.output, &teacher, 1.0)?
            }
            _ => {
                let (x, y) = tokens(rng, batch, vocab, &dev)?;
                let out =
                    model.forward(&Input::Tokens { ids: x, mask: None }, Mode::Train, false)?;
                lm_loss(&out.output, &y)?
            }
        };
        opt.backward_step(&loss, 1.0, 1e-4)?;
        Ok(())
    };
    step(&mut rng)?; // warm-up
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut rng)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let samples = (batch * steps) as f64;
    Ok(format!(
        "{{\"workload\":\"{what}\",\"batch\":{batch},\"steps\":{steps},\"samples_per_sec\":{:.3},\"tokens_per_sec\":{:.1},\"secs_per_step\":{:.4},\"peak_rss_mib\":{:.1},\"threads\":{}}}",
        samples / secs,
        samples * 256.0 / secs,
        secs / steps as f64,
        peak_rss_mib(),
        rayon::current_num_threads()
    ))
}

fn main() -> lgreg::Result<()> {
    lgreg::allocator::start_with_purge_delay(|k| std::env::var_os(k));
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let reference = args.first().is_some_and(|a| a == "--reference");
    if reference {
        args.remove(0);
    }
    let line = if reference {
        reference_only(|| bench(&args))?
    } else {
        bench(&args)?
    };
    println!("{line}");
    Ok(())
}
