//! The bert family: Hugging Face BERT and RoBERTa naming, with or without the `bert.` /
//! `roberta.` prefix.

use super::table::Table;
use super::{Family, FamilyRules, Naming, Role, Slot, config_says};

/// BERT-style post-norm encoders (BERT, MiniLM, RoBERTa).
#[derive(Debug)]
pub(crate) struct Bert;

const HF: Table = Table {
    prefixes: &["bert.", "roberta."],
    layer_prefix: "encoder.layer",
    layer: &[
        ("attention.self.query", Role::AttnQ),
        ("attention.self.key", Role::AttnK),
        ("attention.self.value", Role::AttnV),
        ("attention.output.dense", Role::AttnO),
        ("attention.output.LayerNorm", Role::AttnNorm),
        ("intermediate.dense", Role::MlpUp),
        ("output.dense", Role::MlpDown),
        ("output.LayerNorm", Role::MlpNorm),
    ],
    global: &[
        ("embeddings.word_embeddings", Role::TokenEmbedding),
        ("embeddings.position_embeddings", Role::PositionEmbedding),
        ("embeddings.token_type_embeddings", Role::TokenTypeEmbedding),
        ("embeddings.LayerNorm", Role::EmbeddingNorm),
        ("embeddings.position_ids", Role::Buffer),
        ("pooler.dense", Role::Pooler),
        ("classifier", Role::Head),
        ("cls.predictions.bias", Role::Head),
        ("cls.predictions.decoder", Role::Head),
        ("cls.predictions.transform.dense", Role::Head),
        ("cls.predictions.transform.LayerNorm", Role::Head),
        ("cls.seq_relationship", Role::Head),
        ("lm_head.bias", Role::Head),
        ("lm_head.dense", Role::Head),
        ("lm_head.layer_norm", Role::Head),
        ("lm_head.decoder", Role::Head),
    ],
};

impl FamilyRules for Bert {
    fn family(&self) -> Family {
        Family::Bert
    }

    fn name(&self) -> &'static str {
        "bert"
    }

    fn matches_config(&self, config: &serde_json::Value) -> bool {
        config_says(config, &["bert", "roberta"], &["Bert", "Roberta"])
    }

    fn detect_names(&self, names: &[&str]) -> Option<Naming> {
        HF.recognises(names).then_some(Naming::Hf)
    }

    fn classify(&self, name: &str, _naming: Naming) -> Option<Slot> {
        HF.classify(name)
    }

    fn tensor_name(&self, slot: &Slot, _naming: Naming) -> Option<String> {
        HF.layer_name("", slot)
    }
}
