//! Net2WiderNet on a VGG conv block: new output units copy randomly chosen existing ones (conv
//! weights, bias, BatchNorm scale, shift and running statistics), and the consumer's incoming
//! weights of each copied unit are divided by that unit's copy count, so the widened network
//! computes the same function. The consumer is the next conv block, or the classifier's first
//! layer after the last block (one weight column per channel and map cell).

use candle_core::{Tensor, Var};

use super::vgg::Vgg;
use crate::error::{Error, Result};
use crate::nn::init::Rng;

/// What one widening did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Widening {
    /// The conv block widened.
    pub layer: usize,
    /// Its width before.
    pub from: usize,
    /// Its width after.
    pub to: usize,
}

fn var(t: Tensor) -> Result<Var> {
    Ok(Var::from_tensor(&t)?)
}

/// The unit each new channel copies (`0..width` first, then `extra` random sources) and the
/// copy count of each source.
fn replication(width: usize, extra: usize, rng: &mut Rng) -> (Vec<u32>, Vec<usize>) {
    let mut mapping: Vec<u32> = (0..width as u32).collect();
    let mut counts = vec![1usize; width];
    for _ in 0..extra {
        let source = rng.below(width);
        counts[source] += 1;
        mapping.push(source as u32);
    }
    (mapping, counts)
}

/// Zero for the old units and `noise · std(W) · N(0, 1)` for the new units' incoming weights;
/// `noise` 0 keeps the function exactly (copies then stay symmetric under training).
fn symmetry_noise(weight: &Tensor, old: usize, noise: f64, rng: &mut Rng) -> Result<Tensor> {
    let dims = weight.dims().to_vec();
    let per_unit: usize = dims[1..].iter().product();
    let std = weight.flatten_all()?.var(0)?.sqrt()?.to_scalar::<f32>()? as f64;
    let values: Vec<f32> = (0..dims[0] * per_unit)
        .map(|i| {
            if i / per_unit < old {
                0.0
            } else {
                (rng.normal() * std * noise) as f32
            }
        })
        .collect();
    Ok(Tensor::from_vec(values, dims, weight.device())?)
}

/// Widen conv block `layer` of `model` by `extra` channels.
pub fn widen(
    model: &mut Vgg,
    layer: usize,
    extra: usize,
    noise: f64,
    rng: &mut Rng,
) -> Result<Widening> {
    let blocks = model.convs.len();
    if layer >= blocks {
        return Err(Error::ModelMismatch {
            name: format!("features.{layer}"),
            reason: format!("cannot widen block {layer}: the VGG has {blocks} conv blocks"),
        });
    }
    let width = model.convs[layer].width();
    let (mapping, counts) = replication(width, extra, rng);
    let device = model.device.clone();
    let idx = Tensor::new(mapping.as_slice(), &device)?;
    let scale: Vec<f32> = mapping
        .iter()
        .map(|&u| 1.0 / counts[u as usize] as f32)
        .collect();
    let scale = Tensor::from_vec(scale, mapping.len(), &device)?;

    let block = &mut model.convs[layer];
    let weight = block.weight.as_tensor().index_select(&idx, 0)?;
    let weight = if noise > 0.0 {
        (&weight + symmetry_noise(&weight, width, noise, rng)?)?
    } else {
        weight
    };
    block.weight = var(weight)?;
    block.bias = var(block.bias.as_tensor().index_select(&idx, 0)?)?;
    block.gamma = var(block.gamma.as_tensor().index_select(&idx, 0)?)?;
    block.beta = var(block.beta.as_tensor().index_select(&idx, 0)?)?;
    block.running_mean = block.running_mean.index_select(&idx, 0)?;
    block.running_var = block.running_var.index_select(&idx, 0)?;

    let wide = width + extra;
    if layer + 1 < blocks {
        let next = &mut model.convs[layer + 1];
        let w = next.weight.as_tensor().index_select(&idx, 1)?;
        next.weight = var(w.broadcast_mul(&scale.reshape((1, wide, 1, 1))?)?)?;
    } else if let Some(fc) = model.classifier.first_mut() {
        let (out, inp) = fc.weight.as_tensor().dims2()?;
        let cells = inp / width;
        let w = fc.weight.as_tensor().reshape((out, width, cells))?;
        let w = w
            .index_select(&idx, 1)?
            .broadcast_mul(&scale.reshape((1, wide, 1))?)?;
        fc.weight = var(w.reshape((out, wide * cells))?)?;
    }
    model.spec.widths[layer] = wide;
    Ok(Widening {
        layer,
        from: width,
        to: wide,
    })
}
