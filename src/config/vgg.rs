//! `heur_vgg` configs: [`train`] runs the collective model an `ancestor_heur_vgg` config asks
//! for, [`adapt`] the few-shot descendant experiment of a `descendant_heur_vgg` config. Defaults
//! are the toolbox's config values where it sets one (21 tasks, batch 16, LR 0.01, LR_DROP 0.4
//! every 100 epochs for the ancestor; 5-way tasks for descendants) and the paper's otherwise
//! (300 images per class, SGD momentum 0.9 and weight decay 5e-4, 30 descendant epochs at LR
//! 0.005, batch 32, EWC λ 40 times 1000).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::Config;
use super::plan::{output_dir, seed};
use super::run::{check_same_run, write_run_config};
use crate::algorithm::heur_vgg::collective::{
    Collective, CollectiveOptions, PAPER_HIDDEN, PAPER_WIDTHS, paper_schedule, scaled,
    train_collective,
};
use crate::algorithm::heur_vgg::criterion::{Selection, Threshold};
use crate::algorithm::heur_vgg::descendant::{
    DescendantOptions, Descendants, Ewc, PAPER_LOWER, run_descendants,
};
use crate::algorithm::heur_vgg::gene;
use crate::algorithm::heur_vgg::task::EpochPlan;
use crate::algorithm::heur_vgg::vgg::VggSpec;
use crate::error::{Error, Result};
use crate::progress::Reporter;
use crate::registry::{Published, Reference, Registry};
use crate::train::data::{ImageSet, read_images};
use crate::train::sgd::SgdConfig;

/// The gene's registry name when the config has no `GENE.NAME`.
pub const DEFAULT_GENE_NAME: &str = "heur-vgg";

/// The paper's pools on 32×32 CIFAR, after these conv layers (0-based).
const PAPER_POOLS: [usize; 5] = [1, 3, 6, 9, 12];

fn int_or(cfg: &Config, key: &str, default: usize) -> usize {
    cfg.int(key).map_or(default, |n| n as usize)
}

fn positive(cfg: &Config, key: &str, default: f64) -> Result<f64> {
    let v = cfg.float(key).unwrap_or(default);
    if v > 0.0 {
        Ok(v)
    } else {
        Err(cfg.error(key, format!("{v} must be positive")))
    }
}

/// The images of `DATASET.PATH`, cut to `DATASET.LIMIT`, checked against `DATASET.INPUT_SIZE`.
fn images(cfg: &Config) -> Result<ImageSet> {
    let path = PathBuf::from(cfg.required_str("DATASET.PATH", "target/fixtures/fashion-mnist")?);
    let mut set = read_images(&path)?;
    if let Some(n) = cfg.int("DATASET.LIMIT") {
        set.truncate(n as usize);
    }
    if let Some(side) = cfg.int("DATASET.INPUT_SIZE")
        && (side as usize != set.height || set.height != set.width)
    {
        return Err(cfg.error(
            "DATASET.INPUT_SIZE",
            format!(
                "{side}, but the images in `{}` are {}×{}; images are used at their stored size",
                path.display(),
                set.height,
                set.width
            ),
        ));
    }
    Ok(set)
}

/// `DATASET.CLASSES`, else every label of the set; each must occur in the set.
fn classes(cfg: &Config, set: &ImageSet) -> Result<Vec<u32>> {
    let mut present: Vec<u32> = set.labels.clone();
    present.sort_unstable();
    present.dedup();
    let Some(Value::Array(items)) = cfg.get("DATASET.CLASSES") else {
        return Ok(present);
    };
    items
        .iter()
        .map(|v| {
            let label = v.as_u64().map(|n| n as u32).filter(|l| present.contains(l));
            label.ok_or_else(|| {
                cfg.error(
                    "DATASET.CLASSES",
                    format!(
                        "{v} is not a label of `{}` (its labels are {present:?})",
                        set.path.display()
                    ),
                )
            })
        })
        .collect()
}

/// The paper's pools for a side: while the map would shrink below 1×1, the last pool but
/// one is dropped (28×28 keeps 1, 3, 6 and 12, so the gene layers still see 3×3 maps).
fn pools_for(side: usize, layers: usize) -> Vec<usize> {
    let mut pools: Vec<usize> = PAPER_POOLS
        .iter()
        .copied()
        .filter(|&p| p < layers)
        .collect();
    if pools.last() != Some(&(layers - 1)) {
        pools.push(layers - 1);
    }
    while pools.len() > 1 && side >> pools.len() == 0 {
        pools.remove(pools.len() - 2);
    }
    pools
}

fn sgd(cfg: &Config) -> SgdConfig {
    SgdConfig {
        momentum: cfg.float("TRAIN.MOMENTUM").unwrap_or(0.9),
        weight_decay: cfg.float("TRAIN.WEIGHT_DECAY").unwrap_or(5e-4),
    }
}

/// The task training of `TRAIN.*` and the quirk switches, with defaults `[epochs, batch size,
/// epochs between drops]`, the learning rate and the drop factor.
fn epoch_plan(cfg: &Config, counts: [usize; 3], lr: f64, lr_drop: f64) -> Result<EpochPlan> {
    Ok(EpochPlan {
        epochs: int_or(cfg, "TRAIN.EPOCHS", counts[0]),
        batch_size: int_or(cfg, "TRAIN.BATCH_SIZE", counts[1]),
        lr: positive(cfg, "TRAIN.LR", lr)?,
        lr_drop: cfg.float("TRAIN.LR_DROP").unwrap_or(lr_drop),
        epochs_drop: int_or(cfg, "TRAIN.EPOCHS_DROP", counts[2]),
        sgd: sgd(cfg),
        reset_optimizer_each_epoch: cfg.bool("HEUR.RESET_OPTIMIZER").unwrap_or(true),
        softmax_before_ce: cfg.bool("HEUR.SOFTMAX_BEFORE_CE").unwrap_or(false),
    })
}

fn selection(cfg: &Config) -> Result<Selection> {
    match cfg.str("HEUR.SELECT").unwrap_or("stable_suffix") {
        "stable_suffix" => Ok(Selection::StableSuffix {
            max_cv: cfg.float("HEUR.MAX_CV").unwrap_or(0.1),
            max_layers: int_or(cfg, "HEUR.MAX_GENE_LAYERS", 3),
        }),
        "last_k" => Ok(Selection::LastK {
            k: int_or(cfg, "HEUR.K", 3),
        }),
        other => Err(cfg.error(
            "HEUR.SELECT",
            format!("'{other}' is neither `stable_suffix` nor `last_k`"),
        )),
    }
}

fn width_scale(cfg: &Config) -> Result<f64> {
    positive(cfg, "HEUR.WIDTH_SCALE", 1.0)
}

/// The collective model's options from an `ancestor_heur_vgg` config and its images.
pub fn collective_options(cfg: &Config, set: &ImageSet) -> Result<CollectiveOptions> {
    let scale = width_scale(cfg)?;
    let layers = int_or(cfg, "MODEL.BASE_LAYERS", PAPER_WIDTHS.len());
    if layers == 0 || layers > PAPER_WIDTHS.len() {
        return Err(cfg.error(
            "MODEL.BASE_LAYERS",
            format!("{layers}: the paper's VGG has 1 to 13 conv layers"),
        ));
    }
    let widths: Vec<usize> = PAPER_WIDTHS[..layers]
        .iter()
        .map(|&w| scaled(w, scale))
        .collect();
    let hidden = PAPER_HIDDEN.iter().map(|&w| scaled(w, scale)).collect();
    let classes = classes(cfg, set)?;
    let outputs = set.labels.iter().max().map_or(1, |&l| l as usize + 1);
    let spec = VggSpec::new(
        set.channels,
        set.height,
        widths,
        pools_for(set.height, layers),
        hidden,
        outputs,
    );
    spec.validate()
        .map_err(|e| cfg.error("MODEL.BASE_LAYERS", e.to_string()))?;
    Ok(CollectiveOptions {
        spec,
        tasks: int_or(cfg, "DATASET.NUM_WORKS", 21),
        classes_per_task: int_or(cfg, "HEUR.CLASSES_PER_TASK", 5),
        images_per_class: int_or(cfg, "DATASET.NUM_IMGS_PER_CAT_TRAIN", 300),
        plan: epoch_plan(cfg, [100, 16, 100], 0.01, 0.4)?,
        threshold: Threshold {
            tau: cfg.float("HEUR.TAU").unwrap_or(5e-10),
            absolute: cfg.bool("HEUR.ABSOLUTE").unwrap_or(false),
        },
        selection: selection(cfg)?,
        schedule: paper_schedule(scale)
            .into_iter()
            .filter(|(l, _)| *l < layers)
            .collect(),
        widen_noise: cfg.float("HEUR.WIDEN_NOISE").unwrap_or(0.0),
        seed: seed(cfg),
        run_config: cfg.resolved(),
        classes,
    })
}

fn device(cfg: &Config) -> Result<candle_core::Device> {
    crate::nn::device(cfg.cuda()?)
}

/// Refuse to overwrite a finished or started run unless resuming.
fn check_fresh(dir: &Path, resume: bool, force: bool) -> Result<()> {
    let started = dir.join("metrics.jsonl").exists() || dir.join("state").exists();
    if started && !resume && !force {
        return Err(Error::OutputExists {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// What `lgreg train` made of an `ancestor_heur_vgg` config.
#[derive(Debug, Clone, Serialize)]
pub struct VggTrained {
    /// The collective model's run.
    #[serde(flatten)]
    pub collective: Collective,
    /// The gene as published to the local registry.
    pub gene_published: Published,
}

/// Run an `ancestor_heur_vgg` config: train the collective model, write its gene and publish it
/// to `registry` as `GENE.NAME` (default `heur-vgg`) at `GENE.VERSION` (default 0.1.0).
pub fn train(
    cfg: &Config,
    registry: &Registry,
    resume: bool,
    force: bool,
    reporter: &dyn Reporter,
) -> Result<VggTrained> {
    let method = cfg.method()?;
    let set = images(cfg)?;
    let opts = collective_options(cfg, &set)?;
    let dir = output_dir(cfg, &method, "ancestor");
    check_fresh(&dir, resume, force)?;
    if resume {
        check_same_run(cfg, &dir)?;
    }
    write_run_config(cfg, &dir)?;
    let collective = train_collective(&set, &opts, &dir, resume, &device(cfg)?, reporter)?;
    let gene_published = registry.publish(
        &collective.gene,
        cfg.str("GENE.NAME").unwrap_or(DEFAULT_GENE_NAME),
        cfg.str("GENE.VERSION").unwrap_or("0.1.0"),
        reporter,
    )?;
    Ok(VggTrained {
        collective,
        gene_published,
    })
}

/// The gene directory a descendant config names, with the key that named it:
/// - `MODEL.LOAD_GENE` (`load`, already pulled when it was `oci://`): a gene directory, or a
///   registry reference, exported into the run directory's `gene/`;
/// - else `GENE.ANCESTOR_MODEL_PATH`: the ancestor's run directory, as the toolbox has it.
fn gene_dir(
    cfg: &Config,
    load: Option<&str>,
    registry: &Registry,
    run_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<(PathBuf, &'static str)> {
    if let Some(gene) = load {
        let key = "MODEL.LOAD_GENE";
        if Path::new(gene).is_dir() {
            return Ok((PathBuf::from(gene), key));
        }
        let reference = Reference::parse(gene).map_err(|e| {
            cfg.error(
                key,
                format!("'{gene}' is neither a gene directory nor a registry reference ({e})"),
            )
        })?;
        let family = registry
            .show(&reference)
            .map_err(|e| cfg.error(key, e.to_string()))?
            .card
            .family
            .name;
        if family != gene::FAMILY {
            return Err(cfg.error(
                key,
                format!("'{gene}' is a gene of the {family} family, not a heur_vgg gene; `lgreg spawn` grows it"),
            ));
        }
        let out = run_dir.join("gene");
        registry
            .export(&reference, &out, true, reporter)
            .map_err(|e| cfg.error(key, e.to_string()))?;
        return Ok((out, key));
    }
    let key = "GENE.ANCESTOR_MODEL_PATH";
    let Some(value) = cfg.str(key) else {
        return Err(cfg.error(
            key,
            "is required here: the ancestor's run directory, e.g. `outputs/heur_vgg/ancestor_netwider` (or MODEL.LOAD_GENE: a gene directory or registry reference)",
        ));
    };
    let path = PathBuf::from(value);
    if !path.is_dir() {
        return Err(cfg.error(
            key,
            format!("'{value}' is not a directory; give the ancestor run directory of `lgreg train` or its `gene/`"),
        ));
    }
    Ok((path, key))
}

fn ewc(cfg: &Config) -> Result<Ewc> {
    match cfg.str("HEUR.EWC").unwrap_or("intended") {
        "intended" => Ok(Ewc::Intended {
            lambda: cfg.float("HEUR.EWC_LAMBDA").unwrap_or(40.0),
            weight: cfg.float("HEUR.EWC_WEIGHT").unwrap_or(1000.0),
        }),
        "off" => Ok(Ewc::Off),
        "code_quirk" => Ok(Ewc::CodeQuirk),
        other => Err(cfg.error(
            "HEUR.EWC",
            format!("'{other}' is none of `intended`, `off`, `code_quirk`"),
        )),
    }
}

/// The descendant experiment's options from a `descendant_heur_vgg` config and its images.
pub fn descendant_options(cfg: &Config, set: &ImageSet) -> Result<DescendantOptions> {
    let scale = width_scale(cfg)?;
    Ok(DescendantOptions {
        lower: PAPER_LOWER.iter().map(|&w| scaled(w, scale)).collect(),
        hidden: PAPER_HIDDEN.iter().map(|&w| scaled(w, scale)).collect(),
        ways: int_or(cfg, "MODEL.NUM_CLASS", 5),
        shots: int_or(cfg, "DATASET.NUM_IMGS_PER_CAT_TRAIN", 10),
        tests_per_class: int_or(cfg, "HEUR.TEST_PER_CLASS", 100),
        tasks: int_or(cfg, "DATASET.NUM_WORKS_TT", 5),
        classes: classes(cfg, set)?,
        plan: epoch_plan(cfg, [30, 32, 0], 0.005, 1.0)?,
        ewc: ewc(cfg)?,
        reuse_model: cfg.bool("HEUR.REUSE_MODEL").unwrap_or(false),
        control: cfg.bool("HEUR.CONTROL").unwrap_or(true),
        seed: seed(cfg),
        run_config: cfg.resolved(),
    })
}

/// Run a `descendant_heur_vgg` config: gene-initialised descendants and their random-init
/// controls on seeded few-shot tasks.
pub fn adapt(
    cfg: &Config,
    load: Option<&str>,
    registry: &Registry,
    resume: bool,
    force: bool,
    reporter: &dyn Reporter,
) -> Result<Descendants> {
    let method = cfg.method()?;
    let set = images(cfg)?;
    let opts = descendant_options(cfg, &set)?;
    let dir = output_dir(cfg, &method, "descendant");
    check_fresh(&dir, resume, force)?;
    let (gene_path, key) = gene_dir(cfg, load, registry, &dir, reporter)?;
    let dev = device(cfg)?;
    let gene = gene::read(&gene_path, &dev).map_err(|e| cfg.error(key, e.to_string()))?;
    if resume {
        check_same_run(cfg, &dir)?;
    }
    write_run_config(cfg, &dir)?;
    run_descendants(&gene, &set, &opts, &dir, resume, &dev, reporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_fit_the_side() {
        assert_eq!(pools_for(32, 13), vec![1, 3, 6, 9, 12]);
        assert_eq!(pools_for(28, 13), vec![1, 3, 6, 12]);
        assert_eq!(pools_for(28, 5), vec![1, 3, 4]);
    }
}
