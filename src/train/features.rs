//! Feature matching for student distillation, as Learngene Pool distils its instances
//! (arXiv 2312.05743, the paper's `distill.py`): besides the soft logits, the student's block
//! outputs and attention branches at matched blocks are pulled towards the teacher's, mapped
//! to the student's width by learned linear maps (with bias) that train with the student:
//! `Σ_k MSE(h_s[i_k], P_k h_t[j_k]) + Σ_k MSE(a_s[i_k], Q_k a_t[j_k])`.
//!
//! Matched blocks ([`Positions`]): `end` pairs the last blocks; `front-end` pairs the blocks
//! ending each third of both networks (a 9-block student and a 12-block teacher: 2↔3, 5↔7,
//! 8↔11). The maps start as PyTorch's `nn.Linear` does: weight and bias uniform in
//! `±1/√(teacher width)`, seeded.

use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::nn::init::Rng;
use crate::nn::{Forward, ModelConfig};

/// Which blocks are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// The last block of each.
    End,
    /// The last block of each third of each.
    FrontEnd,
}

impl Positions {
    /// Read `end` or `front-end` (`front_end` also).
    pub fn parse(text: &str) -> std::result::Result<Positions, String> {
        match text {
            "end" => Ok(Positions::End),
            "front-end" | "front_end" => Ok(Positions::FrontEnd),
            other => Err(format!(
                "'{other}' is not a set of matched blocks; use `end` (the last blocks) or `front-end` (the last block of each third), as Learngene Pool's code"
            )),
        }
    }

    /// The `(student block, teacher block)` pairs for depths `student` and `teacher`.
    pub fn pairs(self, student: usize, teacher: usize) -> Vec<(usize, usize)> {
        let ends = |depth: usize, k: usize, of: usize| (k * depth / of).max(1) - 1;
        match self {
            Positions::End => vec![(student.max(1) - 1, teacher.max(1) - 1)],
            Positions::FrontEnd => {
                let mut pairs: Vec<(usize, usize)> = (1..=3)
                    .map(|k| (ends(student, k, 3), ends(teacher, k, 3)))
                    .collect();
                pairs.dedup_by_key(|p| p.0);
                pairs
            }
        }
    }
}

/// One learned map from the teacher's width to the student's.
#[derive(Debug, Clone)]
struct Map {
    weight: Var,
    bias: Var,
}

impl Map {
    fn new(from: usize, to: usize, rng: &mut Rng, device: &Device) -> Result<Map> {
        let bound = 1.0 / (from.max(1) as f64).sqrt();
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
                .collect()
        };
        let weight = Tensor::from_vec(draw(to * from), (to, from), device)?;
        let bias = Tensor::from_vec(draw(to), to, device)?;
        Ok(Map {
            weight: Var::from_tensor(&weight)?,
            bias: Var::from_tensor(&bias)?,
        })
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }
}

/// The matched blocks and the maps of each pair: block outputs and attention branches.
#[derive(Debug, Clone)]
pub struct FeatureMatch {
    /// Which blocks.
    pub positions: Positions,
    /// `(student block, teacher block)`.
    pub pairs: Vec<(usize, usize)>,
    hidden: Vec<Map>,
    attention: Vec<Map>,
}

impl FeatureMatch {
    /// Maps for a student of config `student` and a teacher of config `teacher`.
    pub fn new(
        student: &ModelConfig,
        teacher: &ModelConfig,
        positions: Positions,
        seed: u64,
        device: &Device,
    ) -> Result<FeatureMatch> {
        let pairs = positions.pairs(student.layers, teacher.layers);
        let mut rng = Rng::new(Rng::stream_seed(seed, &[(1, 0x5EED_F0F0_1234_ABCD)]));
        let mut maps = || -> Result<Vec<Map>> {
            pairs
                .iter()
                .map(|_| Map::new(teacher.hidden, student.hidden, &mut rng, device))
                .collect()
        };
        let hidden = maps()?;
        let attention = maps()?;
        Ok(FeatureMatch {
            positions,
            pairs,
            hidden,
            attention,
        })
    }

    /// The maps' variables, named `feature_map.{hidden,attention}.K.{weight,bias}`.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (kind, maps) in [("hidden", &self.hidden), ("attention", &self.attention)] {
            for (k, m) in maps.iter().enumerate() {
                out.push((format!("feature_map.{kind}.{k}.weight"), m.weight.clone()));
                out.push((format!("feature_map.{kind}.{k}.bias"), m.bias.clone()));
            }
        }
        out
    }

    /// The mean of the block-output maps' weights, `[student width, teacher width]`: the
    /// transpose is Learngene Pool's `ours` stitch initialisation.
    pub fn mean_hidden_map(&self) -> Result<Tensor> {
        let weights: Vec<Tensor> = self
            .hidden
            .iter()
            .map(|m| m.weight.as_tensor().detach())
            .collect();
        Ok(Tensor::stack(&weights, 0)?.mean(0)?)
    }

    /// The feature loss of a student pass against a teacher pass; both must have kept their
    /// hidden states and attention branches.
    pub fn loss(&self, student: &Forward, teacher: &Forward) -> Result<Tensor> {
        let missing = |what: &str| Error::InvalidValue {
            what: "feature matching".into(),
            value: what.into(),
            reason: "a forward pass did not keep the block it needs; this is a bug in lgreg".into(),
        };
        let mut total: Option<Tensor> = None;
        for (k, &(s, t)) in self.pairs.iter().enumerate() {
            let terms = [
                (
                    student.hidden.get(s + 1),
                    teacher.hidden.get(t + 1),
                    &self.hidden[k],
                ),
                (
                    student.attention.get(s),
                    teacher.attention.get(t),
                    &self.attention[k],
                ),
            ];
            for (sv, tv, map) in terms {
                let (Some(sv), Some(tv)) = (sv, tv) else {
                    return Err(missing(&format!("student block {s}, teacher block {t}")));
                };
                let mapped = map.apply(&tv.detach())?;
                let mse = (sv - mapped)?.sqr()?.mean_all()?;
                total = Some(match total {
                    Some(acc) => (acc + mse)?,
                    None => mse,
                });
            }
        }
        total.ok_or_else(|| missing("no matched blocks"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matched_blocks_follow_the_papers_positions() {
        assert_eq!(Positions::End.pairs(6, 12), vec![(5, 11)]);
        assert_eq!(
            Positions::FrontEnd.pairs(9, 12),
            vec![(2, 3), (5, 7), (8, 11)]
        );
        assert_eq!(
            Positions::FrontEnd.pairs(6, 12),
            vec![(1, 3), (3, 7), (5, 11)]
        );
        // Too shallow for three distinct student blocks: repeats are dropped.
        assert_eq!(Positions::FrontEnd.pairs(2, 4), vec![(0, 0), (1, 3)]);
        assert!(Positions::parse("middle").is_err());
        assert_eq!(Positions::parse("front_end"), Ok(Positions::FrontEnd));
    }
}
