//! Training checkpoints: the model's variables, the optimiser's moments, the EMA's shadow and
//! the step, written
//! atomically so an interrupted `adapt` resumes exactly where it stopped.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::ema::Ema;
use super::optim::AdamW;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::nn::Model;

/// The file names inside a state directory.
const TENSORS: &str = "state.safetensors";
const META: &str = "state.json";
/// The step and the last loss inside the tensors file.
const STEP: &str = "meta/step";
const LOSS: &str = "meta/last_loss";

/// What a state directory records besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMeta {
    /// Steps completed.
    pub step: usize,
    /// Steps the run was planned for.
    pub total: usize,
    /// The run's seed.
    pub seed: u64,
    /// Loss of the last step.
    pub last_loss: f32,
}

/// Whether `dir` holds a complete training state (a process killed during its first save
/// leaves the directory without its metadata, which is written last).
pub fn exists(dir: &Path) -> bool {
    dir.join(META).is_file()
}

/// Save the model's variables, the optimiser's moments and the EMA's shadow to `dir`.
pub fn save(
    dir: &Path,
    model: &Model,
    opt: &AdamW,
    ema: Option<&Ema>,
    meta: &StateMeta,
) -> Result<()> {
    fs_err::create_dir_all(dir)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in model.vars() {
        tensors.insert(format!("param/{name}"), var.as_tensor().clone());
    }
    for (name, t) in &opt.m {
        tensors.insert(format!("m/{name}"), t.clone());
    }
    for (name, t) in &opt.v {
        tensors.insert(format!("v/{name}"), t.clone());
    }
    for (name, t) in ema.iter().flat_map(|e| &e.shadow) {
        tensors.insert(format!("ema/{name}"), t.clone());
    }
    // The step and loss travel with the tensors: a process killed between the two renames
    // leaves tensors one step ahead of `state.json`, and the tensors' own step wins.
    tensors.insert(STEP.into(), Tensor::new(&[meta.step as u32], &Device::Cpu)?);
    tensors.insert(LOSS.into(), Tensor::new(&[meta.last_loss], &Device::Cpu)?);
    let tmp = dir.join(format!("{TENSORS}.tmp"));
    candle_core::safetensors::save(&tensors, &tmp)?;
    fs_err::rename(&tmp, dir.join(TENSORS))?;
    write_atomic(&dir.join(META), &serde_json::to_vec_pretty(meta)?)?;
    Ok(())
}

/// Restore variables, moments and the EMA's shadow saved by [`save`]; returns the saved
/// metadata.
pub fn load(
    dir: &Path,
    model: &Model,
    opt: &mut AdamW,
    mut ema: Option<&mut Ema>,
) -> Result<StateMeta> {
    let meta_path = dir.join(META);
    if !meta_path.is_file() {
        return Err(Error::NotFound { path: meta_path });
    }
    let mut meta: StateMeta =
        serde_json::from_slice(&fs_err::read(&meta_path)?).map_err(|e| Error::Config {
            path: meta_path.clone(),
            reason: format!("not a training state: {e}"),
        })?;
    let tensors = candle_core::safetensors::load(dir.join(TENSORS), &Device::Cpu)?;
    if let (Some(step), Some(loss)) = (tensors.get(STEP), tensors.get(LOSS)) {
        meta.step = step.to_vec1::<u32>()?.first().copied().unwrap_or(0) as usize;
        meta.last_loss = loss.to_vec1::<f32>()?.first().copied().unwrap_or(f32::NAN);
    }
    let take = |key: String| -> Result<Tensor> {
        let t = tensors.get(&key).ok_or_else(|| Error::ModelMismatch {
            name: key.clone(),
            reason: format!("the training state in `{}` lacks it", dir.display()),
        })?;
        Ok(t.to_device(&model.device)?)
    };
    for (name, var) in model.vars() {
        let t = take(format!("param/{name}"))?;
        if t.dims() != var.dims() {
            return Err(Error::ModelMismatch {
                name,
                reason: format!("saved shape {:?}, model shape {:?}", t.dims(), var.dims()),
            });
        }
        var.set(&t)?;
        opt.m.insert(name.clone(), take(format!("m/{name}"))?);
        opt.v.insert(name.clone(), take(format!("v/{name}"))?);
        if let Some(e) = ema.as_deref_mut() {
            e.shadow.insert(name.clone(), take(format!("ema/{name}"))?);
        }
    }
    opt.step = meta.step;
    Ok(meta)
}
