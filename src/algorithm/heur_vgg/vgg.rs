//! The VGG family of Heur Learngene: 3×3 conv blocks (conv, BatchNorm, ReLU) with 2×2 max-pools
//! after chosen blocks, then a fully connected classifier. BatchNorm runs in train mode (batch
//! statistics, running statistics updated with PyTorch's momentum and unbiased variance) or eval
//! mode (running statistics). A model is a directory with `model.safetensors` (torchvision-style
//! names, running statistics included) and `config.json` (its [`VggSpec`]).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::StagedDir;
use crate::nn::init::Rng;

/// The weights file of a VGG directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The config file of a VGG directory.
pub const CONFIG_FILE: &str = "config.json";

/// The `model_type` written in `config.json`.
pub const MODEL_TYPE: &str = "lgreg-vgg";

/// The shape of a VGG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VggSpec {
    /// Always [`MODEL_TYPE`].
    pub model_type: String,
    /// Image channels (1 for grey).
    pub in_channels: usize,
    /// Image side.
    pub image_size: usize,
    /// Output channels of each conv block.
    pub widths: Vec<usize>,
    /// Conv blocks (0-based) followed by a 2×2 max-pool.
    pub pool_after: Vec<usize>,
    /// Widths of the classifier's hidden layers.
    pub hidden: Vec<usize>,
    /// Outputs of the classifier.
    pub classes: usize,
    /// BatchNorm's ε.
    pub bn_eps: f64,
    /// BatchNorm's running-statistics momentum.
    pub bn_momentum: f64,
}

impl VggSpec {
    /// A spec with PyTorch's BatchNorm defaults (ε 1e-5, momentum 0.1).
    pub fn new(
        in_channels: usize,
        image_size: usize,
        widths: Vec<usize>,
        pool_after: Vec<usize>,
        hidden: Vec<usize>,
        classes: usize,
    ) -> VggSpec {
        VggSpec {
            model_type: MODEL_TYPE.into(),
            in_channels,
            image_size,
            widths,
            pool_after,
            hidden,
            classes,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }

    /// Fail unless every block and pool fits: no pool may shrink the map below 1×1.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::ModelMismatch {
            name: "vgg".into(),
            reason,
        };
        if self.widths.is_empty() || self.widths.contains(&0) {
            return Err(bad(format!(
                "conv widths {:?} must be non-empty and positive",
                self.widths
            )));
        }
        if self.classes == 0 || self.hidden.contains(&0) {
            return Err(bad("the classifier needs positive widths".into()));
        }
        if let Some(&p) = self.pool_after.iter().find(|&&p| p >= self.widths.len()) {
            return Err(bad(format!(
                "a pool after block {p}, but there are {} blocks",
                self.widths.len()
            )));
        }
        let mut side = self.image_size;
        for block in 0..self.widths.len() {
            if self.pool_after.contains(&block) {
                if side < 2 {
                    return Err(bad(format!(
                        "the pool after block {block} would shrink a {side}×{side} map below 1×1; drop it from the pools for {}×{} input",
                        self.image_size, self.image_size
                    )));
                }
                side /= 2;
            }
        }
        Ok(())
    }

    /// The map's side after every block and pool.
    pub fn final_side(&self) -> usize {
        self.side_after(self.widths.len())
    }

    /// The map's side at the input of block `block` (`widths.len()`: the classifier's input).
    pub fn side_after(&self, block: usize) -> usize {
        let pools = self.pool_after.iter().filter(|&&p| p < block).count();
        (0..pools).fold(self.image_size, |s, _| s / 2)
    }

    /// Inputs of the classifier's first layer.
    pub fn flat_features(&self) -> usize {
        let side = self.final_side();
        self.widths.last().copied().unwrap_or(0) * side * side
    }
}

/// One conv block's parameters and BatchNorm running statistics.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    /// `[out, in, 3, 3]`.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
    /// BatchNorm scale `[out]`.
    pub gamma: Var,
    /// BatchNorm shift `[out]`.
    pub beta: Var,
    /// BatchNorm running mean `[out]`.
    pub running_mean: Tensor,
    /// BatchNorm running variance `[out]`.
    pub running_var: Tensor,
}

/// One fully connected layer, `[out, in]` as PyTorch stores it.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
}

/// A VGG with its parameters as trainable variables.
#[derive(Debug, Clone)]
pub struct Vgg {
    /// Its shape (kept in step with the tensors when widened).
    pub spec: VggSpec,
    /// The conv blocks, input first.
    pub convs: Vec<ConvBlock>,
    /// The classifier, input first.
    pub classifier: Vec<Linear>,
    /// Where the tensors live.
    pub device: Device,
}

/// PyTorch's default initialisation of a conv or linear layer (Kaiming-uniform with a = √5):
/// weight and bias uniform in ±1/√fan_in.
fn default_init(shape: &[usize], fan_in: usize, rng: &mut Rng, device: &Device) -> Result<Var> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
        .collect();
    Ok(Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?)
}

fn filled(n: usize, value: f32, device: &Device) -> Result<Tensor> {
    Ok(Tensor::full(value, n, device)?)
}

/// A conv block of `out` channels over `inp`, initialised as PyTorch does.
pub fn random_block(inp: usize, out: usize, rng: &mut Rng, device: &Device) -> Result<ConvBlock> {
    let fan_in = inp * 9;
    Ok(ConvBlock {
        weight: default_init(&[out, inp, 3, 3], fan_in, rng, device)?,
        bias: default_init(&[out], fan_in, rng, device)?,
        gamma: Var::from_tensor(&filled(out, 1.0, device)?)?,
        beta: Var::from_tensor(&filled(out, 0.0, device)?)?,
        running_mean: filled(out, 0.0, device)?,
        running_var: filled(out, 1.0, device)?,
    })
}

/// A linear layer, initialised as PyTorch does.
pub fn random_linear(inp: usize, out: usize, rng: &mut Rng, device: &Device) -> Result<Linear> {
    Ok(Linear {
        weight: default_init(&[out, inp], inp, rng, device)?,
        bias: default_init(&[out], inp, rng, device)?,
    })
}

/// `x` with a trailing odd row and column dropped, then 2×2 max-pooled (floor mode, as
/// PyTorch's `MaxPool2d(2)`; candle's pool gradient needs an even side).
fn pool(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = x.narrow(2, 0, h - h % 2)?.narrow(3, 0, w - w % 2)?;
    Ok(x.max_pool2d(2)?)
}

fn channel_view(t: &Tensor) -> Result<Tensor> {
    Ok(t.reshape((1, t.elem_count(), 1, 1))?)
}

/// Mean over batch and space, `[1, c, 1, 1]`.
fn channel_mean(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?)
}

impl ConvBlock {
    /// Channels out.
    pub fn width(&self) -> usize {
        self.bias.elem_count()
    }

    /// conv → BatchNorm → ReLU. In train mode the running statistics move towards the batch's.
    fn forward(&mut self, x: &Tensor, train: bool, spec: &VggSpec) -> Result<Tensor> {
        let y = x
            .conv2d(&self.weight, 1, 1, 1, 1)?
            .broadcast_add(&channel_view(&self.bias)?)?;
        let normed = if train {
            let (n, _, h, w) = y.dims4()?;
            let mean = channel_mean(&y)?;
            let centered = y.broadcast_sub(&mean)?;
            let var = channel_mean(&centered.sqr()?)?;
            let count = (n * h * w) as f64;
            let m = spec.bn_momentum;
            let unbiased = count / (count - 1.0).max(1.0);
            self.running_mean =
                ((&self.running_mean * (1.0 - m))? + (mean.detach().flatten_all()? * m)?)?;
            self.running_var = ((&self.running_var * (1.0 - m))?
                + (var.detach().flatten_all()? * (m * unbiased))?)?;
            centered.broadcast_div(&(var + spec.bn_eps)?.sqrt()?)?
        } else {
            let std = (&self.running_var + spec.bn_eps)?.sqrt()?;
            y.broadcast_sub(&channel_view(&self.running_mean)?)?
                .broadcast_div(&channel_view(&std)?)?
        };
        let out = normed
            .broadcast_mul(&channel_view(&self.gamma)?)?
            .broadcast_add(&channel_view(&self.beta)?)?;
        Ok(out.relu()?)
    }

    /// The block's tensors under `prefix` (`features.<i>`), running statistics included.
    pub fn tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![
            (
                format!("{prefix}.conv.weight"),
                self.weight.as_tensor().clone(),
            ),
            (format!("{prefix}.conv.bias"), self.bias.as_tensor().clone()),
            (
                format!("{prefix}.bn.weight"),
                self.gamma.as_tensor().clone(),
            ),
            (format!("{prefix}.bn.bias"), self.beta.as_tensor().clone()),
            (
                format!("{prefix}.bn.running_mean"),
                self.running_mean.clone(),
            ),
            (format!("{prefix}.bn.running_var"), self.running_var.clone()),
        ]
    }

    /// The block's trainable variables under `prefix`.
    pub fn vars(&self, prefix: &str) -> Vec<(String, Var)> {
        vec![
            (format!("{prefix}.conv.weight"), self.weight.clone()),
            (format!("{prefix}.conv.bias"), self.bias.clone()),
            (format!("{prefix}.bn.weight"), self.gamma.clone()),
            (format!("{prefix}.bn.bias"), self.beta.clone()),
        ]
    }

    /// A block read from `tensors` under `prefix`, checked against `inp` → `out` channels.
    pub fn from_tensors(
        tensors: &BTreeMap<String, Tensor>,
        prefix: &str,
        inp: usize,
        out: usize,
        origin: &Path,
    ) -> Result<ConvBlock> {
        let take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let key = format!("{prefix}.{name}");
            let t = tensors.get(&key).ok_or_else(|| Error::ModelMismatch {
                name: key.clone(),
                reason: format!("it is missing from `{}`", origin.display()),
            })?;
            if t.dims() != shape {
                return Err(Error::ModelMismatch {
                    name: key,
                    reason: format!(
                        "shape {:?} in `{}`, but the config asks {shape:?}",
                        t.dims(),
                        origin.display()
                    ),
                });
            }
            Ok(t.to_dtype(DType::F32)?)
        };
        Ok(ConvBlock {
            weight: Var::from_tensor(&take("conv.weight", &[out, inp, 3, 3])?)?,
            bias: Var::from_tensor(&take("conv.bias", &[out])?)?,
            gamma: Var::from_tensor(&take("bn.weight", &[out])?)?,
            beta: Var::from_tensor(&take("bn.bias", &[out])?)?,
            running_mean: take("bn.running_mean", &[out])?,
            running_var: take("bn.running_var", &[out])?,
        })
    }
}

/// The name prefix of conv block `i`.
pub fn block_prefix(i: usize) -> String {
    format!("features.{i}")
}

impl Vgg {
    /// A seeded random VGG of shape `spec`.
    pub fn random(spec: VggSpec, seed: u64, device: &Device) -> Result<Vgg> {
        spec.validate()?;
        let mut rng = Rng::new(seed);
        let mut convs = Vec::with_capacity(spec.widths.len());
        let mut inp = spec.in_channels;
        for &out in &spec.widths {
            convs.push(random_block(inp, out, &mut rng, device)?);
            inp = out;
        }
        let classifier = random_classifier(&spec, &mut rng, device)?;
        Ok(Vgg {
            spec,
            convs,
            classifier,
            device: device.clone(),
        })
    }

    /// Logits `[n, classes]` of images `[n, c, h, w]`.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for i in 0..self.convs.len() {
            h = self.convs[i].forward(&h, train, &self.spec)?;
            if self.spec.pool_after.contains(&i) {
                h = pool(&h)?;
            }
        }
        let mut h = h.flatten_from(1)?;
        for (j, fc) in self.classifier.iter().enumerate() {
            h = h
                .matmul(&fc.weight.as_tensor().t()?)?
                .broadcast_add(fc.bias.as_tensor())?;
            if j + 1 < self.classifier.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Every trainable variable with its checkpoint name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut out: Vec<(String, Var)> = Vec::new();
        for (i, block) in self.convs.iter().enumerate() {
            out.extend(block.vars(&block_prefix(i)));
        }
        for (j, fc) in self.classifier.iter().enumerate() {
            out.push((format!("classifier.{j}.weight"), fc.weight.clone()));
            out.push((format!("classifier.{j}.bias"), fc.bias.clone()));
        }
        out
    }

    /// Every tensor of the checkpoint, running statistics included.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, block) in self.convs.iter().enumerate() {
            out.extend(block.tensors(&block_prefix(i)));
        }
        for (j, fc) in self.classifier.iter().enumerate() {
            out.insert(
                format!("classifier.{j}.weight"),
                fc.weight.as_tensor().clone(),
            );
            out.insert(format!("classifier.{j}.bias"), fc.bias.as_tensor().clone());
        }
        out
    }

    /// Write the model to the directory `dir` (staged, fsynced, then renamed into place).
    pub fn save(&self, dir: &Path, force: bool) -> Result<()> {
        let staged = StagedDir::new(dir, force)?;
        staged.write_file(WEIGHTS_FILE, &safetensors_bytes(&self.tensors())?)?;
        staged.write_file(CONFIG_FILE, &serde_json::to_vec_pretty(&self.spec)?)?;
        staged.commit()?;
        Ok(())
    }

    /// Read a model written by [`Vgg::save`].
    pub fn load(dir: &Path, device: &Device) -> Result<Vgg> {
        let spec = read_spec(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        let tensors = read_tensors(&weights, device)?;
        let mut convs = Vec::with_capacity(spec.widths.len());
        let mut inp = spec.in_channels;
        for (i, &out) in spec.widths.iter().enumerate() {
            convs.push(ConvBlock::from_tensors(
                &tensors,
                &block_prefix(i),
                inp,
                out,
                &weights,
            )?);
            inp = out;
        }
        let mut classifier = Vec::new();
        let mut inp = spec.flat_features();
        for (j, &out) in spec.hidden.iter().chain([&spec.classes]).enumerate() {
            let w = tensors.get(&format!("classifier.{j}.weight"));
            let b = tensors.get(&format!("classifier.{j}.bias"));
            let (Some(w), Some(b)) = (w, b) else {
                return Err(Error::ModelMismatch {
                    name: format!("classifier.{j}"),
                    reason: format!("it is missing from `{}`", weights.display()),
                });
            };
            if w.dims() != [out, inp] || b.dims() != [out] {
                return Err(Error::ModelMismatch {
                    name: format!("classifier.{j}"),
                    reason: format!(
                        "shape {:?} in `{}`, but the config asks [{out}, {inp}]",
                        w.dims(),
                        weights.display()
                    ),
                });
            }
            classifier.push(Linear {
                weight: Var::from_tensor(w)?,
                bias: Var::from_tensor(b)?,
            });
            inp = out;
        }
        Ok(Vgg {
            spec,
            convs,
            classifier,
            device: device.clone(),
        })
    }
}

/// The classifier a spec asks for, seeded from `rng`.
pub fn random_classifier(spec: &VggSpec, rng: &mut Rng, device: &Device) -> Result<Vec<Linear>> {
    let mut inp = spec.flat_features();
    let mut out = Vec::new();
    for &width in spec.hidden.iter().chain([&spec.classes]) {
        out.push(random_linear(inp, width, rng, device)?);
        inp = width;
    }
    Ok(out)
}

/// The `config.json` of a VGG directory.
pub fn read_spec(dir: &Path) -> Result<VggSpec> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(Error::NotFound { path });
    }
    let spec: VggSpec =
        serde_json::from_slice(&fs_err::read(&path)?).map_err(|e| Error::Config {
            path: path.clone(),
            reason: format!("not a VGG config: {e}"),
        })?;
    if spec.model_type != MODEL_TYPE {
        return Err(Error::Config {
            path,
            reason: format!("model_type is '{}', not '{MODEL_TYPE}'", spec.model_type),
        });
    }
    spec.validate()?;
    Ok(spec)
}

/// A safetensors file's bytes for `tensors` (f32, names sorted).
pub fn safetensors_bytes(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(cpu.iter().map(|(k, t)| (k.as_str(), t)), None).map_err(|e| {
        Error::ModelMismatch {
            name: "safetensors".into(),
            reason: e.to_string(),
        }
    })
}

/// Every tensor of a safetensors file, on `device`.
pub fn read_tensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::NotFound {
            path: path.to_path_buf(),
        });
    }
    Ok(candle_core::safetensors::load(path, device)?
        .into_iter()
        .collect())
}
