//! Run configs: one YAML file per run (`configs/`), in the PyTorch toolbox's upper-case keys
//! plus lgreg's own, for `lgreg train --config` and `lgreg adapt --config`.
//!
//! [`Config::load`] reads the file, applies `--set SECTION.KEY=VALUE` overrides, refuses
//! unknown keys (with a did-you-mean), values of the wrong type, and keys lgreg does not apply
//! yet (by name, with the reason), and notes the keys that have no effect here. Every key is in
//! one table, [`keys::KEYS`], which also generates the JSON Schema (`configs/schema.json`).
//! [`size`] reads the toolbox's size names (`deit_tiny_patch16_224_L6`).

pub mod auto;
pub mod compare;
pub mod faithful;
pub mod keys;
pub mod plan;
pub mod pool;
pub mod run;
pub mod size;
pub mod vgg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::algorithm::edit_distance;
use crate::error::{Error, Result};
use keys::{Kind, Support};

/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Which path made (or makes) a gene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// The training-free extractor.
    Approximate,
    /// The paper's training.
    Faithful,
}

/// `METHOD_FAMILY` read as an algorithm and a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `heur`, `auto`, `pool`, `tleg` or `sws`.
    pub algorithm: String,
    /// `vit`, `llama`, `bert` or `vgg`.
    pub family: String,
}

impl Method {
    /// The toolbox's spelling, `<algorithm>_<family>`.
    pub fn name(&self) -> String {
        format!("{}_{}", self.algorithm, self.family)
    }
}

/// A loaded, validated run config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    values: BTreeMap<String, Value>,
    /// Keys that have no effect in lgreg, each with the reason (for the user to see).
    pub notes: Vec<String>,
}

fn config_error(file: &Path, key: &str, reason: impl Into<String>) -> Error {
    Error::RunConfig {
        path: file.to_path_buf(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The nearest known key to `path`, for a did-you-mean.
fn nearest_key(path: &str) -> Option<&'static str> {
    let upper = path.to_ascii_uppercase();
    let sections = keys::sections();
    keys::KEYS
        .iter()
        .map(|k| k.path)
        .chain(sections)
        .map(|p| (edit_distance(&upper, p), p))
        .min()
        .filter(|(d, p)| *d <= 3 || p.eq_ignore_ascii_case(path))
        .map(|(_, p)| p)
}

fn unknown_key(file: &Path, path: &str) -> Error {
    let hint = match nearest_key(path) {
        Some(k) => format!("; did you mean `{k}`?"),
        None => format!(
            "; the sections are {} (see configs/README.md)",
            keys::sections().join(", ")
        ),
    };
    config_error(file, path, format!("unknown key{hint}"))
}

/// Flatten nested mappings into dotted keys; a `Map`-kind key stays one value.
fn flatten(
    file: &Path,
    prefix: &str,
    map: Map<String, Value>,
    out: &mut BTreeMap<String, Value>,
) -> Result<()> {
    for (name, value) in map {
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        let is_section = keys::sections().contains(&path.as_str());
        match (value, is_section) {
            (Value::Object(inner), true) => flatten(file, &path, inner, out)?,
            (Value::Null, true) => {}
            (_, true) => {
                return Err(config_error(
                    file,
                    &path,
                    "is a section: give it as a mapping of keys",
                ));
            }
            (value, false) => {
                if keys::find(&path).is_none() {
                    return Err(unknown_key(file, &path));
                }
                out.insert(path, value);
            }
        }
    }
    Ok(())
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Int => "a non-negative integer",
        Kind::Float => "a number",
        Kind::Bool => "true or false",
        Kind::Map => "a mapping",
        Kind::List => "a list",
    }
}

/// How config text is read: YAML 1.2 booleans only (`true`, `True`, `TRUE`, `false`, ...), so
/// that a word such as `off` or `no` in a string key stays that word; boolean keys still take
/// YAML 1.1's `yes`/`no`/`on`/`off` through [`coerce`].
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

/// Bring a value to its key's type: numbers from numeric strings, strings from scalars.
fn coerce(kind: Kind, value: Value) -> Option<Value> {
    match (kind, value) {
        (Kind::Str, Value::String(s)) => Some(Value::String(s)),
        (Kind::Str, Value::Number(n)) => Some(Value::String(n.to_string())),
        (Kind::Str, Value::Bool(b)) => Some(Value::String(b.to_string())),
        (Kind::Int, v) => keys::number(&v)
            .filter(|n| *n >= 0.0 && n.fract() == 0.0 && *n < 1e15)
            .map(|n| Value::from(n as u64)),
        (Kind::Float, v) => keys::number(&v)
            .filter(|n| n.is_finite())
            .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number)),
        (Kind::Bool, Value::Bool(b)) => Some(Value::Bool(b)),
        (Kind::Bool, Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Some(Value::Bool(true)),
            "false" | "no" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
        (Kind::Map, Value::Object(m)) => Some(Value::Object(m)),
        (Kind::List, Value::Array(a)) => Some(Value::Array(a)),
        _ => None,
    }
}

/// A value as the user would write it, for messages.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

impl Config {
    /// Read `file`, apply `sets` (`SECTION.KEY=VALUE`, later ones win) and validate.
    pub fn load(file: &Path, sets: &[String]) -> Result<Config> {
        let meta = fs_err::metadata(file)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(config_error(
                file,
                "(file)",
                format!("it has {} bytes; a config is at most 1 MiB", meta.len()),
            ));
        }
        let text = fs_err::read_to_string(file)?;
        Config::parse(&text, file, sets)
    }

    /// Parse config text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path, sets: &[String]) -> Result<Config> {
        let tree: Value = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| config_error(file, "(file)", format!("not valid YAML: {e}")))?;
        let map = match tree {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => {
                return Err(config_error(
                    file,
                    "(file)",
                    "a config is a mapping of keys such as `METHOD_FAMILY: tleg_vit`",
                ));
            }
        };
        let mut raw = BTreeMap::new();
        flatten(file, "", map, &mut raw)?;
        for set in sets {
            let (path, value) = parse_set(file, set)?;
            raw.insert(path, value);
        }
        let mut config = Config {
            file: file.to_path_buf(),
            values: BTreeMap::new(),
            notes: Vec::new(),
        };
        for (path, value) in raw {
            config.admit(&path, value)?;
        }
        if config.str("METHOD_FAMILY").is_none() {
            return Err(config_error(
                file,
                "METHOD_FAMILY",
                "is required, e.g. `METHOD_FAMILY: tleg_vit`",
            ));
        }
        config.method()?;
        config.mode()?;
        config.check_mode_keys()?;
        config.check_method_keys()?;
        Ok(config)
    }

    /// Type-check one key and decide whether it is applied, noted or refused.
    fn admit(&mut self, path: &str, value: Value) -> Result<()> {
        let key = keys::find(path).ok_or_else(|| unknown_key(&self.file, path))?;
        let typed = coerce(key.kind, value.clone()).ok_or_else(|| {
            config_error(
                &self.file,
                path,
                format!("{} is not {}", shown(&value), kind_name(key.kind)),
            )
        })?;
        match key.support {
            Support::Applied => {}
            Support::AppliedIf(test, reason) => {
                if !test(&typed) {
                    return Err(config_error(
                        &self.file,
                        path,
                        format!("{} is not applied yet: {reason}", shown(&typed)),
                    ));
                }
            }
            Support::NoEffect(reason) => {
                self.notes.push(format!("{path}: no effect ({reason})"));
            }
        }
        self.values.insert(path.to_string(), typed);
        Ok(())
    }

    /// The value of `path`, when set.
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.values.get(path)
    }

    /// A string key.
    pub fn str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    /// An integer key.
    pub fn int(&self, path: &str) -> Option<u64> {
        self.get(path).and_then(Value::as_u64)
    }

    /// A number key.
    pub fn float(&self, path: &str) -> Option<f64> {
        self.get(path).and_then(Value::as_f64)
    }

    /// A boolean key.
    pub fn bool(&self, path: &str) -> Option<bool> {
        self.get(path).and_then(Value::as_bool)
    }

    /// A path key, relative paths read against the working directory (as the toolbox does).
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        self.str(key).map(PathBuf::from)
    }

    /// An error about `key` of this config.
    pub fn error(&self, key: &str, reason: impl Into<String>) -> Error {
        config_error(&self.file, key, reason)
    }

    /// A key that must be set.
    pub fn required_str(&self, key: &str, example: &str) -> Result<&str> {
        self.str(key)
            .ok_or_else(|| self.error(key, format!("is required here, e.g. `{key}: {example}`")))
    }

    /// `METHOD_FAMILY` as an algorithm and a family.
    pub fn method(&self) -> Result<Method> {
        let raw = self.str("METHOD_FAMILY").unwrap_or_default();
        let bad = |reason: String| self.error("METHOD_FAMILY", reason);
        let (algorithm, family) = raw.split_once('_').ok_or_else(|| {
            bad(format!(
                "'{raw}' is not `<method>_<family>`, e.g. `tleg_vit` or `heur_llama`"
            ))
        })?;
        crate::algorithm::find(algorithm).map_err(|e| bad(e.to_string()))?;
        match family {
            "vit" | "llama" | "bert" => {}
            "vgg" if algorithm == "heur" => {}
            "vgg" => {
                return Err(bad(format!(
                    "the VGG family runs only Heur Learngene (`heur_vgg`), not `{algorithm}`"
                )));
            }
            other => {
                return Err(bad(format!(
                    "unknown family `{other}`; the families are vit, llama, bert and vgg (heur_vgg)"
                )));
            }
        }
        Ok(Method {
            algorithm: algorithm.to_string(),
            family: family.to_string(),
        })
    }

    /// Whether this is a `heur_vgg` run.
    pub fn is_vgg(&self) -> bool {
        self.str("METHOD_FAMILY") == Some("heur_vgg")
    }

    /// Whether the method has a faithful path that trains an aux net (tleg and sws).
    fn trains_aux_net(&self) -> bool {
        self.str("METHOD_FAMILY")
            .and_then(|m| m.split_once('_'))
            .is_some_and(|(a, _)| a == "tleg" || a == "sws")
    }

    /// Whether the method is pool, whose faithful run distils students of several widths.
    pub fn trains_pool(&self) -> bool {
        self.str("METHOD_FAMILY")
            .and_then(|m| m.split_once('_'))
            .is_some_and(|(a, _)| a == "pool")
    }

    /// Whether the method is auto, whose faithful run trains a pseudo-descendant.
    pub fn trains_pseudo(&self) -> bool {
        self.str("METHOD_FAMILY")
            .and_then(|m| m.split_once('_'))
            .is_some_and(|(a, _)| a == "auto")
    }

    /// `MODE`: `approximate` by default, `faithful` (the only mode) for heur_vgg, and for
    /// tleg/sws when `MODEL.TYPE` names an aux net (`aux_deit_tiny_patch16_224`, the toolbox's
    /// way of asking for the aux-net training).
    pub fn mode(&self) -> Result<RunMode> {
        let vgg = self.is_vgg();
        let aux_type = self
            .str("MODEL.TYPE")
            .is_some_and(|t| t.starts_with("aux_"));
        let aux = self.trains_aux_net();
        match (self.str("MODE"), vgg) {
            (None | Some("faithful"), true) => Ok(RunMode::Faithful),
            (Some("approximate"), true) => Err(self.error(
                "MODE",
                "'approximate': heur_vgg has only the paper's training; drop MODE or set `MODE: faithful`",
            )),
            (None, false) if aux && aux_type => Ok(RunMode::Faithful),
            (None | Some("approximate"), false) => Ok(RunMode::Approximate),
            (Some("faithful"), false)
                if self.trains_pool() && self.str("METHOD_FAMILY") == Some("pool_bert") =>
            {
                Err(self.error(
                    "MODE",
                    "'faithful' pool distils students on the teacher's logits, and bert has none; use `MODE: approximate`",
                ))
            }
            (Some("faithful"), false) if aux || self.trains_pseudo() || self.trains_pool() => {
                Ok(RunMode::Faithful)
            }
            (Some("faithful"), false) => Err(self.error(
                "MODE",
                "'faithful' is not applied for heur (its paper's training is heur_vgg's); use `MODE: approximate`",
            )),
            (Some(other), _) => Err(self.error(
                "MODE",
                format!("'{other}' is neither `approximate` nor `faithful`"),
            )),
        }
    }

    /// Note the aux-net keys where no aux net trains (they have no effect there, so a config
    /// switched with `--set MODE=approximate` still runs), and refuse `MODEL.PRETRAINED: true`
    /// where no teacher stands for the pretrained weights.
    fn check_mode_keys(&mut self) -> Result<()> {
        let faithful = self.mode()? == RunMode::Faithful;
        let faithful_aux = faithful && self.trains_aux_net();
        let faithful_pool = faithful && self.trains_pool();
        let unused: Vec<String> = self
            .values
            .keys()
            .filter(|p| {
                (p.starts_with("AUX.") && !faithful_aux)
                    || (p.starts_with("DISTILL.") && !faithful_aux && !faithful_pool)
                    || (p.starts_with("POOL.") && !faithful_pool)
            })
            .map(|p| format!("{p}: no effect (AUX.* applies to the aux-net training of tleg and sws, DISTILL.* to it and to the students of pool, POOL.* to pool, under MODE: faithful)"))
            .collect();
        self.notes.extend(unused);
        if !faithful_aux && self.bool("MODEL.PRETRAINED") == Some(true) {
            return Err(self.error(
                "MODEL.PRETRAINED",
                "true: lgreg fetches no timm ImageNet weights; give the ancestor as GENE.ANCESTOR_MODEL_PATH and set MODEL.PRETRAINED: false",
            ));
        }
        Ok(())
    }

    /// Refuse the keys only heur_vgg applies on other methods, and the optimiser that does not
    /// match the method; note a momentum AdamW does not read.
    fn check_method_keys(&mut self) -> Result<()> {
        let vgg = self.is_vgg();
        if !vgg && let Some(path) = self.values.keys().find(|p| keys::vgg_only(p)) {
            return Err(self.error(
                path,
                format!(
                    "applies only to `METHOD_FAMILY: heur_vgg` (the collective model and its few-shot descendants); remove it for `{}`",
                    self.str("METHOD_FAMILY").unwrap_or_default()
                ),
            ));
        }
        let opt = self.str("TRAIN.OPT").map(str::to_ascii_lowercase);
        match (opt.as_deref(), vgg) {
            (Some("adamw"), true) => {
                return Err(self.error(
                    "TRAIN.OPT",
                    "'adamw': heur_vgg trains with SGD, as its paper does; set `OPT: sgd` or drop the key",
                ));
            }
            (Some("sgd"), false) => {
                return Err(self.error(
                    "TRAIN.OPT",
                    "'sgd' is implemented for heur_vgg only; this method trains with `adamw`",
                ));
            }
            _ => {}
        }
        if vgg
            && let Some(path) = self.values.iter().find_map(|(p, v)| {
                let silent = matches!(
                    keys::find(p).map(|k| k.support),
                    Some(keys::Support::NoEffect(_))
                );
                (!keys::vgg_reads(p) && !silent && !keys::is_neutral(v)).then_some(p)
            })
        {
            return Err(self.error(
                path,
                "does not apply to `METHOD_FAMILY: heur_vgg` (its SGD task training reads TRAIN.EPOCHS, BATCH_SIZE, LR, LR_DROP, EPOCHS_DROP, MOMENTUM, WEIGHT_DECAY and the HEUR.* keys); remove it",
            ));
        }
        if let Some(method) = self.str("METHOD_FAMILY").and_then(|m| m.split_once('_'))
            && method.1 != "vit"
            && !vgg
            && let Some(path) = self
                .values
                .iter()
                .find_map(|(p, v)| (keys::image_only(p) && !keys::is_neutral(v)).then_some(p))
        {
            return Err(self.error(
                path,
                format!(
                    "applies to image classifiers (the vit family), not `{}`; set it to 0",
                    method.1
                ),
            ));
        }
        if !vgg && self.values.contains_key("TRAIN.MOMENTUM") {
            self.notes.push(
                "TRAIN.MOMENTUM: no effect (AdamW has no momentum parameter; its betas are 0.9 and 0.999, as timm's)".into(),
            );
        }
        Ok(())
    }

    /// Whether the run goes to the first CUDA GPU (`DEVICE: cuda`), checked against this
    /// build and machine.
    pub fn cuda(&self) -> Result<bool> {
        match self.str("DEVICE").unwrap_or("cpu") {
            "cpu" => Ok(false),
            "cuda" | "gpu" => {
                crate::nn::device(true).map_err(|e| {
                    self.error(
                        "DEVICE",
                        format!("'cuda' is not available here ({e}); run on the CPU with `--set DEVICE=cpu`, or build with `--features cuda` on a machine with a GPU"),
                    )
                })?;
                Ok(true)
            }
            other => Err(self.error("DEVICE", format!("'{other}' is neither `cpu` nor `cuda`"))),
        }
    }

    /// The config as it was resolved (file and `--set`), as nested YAML.
    pub fn resolved_yaml(&self) -> Result<String> {
        serde_saphyr::to_string(&self.resolved()).map_err(|e| self.error("(file)", e.to_string()))
    }

    /// The config as it was resolved, as a nested JSON value (for cards).
    pub fn resolved(&self) -> Value {
        let mut top = Map::new();
        for (path, value) in &self.values {
            match path.split_once('.') {
                Some((section, name)) => {
                    let entry = top
                        .entry(section.to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(m) = entry {
                        m.insert(name.to_string(), value.clone());
                    }
                }
                None => {
                    top.insert(path.clone(), value.clone());
                }
            }
        }
        Value::Object(top)
    }
}

/// One `SECTION.KEY=VALUE`; the value is read as a YAML scalar or list.
fn parse_set(file: &Path, set: &str) -> Result<(String, Value)> {
    let Some((path, raw)) = set.split_once('=') else {
        return Err(Error::InvalidValue {
            what: "--set".into(),
            value: set.to_string(),
            reason: "expected `SECTION.KEY=VALUE`, e.g. `TRAIN.EPOCHS=1`".into(),
        });
    };
    let path = path.trim();
    if keys::find(path).is_none() {
        let err = unknown_key(file, path);
        return Err(Error::InvalidValue {
            what: "--set".into(),
            value: set.to_string(),
            reason: err.to_string(),
        });
    }
    let value = serde_saphyr::from_str_with_options::<Value>(raw, yaml_options())
        .ok()
        .filter(|v| !v.is_null())
        .unwrap_or_else(|| Value::String(raw.to_string()));
    Ok((path.to_string(), value))
}

#[cfg(test)]
mod tests;
