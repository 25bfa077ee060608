//! SWS (arXiv 2404.16897): the gene is one layer per stage, 5 stages in the ratio 3:3:4:3:3;
//! descendant layer `i` copies the layer of its stage `s_i`.
//!
//! Training-free extraction splits the ancestor's depth into the stages (largest remainders)
//! and keeps the middle layer of each stage (`pick: middle`) or the element-wise mean of the
//! stage's layers after alignment (`pick: mean`).
//!
//! The faithful path trains an aux net whose stages share one block each, by distillation
//! (`MODE: faithful`, [`super::faithful`]); its stage blocks are the gene.
//!
//! **Layout rule** for a descendant of depth `N` (the paper publishes only 12 → 3,3,2,2,2 from
//! the 16-layer aux net 3,3,4,3,3): start from the gene's stage lengths; while the total is
//! above `N`, take one layer from the longest stage, the latest among equals; while it is
//! below, add one to the shortest stage, the earliest among equals. `--stages` overrides it.

use serde::Deserialize;

use super::ancestor::{AncestorModel, Key};
use super::blueprint::{Blueprint, GrowRequest, LayerSource};
use super::builder::GeneBuilder;
use super::faithful::{
    AuxInit, AuxNet, AuxRequest, block_values, globals_of, in_layer, random_blocks,
    require_teacher_shapes, teacher_plain,
};
use super::{Algorithm, ExtractJob, GeneView, align};
use crate::error::{Error, Result};
use crate::nn::param::{Parametrisation, Plain, StageShared, Store};

/// The SWS algorithm.
#[derive(Debug)]
pub struct Sws;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    ratio: Vec<usize>,
    pick: Pick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Pick {
    Middle,
    Mean,
}

fn stage_unit(stage: usize) -> String {
    format!("stage.{stage}.safetensors")
}

fn sws_error(reason: String, fix: &str) -> Error {
    Error::Algorithm {
        algorithm: "sws".into(),
        reason,
        fix: fix.into(),
    }
}

/// Split `total` into parts proportional to `ratio` (largest remainders, earliest first on
/// ties), each at least 1.
pub fn split_depth(total: usize, ratio: &[usize]) -> Result<Vec<usize>> {
    let sum: usize = ratio.iter().sum();
    if ratio.is_empty() || ratio.contains(&0) || total < ratio.len() {
        return Err(sws_error(
            format!(
                "{total} layers cannot be split into {} stages in the ratio {ratio:?}",
                ratio.len()
            ),
            "use an ancestor with at least as many layers as stages, and a ratio of positive numbers",
        ));
    }
    let mut parts: Vec<usize> = ratio.iter().map(|r| total * r / sum).collect();
    let mut order: Vec<usize> = (0..ratio.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(total * ratio[i] % sum));
    let mut left = total - parts.iter().sum::<usize>();
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    // Every stage needs a layer: move one from the longest stage to each empty one.
    while let Some(empty) = parts.iter().position(|&p| p == 0) {
        let longest = (0..parts.len()).max_by_key(|&i| parts[i]).unwrap_or(0);
        parts[longest] -= 1;
        parts[empty] += 1;
    }
    Ok(parts)
}

/// Per-stage descendant layer counts for depth `n`, from the gene's stage lengths (module docs).
pub fn stage_counts(stages: &[usize], n: usize) -> Vec<usize> {
    let mut counts = stages.to_vec();
    let mut total: usize = counts.iter().sum();
    while total > n {
        let Some(i) = (0..counts.len()).max_by_key(|&i| counts[i]) else {
            break;
        };
        counts[i] -= 1;
        total -= 1;
    }
    while total < n {
        let Some(i) = (0..counts.len()).min_by_key(|&i| counts[i]) else {
            break;
        };
        counts[i] += 1;
        total += 1;
    }
    counts
}

fn middle_layers(lengths: &[usize]) -> Vec<usize> {
    let mut start = 0;
    lengths
        .iter()
        .map(|&len| {
            let mid = start + (len - 1) / 2;
            start += len;
            mid
        })
        .collect()
}

impl Algorithm for Sws {
    fn name(&self) -> &'static str {
        "sws"
    }

    fn summary(&self) -> &'static str {
        "one shared layer per stage (5 stages, 3:3:4:3:3); layer i copies its stage's layer"
    }

    fn grow_options(&self) -> &'static [&'static str] {
        &["stages"]
    }

    fn extract(&self, job: &ExtractJob<'_>, out: &mut GeneBuilder) -> Result<()> {
        let params: Params = job.recipe.typed()?;
        let ancestor = job.ancestor;
        let lengths = split_depth(ancestor.depth(), &params.ratio)?;
        let mut start = 0;
        let mut sources = Vec::new();
        for (stage, &len) in lengths.iter().enumerate() {
            let layers: Vec<usize> = (start..start + len).collect();
            match params.pick {
                Pick::Middle => {
                    let mid = middle_layers(&lengths)[stage];
                    out.copy_layer(&stage_unit(stage), ancestor, mid)?;
                    sources.push(vec![mid]);
                }
                Pick::Mean => {
                    let mean = aligned_mean(job, &layers)?;
                    out.put_layer(&stage_unit(stage), ancestor, &mean)?;
                    sources.push(layers.clone());
                }
            }
            start += len;
        }
        out.diagnostic("stage_lengths", &lengths)?;
        out.diagnostic("stage_sources", &sources)?;
        out.diagnostic(
            "pick",
            match params.pick {
                Pick::Middle => "middle",
                Pick::Mean => "mean",
            },
        )?;
        Ok(())
    }

    fn aux_net(&self, request: &AuxRequest<'_>) -> Result<Box<dyn AuxNet>> {
        sws_aux_net(request)
    }

    fn grow(&self, gene: &GeneView, request: &GrowRequest) -> Result<Blueprint> {
        let lengths: Vec<usize> = gene.diagnostic("stage_lengths")?;
        let n = request.layers;
        let counts = match &request.options.stages {
            Some(given) => {
                if given.len() != lengths.len() || given.iter().sum::<usize>() != n {
                    return Err(sws_error(
                        format!(
                            "`--stages {}` must give {} counts that add up to `--layers {n}`",
                            given
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
                            lengths.len()
                        ),
                        "pass one count per stage, e.g. `--stages 3,3,2,2,2` for 12 layers",
                    ));
                }
                given.clone()
            }
            None => {
                if n < lengths.len() {
                    return Err(sws_error(
                        format!(
                            "a descendant of {n} layer(s) cannot use all {} stages",
                            lengths.len()
                        ),
                        &format!(
                            "pass `--layers {}` or more, or choose the stages with `--stages` (0 drops a stage)",
                            lengths.len()
                        ),
                    ));
                }
                stage_counts(&lengths, n)
            }
        };
        if n == 0 {
            return Err(sws_error(
                "`--layers 0` was asked for".into(),
                "pass `--layers 1` or more",
            ));
        }
        let mut layout = Vec::with_capacity(n);
        for (stage, &count) in counts.iter().enumerate() {
            layout.extend(std::iter::repeat_n(stage, count));
        }
        let mut bp = Blueprint::of(
            layout
                .iter()
                .map(|&s| LayerSource::Copy {
                    unit: stage_unit(s),
                })
                .collect(),
        );
        bp.notes
            .insert("stage_layout".into(), serde_json::to_value(&layout)?);
        Ok(bp)
    }
}

/// The element-wise mean of `layers`, each aligned to the first of them.
fn aligned_mean(job: &ExtractJob<'_>, layers: &[usize]) -> Result<align::Layer> {
    let ancestor = job.ancestor;
    let spec = align::LayerSpec::of(ancestor)?;
    let keys: Vec<Key> = ancestor.keys();
    let read = |l: usize| -> Result<align::Layer> {
        let mut layer = align::Layer::new();
        for &key in &keys {
            layer.insert(key, ancestor.read(l, key)?);
        }
        Ok(layer)
    };
    let first = read(layers[0])?;
    let mut sum = first.clone();
    for &l in &layers[1..] {
        let (aligned, _) = align::align_layer(&spec, &first, read(l)?)?;
        for (key, values) in aligned {
            if let Some(acc) = sum.get_mut(&key) {
                acc.iter_mut().zip(&values).for_each(|(a, v)| *a += v);
            }
        }
    }
    let n = layers.len() as f32;
    for values in sum.values_mut() {
        values.iter_mut().for_each(|v| *v /= n);
    }
    Ok(sum)
}

/// SWS's aux net: the virtual layers of each stage share one block.
struct SwsAux {
    net: StageShared,
    lengths: Vec<usize>,
    init: AuxInit,
}

impl AuxNet for SwsAux {
    fn params(&self) -> Box<dyn Parametrisation> {
        Box::new(self.net.clone())
    }

    fn write_units(&self, aux: &AncestorModel<'_>, out: &mut GeneBuilder) -> Result<()> {
        for stage in 0..self.lengths.len() {
            out.put_layer(
                &stage_unit(stage),
                aux,
                &block_values(&self.net.stages, stage)?,
            )?;
        }
        out.diagnostic("stage_lengths", &self.lengths)?;
        out.diagnostic("pick", "trained")?;
        out.diagnostic("aux_init", self.init)
    }
}

/// The stage of every virtual layer for stage lengths `lengths`.
fn stage_layout(lengths: &[usize]) -> Vec<usize> {
    lengths
        .iter()
        .enumerate()
        .flat_map(|(stage, &len)| std::iter::repeat_n(stage, len))
        .collect()
}

/// Build SWS's aux net: `config.layers` virtual layers split by the ratio, each stage's block
/// drawn at random (the paper) or copied from the middle layer of the teacher's same stage.
fn sws_aux_net(request: &AuxRequest<'_>) -> Result<Box<dyn AuxNet>> {
    let lengths = split_depth(request.config.layers, request.ratio)?;
    let (source, picks): (Plain, Vec<usize>) = match request.init {
        AuxInit::Random => (
            random_blocks(request, lengths.len())?,
            (0..lengths.len()).collect(),
        ),
        AuxInit::Fit | AuxInit::Select => {
            require_teacher_shapes(request)?;
            let teacher = teacher_plain(request.teacher, request.config)?;
            let teacher_lengths = split_depth(teacher.store.layers(), request.ratio)?;
            (teacher, middle_layers(&teacher_lengths))
        }
    };
    let mut stages = Store::new();
    for (stage, &pick) in picks.iter().enumerate() {
        for (slot, name, var) in source
            .store
            .iter()
            .filter(|(s, _, _)| s.layer == Some(pick))
        {
            let key = in_layer(slot, stage);
            stages.insert(key, &format!("sws.stage{stage}.{name}"), var.as_tensor())?;
        }
    }
    let net = StageShared {
        globals: globals_of(&source)?,
        stages,
        layout: stage_layout(&lengths),
    };
    Ok(Box::new(SwsAux {
        net,
        lengths,
        init: request.init,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_twelve_layer_layout() {
        let lengths = split_depth(16, &[3, 3, 4, 3, 3]).expect("split");
        assert_eq!(lengths, vec![3, 3, 4, 3, 3]);
        assert_eq!(stage_counts(&lengths, 12), vec![3, 3, 2, 2, 2]);
        assert_eq!(stage_counts(&lengths, 16), lengths);
        assert_eq!(stage_counts(&lengths, 5), vec![1, 1, 1, 1, 1]);
        assert_eq!(stage_counts(&lengths, 17), vec![4, 3, 4, 3, 3]);
    }

    #[test]
    fn other_depths_follow_the_rule() {
        let lengths = split_depth(30, &[3, 3, 4, 3, 3]).expect("split");
        assert_eq!(lengths, vec![6, 6, 7, 6, 5]);
        for n in 5..40 {
            let c = stage_counts(&lengths, n);
            assert_eq!(c.iter().sum::<usize>(), n);
            assert!(c.iter().all(|&x| x >= 1), "{n}: {c:?}");
        }
        assert_eq!(stage_counts(&lengths, 6), vec![2, 1, 1, 1, 1]);
        assert_eq!(middle_layers(&[3, 3, 4, 3, 3]), vec![1, 4, 7, 11, 14]);
        assert!(split_depth(4, &[3, 3, 4, 3, 3]).is_err());
    }
}
