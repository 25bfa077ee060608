//! Genes made of a few whole ancestor layers (heur, auto): one `block.{i}.safetensors` unit per
//! selected ancestor layer `i`, copied unchanged, and the selection in the card; descendants
//! keep those layers in order at a position the algorithm chooses, seeded random layers
//! elsewhere.

use super::blueprint::{Blueprint, GrowRequest, LayerSource, require_layers};
use super::builder::GeneBuilder;
use super::{AncestorModel, GeneView};
use crate::error::{Error, Result};

/// The diagnostic with the selected ancestor layers, in order.
pub const SELECTED: &str = "selected_layers";
/// The diagnostic with the ancestor's depth.
pub const ANCESTOR_DEPTH: &str = "ancestor_depth";

/// The unit that holds ancestor layer `layer`.
pub fn block_unit(layer: usize) -> String {
    format!("block.{layer}.safetensors")
}

/// Copy the `selected` ancestor layers into block units and record them.
pub fn write_layers(
    out: &mut GeneBuilder,
    ancestor: &AncestorModel<'_>,
    selected: &[usize],
) -> Result<()> {
    for &layer in selected {
        out.copy_layer(&block_unit(layer), ancestor, layer)?;
    }
    out.diagnostic(SELECTED, selected)?;
    out.diagnostic(ANCESTOR_DEPTH, ancestor.depth())?;
    Ok(())
}

/// Refuse a gene size the ancestor cannot give.
pub fn check_gene_size(algorithm: &str, layers: usize, depth: usize) -> Result<()> {
    if (1..=depth).contains(&layers) {
        return Ok(());
    }
    Err(Error::Algorithm {
        algorithm: algorithm.to_string(),
        reason: format!("a gene of {layers} layer(s) was asked for from an ancestor of {depth}"),
        fix: format!("pass `--set layers=K` with 1 <= K <= {depth}"),
    })
}

/// The gene's selected ancestor layers and the ancestor's depth, from its card.
pub fn selection(gene: &GeneView) -> Result<(Vec<usize>, usize)> {
    Ok((gene.diagnostic(SELECTED)?, gene.diagnostic(ANCESTOR_DEPTH)?))
}

/// A descendant of `request.layers` layers with the gene's layers, in order, from layer
/// `start` (clamped so that they fit) and seeded random layers elsewhere.
pub fn place_layers(
    algorithm: &str,
    selected: &[usize],
    request: &GrowRequest,
    start: usize,
) -> Result<Blueprint> {
    let k = selected.len();
    require_layers(
        algorithm,
        request,
        k,
        &format!("every one of the gene's {k} ancestor layers is kept whole"),
    )?;
    let n = request.layers;
    let start = start.min(n - k);
    let layers = (0..n)
        .map(
            |i| match i.checked_sub(start).and_then(|j| selected.get(j)) {
                Some(&layer) => LayerSource::Copy {
                    unit: block_unit(layer),
                },
                None => LayerSource::Random,
            },
        )
        .collect();
    let mut bp = Blueprint::of(layers);
    bp.notes.insert(
        "gene_positions".into(),
        serde_json::to_value((start..start + k).collect::<Vec<_>>())?,
    );
    bp.notes
        .insert("ancestor_layers".into(), serde_json::to_value(selected)?);
    Ok(bp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::GrowOptions;

    fn request(layers: usize) -> GrowRequest {
        GrowRequest {
            layers,
            seed: 0,
            options: GrowOptions::default(),
        }
    }

    #[test]
    fn gene_layers_sit_in_order_at_the_clamped_start() {
        let bp = place_layers("heur", &[7, 8, 9], &request(5), 2).expect("fits");
        let kinds: Vec<String> = bp
            .layers
            .iter()
            .map(|l| match l {
                LayerSource::Copy { unit } => unit.clone(),
                _ => "random".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "random",
                "random",
                "block.7.safetensors",
                "block.8.safetensors",
                "block.9.safetensors"
            ]
        );
        let late = place_layers("auto", &[1, 2], &request(4), 9).expect("clamped");
        assert_eq!(late.notes["gene_positions"], serde_json::json!([2, 3]));
        let err = place_layers("heur", &[7, 8, 9], &request(2), 0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("at least 3"), "{err}");
        assert!(check_gene_size("auto", 0, 6).is_err());
        assert!(check_gene_size("auto", 7, 6).is_err());
        assert!(check_gene_size("auto", 6, 6).is_ok());
    }
}
