//! The `README.md` model card of a descendant: lineage, recipe, digests, fidelity, the layer
//! layout and the smoke metric, with Hugging Face front matter.

use std::fmt::Write;

use super::SpawnRequest;
use crate::algorithm::{Blueprint, GeneView, LayerSource};
use crate::train::eval::Metrics;

fn layer_line(i: usize, source: &LayerSource) -> String {
    match source {
        LayerSource::Copy { unit } => format!("| {i} | copy of gene unit `{unit}` |"),
        LayerSource::Line { base, slope, t } => {
            format!("| {i} | `{base}` + {t:.4} × `{slope}` |")
        }
        LayerSource::Random => format!("| {i} | random (seeded) |"),
        LayerSource::RandomLike { unit } => {
            format!("| {i} | random (seeded), in the shapes of gene unit `{unit}` |")
        }
    }
}

fn metric_line(m: &Metrics) -> String {
    match m {
        Metrics::Perplexity {
            perplexity, tokens, ..
        } => {
            format!("perplexity {perplexity:.2} on lgreg's built-in sample ({tokens} tokens)")
        }
        Metrics::Accuracy { accuracy, examples } => {
            format!("accuracy {:.2}% on {examples} images", 100.0 * accuracy)
        }
        Metrics::Similarity { similarities, .. } => format!(
            "cosine similarity of lgreg's built-in sentence pairs (two paraphrases, one unrelated): {}",
            similarities
                .iter()
                .map(|s| format!("{s:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The model card text.
pub fn model_card(
    gene: &GeneView,
    request: &SpawnRequest,
    bp: &Blueprint,
    smoke: Option<&Metrics>,
    parameters: u64,
) -> String {
    let card = &gene.card;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "---\nlibrary_name: transformers\ntags:\n- lgreg\n- learngene\n- {}",
        card.algorithm
    );
    if let Some(a) = &card.ancestor
        && !a.repo.starts_with("local:")
    {
        let _ = writeln!(s, "base_model: {}", a.repo);
    }
    let _ = writeln!(s, "---\n");
    let _ = writeln!(
        s,
        "# Descendant of `{}`: {} layers\n\nSpawned by lgreg {} with `lgreg spawn {} --layers {} --seed {}`. \
         {} parameters.\n",
        gene.reference,
        bp.layers.len(),
        env!("CARGO_PKG_VERSION"),
        gene.reference,
        request.grow.layers,
        request.grow.seed,
        parameters
    );
    match request.baseline {
        Some(super::Baseline::Random) => {
            let _ = writeln!(
                s,
                "**Baseline:** every tensor of this model is drawn at random (seed {}); it inherits \
                 nothing from the gene but its shapes, tokenizer and config.\n",
                request.grow.seed
            );
        }
        Some(super::Baseline::RandomLayers) => {
            let _ = writeln!(
                s,
                "**Baseline:** the layers of this model are drawn at random (seed {}); it inherits \
                 the gene's embeddings, norms and head, its tokenizer and config.\n",
                request.grow.seed
            );
        }
        None => {}
    }
    let _ = writeln!(s, "## Lineage\n");
    if let Some(a) = &card.ancestor {
        let _ = writeln!(s, "- ancestor: `{}` at commit `{}`", a.repo, a.commit);
    }
    let _ = writeln!(
        s,
        "- gene: `{}` (`{}`), algorithm `{}`, fidelity **{:?}**",
        gene.reference, gene.digest, card.algorithm, card.fidelity
    );
    let _ = writeln!(
        s,
        "- recipe: `{}` version {} {}",
        card.recipe.name,
        card.recipe.version,
        card.recipe
            .digest
            .as_deref()
            .map(|d| format!("(`{d}`)"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "- recipe parameters: `{}`",
        serde_json::Value::Object(card.recipe.params.clone())
    );
    let _ = writeln!(s, "\n## Gene units\n\n| unit | digest |\n| --- | --- |");
    for (title, digest) in &gene.unit_digests {
        let _ = writeln!(s, "| `{title}` | `{digest}` |");
    }
    let _ = writeln!(s, "\n## Layers\n\n| layer | source |\n| --- | --- |");
    for (i, src) in bp.layers.iter().enumerate() {
        let _ = writeln!(s, "{}", layer_line(i, src));
    }
    for st in &bp.stitches {
        let _ = writeln!(
            s,
            "\nA linear stitch (`lgreg_stitch.{}.*`, from gene unit `{}`) follows layer {}. **Only lgreg runs this \
             model as built**: `transformers` does not know the stitch and ignores those tensors.",
            st.after, st.unit, st.after
        );
    }
    if let Some(table) = crate::algorithm::pool::trained::configuration_table(gene, bp) {
        let _ = writeln!(
            s,
            "\n## Pool configurations\n\nEvery descendant this pool gene allows, measured on the held-out split after the pool fine-tune (accuracy for images, perplexity for text); spawn another with `--front/--end/--stitch` or `--max-params`.\n\n{table}"
        );
    }
    if !card.diagnostics.is_empty() {
        let keys: Vec<&String> = card.diagnostics.keys().collect();
        let _ = writeln!(
            s,
            "\n## Fidelity\n\nThis gene is **{}**. Its card records: {}.",
            card.fidelity,
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(r2) = card.diagnostics.get("r2_mean") {
            let _ = writeln!(s, "Mean R² of the line fit: {r2}.");
        }
    }
    let _ = writeln!(s, "\n## Smoke metric\n");
    match smoke {
        Some(m) => {
            let _ = writeln!(s, "{}.", metric_line(m));
        }
        None => {
            let _ = writeln!(s, "Not measured.");
        }
    }
    s
}
