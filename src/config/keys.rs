//! The table of every config key: its type, what it means, where it comes from (the toolbox or
//! lgreg) and whether lgreg applies it. Parsing, `--set`, the did-you-mean for unknown keys and
//! the JSON Schema in `configs/schema.json` all read this one table.

use serde_json::{Map, Value, json};

/// The type of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// A non-negative integer.
    Int,
    /// A number (a string such as `5e-4`, as YAML 1.1 reads it, is accepted too).
    Float,
    /// `true` or `false`.
    Bool,
    /// A mapping of recipe parameters.
    Map,
    /// A list of class labels.
    List,
}

/// Whether lgreg applies a key.
#[derive(Debug, Clone, Copy)]
pub enum Support {
    /// Applied.
    Applied,
    /// Applied when the value passes the test; any other value is refused with the reason.
    AppliedIf(fn(&Value) -> bool, &'static str),
    /// Accepted, but it has no effect in lgreg, for the reason given (printed as a note).
    NoEffect(&'static str),
}

/// Who defined a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A key of the PyTorch toolbox's yacs configs, kept as it is spelled there.
    Toolbox,
    /// A key lgreg adds.
    Lgreg,
}

/// One config key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Dotted path, e.g. `TRAIN.EPOCHS`.
    pub path: &'static str,
    /// Its value's type.
    pub kind: Kind,
    /// Whether lgreg applies it.
    pub support: Support,
    /// Who defined it.
    pub origin: Origin,
    /// What it means.
    pub doc: &'static str,
}

fn is_zero(v: &Value) -> bool {
    number(v) == Some(0.0)
}

fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty() || s.eq_ignore_ascii_case("none"),
        Value::Null => true,
        other => is_zero(other),
    }
}

fn is_rand_augment(v: &Value) -> bool {
    match v {
        Value::String(s) => crate::train::randaugment::RandAugment::parse(s).is_ok(),
        other => is_blank(other),
    }
}

fn is_one(v: &Value) -> bool {
    number(v).is_some_and(|n| n <= 1.0)
}

fn is_adamw_or_sgd(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("adamw") || s.eq_ignore_ascii_case("sgd"))
}

fn is_cosine(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("cosine"))
}

/// A key's value as a number, reading numeric strings (`5e-4`) too.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

const RAND_AUGMENT: &str = "only timm's RandAugment policies are implemented: `rand-` with the sections m, n, mstd, mmax, inc and p (such as rand-m9-mstd0.5-inc1), not AutoAugment, AugMix or weighted choice (`w`); use such a policy, or '' to train without it";

use Kind::{Bool, Float, Int, List, Map as MapKind, Str};
use Origin::{Lgreg, Toolbox};
use Support::{Applied, AppliedIf, NoEffect};

const fn key(
    path: &'static str,
    kind: Kind,
    support: Support,
    origin: Origin,
    doc: &'static str,
) -> Key {
    Key {
        path,
        kind,
        support,
        origin,
        doc,
    }
}

/// Every key a config may hold.
pub const KEYS: &[Key] = &[
    key(
        "METHOD_FAMILY",
        Str,
        Applied,
        Toolbox,
        "`<method>_<family>`: the algorithm (heur, auto, pool, tleg, sws) and the family (vit, llama, bert; the toolbox's `vgg` means heur on its VGG).",
    ),
    key(
        "MODE",
        Str,
        Applied,
        Lgreg,
        "`approximate` (the training-free extractor) or `faithful` (the paper's training; auto: a trained pseudo-descendant, `as-described`).",
    ),
    key(
        "OUTPUT_DIR",
        Str,
        Applied,
        Toolbox,
        "The run directory (default `outputs/<METHOD_FAMILY>/<ancestor|descendant>_<MODEL.TYPE>`).",
    ),
    key(
        "SEED",
        Int,
        Applied,
        Toolbox,
        "Seed of every random choice: the split, the batch order, the random parts of a descendant.",
    ),
    key(
        "DEVICE",
        Str,
        Applied,
        Toolbox,
        "`cpu` or `cuda` (`cuda` needs a build with `--features cuda` and a GPU).",
    ),
    key(
        "DATASET.NAME",
        Str,
        Applied,
        Toolbox,
        "The dataset's name, recorded in the card.",
    ),
    key(
        "DATASET.PATH",
        Str,
        Applied,
        Toolbox,
        "The data: a file, a directory of text files, a glob, JSON Lines with a `text` field; for images IDX, class folders or the MNIST JSON digits.",
    ),
    key(
        "DATASET.INPUT_SIZE",
        Int,
        Applied,
        Toolbox,
        "The image side; it must equal the model's image size (images are not resized).",
    ),
    key(
        "DATASET.NUM_WORKERS",
        Int,
        NoEffect("lgreg decodes its data in-process; there are no loader workers"),
        Toolbox,
        "Data-loader processes in the toolbox.",
    ),
    key(
        "DATASET.PIN_MEM",
        Bool,
        NoEffect("there is no pinned host memory on lgreg's data path"),
        Toolbox,
        "Pinned host memory in the toolbox.",
    ),
    key(
        "DATASET.NUM_WORKS",
        Int,
        Applied,
        Toolbox,
        "heur_vgg: the number of tasks in the collective model's sequence.",
    ),
    key(
        "DATASET.NUM_WORKS_TT",
        Int,
        Applied,
        Toolbox,
        "heur_vgg: the number of descendant tasks (each trains the gene arm and its random-init control).",
    ),
    key(
        "DATASET.NUM_IMGS_PER_CAT_TRAIN",
        Int,
        Applied,
        Toolbox,
        "heur_vgg: training images per class of a task: K shots for a descendant, the images per class of an ancestor task (default 300, as the paper).",
    ),
    key(
        "DATASET.CLASSES",
        List,
        Applied,
        Lgreg,
        "heur_vgg: the class split, the labels this run may use (the ancestor's classes, or the descendants' novel ones); default all. Recorded in the card.",
    ),
    key(
        "DATASET.LIMIT",
        Int,
        Applied,
        Lgreg,
        "Use only the first N examples.",
    ),
    key(
        "DATASET.SEQ_LEN",
        Int,
        Applied,
        Lgreg,
        "Tokens per training block (llama).",
    ),
    key(
        "DATASET.VAL_FRACTION",
        Float,
        Applied,
        Lgreg,
        "Fraction of the data held out for validation.",
    ),
    key(
        "GENE.ANCESTOR_MODEL_PATH",
        Str,
        Applied,
        Toolbox,
        "The ancestor: a Hugging Face id in the cache, a model directory or a checkpoint file.",
    ),
    key(
        "GENE.NAME",
        Str,
        Applied,
        Lgreg,
        "The gene name to publish (default `<ancestor>-<algorithm>`).",
    ),
    key(
        "GENE.VERSION",
        Str,
        Applied,
        Lgreg,
        "The gene version to publish (semver, default 0.1.0).",
    ),
    key(
        "GENE.RECIPE",
        Str,
        Applied,
        Lgreg,
        "A recipe file instead of the embedded `recipes/<algorithm>-<family>.yaml`.",
    ),
    key(
        "GENE.PARAMS",
        MapKind,
        Applied,
        Lgreg,
        "Overrides of the recipe's parameters, e.g. `{align: true}`.",
    ),
    key(
        "MODEL.TYPE",
        Str,
        Applied,
        Toolbox,
        "A size name such as `deit_tiny_patch16_224_L6`: the family, width and depth (`_L<N>`).",
    ),
    key(
        "MODEL.LAYERS",
        Int,
        Applied,
        Lgreg,
        "The descendant's depth (overrides the `_L<N>` of MODEL.TYPE).",
    ),
    key(
        "MODEL.LOAD_GENE",
        Str,
        Applied,
        Toolbox,
        "The gene: `name[:version]` in the registry, `oci://HOST/REPO:TAG`, or a gene directory.",
    ),
    key(
        "MODEL.STAGES",
        List,
        Applied,
        Lgreg,
        "sws: descendant layers per stage, e.g. `[3, 3, 2, 2, 2]`.",
    ),
    key(
        "MODEL.BASE_LAYERS",
        Int,
        Applied,
        Toolbox,
        "heur_vgg: conv layers of the collective model (at most 13, the paper's first N).",
    ),
    key(
        "MODEL.NUM_CLASS",
        Int,
        Applied,
        Toolbox,
        "heur_vgg: the classes of a descendant task (N-way).",
    ),
    key(
        "MODEL.PRETRAINED",
        Bool,
        Applied,
        Toolbox,
        "Start from pretrained weights. lgreg fetches no timm ImageNet weights: true is accepted where the pretrained model is the teacher given by GENE.ANCESTOR_MODEL_PATH (an `aux_*` MODEL.TYPE, MODE: faithful), and refused elsewhere with that fix.",
    ),
    key(
        "MODEL.DROP",
        Float,
        Applied,
        Toolbox,
        "Dropout rate (vit): after the position embeddings, on the attention projection, after the MLP activation and on its output, as timm's ViT.",
    ),
    key(
        "MODEL.DROP_PATH",
        Float,
        Applied,
        Toolbox,
        "Stochastic depth (vit): the rate of the last block, timm's linear rule below it (0: off).",
    ),
    key(
        "MODEL.EMA",
        Bool,
        Applied,
        Toolbox,
        "Keep an exponential moving average of the weights (timm's ModelEmaV2); it is evaluated at the end and written to `model/ema/`.",
    ),
    key(
        "MODEL.EMA_DECAY",
        Float,
        Applied,
        Toolbox,
        "The EMA decay per step, with MODEL.EMA (default 0.99996, DeiT's).",
    ),
    key(
        "TRAIN.EPOCHS",
        Int,
        Applied,
        Toolbox,
        "Passes over the training split.",
    ),
    key(
        "TRAIN.STEPS",
        Int,
        Applied,
        Lgreg,
        "Optimiser steps (overrides TRAIN.EPOCHS).",
    ),
    key(
        "TRAIN.START_EPOCH",
        Int,
        AppliedIf(is_zero, "resume an interrupted run with `--resume` instead"),
        Toolbox,
        "The epoch to start at.",
    ),
    key(
        "TRAIN.BATCH_SIZE",
        Int,
        Applied,
        Toolbox,
        "Examples per step.",
    ),
    key(
        "TRAIN.LR",
        Float,
        Applied,
        Toolbox,
        "The peak learning rate (scaled by BATCH_SIZE / 512 unless UNSCALE_LR, as DeiT does).",
    ),
    key(
        "TRAIN.UNSCALE_LR",
        Bool,
        Applied,
        Toolbox,
        "Use TRAIN.LR as it is, without the DeiT batch scaling.",
    ),
    key(
        "TRAIN.OPT",
        Str,
        AppliedIf(is_adamw_or_sgd, "only `adamw` and `sgd` are implemented"),
        Toolbox,
        "The optimiser: `adamw` (vit, llama, bert) or `sgd` (heur_vgg, which trains with SGD as its paper does).",
    ),
    key("TRAIN.OPT_EPS", Float, Applied, Toolbox, "AdamW's ε."),
    key(
        "TRAIN.MOMENTUM",
        Float,
        Applied,
        Toolbox,
        "SGD momentum (heur_vgg; AdamW's betas are 0.9 and 0.999, as timm's).",
    ),
    key(
        "TRAIN.WEIGHT_DECAY",
        Float,
        Applied,
        Toolbox,
        "Decoupled weight decay.",
    ),
    key(
        "TRAIN.SCHED",
        Str,
        AppliedIf(is_cosine, "only the `cosine` schedule is implemented"),
        Toolbox,
        "The learning-rate schedule.",
    ),
    key(
        "TRAIN.WARMUP_EPOCHS",
        Float,
        Applied,
        Toolbox,
        "Linear warm-up, in epochs.",
    ),
    key(
        "TRAIN.WARMUP_LR",
        Float,
        Applied,
        Toolbox,
        "The learning rate the warm-up starts from.",
    ),
    key(
        "TRAIN.MIN_LR",
        Float,
        Applied,
        Toolbox,
        "The floor of the cosine (default LR / 100).",
    ),
    key(
        "TRAIN.LR_DROP",
        Float,
        Applied,
        Toolbox,
        "heur_vgg: the step schedule's factor (lr · LR_DROP^⌊epoch / EPOCHS_DROP⌋).",
    ),
    key(
        "TRAIN.EPOCHS_DROP",
        Int,
        Applied,
        Toolbox,
        "heur_vgg: epochs between drops.",
    ),
    key(
        "TRAIN.SMOOTHING",
        Float,
        Applied,
        Toolbox,
        "Label smoothing ε (vit): the target is (1 − ε)·onehot + ε/K, as timm's.",
    ),
    key(
        "TRAIN.MIXUP",
        Float,
        Applied,
        Toolbox,
        "Mixup α (vit): each batch is blended with its reverse by λ ~ Beta(α, α), the loss weighs both labels (0: off).",
    ),
    key(
        "TRAIN.CUTMIX",
        Float,
        Applied,
        Toolbox,
        "CutMix α (vit): a box of each image's partner is pasted in, λ is the area kept (0: off).",
    ),
    key(
        "TRAIN.MIXUP_PROB",
        Float,
        Applied,
        Toolbox,
        "The probability that a batch is mixed (DeiT's default 1).",
    ),
    key(
        "TRAIN.MIXUP_SWITCH_PROB",
        Float,
        Applied,
        Toolbox,
        "With both Mixup and CutMix on, the probability of CutMix (DeiT's default 0.5).",
    ),
    key(
        "TRAIN.COLOR_JITTER",
        Float,
        Applied,
        Toolbox,
        "Colour jitter strength j (vit): torchvision's ColorJitter(j, j, j) on each image; off whenever TRAIN.AA sets RandAugment, as in timm.",
    ),
    key(
        "TRAIN.AA",
        Str,
        AppliedIf(is_rand_augment, RAND_AUGMENT),
        Toolbox,
        "The RandAugment policy in timm's notation (vit), e.g. `rand-m9-mstd0.5-inc1`; '' for none.",
    ),
    key(
        "TRAIN.REPROB",
        Float,
        Applied,
        Toolbox,
        "Random-erasing probability (vit): one rectangle of normal noise per image, timm's `pixel` mode.",
    ),
    key(
        "TRAIN.MAX_GRAD_NORM",
        Float,
        Applied,
        Lgreg,
        "Clip the global gradient norm to this (default 1).",
    ),
    key(
        "TRAIN.EVAL_EVERY_EPOCH",
        Bool,
        Applied,
        Lgreg,
        "Evaluate on the validation split after every epoch, into metrics.jsonl, for the curves and `lgreg compare` (default true).",
    ),
    key(
        "TRAIN.SAVE_EVERY",
        Int,
        Applied,
        Lgreg,
        "Save the resumable state every N steps.",
    ),
    key(
        "TRAIN.PRECISION",
        Str,
        Applied,
        Lgreg,
        "The matrix products in `f32`, `bf16` or `f16`.",
    ),
    key(
        "HEUR.CLASSES_PER_TASK",
        Int,
        Applied,
        Lgreg,
        "heur_vgg: classes of each collective-model task (default 5, as the paper).",
    ),
    key(
        "HEUR.WIDTH_SCALE",
        Float,
        Applied,
        Lgreg,
        "heur_vgg: scale of every conv and classifier width and of the widening schedule (default 1, the paper's sizes).",
    ),
    key(
        "HEUR.TAU",
        Float,
        Applied,
        Lgreg,
        "heur_vgg: the gradient criterion's threshold τ (default 5e-10).",
    ),
    key(
        "HEUR.ABSOLUTE",
        Bool,
        Applied,
        Lgreg,
        "heur_vgg: count |g| > τ instead of the paper code's signed g > τ (default false).",
    ),
    key(
        "HEUR.SELECT",
        Str,
        Applied,
        Lgreg,
        "heur_vgg: how the gene layers are chosen: `stable_suffix` (default: the longest suffix whose across-task CV of r_l is at most MAX_CV) or `last_k` (the paper code's fixed last K).",
    ),
    key(
        "HEUR.MAX_CV",
        Float,
        Applied,
        Lgreg,
        "heur_vgg: the stable suffix's CV threshold (default 0.1).",
    ),
    key(
        "HEUR.MAX_GENE_LAYERS",
        Int,
        Applied,
        Lgreg,
        "heur_vgg: the most layers the stable suffix may take (default 3).",
    ),
    key(
        "HEUR.K",
        Int,
        Applied,
        Lgreg,
        "heur_vgg: the layers `last_k` takes (default 3, as the paper code).",
    ),
    key(
        "HEUR.WIDEN_NOISE",
        Float,
        Applied,
        Lgreg,
        "heur_vgg: symmetry-breaking noise on widened units, times the layer's weight std (default 0: exactly function-preserving, as the paper).",
    ),
    key(
        "HEUR.SOFTMAX_BEFORE_CE",
        Bool,
        Applied,
        Lgreg,
        "heur_vgg: the paper code's quirk, a softmax layer before the cross-entropy (default false).",
    ),
    key(
        "HEUR.EWC",
        Str,
        Applied,
        Lgreg,
        "heur_vgg descendants: `intended` (default: EWC_WEIGHT · (EWC_LAMBDA/2) · Σ F (θ − θ*)² on the gene), `off`, or `code_quirk` (the paper code's term, which evaluates to zero).",
    ),
    key(
        "HEUR.EWC_LAMBDA",
        Float,
        Applied,
        Lgreg,
        "heur_vgg: EWC's λ (default 40).",
    ),
    key(
        "HEUR.EWC_WEIGHT",
        Float,
        Applied,
        Lgreg,
        "heur_vgg: the factor in front of EWC (default 1000).",
    ),
    key(
        "HEUR.REUSE_MODEL",
        Bool,
        Applied,
        Lgreg,
        "heur_vgg: the paper code's quirk, one model object carried across the descendant tasks (default false: every task starts from the clean gene).",
    ),
    key(
        "HEUR.RESET_OPTIMIZER",
        Bool,
        Applied,
        Lgreg,
        "heur_vgg: re-create the SGD optimiser every epoch, as the paper code does (default true).",
    ),
    key(
        "HEUR.TEST_PER_CLASS",
        Int,
        Applied,
        Lgreg,
        "heur_vgg: test images per class of a descendant task (default 100).",
    ),
    key(
        "HEUR.CONTROL",
        Bool,
        Applied,
        Lgreg,
        "heur_vgg: also train each task's random-init control (default true).",
    ),
    key(
        "DISTILL.TEACHER",
        Str,
        Applied,
        Lgreg,
        "MODE: faithful: the teacher the aux net is distilled from (default GENE.ANCESTOR_MODEL_PATH): a Hub id, a model directory or a checkpoint file.",
    ),
    key(
        "DISTILL.LOSS",
        Str,
        Applied,
        Lgreg,
        "MODE: faithful: `kl` on the logits (vit and llama, the papers' soft distillation; their only choice); for bert, which has no logits, `mse` (its default) or `cosine` on the last hidden states.",
    ),
    key(
        "DISTILL.ALPHA",
        Float,
        Applied,
        Lgreg,
        "MODE: faithful: the weight of the distillation term in [0, 1]; the label loss gets 1 - ALPHA (default 1, the papers': pure distillation).",
    ),
    key(
        "DISTILL.TAU",
        Float,
        Applied,
        Lgreg,
        "MODE: faithful: the distillation temperature (default 1, the papers').",
    ),
    key(
        "DISTILL.REDUCTION",
        Str,
        Applied,
        Lgreg,
        "MODE: faithful: `mean` (default), the KL per example (per token for text), or `deit`, the papers' code: the sum over the batch divided by batch x classes.",
    ),
    key(
        "DISTILL.TOP_K",
        Int,
        Applied,
        Lgreg,
        "MODE: faithful, text (llama): keep the teacher's top k log-probabilities of every token on disk and distil on them (the rest of the mass spread evenly), so that later students distilled from the same teacher on the same data skip the teacher; 0 (default) runs the teacher on every step and uses all its logits.",
    ),
    key(
        "DISTILL.FEATURES",
        Str,
        Applied,
        Lgreg,
        "MODE: faithful, vit and llama: add Learngene Pool's feature terms to the distillation: the MSE of the student's block outputs and attention branches against the teacher's at matched blocks, mapped to the student's width by learned linear maps trained with it; `end` (the last blocks) or `front-end` (the last block of each third). Absent: logits only.",
    ),
    key(
        "DISTILL.CACHE_DIR",
        Str,
        Applied,
        Lgreg,
        "MODE: faithful with DISTILL.TOP_K: where the teacher-logit caches live (default: cache/teacher-logits beside the registry, $LGREG_HOME/cache/teacher-logits); one directory per teacher, data, block length and k.",
    ),
    key(
        "AUX.LAYERS",
        Int,
        Applied,
        Lgreg,
        "MODE: faithful: the aux net's virtual layers (default 12 for tleg, 16 for sws).",
    ),
    key(
        "AUX.STAGES",
        List,
        Applied,
        Lgreg,
        "MODE: faithful, sws: the stage ratio the virtual layers are split by (default [3, 3, 4, 3, 3]).",
    ),
    key(
        "AUX.INIT",
        Str,
        Applied,
        Lgreg,
        "MODE: faithful: `random` (default, the papers), `fit`, a warm start from the teacher's layers and globals (tleg: the least-squares line; sws: each stage's middle layer) at the teacher's width, or `select`, the same warm start from the teacher's leading channels and whole heads for a narrower aux net (same head width).",
    ),
    key(
        "AUX.HIDDEN",
        Int,
        Applied,
        Lgreg,
        "MODE: faithful: the aux net's width (default: the width MODEL.TYPE names, else the teacher's).",
    ),
    key(
        "AUX.HEADS",
        Int,
        Applied,
        Lgreg,
        "MODE: faithful: the aux net's attention heads (default: MODEL.TYPE's, else the teacher's head width kept).",
    ),
    key(
        "AUX.KV_HEADS",
        Int,
        Applied,
        Lgreg,
        "MODE: faithful: the aux net's key/value heads (default: the teacher's grouping kept).",
    ),
    key(
        "AUX.FFN",
        Int,
        Applied,
        Lgreg,
        "MODE: faithful: the aux net's MLP width (default: the teacher's MLP ratio kept).",
    ),
    key(
        "POOL.WIDTHS",
        List,
        Applied,
        Lgreg,
        "MODE: faithful, pool: the instances' widths, narrowest first, in whole heads of the teacher's head width (default: a third of the teacher's width and the teacher's; the paper's tiny and base). Up to three are named tiny, small, base; more, w<width>.",
    ),
    key(
        "POOL.DEPTH",
        Int,
        Applied,
        Lgreg,
        "MODE: faithful, pool: blocks per instance (default 6; the paper uses 6 and 9).",
    ),
    key(
        "POOL.INIT",
        Str,
        Applied,
        Lgreg,
        "MODE: faithful, pool: how the students start: `random` (default, the paper) or `select`, the teacher's evenly spaced layers and globals narrowed to each width's leading channels and whole heads.",
    ),
    key(
        "POOL.STITCH_INIT",
        Str,
        Applied,
        Lgreg,
        "MODE: faithful, pool: how the stitches start before the pool fine-tune: `ours` (default, the paper's: the transpose of the front student's averaged learned teacher maps; the end must have the teacher's width) or `snnet` (SN-Net's least squares on the recipe's calibration samples).",
    ),
    key(
        "POOL.STEPS",
        Int,
        Applied,
        Lgreg,
        "MODE: faithful, pool: steps of the pool fine-tune (each trains one configuration drawn uniformly; 0.5 CE + 0.5 KD); 0 measures the stitches as they start (SN-Net's least squares alone, with `snnet`); default: POOL.EPOCHS, else the students' budget.",
    ),
    key(
        "POOL.LR",
        Float,
        Applied,
        Lgreg,
        "MODE: faithful, pool: the peak learning rate of the pool fine-tune, scaled as TRAIN.LR is (default TRAIN.LR; the paper's code uses the students' rate, 1e-4 or 5e-5, with 5 warm-up epochs of 50). The stitched configurations start far from the students, so a rate that suits a student's distillation can undo it in a short fine-tune.",
    ),
    key(
        "POOL.EPOCHS",
        Int,
        Applied,
        Lgreg,
        "MODE: faithful, pool: epochs of the pool fine-tune when POOL.STEPS is unset (the paper: 50, half the students' 100).",
    ),
    key(
        "DISTRIBUTED.WORLD_SIZE",
        Int,
        AppliedIf(
            is_one,
            "lgreg trains in one process; multi-process training is not supported yet, set it to 1",
        ),
        Toolbox,
        "Processes.",
    ),
    key(
        "DISTRIBUTED.DIST_URL",
        Str,
        NoEffect("lgreg trains in one process"),
        Toolbox,
        "The rendezvous URL.",
    ),
    key(
        "DISTRIBUTED.DIST_EVAL",
        Bool,
        NoEffect("lgreg evaluates in one process"),
        Toolbox,
        "Distributed evaluation.",
    ),
];

/// Keys only heur_vgg applies; any other method refuses them.
pub fn vgg_only(path: &str) -> bool {
    path.starts_with("HEUR.")
        || matches!(
            path,
            "DATASET.NUM_WORKS"
                | "DATASET.NUM_WORKS_TT"
                | "DATASET.NUM_IMGS_PER_CAT_TRAIN"
                | "DATASET.CLASSES"
                | "MODEL.BASE_LAYERS"
                | "MODEL.NUM_CLASS"
                | "TRAIN.LR_DROP"
                | "TRAIN.EPOCHS_DROP"
        )
}

/// The image augmentations: applied to vit classifiers, refused for the other families.
pub fn image_only(path: &str) -> bool {
    matches!(
        path,
        "TRAIN.SMOOTHING"
            | "TRAIN.MIXUP"
            | "TRAIN.CUTMIX"
            | "TRAIN.MIXUP_PROB"
            | "TRAIN.MIXUP_SWITCH_PROB"
            | "TRAIN.REPROB"
            | "TRAIN.AA"
            | "TRAIN.COLOR_JITTER"
            | "MODEL.DROP_PATH"
            | "MODEL.DROP"
    )
}

/// Keys heur_vgg's training reads, besides the ones every run reads (`METHOD_FAMILY`, `MODE`,
/// `OUTPUT_DIR`, `SEED`, `DEVICE`, `DISTRIBUTED.*`) and those only it applies ([`vgg_only`]).
pub fn vgg_reads(path: &str) -> bool {
    vgg_only(path)
        || path.starts_with("DISTRIBUTED.")
        || matches!(
            path,
            "METHOD_FAMILY"
                | "MODE"
                | "OUTPUT_DIR"
                | "SEED"
                | "DEVICE"
                | "DATASET.NAME"
                | "DATASET.PATH"
                | "DATASET.LIMIT"
                | "DATASET.INPUT_SIZE"
                | "GENE.ANCESTOR_MODEL_PATH"
                | "GENE.NAME"
                | "GENE.VERSION"
                | "MODEL.TYPE"
                | "MODEL.LOAD_GENE"
                | "TRAIN.EPOCHS"
                | "TRAIN.BATCH_SIZE"
                | "TRAIN.LR"
                | "TRAIN.OPT"
                | "TRAIN.MOMENTUM"
                | "TRAIN.WEIGHT_DECAY"
        )
}

/// A value that switches nothing on: 0, `false`, `''`, `none` or null.
pub fn is_neutral(v: &Value) -> bool {
    is_blank(v) || is_false(v)
}

/// The key at `path`.
pub fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// The section names (`DATASET`, `TRAIN`, ...).
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for (section, _) in KEYS.iter().filter_map(|k| k.path.split_once('.')) {
        if !out.contains(&section) {
            out.push(section);
        }
    }
    out
}

fn kind_schema(kind: Kind) -> Value {
    match kind {
        Str => json!({"type": "string"}),
        Int => json!({"type": "integer", "minimum": 0}),
        Float => json!({"type": ["number", "string"]}),
        Bool => json!({"type": "boolean"}),
        MapKind => json!({"type": "object"}),
        List => json!({"type": "array"}),
    }
}

fn key_schema(k: &Key) -> Value {
    let mut s = kind_schema(k.kind);
    let note = match k.support {
        Applied => String::new(),
        AppliedIf(_, reason) => format!(" Refused unless supported: {reason}."),
        NoEffect(reason) => format!(" No effect: {reason}."),
    };
    let origin = match k.origin {
        Toolbox => "toolbox key",
        Lgreg => "lgreg key",
    };
    if let Value::Object(m) = &mut s {
        m.insert(
            "description".into(),
            Value::String(format!("{} ({origin}){note}", k.doc)),
        );
    }
    s
}

/// The JSON Schema (draft 2020-12) of a config, generated from [`KEYS`].
pub fn json_schema() -> Value {
    let mut top = Map::new();
    for k in KEYS.iter().filter(|k| !k.path.contains('.')) {
        top.insert(k.path.into(), key_schema(k));
    }
    for section in sections() {
        let mut props = Map::new();
        for k in KEYS {
            if let Some((s, name)) = k.path.split_once('.')
                && s == section
            {
                props.insert(name.into(), key_schema(k));
            }
        }
        top.insert(
            section.into(),
            json!({"type": "object", "additionalProperties": false, "properties": props}),
        );
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://lgreg.dev/schema/config.json",
        "title": "lgreg run config",
        "type": "object",
        "additionalProperties": false,
        "required": ["METHOD_FAMILY"],
        "properties": top,
    })
}
