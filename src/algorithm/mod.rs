//! The learngene algorithms behind one trait: *extract* (ancestor → gene) and *grow* (gene +
//! requested size → descendant blueprint).
//!
//! No algorithm names a family's tensors: each works on layers, roles and params from
//! [`crate::anatomy`], reads the ancestor through [`AncestorModel`], writes units through
//! [`GeneBuilder`] and describes descendants as a [`Blueprint`]. Adding an algorithm is one
//! file here, one recipe per family in `recipes/`, and one line in [`ALL`].

pub mod align;
pub mod ancestor;
pub mod assign;
pub mod auto;
pub mod blueprint;
pub mod builder;
pub mod cka;
pub mod extract;
pub mod faithful;
pub mod gene;
pub mod heur;
pub mod heur_vgg;
pub mod pool;
pub mod probe;
pub mod subset;
pub mod sws;
pub mod tleg;

pub use ancestor::AncestorModel;
pub use blueprint::{Blueprint, GlobalsFrom, GrowOptions, GrowRequest, LayerSource};
pub use builder::GeneBuilder;
pub use extract::{
    ExtractJob, ExtractRequest, Extracted, Imported, Lineage, check_tag_free, extract,
    publish_trained,
};
pub use gene::GeneView;

use crate::anatomy::Family;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::recipe::Recipe;

/// One learngene algorithm.
pub trait Algorithm: Sync {
    /// Its short name (`tleg`).
    fn name(&self) -> &'static str;
    /// One line on what its gene is.
    fn summary(&self) -> &'static str;
    /// Whether extraction reads `--data`.
    fn needs_data(&self) -> bool {
        false
    }
    /// The spawn options it understands (`stages`, `front`, `end`, `stitch`).
    fn grow_options(&self) -> &'static [&'static str] {
        &[]
    }
    /// When `ckpt` is a gene in the algorithm's own published format (e.g. an official TLEG
    /// checkpoint) rather than an ancestor, the family of its descendants. `None`, the
    /// default, sends it down the ordinary path.
    fn imports(&self, _ckpt: &Checkpoint) -> Option<Family> {
        None
    }
    /// Read a checkpoint that [`Algorithm::imports`] recognised as a gene, with the recipe of
    /// its family.
    fn import(&self, _ckpt: &Checkpoint, _recipe: &Recipe) -> Result<Imported> {
        Err(Error::Algorithm {
            algorithm: self.name().to_string(),
            reason: "it has no published checkpoint format to import".into(),
            fix: "pass an ancestor model instead".into(),
        })
    }
    /// The faithful path: the constrained aux net whose trained free parameters are the gene.
    /// The default says the algorithm has none.
    fn aux_net(&self, _request: &faithful::AuxRequest<'_>) -> Result<Box<dyn faithful::AuxNet>> {
        Err(Error::Algorithm {
            algorithm: self.name().to_string(),
            reason:
                "it has no aux net to train (MODE: faithful trains the aux nets of tleg and sws)"
                    .into(),
            fix: "use `MODE: approximate`".into(),
        })
    }
    /// Build the gene's units, roles and diagnostics from the ancestor.
    fn extract(&self, job: &ExtractJob<'_>, out: &mut GeneBuilder) -> Result<()>;
    /// Describe a descendant of the requested size.
    fn grow(&self, gene: &GeneView, request: &GrowRequest) -> Result<Blueprint>;
}

/// Every algorithm lgreg ships, in the order the papers appeared.
pub const ALL: &[&dyn Algorithm] = &[
    &heur::Heur,
    &auto::Auto,
    &pool::Pool,
    &tleg::Tleg,
    &sws::Sws,
];

/// The algorithm called `name`, or an error that lists them and suggests the nearest.
pub fn find(name: &str) -> Result<&'static dyn Algorithm> {
    if let Some(a) = ALL.iter().find(|a| a.name() == name) {
        return Ok(*a);
    }
    let nearest = ALL
        .iter()
        .map(|a| (edit_distance(name, a.name()), a.name()))
        .min()
        .filter(|(d, _)| *d <= 2)
        .map(|(_, n)| n.to_string());
    Err(Error::UnknownAlgorithm {
        name: name.to_string(),
        suggestion: nearest,
        known: ALL.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "),
    })
}

/// Levenshtein distance, for did-you-mean hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_algorithm_suggests_the_nearest() {
        let err = find("tlge")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("did you mean `tleg`"), "{err}");
        let err = find("zzzzzz")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.contains("did you mean"), "{err}");
        for a in ALL {
            assert_eq!(find(a.name()).map(|f| f.name()).ok(), Some(a.name()));
        }
    }
}
