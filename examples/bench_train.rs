//! Training throughput of the engine (samples/s) for the workloads in BENCHMARKS.md:
//! `vit` — a ViT-Tiny-sized model (width 192, 12 layers, patch 4, 28×28×1, 10 classes);
//! `llama DIR` — forward and backward of the llama at DIR at sequence length 256.
//! Usage: `cargo run --release --example bench_train -- vit|llama [DIR] [BATCH] [STEPS]`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::Instant;

use candle_core::{Device, Tensor};
use lgreg::nn::init::{Rng, VitSpec, random};
use lgreg::nn::{Input, Mode, Model};
use lgreg::train::loss::{cross_entropy, lm_loss};

fn main() -> lgreg::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("vit", String::as_str);
    let dev = Device::Cpu;
    let mut rng = Rng::new(0);
    let (model, batch, steps): (Model, usize, usize) = match what {
        "llama" => {
            let dir = std::path::PathBuf::from(args.get(1).map_or("model", String::as_str));
            let ckpt = lgreg::checkpoint::open(&dir)?;
            let b = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            let s = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
            (Model::load(&ckpt, &dev)?, b, s)
        }
        _ => {
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
            let b = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
            let s = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
            (random(&spec.config(), 0, &dev)?, b, s)
        }
    };
    let c = model.config.clone();
    let step = |rng: &mut Rng| -> lgreg::Result<()> {
        let loss = if what == "llama" {
            let ids: Vec<u32> = (0..batch * 257)
                .map(|_| rng.below(c.vocab) as u32)
                .collect();
            let t = Tensor::from_vec(ids, (batch, 257), &dev)?;
            let x = t.narrow(1, 0, 256)?;
            let y = t.narrow(1, 1, 256)?.contiguous()?;
            let out = model.forward(&Input::Tokens { ids: x, mask: None }, Mode::Train, false)?;
            lm_loss(&out.output, &y)?
        } else {
            let n = batch * 28 * 28;
            let x: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
            let x = Tensor::from_vec(x, (batch, 1, 28, 28), &dev)?;
            let y: Vec<u32> = (0..batch).map(|_| rng.below(10) as u32).collect();
            let y = Tensor::from_vec(y, batch, &dev)?;
            let out = model.forward(&Input::Images(x), Mode::Train, false)?;
            cross_entropy(&out.output, &y)?
        };
        let _grads = loss.backward()?;
        Ok(())
    };
    step(&mut rng)?; // warm-up
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut rng)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"workload\":\"{what}\",\"batch\":{batch},\"steps\":{steps},\"samples_per_sec\":{:.3}}}",
        (batch * steps) as f64 / secs
    );
    Ok(())
}
