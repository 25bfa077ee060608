//! `lgreg train --config FILE`: run an `ancestor_*` config and publish its gene.

use std::path::{Path, PathBuf};

use lgreg::config::auto::{draw_cka, train_auto};
use lgreg::config::faithful::train_aux;
use lgreg::config::plan::ancestor_run;
use lgreg::config::pool::{draw_run, train_pool};
use lgreg::config::run::{Trained, train};
use lgreg::config::vgg::VggTrained;
use lgreg::config::{Config, RunMode};
use lgreg::registry::Registry;

use super::compare::plot_finished_run;
use super::env::{HubArgs, font};
use super::eval::metrics_text;
use super::progress::Bars;
use super::pull::resolve_input;
use super::render::{Output, note};
use super::{GlobalArgs, registry_root};

/// Train (or, with `MODE: approximate`, extract) the gene an `ancestor_*` config describes and
/// publish it to the local registry. `configs/README.md` lists the keys.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The config, e.g. `configs/ancestor_tleg_llama.yaml`.
    #[arg(long, required_unless_present = "print_schema")]
    config: Option<PathBuf>,
    /// Override a key, e.g. `--set TRAIN.EPOCHS=1 DATASET.LIMIT=64` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", num_args = 1..)]
    sets: Vec<String>,
    /// Continue an interrupted run.
    #[arg(long)]
    resume: bool,
    /// Run on the first CUDA GPU (the same as `--set DEVICE=cuda`).
    #[arg(long)]
    cuda: bool,
    /// Print the config's JSON Schema and exit.
    #[arg(long)]
    print_schema: bool,
    #[command(flatten)]
    hub: HubArgs,
}

/// The config at `file` with `sets`, plus `DEVICE=cuda` when `cuda`.
pub(crate) fn load_config(
    file: &std::path::Path,
    sets: &[String],
    cuda: bool,
    global: &GlobalArgs,
) -> anyhow::Result<Config> {
    let mut sets = sets.to_vec();
    if cuda {
        sets.push("DEVICE=cuda".into());
    }
    let cfg = Config::load(file, &sets)?;
    for note_text in &cfg.notes {
        note(global, note_text);
    }
    Ok(cfg)
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let Some(file) = args.config.as_ref().filter(|_| !args.print_schema) else {
        return Ok(Box::new(Schema(lgreg::config::keys::json_schema())));
    };
    let cfg = load_config(file, &args.sets, args.cuda, global)?;
    cfg.cuda()?;
    if cfg.is_vgg() {
        let registry = Registry::open_or_init(&registry_root(global)?)?;
        let trained =
            lgreg::config::vgg::train(&cfg, &registry, args.resume, false, &Bars::new(global))?;
        plot_finished_run(&trained.collective.run_dir, global);
        return Ok(Box::new(CollectiveOut(trained)));
    }
    let mut plan = ancestor_run(&cfg)?;
    let spec = PathBuf::from(&plan.ancestor);
    if !spec.exists() && lgreg::hub::RepoRef::looks_like(&plan.ancestor) {
        plan.request.hub_repo = plan.ancestor.split('@').next().map(str::to_string);
    }
    let faithful = cfg.mode()? == RunMode::Faithful;
    if args.resume && !faithful {
        note(
            global,
            "--resume: a training-free extraction has no state to resume; it runs again",
        );
    }
    let ancestor = resolve_input(&spec, &args.hub, global)?;
    let registry = Registry::open_or_init(&registry_root(global)?)?;
    let bars = Bars::new(global);
    let trained = if faithful && cfg.trains_pseudo() {
        let trained = train_auto(&cfg, plan, ancestor, &registry, args.resume, &bars)?;
        plot_finished_run(&Path::new(&trained.run_dir).join("pseudo"), global);
        match draw_cka(
            &trained.gene.diagnostics,
            Path::new(&trained.run_dir),
            font().as_deref(),
        ) {
            Ok(w) => note(global, &format!("CKA heat map: {}", w.png.display())),
            Err(e) => note(global, &format!("no CKA heat map: {e}")),
        }
        trained
    } else if faithful && cfg.trains_pool() {
        let trained = train_pool(&cfg, plan, ancestor, &registry, args.resume, &bars)?;
        let dir = Path::new(&trained.run_dir);
        plot_finished_run(dir, global);
        match draw_run(dir, font().as_deref()) {
            Ok(w) => note(global, &format!("pool figure: {}", w.png.display())),
            Err(e) => note(global, &format!("no pool figure: {e}")),
        }
        trained
    } else if faithful {
        let trained = train_aux(&cfg, plan, ancestor, &registry, args.resume, &bars)?;
        plot_finished_run(Path::new(&trained.run_dir), global);
        trained
    } else {
        train(&cfg, plan, ancestor, &registry, &bars)?
    };
    Ok(Box::new(TrainOut(trained)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct TrainOut(Trained);

impl Output for TrainOut {
    fn command(&self) -> &'static str {
        "train"
    }

    fn text(&self) -> String {
        let t = &self.0;
        let distilled = t.distilled.as_ref().map_or(String::new(), |d| {
            let held = d.held_out.as_ref().map_or(String::new(), |h| {
                format!(
                    ", held-out {} {:.4}{}",
                    h.agreement_kind,
                    h.agreement,
                    h.kl.map_or(String::new(), |k| format!(", KL {k:.4}"))
                )
            });
            let what = match t.gene.algorithm.as_str() {
                "pool" => "pool fine-tuned (the widest instance compared)",
                _ => "aux net distilled",
            };
            format!(
                "\n  {what}: {} steps, {} examples, final loss {:.4}{held}",
                d.total_steps, d.examples_seen, d.final_loss
            )
        });
        let pseudo = t.pseudo.as_ref().map_or(String::new(), |p| {
            let metric = p
                .metrics
                .as_ref()
                .map_or(String::new(), |m| format!(", held-out {}", metrics_text(m)));
            format!(
                "\n  pseudo-descendant trained: {} steps, final loss {:.4}{metric}",
                p.total_steps, p.final_loss
            )
        });
        format!(
            "{} {}\n  {} gene ({}), recipe {}, {} units, {} bytes{distilled}{pseudo}\n  run directory {}",
            t.gene.reference,
            t.gene.digest,
            t.gene.algorithm,
            t.gene.fidelity,
            t.gene.recipe,
            t.gene.units.len(),
            t.gene.bytes,
            t.run_dir
        )
    }
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct CollectiveOut(VggTrained);

impl Output for CollectiveOut {
    fn command(&self) -> &'static str {
        "train"
    }

    fn text(&self) -> String {
        let c = &self.0.collective;
        let resumed = c
            .resumed_after
            .map(|t| format!(" (resumed after task {t})"))
            .unwrap_or_default();
        format!(
            "{} {}\n  heur_vgg collective model: {} tasks{resumed}, {} steps, final loss {:.4}, widths {:?}\n  gene layers {:?} ({:?}) in {}\n  run directory {}",
            self.0.gene_published.reference,
            self.0.gene_published.digest,
            c.tasks,
            c.steps,
            c.final_loss,
            c.widths,
            c.choice.layers,
            c.choice.selection,
            c.gene.display(),
            c.run_dir.display()
        )
    }
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Schema(serde_json::Value);

impl Output for Schema {
    fn command(&self) -> &'static str {
        "schema"
    }

    fn text(&self) -> String {
        serde_json::to_string_pretty(&self.0).unwrap_or_default()
    }
}
