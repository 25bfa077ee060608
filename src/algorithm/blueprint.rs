//! What `grow` returns: a [`Blueprint`] that says, layer by layer, where each descendant
//! tensor comes from. [`crate::descendant`] turns it into files.

use serde::Serialize;

use crate::error::{Error, Result};

/// Options of `lgreg spawn` that only some algorithms understand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrowOptions {
    /// sws: descendant layers per stage.
    pub stages: Option<Vec<usize>>,
    /// pool: the front instance.
    pub front: Option<String>,
    /// pool: the end instance.
    pub end: Option<String>,
    /// pool: the stitch configuration `i,j` (front blocks 0..=i, end blocks j..).
    pub stitch: Option<(usize, usize)>,
    /// pool: the largest allowed descendant with at most this many parameters.
    pub max_params: Option<u64>,
}

impl GrowOptions {
    /// The names of the options that are set.
    pub fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.stages.is_some() {
            v.push("stages");
        }
        if self.front.is_some() {
            v.push("front");
        }
        if self.end.is_some() {
            v.push("end");
        }
        if self.stitch.is_some() {
            v.push("stitch");
        }
        if self.max_params.is_some() {
            v.push("max-params");
        }
        v
    }
}

/// The size and seed of a descendant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowRequest {
    /// Number of layers.
    pub layers: usize,
    /// Seed of every random part.
    pub seed: u64,
    /// Algorithm-specific options.
    pub options: GrowOptions,
}

/// Where one descendant layer comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LayerSource {
    /// Every tensor copied from a block unit of the gene.
    Copy {
        /// The unit.
        unit: String,
    },
    /// TLEG: every tensor is `base + t · slope`, from two block units.
    Line {
        /// The unit with the intercepts.
        base: String,
        /// The unit with the slopes.
        slope: String,
        /// The coefficient.
        t: f64,
    },
    /// Seeded random values (norm scales 1, biases 0, weights truncated-normal 0.02).
    Random,
    /// Seeded random values as [`LayerSource::Random`], in the shapes of a block unit (a
    /// random-init control of a trained pool's descendant, whose widths differ by layer).
    RandomLike {
        /// The unit whose shapes it takes.
        unit: String,
    },
}

impl LayerSource {
    /// The same layer drawn at random, keeping its own shapes.
    pub fn randomised(&self) -> LayerSource {
        match self {
            LayerSource::Copy { unit } | LayerSource::RandomLike { unit } => {
                LayerSource::RandomLike { unit: unit.clone() }
            }
            LayerSource::Line { base, .. } => LayerSource::RandomLike { unit: base.clone() },
            LayerSource::Random => LayerSource::Random,
        }
    }
}

/// A linear stitch applied after a descendant layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StitchSource {
    /// The descendant layer it follows.
    pub after: usize,
    /// The gene unit that holds it.
    pub unit: String,
    /// The weight tensor's name in that unit.
    pub weight: String,
    /// The bias tensor's name in that unit.
    pub bias: String,
    /// Drawn at random in the unit's shapes instead (a random-init control).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub random: bool,
}

/// Where the descendant's global tensors (embeddings, final norm, head) come from.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GlobalsFrom {
    /// The gene's globals unit.
    #[default]
    Gene,
    /// Every global from one unit (a pure instance of a trained pool).
    Unit {
        /// The unit.
        unit: String,
    },
    /// The embeddings from the front's unit, the final norm and head from the end's (a
    /// stitched configuration of a trained pool).
    Split {
        /// The front instance's globals.
        front: String,
        /// The end instance's globals.
        end: String,
    },
}

/// A descendant, described tensor-source by tensor-source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blueprint {
    /// One entry per descendant layer.
    pub layers: Vec<LayerSource>,
    /// Stitch layers.
    pub stitches: Vec<StitchSource>,
    /// Where the global tensors come from.
    pub globals: GlobalsFrom,
    /// `config.json` entries that replace the gene's (the sizes of a trained pool's
    /// instance, and `lgreg_front` for a narrower stitched front).
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Facts about this layout for the model card (e.g. the sws stage of each layer).
    pub notes: serde_json::Map<String, serde_json::Value>,
}

impl Blueprint {
    /// A blueprint without stitches or notes.
    pub fn of(layers: Vec<LayerSource>) -> Blueprint {
        Blueprint {
            layers,
            stitches: Vec::new(),
            globals: GlobalsFrom::Gene,
            config: serde_json::Map::new(),
            notes: serde_json::Map::new(),
        }
    }
}

/// Refuse a request for fewer than `min` layers, saying why.
pub fn require_layers(algorithm: &str, request: &GrowRequest, min: usize, why: &str) -> Result<()> {
    if request.layers >= min.max(1) {
        return Ok(());
    }
    Err(Error::Algorithm {
        algorithm: algorithm.to_string(),
        reason: format!(
            "a descendant of {} layer(s) was asked for, but this gene needs at least {}: {why}",
            request.layers,
            min.max(1)
        ),
        fix: format!("pass `--layers {}` or more", min.max(1)),
    })
}
