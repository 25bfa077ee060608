//! Table-driven naming rules shared by the families: a layer prefix, per-layer stems and
//! global stems, each with a role.

use super::{Param, Role, Slot, layer_suffix, param_suffix, split_param};

/// The naming rules of one family in one naming scheme.
#[derive(Debug)]
pub(crate) struct Table {
    /// Optional model prefixes stripped before matching (`bert.`, `vit.`, ...).
    pub prefixes: &'static [&'static str],
    /// The prefix before the layer index (`model.layers`).
    pub layer_prefix: &'static str,
    /// Per-layer stems (after `layer_prefix.N.`) and their roles.
    pub layer: &'static [(&'static str, Role)],
    /// Global stems (after the model prefix) and their roles.
    pub global: &'static [(&'static str, Role)],
}

impl Table {
    /// Classify `name`, or `None` when the table does not know it.
    pub fn classify(&self, name: &str) -> Option<Slot> {
        let name = self.strip_prefix(name);
        if let Some((layer, tail)) = layer_suffix(name, self.layer_prefix) {
            let (stem, param) = split_param(tail)?;
            let role = lookup(self.layer, stem)?;
            return Some(Slot {
                layer: Some(layer),
                role,
                param,
            });
        }
        let (stem, param) = split_param(name).unwrap_or((name, Param::Weight));
        let role = lookup(self.global, stem).or_else(|| lookup(self.global, name))?;
        Some(Slot {
            layer: None,
            role,
            param,
        })
    }

    /// The name of a per-layer slot, with the first model prefix (if any) in front.
    pub fn layer_name(&self, prefix: &str, slot: &Slot) -> Option<String> {
        let layer = slot.layer?;
        let stem = self
            .layer
            .iter()
            .find(|(_, r)| *r == slot.role)
            .map(|(s, _)| *s)?;
        Some(format!(
            "{prefix}{}.{layer}.{stem}.{}",
            self.layer_prefix,
            param_suffix(slot.param)
        ))
    }

    /// Whether any name has this table's layer prefix and a known layer stem.
    pub fn recognises(&self, names: &[&str]) -> bool {
        names.iter().any(|n| {
            layer_suffix(self.strip_prefix(n), self.layer_prefix)
                .and_then(|(_, tail)| split_param(tail))
                .is_some_and(|(stem, _)| lookup(self.layer, stem).is_some())
        })
    }

    fn strip_prefix<'a>(&self, name: &'a str) -> &'a str {
        self.prefixes
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .unwrap_or(name)
    }
}

fn lookup(table: &[(&str, Role)], stem: &str) -> Option<Role> {
    table.iter().find(|(s, _)| *s == stem).map(|(_, r)| *r)
}
