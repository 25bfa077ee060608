//! Tasks and epochs shared by the collective model and the descendants: drawing an N-way task
//! of K images per class from an image set, one SGD epoch over it (recording the gradient
//! criterion when asked), and test accuracy.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{D, Tensor};
use serde::Serialize;

use super::criterion::{EpochCriterion, Threshold, fraction_above};
use super::vgg::Vgg;
use crate::error::{Error, Result};
use crate::nn::init::Rng;
use crate::train::data::ImageSet;
use crate::train::loss::{correct, cross_entropy};
use crate::train::sgd::{Sgd, SgdConfig, step_lr};

/// One drawn task.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    /// The dataset classes of the task, in the order of the task's labels.
    pub classes: Vec<u32>,
    /// Training images (indices into the set).
    pub train: Vec<usize>,
    /// Test images, disjoint from `train`.
    pub test: Vec<usize>,
}

/// Image indices per class label.
pub fn by_class(set: &ImageSet) -> BTreeMap<u32, Vec<usize>> {
    let mut out: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in set.labels.iter().enumerate() {
        out.entry(l).or_default().push(i);
    }
    out
}

/// Draw `ways` classes of `allowed`, then `shots` training and `tests` test images of each.
pub fn draw_task(
    index: &BTreeMap<u32, Vec<usize>>,
    allowed: &[u32],
    ways: usize,
    shots: usize,
    tests: usize,
    rng: &mut Rng,
) -> Result<Task> {
    if ways > allowed.len() {
        return Err(Error::InvalidValue {
            what: "classes per task".into(),
            value: ways.to_string(),
            reason: format!("only {} classes are allowed: {allowed:?}", allowed.len()),
        });
    }
    let mut pool = allowed.to_vec();
    rng.shuffle(&mut pool);
    pool.truncate(ways);
    let mut task = Task {
        classes: pool.clone(),
        train: Vec::new(),
        test: Vec::new(),
    };
    for class in pool {
        let mut images = index.get(&class).cloned().unwrap_or_default();
        if images.len() < shots + tests {
            return Err(Error::InvalidValue {
                what: "images per class".into(),
                value: (shots + tests).to_string(),
                reason: format!(
                    "class {class} has {} images, fewer than {shots} to train and {tests} to test",
                    images.len()
                ),
            });
        }
        rng.shuffle(&mut images);
        task.train.extend_from_slice(&images[..shots]);
        task.test.extend_from_slice(&images[shots..shots + tests]);
    }
    Ok(task)
}

/// How each task trains, shared by the collective model and the descendants: SGD with a
/// step schedule, epoch by epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPlan {
    /// Epochs per task.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// The learning rate at the start of each task.
    pub lr: f64,
    /// The step schedule's factor.
    pub lr_drop: f64,
    /// Epochs between drops (0: constant).
    pub epochs_drop: usize,
    /// Momentum and weight decay.
    pub sgd: SgdConfig,
    /// Re-create the optimiser every epoch, as the paper code does (else once per task).
    pub reset_optimizer_each_epoch: bool,
    /// The paper code's double softmax before the cross-entropy.
    pub softmax_before_ce: bool,
}

impl EpochPlan {
    /// The learning rate of epoch `epoch` (0-based) on the step schedule.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        step_lr(self.lr, self.lr_drop, self.epochs_drop, epoch)
    }
}

/// How labels reach the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// The dataset's labels as they are (the collective model's classifier covers them all).
    Dataset,
    /// The position of the label in the task's classes (an N-way head).
    TaskLocal,
}

/// A batch of images and labels as the classifier reads them.
pub fn batch(
    set: &ImageSet,
    task: &Task,
    indices: &[usize],
    labels: Labels,
    model: &Vgg,
) -> Result<(Tensor, Tensor)> {
    let (x, y) = set.batch(indices, &model.device)?;
    if labels == Labels::Dataset {
        return Ok((x, y));
    }
    let local: Vec<u32> = y
        .to_vec1::<u32>()?
        .iter()
        .map(|l| task.classes.iter().position(|c| c == l).unwrap_or(0) as u32)
        .collect();
    let n = local.len();
    Ok((x, Tensor::from_vec(local, n, &model.device)?))
}

/// An extra loss term computed from the model (EWC).
pub type Penalty<'a> = &'a dyn Fn(&Vgg) -> Result<Tensor>;

/// How an epoch's loss is formed.
#[derive(Clone, Copy)]
pub struct LossOptions<'a> {
    /// The paper code's quirk: a softmax layer before the cross-entropy (a double softmax).
    pub softmax_before_ce: bool,
    /// An extra term added to the loss (EWC), read from the model.
    pub penalty: Option<Penalty<'a>>,
}

/// The mean cross-entropy of `logits` against `y`, with the options' quirk and penalty.
pub fn task_loss(model: &Vgg, logits: &Tensor, y: &Tensor, opts: LossOptions) -> Result<Tensor> {
    let logits = if opts.softmax_before_ce {
        candle_nn::ops::softmax(logits, D::Minus1)?
    } else {
        logits.clone()
    };
    let ce = cross_entropy(&logits.contiguous()?, y)?;
    match opts.penalty {
        Some(penalty) => Ok((ce + penalty(model)?)?),
        None => Ok(ce),
    }
}

/// What one epoch measured.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy over the epoch's batches.
    pub train_accuracy: f64,
    /// r_l per conv layer (empty when not recorded).
    pub criterion: Vec<f64>,
    /// Images per second.
    pub images_per_sec: f64,
    /// Optimiser steps taken.
    pub steps: usize,
    /// The learning rate of the epoch.
    pub lr: f64,
}

/// Epoch `epoch` of `plan` over `task.train` in a seeded order (the optimiser reset first when
/// the plan says so).
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    model: &mut Vgg,
    set: &ImageSet,
    task: &Task,
    labels: Labels,
    plan: &EpochPlan,
    epoch: usize,
    opt: &mut Sgd,
    penalty: Option<Penalty<'_>>,
    criterion: Option<Threshold>,
    rng: &mut Rng,
) -> Result<EpochStats> {
    if plan.reset_optimizer_each_epoch {
        opt.reset();
    }
    let lr = plan.lr_at(epoch);
    let batch_size = plan.batch_size;
    let loss_opts = LossOptions {
        softmax_before_ce: plan.softmax_before_ce,
        penalty,
    };
    let began = Instant::now();
    let mut order = task.train.clone();
    rng.shuffle(&mut order);
    let mut record = EpochCriterion::default();
    let (mut loss_sum, mut hits, mut steps) = (0.0, 0usize, 0usize);
    for chunk in order.chunks(batch_size.max(1)) {
        let (x, y) = batch(set, task, chunk, labels, model)?;
        let logits = model.forward(&x, true)?;
        let loss = task_loss(model, &logits, &y, loss_opts)?;
        let grads = loss.backward()?;
        if let Some(threshold) = criterion {
            let fractions = model
                .convs
                .iter()
                .map(|b| match grads.get(b.weight.as_tensor()) {
                    Some(g) => fraction_above(g, threshold),
                    None => Ok(0.0),
                })
                .collect::<Result<Vec<_>>>()?;
            record.add(&fractions);
        }
        opt.step(&grads, lr)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(Error::InvalidValue {
                what: "TRAIN.LR".into(),
                value: lr.to_string(),
                reason: format!("the loss became {value}; lower the learning rate"),
            });
        }
        loss_sum += value;
        hits += correct(&logits, &y)?;
        steps += 1;
    }
    Ok(EpochStats {
        loss: loss_sum / steps.max(1) as f64,
        train_accuracy: hits as f64 / order.len().max(1) as f64,
        criterion: if criterion.is_some() {
            record.finish()
        } else {
            Vec::new()
        },
        images_per_sec: order.len() as f64 / began.elapsed().as_secs_f64().max(1e-9),
        steps,
        lr,
    })
}

/// Accuracy on `task.test` in eval mode (BatchNorm on running statistics).
pub fn test_accuracy(
    model: &mut Vgg,
    set: &ImageSet,
    task: &Task,
    labels: Labels,
    batch_size: usize,
) -> Result<f64> {
    let mut hits = 0usize;
    for chunk in task.test.chunks(batch_size.max(1)) {
        let (x, y) = batch(set, task, chunk, labels, model)?;
        let logits = model.forward(&x, false)?;
        hits += correct(&logits, &y)?;
    }
    Ok(hits as f64 / task.test.len().max(1) as f64)
}
