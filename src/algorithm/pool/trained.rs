//! A trained Learngene Pool, as the paper builds it (arXiv 2312.05743): instances distilled from
//! the ancestor at several widths, joined narrower→wider by SN-Net's paired stitching, the
//! stitches and instances then fine-tuned together.
//!
//! In memory, a [`PoolNet`] holds each instance's variables once; every allowed configuration
//! (each instance alone, and every stitch from a narrower instance into a wider one) is a
//! runnable [`Model`] over those same variables, so one optimiser trains them all.
//!
//! As a gene: each instance's blocks (`pool.<name>.<k>`) and globals (`pool.<name>.globals`),
//! the stitch layers (`pool.stitch.<front><end>.<w>`), the instances' sizes ([`InstanceCard`],
//! diagnostic `distilled_instances`) and every configuration with its parameter count and its
//! metric after the fine-tune. [`grow`] turns a choice into a blueprint whose globals and
//! `config.json` follow the instances it uses.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::configs::{self, Choice, StitchConfig, block_unit, configurations_between};
use super::lstsq::Affine;
use super::{StitchTensors, pool_error, stitched_blueprint};
use crate::algorithm::GeneView;
use crate::algorithm::blueprint::{Blueprint, GlobalsFrom, GrowRequest, LayerSource};
use crate::error::Result;
use crate::nn::init::{Rng, layout};
use crate::nn::{Front, Joint, Model, ModelConfig, Parametrisation, Shared, Spliced};

/// The gene diagnostic that marks a trained pool and holds its instances.
pub const DISTILLED: &str = "distilled_instances";

/// The names of instances of `widths` (narrowest first): the paper's `tiny`, `small` and
/// `base` for up to three, `w<width>` beyond.
pub fn instance_names(widths: &[usize]) -> Vec<String> {
    match widths.len() {
        1 => vec!["base".into()],
        2 => vec!["tiny".into(), "base".into()],
        3 => vec!["tiny".into(), "small".into(), "base".into()],
        _ => widths.iter().map(|w| format!("w{w}")).collect(),
    }
}

/// Every stitch direction of instances ordered narrowest first: each into every wider one.
pub fn directions(names: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, front) in names.iter().enumerate() {
        for end in &names[k + 1..] {
            out.push((front.clone(), end.clone()));
        }
    }
    out
}

/// Every stitched configuration of a pool of instances `names` (narrowest first) of `depth`
/// blocks: SN-Net's paired stitching along each of [`directions`].
pub fn pool_configurations(names: &[String], depth: usize) -> Vec<StitchConfig> {
    let pairs = directions(names);
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(f, e)| (f.as_str(), e.as_str()))
        .collect();
    configurations_between(&borrowed, depth)
}

/// A stitch layer's variables: `(weight [end width, front width], bias [end width])`.
pub type StitchPair = (Var, Var);

/// The unit of an instance's globals.
pub fn globals_unit(instance: &str) -> String {
    format!("pool.{instance}.globals.safetensors")
}

/// What a trained pool's card records of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceCard {
    /// Width of the residual stream.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Blocks.
    pub layers: usize,
    /// Parameters of the instance alone.
    pub params: u64,
    /// Held-out metric of the instance alone after the pool fine-tune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    /// The `config.json` entries of its sizes, written over the gene's.
    pub config: Map<String, Value>,
}

/// One instance in memory.
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its sizes.
    pub config: ModelConfig,
    /// Its variables, shared by every configuration that uses it.
    pub params: Arc<dyn Parametrisation>,
}

/// A pool in memory: instances, stitch layers, and the allowed configurations.
pub struct PoolNet {
    /// The instances, narrowest first.
    pub members: Vec<Member>,
    /// The stitch layers by unit: `(weight [end width, front width], bias)`.
    pub stitches: BTreeMap<String, StitchPair>,
    /// Every stitched configuration.
    pub configs: Vec<StitchConfig>,
    /// Blocks per instance.
    pub depth: usize,
    device: Device,
}

impl PoolNet {
    /// A pool of `instances` (narrowest first, all of one depth) and the starting values of
    /// every stitch layer of [`directions`], by unit.
    pub fn new(
        instances: Vec<(String, Model)>,
        mut stitches: BTreeMap<String, StitchPair>,
    ) -> Result<PoolNet> {
        let Some((_, first)) = instances.first() else {
            return Err(pool_error(
                "a pool without instances".into(),
                "give at least one width (POOL.WIDTHS)",
            ));
        };
        let (depth, device) = (first.config.layers, first.device.clone());
        let mut members = Vec::with_capacity(instances.len());
        for (name, model) in instances {
            if model.config.layers != depth {
                return Err(pool_error(
                    format!(
                        "instance `{name}` has {} blocks, the first {depth}",
                        model.config.layers
                    ),
                    "give every instance the same depth (POOL.DEPTH)",
                ));
            }
            members.push(Member {
                name,
                config: model.config,
                params: Arc::from(model.params),
            });
        }
        let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        let configs = pool_configurations(&names, depth);
        let mut kept = BTreeMap::new();
        for c in &configs {
            if kept.contains_key(&c.stitch) {
                continue;
            }
            let made = stitches.remove(&c.stitch).ok_or_else(|| {
                pool_error(
                    format!("no starting value for stitch `{}`", c.stitch),
                    "this is a bug in lgreg",
                )
            })?;
            kept.insert(c.stitch.clone(), made);
        }
        Ok(PoolNet {
            members,
            stitches: kept,
            configs,
            depth,
            device,
        })
    }

    /// The instance `name`.
    pub fn member(&self, name: &str) -> Result<&Member> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| pool_error(format!("no instance `{name}`"), "this is a bug in lgreg"))
    }

    /// The instance names, narrowest first.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Every allowed configuration: each instance alone, then every stitch.
    pub fn choices(&self) -> Vec<Choice> {
        let pure = self.members.iter().map(|m| Choice::Pure(m.name.clone()));
        pure.chain(self.configs.iter().cloned().map(Choice::Stitched))
            .collect()
    }

    /// The runnable model of `choice`, over the pool's own variables.
    pub fn model(&self, choice: &Choice) -> Result<Model> {
        match choice {
            Choice::Pure(name) => {
                let m = self.member(name)?;
                Ok(Model::new(
                    m.config.clone(),
                    Box::new(Shared(m.params.clone())),
                    self.device.clone(),
                ))
            }
            Choice::Stitched(c) => {
                let (front, end) = (self.member(&c.front)?, self.member(&c.end)?);
                let stitch = self.stitches.get(&c.stitch).cloned().ok_or_else(|| {
                    pool_error(
                        format!("no stitch `{}`", c.stitch),
                        "this is a bug in lgreg",
                    )
                })?;
                let config = ModelConfig {
                    layers: c.depth,
                    front: Some(Front {
                        blocks: c.i + 1,
                        hidden: front.config.hidden,
                        intermediate: front.config.intermediate,
                    }),
                    ..end.config.clone()
                };
                let params = Spliced {
                    front: front.params.clone(),
                    end: end.params.clone(),
                    front_blocks: c.i + 1,
                    end_from: c.j,
                    stitch,
                };
                Ok(Model::new(config, Box::new(params), self.device.clone()))
            }
        }
    }

    /// Every variable of the pool once (instances `instance.<name>.*`, stitches
    /// `stitch.<unit>.*`), as a model the optimiser and the resumable state read; it is
    /// never run.
    pub fn joint(&self) -> Result<Model> {
        let widest = self.member(&self.names().last().cloned().unwrap_or_default())?;
        let joint = Joint {
            parts: self
                .members
                .iter()
                .map(|m| (m.name.clone(), m.params.clone()))
                .collect(),
            stitches: self
                .stitches
                .iter()
                .map(|(u, wb)| (u.clone(), wb.clone()))
                .collect(),
        };
        Ok(Model::new(
            widest.config.clone(),
            Box::new(joint),
            self.device.clone(),
        ))
    }
}

/// The parameters of the descendant `model` is: its layout's tensors and its stitches.
pub fn descendant_params(model: &Model) -> Result<u64> {
    let mut n = 0u64;
    for (slot, _, _) in layout(&model.config) {
        if let Some(t) = model.params.get(&slot)? {
            n += t.elem_count() as u64;
        }
    }
    for layer in 0..model.config.layers {
        if let Some((w, b)) = model.params.stitch(layer) {
            n += (w.elem_count() + b.map_or(0, |b| b.elem_count())) as u64;
        }
    }
    Ok(n)
}

/// A stitch variable pair from a fitted affine map.
pub fn stitch_of(map: &Affine, device: &Device) -> Result<StitchPair> {
    let w = Tensor::from_vec(map.weight.clone(), (map.outputs, map.inputs), device)?;
    let b = Tensor::from_vec(map.bias.clone(), map.outputs, device)?;
    Ok((Var::from_tensor(&w)?, Var::from_tensor(&b)?))
}

/// The paper's `ours` stitch: the transpose of the front instance's averaged learned
/// teacher→student hidden-state map `mean_map [front width, teacher width]` (which needs
/// the end at the teacher's width), its bias as PyTorch's `nn.Linear` default, seeded.
pub fn transposed_map(mean_map: &Tensor, seed: u64) -> Result<StitchPair> {
    let weight = mean_map.t()?.contiguous()?;
    let (outputs, inputs) = weight.dims2()?;
    let bound = 1.0 / (inputs.max(1) as f64).sqrt();
    let mut rng = Rng::new(seed);
    let bias: Vec<f32> = (0..outputs)
        .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
        .collect();
    let bias = Tensor::from_vec(bias, outputs, weight.device())?;
    Ok((Var::from_tensor(&weight)?, Var::from_tensor(&bias)?))
}

/// The trained pool's instances from a gene's card, narrowest first.
fn instance_cards(gene: &GeneView) -> Result<Vec<(String, InstanceCard)>> {
    let cards: BTreeMap<String, InstanceCard> = gene.diagnostic(DISTILLED)?;
    let mut out: Vec<(String, InstanceCard)> = cards.into_iter().collect();
    out.sort_by_key(|(_, c)| c.hidden);
    Ok(out)
}

/// A Markdown table of every configuration of a trained pool gene with its depth, size and
/// held-out metric after the pool fine-tune, the one `bp` builds marked; `None` for other
/// genes.
pub fn configuration_table(gene: &GeneView, bp: &Blueprint) -> Option<String> {
    let cards = instance_cards(gene).ok()?;
    let configs: Vec<StitchConfig> = gene.diagnostic("configurations").ok()?;
    let chosen_instance = bp.notes.get("pool_instance").and_then(Value::as_str);
    let chosen_stitch: Option<StitchConfig> = bp
        .notes
        .get("pool_configuration")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let metric = |m: Option<f64>| m.map_or("-".to_string(), |m| format!("{m:.4}"));
    let mut rows = vec![
        "| configuration | layers | parameters | held-out metric | |".to_string(),
        "| --- | --- | --- | --- | --- |".to_string(),
    ];
    for (name, c) in &cards {
        let mark = if chosen_instance == Some(name.as_str()) {
            "this model"
        } else {
            ""
        };
        rows.push(format!(
            "| `{name}` alone (width {}) | {} | {} | {} | {mark} |",
            c.hidden,
            c.layers,
            c.params,
            metric(c.metric)
        ));
    }
    for c in &configs {
        let same = chosen_stitch
            .as_ref()
            .is_some_and(|x| (&x.front, &x.end, x.i, x.j) == (&c.front, &c.end, c.i, c.j));
        rows.push(format!(
            "| `{}` 0..={} → `{}` {}.. (`--stitch {},{}`) | {} | {} | {} | {} |",
            c.front,
            c.i,
            c.end,
            c.j,
            c.i,
            c.j,
            c.depth,
            c.params.map_or("-".into(), |p| p.to_string()),
            metric(c.metric),
            if same { "this model" } else { "" }
        ));
    }
    Some(rows.join("\n"))
}

/// The blueprint of the configuration `request` asks for (by `--front`, `--end`,
/// `--stitch`, `--layers`, or `--max-params`) from a trained pool gene.
pub fn grow(gene: &GeneView, request: &GrowRequest) -> Result<Blueprint> {
    let cards = instance_cards(gene)?;
    let configs_all: Vec<StitchConfig> = gene.diagnostic("configurations")?;
    let d = cards.first().map_or(0, |(_, c)| c.layers);
    let names: Vec<String> = cards.iter().map(|(n, _)| n.clone()).collect();
    let choice = match request.options.max_params {
        Some(budget) => {
            let sized: Vec<(String, Option<u64>)> = cards
                .iter()
                .map(|(n, c)| (n.clone(), Some(c.params)))
                .collect();
            configs::choose_by_budget(&configs_all, d, &sized, budget, request)?
        }
        None => configs::choose(&configs_all, &names, d, request)?,
    };
    let card_of = |name: &str| {
        cards
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| pool_error(format!("no instance `{name}`"), "this is a bug in lgreg"))
    };
    let copy = |name: &str, k: usize| LayerSource::Copy {
        unit: block_unit(name, k),
    };
    let mut notes = Map::new();
    match choice {
        Choice::Pure(name) => {
            let card = card_of(&name)?;
            notes.insert("pool_instance".into(), name.clone().into());
            if let Some(m) = card.metric {
                notes.insert("pool_metric".into(), m.into());
            }
            let mut bp = Blueprint::of((0..d).map(|k| copy(&name, k)).collect());
            bp.globals = GlobalsFrom::Unit {
                unit: globals_unit(&name),
            };
            bp.config = card.config.clone();
            bp.notes = notes;
            Ok(bp)
        }
        Choice::Stitched(c) => {
            let (front, end) = (card_of(&c.front)?, card_of(&c.end)?);
            if let Some(m) = c.metric {
                notes.insert("pool_metric".into(), m.into());
            }
            notes.insert("pool_configuration".into(), serde_json::to_value(&c)?);
            let mut bp = stitched_blueprint(&c, d, StitchTensors::new());
            bp.globals = GlobalsFrom::Split {
                front: globals_unit(&c.front),
                end: globals_unit(&c.end),
            };
            bp.config = end.config.clone();
            if front.hidden != end.hidden {
                let front = Front {
                    blocks: c.i + 1,
                    hidden: front.hidden,
                    intermediate: front.intermediate,
                };
                bp.config.insert("lgreg_front".into(), front.to_json());
            }
            bp.notes = notes;
            Ok(bp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::init::{VitSpec, random_plain};
    use crate::nn::{Hooks, Input, Mode};

    /// A seeded random vit instance of `width` (16-wide heads), 3 blocks.
    fn instance(width: usize, seed: u64) -> Model {
        let config = VitSpec {
            image_size: 8,
            patch_size: 4,
            channels: 1,
            hidden: width,
            layers: 3,
            heads: width / 16,
            classes: 4,
            class_token: true,
        }
        .config();
        let params = random_plain(&config, seed, &Device::Cpu).unwrap();
        Model::new(config, Box::new(params), Device::Cpu)
    }

    fn pool() -> PoolNet {
        let mut rng = Rng::new(9);
        let names = vec!["tiny".to_string(), "base".to_string()];
        let mut stitches = BTreeMap::new();
        for c in pool_configurations(&names, 3) {
            let weight: Vec<f32> = (0..16 * 32)
                .map(|_| (rng.uniform() - 0.5) as f32 * 0.3)
                .collect();
            let bias: Vec<f32> = (0..32).map(|_| rng.uniform() as f32).collect();
            let map = Affine {
                weight,
                bias,
                inputs: 16,
                outputs: 32,
            };
            stitches.insert(c.stitch, stitch_of(&map, &Device::Cpu).unwrap());
        }
        let instances = vec![
            ("tiny".into(), instance(16, 1)),
            ("base".into(), instance(32, 2)),
        ];
        PoolNet::new(instances, stitches).unwrap()
    }

    #[test]
    fn a_stitched_configuration_is_its_front_its_stitch_and_its_end_run_apart() {
        let net = pool();
        assert_eq!(net.configs.len(), 7, "paired stitching over 3 blocks");
        let x = Tensor::randn(0f32, 1.0, (2, 1, 8, 8), &Device::Cpu).unwrap();
        let input = Input::Images(x);
        let hidden = Hooks {
            hidden: true,
            ..Hooks::default()
        };
        for c in &net.configs {
            let whole = net.model(&Choice::Stitched(c.clone())).unwrap();
            assert_eq!(whole.params.depth(), c.depth);
            let got = whole.forward(&input, Mode::Infer, false).unwrap().output;
            let front = net.model(&Choice::Pure("tiny".into())).unwrap();
            let end = net.model(&Choice::Pure("base".into())).unwrap();
            let h = front
                .forward_with(&input, Mode::Infer, hidden)
                .unwrap()
                .hidden[c.i + 1]
                .clone();
            let (w, b) = &net.stitches[&c.stitch];
            let h = h
                .broadcast_matmul(&w.as_tensor().t().unwrap())
                .unwrap()
                .broadcast_add(b.as_tensor())
                .unwrap();
            let want = end
                .forward_from(&h, c.j, None, Mode::Infer, Hooks::default())
                .unwrap()
                .output;
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "{c:?}: differs by {diff}");
        }
    }

    #[test]
    fn every_configuration_trains_the_pools_own_variables() {
        let net = pool();
        let joint = net.joint().unwrap();
        let names: Vec<String> = joint.vars().into_iter().map(|(n, _)| n).collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "each variable once");
        assert_eq!(
            names.iter().filter(|n| n.starts_with("stitch.")).count(),
            2 * 2,
            "two stitch layers over 3 blocks, weight and bias"
        );
        let x = Tensor::randn(0f32, 1.0, (2, 1, 8, 8), &Device::Cpu).unwrap();
        let c = net.configs[3].clone();
        let model = net.model(&Choice::Stitched(c.clone())).unwrap();
        let loss = model
            .forward(&Input::Images(x), Mode::Train, false)
            .unwrap()
            .output
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let reached = |prefix: &str| {
            joint
                .vars()
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .any(|(_, v)| grads.get(v.as_tensor()).is_some())
        };
        assert!(reached(&format!("stitch.{}", c.stitch)));
        assert!(reached("instance.tiny."));
        assert!(reached("instance.base."));
    }

    #[test]
    fn stitches_run_from_each_instance_into_every_wider_one() {
        let names = instance_names(&[64, 128, 192]);
        assert_eq!(names, ["tiny", "small", "base"]);
        let dirs = directions(&names);
        let as_str: Vec<(&str, &str)> =
            dirs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            as_str,
            [("tiny", "small"), ("tiny", "base"), ("small", "base")]
        );
        assert_eq!(instance_names(&[32, 64, 96, 128])[3], "w128");
    }
}
