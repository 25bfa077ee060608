//! Training and evaluation: datasets, AdamW with a cosine schedule, SGD with momentum ([`sgd`]), gradient clipping,
//! resumable training state, losses (cross-entropy, KL distillation), distillation from a
//! teacher ([`distill`], with Learngene Pool's feature matching in [`features`]), DeiT's batch augmentations
//! ([`augment`]), text corpora from files,
//! directories, globs and JSON Lines ([`corpus`]), and the two verbs built on
//! them, [`adapt`] and [`evaluate`].

mod adapt;
pub mod augment;
pub mod color_jitter;
pub mod corpus;
pub mod data;
pub mod distill;
pub mod ema;
pub mod eval;
pub mod features;
pub mod logit_cache;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod randaugment;
pub mod sgd;
pub mod state;
pub mod text;

pub use adapt::{AdaptOptions, AdaptReport, adapt, state_dir};
pub use eval::{
    EvalOptions, EvalReport, Metrics, checkpoint_tokenizer, embed, evaluate, evaluate_model,
};
