//! `MODE: faithful` for pool, as the Learngene Pool paper builds it (arXiv 2312.05743):
//!
//! 1. **Instances.** One student per width of `POOL.WIDTHS` (narrowest first; default a third
//!    of the teacher's width and the teacher's), `POOL.DEPTH` blocks each (default 6), the
//!    teacher's head width, seeded random values, distilled from the teacher with `DISTILL.*`
//!    on `DATASET.PATH` under the budget of `TRAIN.*`. The loss is the paper's:
//!    `DISTILL.ALPHA` (default 0.9: the paper's α = 0.1 on the labels) on the soft logits and
//!    matched block outputs and attention branches, the rest on the labels; the narrowest
//!    matches at `front-end`, the others at `end`, unless `DISTILL.FEATURES` says otherwise.
//! 2. **Stitches.** SN-Net's paired stitching from each instance into every wider one,
//!    initialised by `POOL.STITCH_INIT`: `ours` (the transpose of the front's averaged learned
//!    teacher→student maps; the end must have the teacher's width) or `snnet` (least squares
//!    on the pool recipe's calibration samples).
//! 3. **Pool fine-tune.** Instances and stitches together; each step trains one allowed
//!    configuration drawn uniformly; the loss is 0.5·CE + 0.5·KD against the teacher
//!    (T = 1, DeiT's reduction), no Mixup or CutMix, warmed up over a tenth of it, at
//!    `POOL.LR`; `POOL.STEPS` or `POOL.EPOCHS` steps (default the instances' budget).
//! 4. **Gene.** Every configuration's held-out metric and size go in the card; the gene holds
//!    the instances' blocks and globals and the stitches.
//!
//! The run directory holds `config.yaml`, `instances/<name>/` (each distilled student, a
//! plain model, with `metrics.jsonl`), `maps/<name>.safetensors` (its averaged map),
//! `metrics.jsonl` (the fine-tune; the students' are `instances/<name>.metrics.jsonl`), `pool/<name>/` (the fine-tuned instances),
//! `configurations.json`, `pool.png` / `pool.svg` (metric against size; drawn by the CLI) and
//! `gene.json`; the resumable state `.pool-state/` until the gene is
//! published. `--resume` skips the instances already written and continues the one or the
//! fine-tune in progress.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::{Map, Value, json};

use super::Config;
use super::faithful::{
    aux_config_json, check_input_size, check_run_dir, distill_options, feature_positions, write_aux,
};
use super::plan::{AncestorRun, adapt_options, scaled_lr};
use super::run::{Trained, write_run_config};
use crate::algorithm::ancestor::AncestorModel;
use crate::algorithm::builder::GeneBuilder;
use crate::algorithm::faithful::selected_plain;
use crate::algorithm::heur_vgg::vgg::safetensors_bytes;
use crate::algorithm::pool::configs::{Choice, StitchConfig, block_unit};
use crate::algorithm::pool::trained::{
    DISTILLED, InstanceCard, PoolNet, StitchPair, descendant_params, globals_unit, instance_names,
    pool_configurations, stitch_of, transposed_map,
};
use crate::algorithm::pool::{Params, StitchTensors, calibration_batches, fit_units, hidden_rows};
use crate::algorithm::{check_tag_free, publish_trained};
use crate::anatomy::Family;
use crate::checkpoint::{Checkpoint, open};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::nn::init::{Rng, random_plain};
use crate::nn::{Model, ModelConfig, WithExtras, device};
use crate::plot::{Panel, Series, Written, write_figure};
use crate::progress::{Event, Reporter};
use crate::recipe::Recipe;
use crate::registry::Registry;
use crate::train::AdaptOptions;
use crate::train::distill::{
    DistillLoss, DistillOptions, DistillPaths, DistillReport, KlReduction, Teacher, distill,
    distill_views, held_out_metrics,
};
use crate::train::features::{FeatureMatch, Positions};
use crate::train::metrics::METRICS_FILE;

/// The resumable state's directory in the run directory.
const STATE_DIR: &str = ".pool-state";
/// The distilled students.
const INSTANCES_DIR: &str = "instances";
/// Their averaged teacher→student maps.
const MAPS_DIR: &str = "maps";
/// The fine-tuned instances.
const POOL_DIR: &str = "pool";
/// The fine-tune's metrics.
const POOL_METRICS: &str = METRICS_FILE;
/// Every configuration with its size and metric.
const CONFIGURATIONS: &str = "configurations.json";
/// The tensor of a map file.
const MEAN_MAP: &str = "hidden_map_mean";
/// Blocks per instance by default (the paper's smaller pool).
const DEFAULT_DEPTH: usize = 6;
/// The paper's weight of the teacher terms in the students' loss (α = 0.1 on the labels).
const STUDENT_ALPHA: f64 = 0.9;

/// How the stitches start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StitchInit {
    /// The transpose of the front's averaged learned maps.
    Ours,
    /// Least squares on calibration hidden states.
    Snnet,
}

fn stitch_init(cfg: &Config) -> Result<StitchInit> {
    match cfg.str("POOL.STITCH_INIT").unwrap_or("ours") {
        "ours" => Ok(StitchInit::Ours),
        "snnet" => Ok(StitchInit::Snnet),
        other => Err(cfg.error(
            "POOL.STITCH_INIT",
            format!("'{other}' is neither `ours` (the transposed learned maps) nor `snnet` (least squares)"),
        )),
    }
}

/// `POOL.INIT`: whether the students start from the teacher's selected weights.
fn select_init(cfg: &Config) -> Result<bool> {
    match cfg.str("POOL.INIT").unwrap_or("random") {
        "random" => Ok(false),
        "select" => Ok(true),
        other => Err(cfg.error(
            "POOL.INIT",
            format!("'{other}' is neither `random` (the paper) nor `select` (the teacher's layers, narrowed)"),
        )),
    }
}

/// `POOL.WIDTHS`, checked: distinct, narrowest first, whole heads of the teacher's head width,
/// none wider than the teacher. Default: a third of the teacher's width (rounded down to whole
/// heads, at least one) and the teacher's.
fn widths(cfg: &Config, teacher: &ModelConfig) -> Result<Vec<usize>> {
    let head = teacher.head_dim().max(1);
    let Some(Value::Array(items)) = cfg.get("POOL.WIDTHS") else {
        let third = ((teacher.hidden / 3) / head).max(1) * head;
        let mut out = vec![third, teacher.hidden];
        out.dedup();
        return Ok(out);
    };
    let mut out = Vec::with_capacity(items.len());
    for v in items {
        let w = v.as_u64().unwrap_or(0) as usize;
        if w == 0 || !w.is_multiple_of(head) || w > teacher.hidden {
            return Err(cfg.error(
                "POOL.WIDTHS",
                format!("{v} is not a width of whole {head}-wide heads up to the teacher's {}; give widths such as [{}, {}]", teacher.hidden, head, teacher.hidden),
            ));
        }
        if out.last().is_some_and(|&last| last >= w) {
            return Err(cfg.error(
                "POOL.WIDTHS",
                format!(
                    "{w} follows {}; list distinct widths narrowest first",
                    out.last().copied().unwrap_or(0)
                ),
            ));
        }
        out.push(w);
    }
    if out.is_empty() {
        return Err(cfg.error("POOL.WIDTHS", "an empty list; give at least one width"));
    }
    Ok(out)
}

/// The sizes of an instance of width `width` and `depth` blocks: the teacher's head width,
/// grouping and MLP ratio.
fn instance_config(teacher: &ModelConfig, width: usize, depth: usize) -> ModelConfig {
    let (heads, kv_heads) = teacher.heads_at(width);
    ModelConfig {
        layers: depth,
        hidden: width,
        heads,
        kv_heads,
        intermediate: teacher.intermediate * width / teacher.hidden.max(1),
        front: None,
        ..teacher.clone()
    }
}

/// The `config.json` entries that carry an instance's sizes, written over the gene's.
/// (The instance's `config.json` differs from the teacher's only where its sizes do; the depth
/// is the descendant's own.)
fn size_entries(teacher: &Checkpoint, instance: &ModelConfig) -> Map<String, Value> {
    let Value::Object(full) = aux_config_json(teacher, instance) else {
        return Map::new();
    };
    let teacher_value = |key: &str| teacher.config.as_ref().and_then(|c| c.get(key));
    full.into_iter()
        .filter(|(key, value)| {
            let layered = key == "num_hidden_layers" || key == "depth";
            !layered && teacher_value(key) != Some(value)
        })
        .collect()
}

/// Everything the instance distillations share.
struct Students<'a> {
    dir: &'a Path,
    teacher_ckpt: &'a Checkpoint,
    data: &'a Path,
    opts: &'a AdaptOptions,
    resume: bool,
    /// Students start from the teacher's selected weights (`POOL.INIT: select`).
    select: bool,
}

impl Students<'_> {
    /// Distil the instance `name` of `config` (or, resuming after it was written, find it);
    /// its position choice for the feature terms is `positions`.
    fn distil(
        &self,
        teacher: &mut Teacher,
        name: &str,
        config: &ModelConfig,
        positions: Positions,
        seed: u64,
        reporter: &dyn Reporter,
    ) -> Result<Option<DistillReport>> {
        let target = self.dir.join(INSTANCES_DIR).join(name);
        let map_file = self.dir.join(MAPS_DIR).join(format!("{name}.safetensors"));
        if self.resume && target.join("config.json").is_file() && map_file.is_file() {
            return Ok(None);
        }
        let dev = teacher.model.device.clone();
        let features = FeatureMatch::new(config, &teacher.model.config, positions, seed, &dev)?;
        let start = if self.select {
            selected_plain(&teacher.model, config)?
        } else {
            random_plain(config, seed, &dev)?
        };
        let params = WithExtras {
            inner: Box::new(start),
            extras: features.vars(),
        };
        let student = Model::new(config.clone(), Box::new(params), dev)
            .with_precision(teacher.model.precision);
        teacher.features = Some(features);
        let state = self.dir.join(STATE_DIR).join(name);
        // The run's seed, not the student's, orders the data: every student and the fine-tune
        // hold out the same examples, so no configuration is measured on images it trained on.
        let mut opts = self.opts.clone();
        opts.resume = self.resume && crate::train::state::exists(&state);
        fs_err::create_dir_all(self.dir.join(INSTANCES_DIR))?;
        let metrics = self
            .dir
            .join(INSTANCES_DIR)
            .join(format!("{name}.{METRICS_FILE}"));
        let paths = DistillPaths {
            data: self.data,
            state: &state,
            metrics: &metrics,
            cache_root: self.dir,
        };
        let report = distill(&student, teacher, self.teacher_ckpt, paths, &opts, reporter)?;
        unfinished(&report, &state, &format!("instance `{name}`"))?;
        if let Some(f) = &teacher.features {
            save_map(&map_file, &f.mean_hidden_map()?)?;
        }
        write_aux(&student, self.teacher_ckpt, &target)?;
        Ok(Some(report))
    }
}

/// Refuse to go on from a stopped run.
fn unfinished(report: &DistillReport, state: &Path, what: &str) -> Result<()> {
    if report.finished() {
        return Ok(());
    }
    Err(Error::InvalidValue {
        what: what.into(),
        value: format!("{} of {} steps", report.steps, report.total_steps),
        reason: format!(
            "it stopped early; continue it with `lgreg train --resume` (state in `{}`)",
            state.display()
        ),
    })
}

/// Write a student's averaged map to `path`, atomically.
fn save_map(path: &Path, map: &Tensor) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let tensors = BTreeMap::from([(MEAN_MAP.to_string(), map.clone())]);
    write_atomic(path, &safetensors_bytes(&tensors)?)
}

/// A student's averaged map saved by [`save_map`]; anything else is refused naming the file
/// and the way to make it again.
fn load_map(path: &Path) -> Result<Tensor> {
    let bad = |reason: String| Error::Config {
        path: path.to_path_buf(),
        reason: format!(
            "{reason}; it is not the averaged feature map lgreg saved: remove it and run `lgreg train --resume`, which distils that student again"
        ),
    };
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .map_err(|e| bad(e.to_string()))?;
    tensors
        .get(MEAN_MAP)
        .filter(|t| t.rank() == 2)
        .cloned()
        .ok_or_else(|| bad(format!("it holds no 2-dimensional `{MEAN_MAP}`")))
}

impl Students<'_> {
    /// The stitch layers' starting values, by unit, for the distilled `instances`, and every
    /// configuration (with its least-squares residual under `snnet`).
    fn stitches(
        &self,
        cfg: &Config,
        init: StitchInit,
        teacher: &Model,
        instances: &[(String, Model)],
        params: &Params,
        reporter: &dyn Reporter,
    ) -> Result<(BTreeMap<String, StitchPair>, Vec<StitchConfig>)> {
        let names: Vec<String> = instances.iter().map(|(n, _)| n.clone()).collect();
        let depth = instances.first().map_or(0, |(_, m)| m.config.layers);
        let mut all = pool_configurations(&names, depth);
        let mut out = BTreeMap::new();
        match init {
            StitchInit::Ours => {
                // Each front student's map, read once.
                let mut maps: BTreeMap<String, Tensor> = BTreeMap::new();
                for c in &all {
                    if out.contains_key(&c.stitch) {
                        continue;
                    }
                    let end = instances.iter().find(|(n, _)| *n == c.end).map(|(_, m)| m);
                    if end.is_some_and(|m| m.config.hidden != teacher.config.hidden) {
                        return Err(cfg.error(
                            "POOL.STITCH_INIT",
                            format!("'ours' maps into the teacher's width {}, but instance `{}` is narrower; set it to `snnet`, or make the teacher's width the widest of POOL.WIDTHS", teacher.config.hidden, c.end),
                        ));
                    }
                    if !maps.contains_key(&c.front) {
                        let file = self
                            .dir
                            .join(MAPS_DIR)
                            .join(format!("{}.safetensors", c.front));
                        maps.insert(c.front.clone(), load_map(&file)?);
                    }
                    let seed = Rng::stream_seed(self.opts.seed, &[(out.len() as u64, 0x0057_17C4)]);
                    out.insert(c.stitch.clone(), transposed_map(&maps[&c.front], seed)?);
                }
            }
            StitchInit::Snnet => {
                let ancestor = AncestorModel::new(self.teacher_ckpt)?;
                let batches = calibration_batches(&ancestor, self.data, params, self.opts.seed)?;
                reporter.report(Event::Start {
                    task: "calibrate pool instances".into(),
                    total: (batches.len() * instances.len()) as u64,
                });
                let mut states = BTreeMap::new();
                for (name, model) in instances {
                    states.insert(name.clone(), hidden_rows(model, &batches, reporter)?);
                }
                reporter.report(Event::Finish);
                for (unit, fit) in fit_units(&states, &mut all, params.ridge, reporter)? {
                    out.insert(unit, stitch_of(&fit.map, &teacher.device)?);
                }
            }
        }
        Ok((out, all))
    }
}

/// The loss of the pool fine-tune: 0.5·CE + 0.5·KD, T = 1, DeiT's reduction, logits only.
fn finetune_loss() -> DistillOptions {
    DistillOptions {
        alpha: 0.5,
        tau: 1.0,
        reduction: KlReduction::Deit,
        loss: DistillLoss::Kl,
        top_k: 0,
    }
}

/// The fine-tune's options: the instances' with `POOL.STEPS` / `POOL.EPOCHS` and `POOL.LR`,
/// a warm-up over a tenth of it, no Mixup or CutMix (as the paper), the held-out check only at
/// the end.
fn finetune_options(
    cfg: &Config,
    opts: &AdaptOptions,
    resume: bool,
    state: &Path,
) -> Result<AdaptOptions> {
    let mut ft = opts.clone();
    if let Some(steps) = cfg.int("POOL.STEPS") {
        ft.steps = Some(steps as usize);
    } else if let Some(epochs) = cfg.int("POOL.EPOCHS") {
        ft.steps = None;
        ft.epochs = Some(epochs as usize);
    }
    if let Some(lr) = scaled_lr(cfg, "POOL.LR", opts.batch_size)? {
        ft.lr = lr;
        ft.min_lr = ft.min_lr.map(|m| m.min(lr));
    }
    // The paper warms the fine-tune up over a tenth of it (5 of 50 epochs).
    match (ft.steps, ft.epochs) {
        (Some(steps), _) => {
            ft.warmup_epochs = None;
            ft.warmup = steps / 10;
        }
        (None, Some(epochs)) => ft.warmup_epochs = Some(epochs as f64 / 10.0),
        (None, None) => {}
    }
    ft.augment.mixup = 0.0;
    ft.augment.cutmix = 0.0;
    ft.eval_every_epoch = false;
    ft.eval_every = None;
    ft.resume = resume && crate::train::state::exists(state);
    Ok(ft)
}

/// The fine-tuned pool's configurations with their sizes and held-out metrics: the instances'
/// cards and the stitched configurations.
fn measure(
    net: &PoolNet,
    models: &[Model],
    metrics: &[f64],
    teacher_ckpt: &Checkpoint,
) -> Result<(BTreeMap<String, InstanceCard>, Vec<StitchConfig>)> {
    let mut cards = BTreeMap::new();
    let mut configs = Vec::new();
    for ((choice, model), metric) in net.choices().iter().zip(models).zip(metrics) {
        let params = descendant_params(model)?;
        match choice {
            Choice::Pure(name) => {
                let c = &net.member(name)?.config;
                cards.insert(
                    name.clone(),
                    InstanceCard {
                        hidden: c.hidden,
                        heads: c.heads,
                        intermediate: c.intermediate,
                        layers: c.layers,
                        params,
                        metric: Some(*metric),
                        config: size_entries(teacher_ckpt, c),
                    },
                );
            }
            Choice::Stitched(c) => configs.push(StitchConfig {
                params: Some(params),
                metric: Some(*metric),
                ..c.clone()
            }),
        }
    }
    Ok((cards, configs))
}

/// Write the gene's units: every instance's blocks and globals (from the fine-tuned instances
/// in `pool_dir`) and every stitch.
fn write_units(net: &PoolNet, pool_dir: &Path, out: &mut GeneBuilder) -> Result<()> {
    for name in net.names() {
        let ckpt = open(&pool_dir.join(&name))?;
        let instance = AncestorModel::new(&ckpt)?;
        for k in 0..net.depth {
            out.copy_layer(&block_unit(&name, k), &instance, k)?;
        }
        out.copy_globals(&globals_unit(&name), &instance)?;
    }
    let names = StitchTensors::new();
    for (unit, (w, b)) in &net.stitches {
        let (outputs, inputs) = w.dims2()?;
        out.put_tensors(
            unit,
            &[
                (
                    names.weight.clone(),
                    vec![outputs, inputs],
                    w.as_tensor().flatten_all()?.to_vec1::<f32>()?,
                ),
                (
                    names.bias.clone(),
                    vec![outputs],
                    b.as_tensor().to_vec1::<f32>()?,
                ),
            ],
        )?;
    }
    names.record_roles(out)
}

/// The students' loss: `DISTILL.*`, with the paper's α when `DISTILL.ALPHA` is unset.
fn student_loss(cfg: &Config, family: Family) -> Result<DistillOptions> {
    let mut options = distill_options(cfg, family)?;
    if cfg.float("DISTILL.ALPHA").is_none() {
        options.alpha = STUDENT_ALPHA;
    }
    Ok(options)
}

/// Where each instance matches its features: `DISTILL.FEATURES` for all, else the paper's
/// `front-end` for the narrowest and `end` for the others.
fn positions_of(cfg: &Config, family: Family, count: usize) -> Result<Vec<Positions>> {
    if let Some(p) = feature_positions(cfg, family, 0)? {
        return Ok(vec![p; count]);
    }
    Ok((0..count)
        .map(|k| {
            if k == 0 && count > 1 {
                Positions::FrontEnd
            } else {
                Positions::End
            }
        })
        .collect())
}

/// Refuse a teacher the trained pool cannot use.
fn check_teacher(cfg: &Config, teacher: &ModelConfig) -> Result<()> {
    match teacher.family {
        Family::Vit => Ok(()),
        Family::Llama if !teacher.tied_head => Ok(()),
        Family::Llama => Err(cfg.error(
            "GENE.ANCESTOR_MODEL_PATH",
            "a llama teacher with a tied head: a stitched descendant's head is its end's, its embeddings its front's, so they cannot be one tensor; use an untied teacher or MODE: approximate",
        )),
        Family::Bert => Err(cfg.error(
            "MODE",
            "'faithful' pool distils students on the teacher's logits, and bert has none; use MODE: approximate",
        )),
    }
}

/// Run a faithful pool `ancestor_*` config on the teacher at `teacher_path` (the caller
/// resolves it): distil the instances, start the stitches, fine-tune the pool, measure every
/// configuration and publish the gene to `registry`.
pub fn train_pool(
    cfg: &Config,
    run: AncestorRun,
    teacher_path: PathBuf,
    registry: &Registry,
    resume: bool,
    reporter: &dyn Reporter,
) -> Result<Trained> {
    let dir = run.output_dir.clone();
    check_run_dir(cfg, &dir, resume, &dir.join(STATE_DIR), &dir.join(POOL_DIR))?;
    check_tag_free(&run.request, registry)?;
    let data =
        PathBuf::from(cfg.required_str("DATASET.PATH", "target/fixtures/mnist/fashion.json")?);
    let opts = adapt_options(cfg)?;
    let dev = device(opts.cuda)?;
    let teacher_ckpt = open(&teacher_path)?;
    let teacher_model = Model::load(&teacher_ckpt, &dev)?.with_precision(opts.precision);
    let tc = teacher_model.config.clone();
    check_teacher(cfg, &tc)?;
    check_input_size(cfg, &tc)?;
    let widths = widths(cfg, &tc)?;
    let depth = cfg.int("POOL.DEPTH").map_or(DEFAULT_DEPTH, |d| d as usize);
    if depth < 2 {
        return Err(cfg.error(
            "POOL.DEPTH",
            format!("{depth}: a stitch needs at least 2 blocks per instance"),
        ));
    }
    let init = stitch_init(cfg)?;
    let names = instance_names(&widths);
    let positions = positions_of(cfg, tc.family, widths.len())?;
    write_run_config(cfg, &dir)?;
    let mut teacher = Teacher::new(teacher_model, student_loss(cfg, tc.family)?);
    let students = Students {
        dir: &dir,
        teacher_ckpt: &teacher_ckpt,
        data: &data,
        opts: &opts,
        resume,
        select: select_init(cfg)?,
    };
    let mut reports = Map::new();
    for (k, ((name, &width), &pos)) in names.iter().zip(&widths).zip(&positions).enumerate() {
        let config = instance_config(&tc, width, depth);
        let seed = Rng::stream_seed(opts.seed, &[(k as u64, 0x9001_1257)]);
        if let Some(r) = students.distil(&mut teacher, name, &config, pos, seed, reporter)? {
            reports.insert(
                name.clone(),
                json!({
                    "steps": r.total_steps,
                    "final_loss": r.final_loss,
                    "held_out": r.held_out,
                    "feature_positions": pos,
                }),
            );
        }
    }
    teacher.features = None;
    teacher.options = finetune_loss();
    let instances = names
        .iter()
        .map(|n| {
            Ok((
                n.clone(),
                Model::load(&open(&dir.join(INSTANCES_DIR).join(n))?, &dev)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let recipe = Recipe::resolve(
        "pool",
        &tc.family.to_string(),
        run.request.recipe.as_ref(),
        &run.request.sets,
    )?;
    let params: Params = recipe.typed()?;
    let (stitches, fitted) =
        students.stitches(cfg, init, &teacher.model, &instances, &params, reporter)?;
    let mut net = PoolNet::new(instances, stitches)?;
    for (c, f) in net.configs.iter_mut().zip(fitted) {
        c.residual = f.residual;
    }
    let joint = net.joint()?;
    let choices = net.choices();
    let views = choices
        .iter()
        .map(|c| net.model(c))
        .collect::<Result<Vec<_>>>()?;
    let state = dir.join(STATE_DIR).join("finetune");
    let ft = finetune_options(cfg, &opts, resume, &state)?;
    // `POOL.STEPS: 0` measures the stitches as they start (SN-Net's least squares alone, say).
    let report = if ft.steps == Some(0) {
        None
    } else {
        let paths = DistillPaths {
            data: &data,
            state: &state,
            metrics: &dir.join(POOL_METRICS),
            cache_root: &dir,
        };
        let r = distill_views(
            &joint,
            &views,
            &teacher,
            &teacher_ckpt,
            paths,
            &ft,
            reporter,
        )?;
        unfinished(&r, &state, "the pool fine-tune")?;
        Some(r)
    };
    let metrics: Vec<f64> = held_out_metrics(&views, &teacher_ckpt, &tc, &data, &ft)?
        .iter()
        .map(|m| m.headline())
        .collect();
    let (cards, configurations) = measure(&net, &views, &metrics, &teacher_ckpt)?;
    write_atomic(
        &dir.join(CONFIGURATIONS),
        &serde_json::to_vec_pretty(&json!({
            "instances": cards, "configurations": configurations,
        }))?,
    )?;
    let pool_dir = dir.join(POOL_DIR);
    for (choice, view) in choices.iter().zip(&views) {
        if let Choice::Pure(name) = choice {
            write_aux(view, &teacher_ckpt, &pool_dir.join(name))?;
        }
    }
    let widest = pool_dir.join(names.last().cloned().unwrap_or_default());
    let mut diagnostics = Map::new();
    diagnostics.insert(DISTILLED.into(), serde_json::to_value(&cards)?);
    diagnostics.insert(
        "configurations".into(),
        serde_json::to_value(&configurations)?,
    );
    diagnostics.insert("instance_depth".into(), depth.into());
    diagnostics.insert(
        "stitch_tensors".into(),
        serde_json::to_value(StitchTensors::new())?,
    );
    diagnostics.insert(
        "stitch_init".into(),
        match init {
            StitchInit::Ours => "ours",
            StitchInit::Snnet => "snnet",
        }
        .into(),
    );
    diagnostics.insert("students".into(), Value::Object(reports));
    diagnostics.insert(
        "pool_finetune".into(),
        match &report {
            Some(r) => json!({
                "steps": r.total_steps,
                "final_loss": r.final_loss,
                "loss": finetune_loss(),
                "configurations_sampled": choices.len(),
                "data_digest": r.data_digest,
            }),
            None => json!({ "steps": 0 }),
        },
    );
    let gene = publish_trained(
        &run.request,
        &widest,
        &teacher_ckpt,
        &|_, out| write_units(&net, &pool_dir, out),
        diagnostics,
        registry,
        reporter,
    )?;
    write_atomic(&dir.join("gene.json"), &serde_json::to_vec_pretty(&gene)?)?;
    let _ = fs_err::remove_dir_all(dir.join(STATE_DIR));
    Ok(Trained {
        run_dir: dir.display().to_string(),
        gene,
        distilled: report,
        pseudo: None,
        notes: cfg.notes.clone(),
    })
}

/// The figure's file stem in the run directory.
const FIGURE: &str = "pool";

/// `(parameters in millions, held-out metric)` of a finished run's configurations: the pure
/// instances, then the stitched ones.
pub fn run_points(dir: &Path) -> Result<[Vec<(f64, f64)>; 2]> {
    let table = crate::checkpoint::read_json_file(&dir.join(CONFIGURATIONS))?;
    let point = |v: &Value| {
        let params = v.get("params").and_then(Value::as_f64)?;
        Some((params / 1e6, v.get("metric").and_then(Value::as_f64)?))
    };
    let instances = table
        .get("instances")
        .and_then(Value::as_object)
        .map(|m| m.values().filter_map(point).collect())
        .unwrap_or_default();
    let stitched = table
        .get("configurations")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(point).collect())
        .unwrap_or_default();
    Ok([instances, stitched])
}

/// Draw the held-out metric of every configuration against its size: `arms` are labelled
/// point sets (a run's instances and stitches, controls), written to `<stem>.svg` / `.png`.
pub fn draw_pool(
    arms: &[(String, Vec<(f64, f64)>)],
    metric: &str,
    stem: &Path,
    font: Option<&Path>,
) -> Result<Written> {
    let panel = Panel {
        title: format!("pool configurations: {metric} against size"),
        x_label: "parameters (millions)".into(),
        y_label: format!("held-out {metric}"),
        series: arms
            .iter()
            .map(|(label, points)| Series {
                label: label.clone(),
                points: points.clone(),
                markers_only: true,
            })
            .collect(),
    };
    write_figure(&[panel], stem, font)
}

/// Draw a finished run's configurations into its directory (`pool.svg`, `pool.png`).
pub fn draw_run(dir: &Path, font: Option<&Path>) -> Result<Written> {
    let [instances, stitched] = run_points(dir)?;
    let arms = [
        ("instances alone".to_string(), instances),
        ("stitched".to_string(), stitched),
    ];
    draw_pool(&arms, "metric", &dir.join(FIGURE), font)
}
