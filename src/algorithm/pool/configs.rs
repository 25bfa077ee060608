//! The instances of a pool gene and its stitch configurations (SN-Net's paired stitching),
//! and the choice of one configuration for a requested descendant.
//!
//! Instance `a` holds the ancestor's even layers (0, 2, 4, ...), instance `b` its odd layers,
//! `D = floor(L / 2)` blocks each. A window of two consecutive block indices slides over
//! `0..D` with stride 1; every ordered pair `(i, j)` inside a window is a configuration (front
//! blocks `0..=i`, a stitch, end blocks `j..D`, depth `(i + 1) + (D - j)`), and the pairs a
//! window produces first share that window's stitch layer. Both directions (a→b, b→a) have
//! their own stitch layers.

use serde::{Deserialize, Serialize};

use super::super::blueprint::GrowRequest;
use crate::error::{Error, Result};

/// The instance names, in order.
pub const INSTANCES: [&str; 2] = ["a", "b"];

/// One allowed stitch configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StitchConfig {
    /// The front instance.
    pub front: String,
    /// The end instance.
    pub end: String,
    /// The last front block.
    pub i: usize,
    /// The first end block.
    pub j: usize,
    /// Number of blocks of the descendant.
    pub depth: usize,
    /// The gene unit of its stitch layer.
    pub stitch: String,
    /// The relative residual of the (shared) stitch layer on this configuration's calibration
    /// hidden states, once fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual: Option<f64>,
    /// Parameters of the descendant it gives (globals, blocks and stitch); absent in genes
    /// made before counts were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<u64>,
    /// Its held-out metric after the pool fine-tune (a trained pool only): accuracy for
    /// images, perplexity for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
}

/// The ancestor layers of each instance of an `ancestor_depth`-layer ancestor.
pub fn instance_layers(ancestor_depth: usize) -> Vec<(String, Vec<usize>)> {
    let d = ancestor_depth / 2;
    INSTANCES
        .iter()
        .enumerate()
        .map(|(parity, name)| (name.to_string(), (0..d).map(|k| 2 * k + parity).collect()))
        .collect()
}

/// The block unit of block `k` of `instance`.
pub fn block_unit(instance: &str, k: usize) -> String {
    format!("pool.{instance}.{k}.safetensors")
}

/// The unit of stitch layer `w` from `front` to `end`.
pub fn stitch_unit(front: &str, end: &str, w: usize) -> String {
    format!("pool.stitch.{front}{end}.{w}.safetensors")
}

/// SN-Net's paired stitching over `d` blocks: `(i, j, w)` for every configuration, where `w`
/// is the stitch layer it shares; `d - 1` stitch layers, `4 + 3·(d - 2)` pairs for `d ≥ 2`.
pub fn paired_stitching(d: usize) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for w in 0..d.saturating_sub(1) {
        for i in [w, w + 1] {
            for j in [w, w + 1] {
                if !out.iter().any(|&(a, b, _)| (a, b) == (i, j)) {
                    out.push((i, j, w));
                }
            }
        }
    }
    out
}

/// Every configuration of a pool with `d`-block instances, a→b first, then b→a.
pub fn configurations(d: usize) -> Vec<StitchConfig> {
    configurations_between(&[("a", "b"), ("b", "a")], d)
}

/// Every configuration of the stitch `directions` (front, end) over `d`-block instances, in
/// the order given, each direction with its own stitch layers.
pub fn configurations_between(directions: &[(&str, &str)], d: usize) -> Vec<StitchConfig> {
    let pairs = paired_stitching(d);
    let mut out = Vec::new();
    for &(front, end) in directions {
        for &(i, j, w) in &pairs {
            out.push(StitchConfig {
                front: front.into(),
                end: end.into(),
                i,
                j,
                depth: (i + 1) + (d - j),
                stitch: stitch_unit(front, end, w),
                residual: None,
                params: None,
                metric: None,
            });
        }
    }
    out
}

/// What a descendant is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// One instance alone.
    Pure(String),
    /// Two instances joined by a stitch.
    Stitched(StitchConfig),
}

fn pool_error(reason: String, fix: String) -> Error {
    Error::Algorithm {
        algorithm: "pool".into(),
        reason,
        fix,
    }
}

fn instance(given: Option<&String>, default: &str, names: &[String]) -> Result<String> {
    let name = given.map_or(default, String::as_str);
    if names.iter().any(|n| n == name) {
        return Ok(name.to_string());
    }
    let known = if names.iter().map(String::as_str).eq(INSTANCES) {
        "`a` (the ancestor's even layers) and `b` (its odd layers)".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(pool_error(
        format!("unknown instance `{name}`"),
        format!("this gene has instances {known}"),
    ))
}

/// The instance names of the approximate (two-instance) pool.
pub fn pair_names() -> Vec<String> {
    INSTANCES.iter().map(ToString::to_string).collect()
}

fn depths(configs: &[StitchConfig], d: usize) -> String {
    let mut all: Vec<usize> = configs.iter().map(|c| c.depth).chain([d]).collect();
    all.sort_unstable();
    all.dedup();
    all.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn listing(configs: &[&StitchConfig]) -> String {
    configs
        .iter()
        .map(|c| match c.residual {
            Some(r) => format!("{},{} (depth {}, residual {r:.3})", c.i, c.j, c.depth),
            None => format!("{},{} (depth {})", c.i, c.j, c.depth),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One allowed descendant with its size, for a choice by budget.
struct Sized {
    choice: Choice,
    depth: usize,
    params: u64,
}

fn described(s: &Sized) -> String {
    match &s.choice {
        Choice::Pure(name) => format!(
            "instance {name} alone ({} layers, {} parameters)",
            s.depth, s.params
        ),
        Choice::Stitched(c) => format!(
            "{}→{} stitch {},{} ({} layers, {} parameters)",
            c.front, c.end, c.i, c.j, s.depth, s.params
        ),
    }
}

/// The largest allowed descendant (by parameters; the earliest among equals, pure instances
/// first) with at most `budget` parameters, among those `request` allows: its `--front`,
/// `--end` and `--layers` (0: any depth) narrow the candidates. `instances` are the pure
/// instances of `d` blocks with their sizes.
pub fn choose_by_budget(
    configs: &[StitchConfig],
    d: usize,
    instances: &[(String, Option<u64>)],
    budget: u64,
    request: &GrowRequest,
) -> Result<Choice> {
    let opts = &request.options;
    let stale = || {
        pool_error(
            "this pool gene records no parameter counts (it predates them)".into(),
            "extract it again with this lgreg, or choose with `--layers` and `--stitch`".into(),
        )
    };
    let mut all: Vec<Sized> = Vec::new();
    for (name, params) in instances {
        let params = params.ok_or_else(stale)?;
        all.push(Sized {
            choice: Choice::Pure(name.clone()),
            depth: d,
            params,
        });
    }
    for c in configs {
        all.push(Sized {
            choice: Choice::Stitched(c.clone()),
            depth: c.depth,
            params: c.params.ok_or_else(stale)?,
        });
    }
    let wanted = |s: &Sized| {
        let (front, end) = match &s.choice {
            Choice::Pure(n) => (n.as_str(), n.as_str()),
            Choice::Stitched(c) => (c.front.as_str(), c.end.as_str()),
        };
        opts.front.as_deref().is_none_or(|f| f == front)
            && opts.end.as_deref().is_none_or(|e| e == end)
            && (request.layers == 0 || request.layers == s.depth)
    };
    let candidates: Vec<&Sized> = all.iter().filter(|s| wanted(s)).collect();
    let best =
        candidates
            .iter()
            .filter(|s| s.params <= budget)
            .fold(None::<&&Sized>, |b, s| match b {
                Some(b) if b.params >= s.params => Some(b),
                _ => Some(s),
            });
    match best {
        Some(s) => Ok(s.choice.clone()),
        None => {
            let smallest = candidates.iter().min_by_key(|s| s.params).map_or_else(
                || "none matches the other options".to_string(),
                |s| format!("the smallest allowed is {}", described(s)),
            );
            Err(pool_error(
                format!("no allowed descendant has at most {budget} parameters; {smallest}"),
                "raise `--max-params`, or loosen `--front`, `--end` and `--layers`".into(),
            ))
        }
    }
}

/// The configuration `request` asks for among `configs` of a pool whose instances `names`
/// have `d` blocks.
///
/// `--front` defaults to the first instance. Without `--stitch`, `--layers D` gives the pure
/// front instance unless `--end` names another one; otherwise the first configuration from
/// the front (to `--end`, when given) whose depth is `--layers` is taken.
pub fn choose(
    configs: &[StitchConfig],
    names: &[String],
    d: usize,
    request: &GrowRequest,
) -> Result<Choice> {
    let opts = &request.options;
    let n = request.layers;
    let first = names.first().map_or("a", String::as_str);
    let front = instance(opts.front.as_ref(), first, names)?;
    let pure_default = opts.stitch.is_none() && n == d;
    let end = opts
        .end
        .as_ref()
        .map(|e| instance(Some(e), first, names))
        .transpose()?;
    let from_front: Vec<&StitchConfig> = configs.iter().filter(|c| c.front == front).collect();
    let other = from_front.first().map_or_else(
        || {
            names
                .iter()
                .find(|n| **n != front)
                .cloned()
                .unwrap_or_default()
        },
        |c| c.end.clone(),
    );
    if end.as_ref().is_none_or(|e| *e == front) {
        if pure_default {
            return Ok(Choice::Pure(front));
        }
        if end.is_some() {
            return Err(pool_error(
                format!(
                    "`--front` and `--end` are both instance `{front}`: that is the pure instance of {d} layers, and it has no stitch"
                ),
                format!(
                    "pass `--layers {d}` without `--stitch`, or stitch two instances with `--front {front} --end {other}`"
                ),
            ));
        }
    }
    let end = end.unwrap_or(other);
    let direction: Vec<&StitchConfig> = from_front.into_iter().filter(|c| c.end == end).collect();
    if direction.is_empty() {
        return Err(pool_error(
            format!("this pool has no stitch from instance `{front}` to `{end}`"),
            format!("stitched directions: {}", directions(configs)),
        ));
    }
    let found = match opts.stitch {
        Some((i, j)) => {
            let c = direction
                .iter()
                .find(|c| (c.i, c.j) == (i, j))
                .ok_or_else(|| {
                    pool_error(
                        format!("stitch {i},{j} is not an allowed {front}→{end} configuration"),
                        format!("allowed: {}", listing(&direction)),
                    )
                })?;
            if c.depth != n {
                return Err(pool_error(
                    format!(
                        "stitch {i},{j} gives {} layers, but `--layers {n}` was asked for",
                        c.depth
                    ),
                    format!("pass `--layers {}`, or drop `--stitch`", c.depth),
                ));
            }
            *c
        }
        None => direction
            .iter()
            .find(|c| c.depth == n)
            .copied()
            .ok_or_else(|| {
                pool_error(
                    format!("no {front}→{end} descendant has {n} layer(s)"),
                    format!(
                        "pass one of the possible depths with `--layers`: {}",
                        depths(configs, d)
                    ),
                )
            })?,
    };
    Ok(Choice::Stitched(found.clone()))
}

/// The stitched directions of `configs`, as `front→end` in order.
fn directions(configs: &[StitchConfig]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for c in configs {
        let d = format!("{}→{}", c.front, c.end);
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen.join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::super::blueprint::GrowOptions;
    use super::*;

    fn request(layers: usize, options: GrowOptions) -> GrowRequest {
        GrowRequest {
            layers,
            seed: 0,
            options,
        }
    }

    #[test]
    fn six_blocks_give_sixteen_pairs_and_five_stitch_layers() {
        let pairs = paired_stitching(6);
        assert_eq!(pairs.len(), 16);
        let layers: std::collections::BTreeSet<usize> = pairs.iter().map(|p| p.2).collect();
        assert_eq!(layers.into_iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(&pairs[..4], &[(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]);
        assert_eq!(&pairs[4..7], &[(1, 2, 1), (2, 1, 1), (2, 2, 1)]);
        assert_eq!(paired_stitching(9).len(), 25);
        assert!(paired_stitching(1).is_empty());
        let all = configurations(6);
        assert_eq!(all.len(), 32);
        for direction in [("a", "b"), ("b", "a")] {
            let units: std::collections::BTreeSet<&str> = all
                .iter()
                .filter(|c| (c.front.as_str(), c.end.as_str()) == direction)
                .map(|c| c.stitch.as_str())
                .collect();
            assert_eq!(units.len(), 5, "{direction:?}");
        }
        assert!(all.iter().all(|c| (6..=8).contains(&c.depth)));
    }

    #[test]
    fn instances_split_even_and_odd_layers() {
        let inst = instance_layers(7);
        assert_eq!(inst[0], ("a".to_string(), vec![0, 2, 4]));
        assert_eq!(inst[1], ("b".to_string(), vec![1, 3, 5]));
    }

    #[test]
    fn choices_follow_the_options() {
        let configs = configurations(6);
        let pick = |n, o| choose(&configs, &pair_names(), 6, &request(n, o));
        assert_eq!(
            pick(6, GrowOptions::default()).ok(),
            Some(Choice::Pure("a".into()))
        );
        let b = GrowOptions {
            front: Some("b".into()),
            ..GrowOptions::default()
        };
        assert_eq!(pick(6, b).ok(), Some(Choice::Pure("b".into())));
        let Ok(Choice::Stitched(c)) = pick(7, GrowOptions::default()) else {
            panic!("depth 7 is a stitch");
        };
        assert_eq!(
            (c.front.as_str(), c.end.as_str(), c.i, c.j),
            ("a", "b", 0, 0)
        );
        let explicit = GrowOptions {
            end: Some("b".into()),
            ..GrowOptions::default()
        };
        let Ok(Choice::Stitched(c)) = pick(6, explicit) else {
            panic!("a→b at depth 6 is a stitch");
        };
        assert_eq!((c.i, c.j, c.depth), (0, 1, 6));
        let stitch = |i, j| GrowOptions {
            stitch: Some((i, j)),
            ..GrowOptions::default()
        };
        assert!(
            matches!(pick(8, stitch(3, 2)), Ok(Choice::Stitched(c)) if c.stitch == stitch_unit("a", "b", 2))
        );
        let err = pick(8, stitch(0, 3))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not an allowed a→b"), "{err}");
        let err = pick(7, stitch(3, 2))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("gives 8 layers"), "{err}");
        let err = pick(3, GrowOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no a→b descendant has 3"), "{err}");
        let bad = GrowOptions {
            front: Some("c".into()),
            ..GrowOptions::default()
        };
        assert!(pick(6, bad).is_err());
    }
}
