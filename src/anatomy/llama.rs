//! The llama family: Hugging Face Llama, Mistral and SmolLM naming.

use super::table::Table;
use super::{Family, FamilyRules, Naming, Role, Slot, config_says};

/// Llama/Mistral/SmolLM decoders.
#[derive(Debug)]
pub(crate) struct Llama;

const HF: Table = Table {
    prefixes: &[],
    layer_prefix: "model.layers",
    layer: &[
        ("self_attn.q_proj", Role::AttnQ),
        ("self_attn.k_proj", Role::AttnK),
        ("self_attn.v_proj", Role::AttnV),
        ("self_attn.o_proj", Role::AttnO),
        ("input_layernorm", Role::AttnNorm),
        ("post_attention_layernorm", Role::MlpNorm),
        ("mlp.gate_proj", Role::MlpGate),
        ("mlp.up_proj", Role::MlpUp),
        ("mlp.down_proj", Role::MlpDown),
        ("self_attn.rotary_emb", Role::Buffer),
    ],
    global: &[
        ("model.embed_tokens", Role::TokenEmbedding),
        ("model.norm", Role::FinalNorm),
        ("lm_head", Role::Head),
    ],
};

impl FamilyRules for Llama {
    fn family(&self) -> Family {
        Family::Llama
    }

    fn name(&self) -> &'static str {
        "llama"
    }

    fn matches_config(&self, config: &serde_json::Value) -> bool {
        config_says(
            config,
            &["llama", "mistral", "qwen2"],
            &["Llama", "Mistral", "SmolLM", "Qwen2"],
        )
    }

    fn detect_names(&self, names: &[&str]) -> Option<Naming> {
        HF.recognises(names).then_some(Naming::Hf)
    }

    fn classify(&self, name: &str, _naming: Naming) -> Option<Slot> {
        // Old checkpoints carry `...rotary_emb.inv_freq` buffers.
        if let Some(stem) = name.strip_suffix(".inv_freq") {
            let mut slot = HF.classify(&format!("{stem}.weight"))?;
            slot.role = Role::Buffer;
            return Some(slot);
        }
        HF.classify(name)
    }

    fn tensor_name(&self, slot: &Slot, _naming: Naming) -> Option<String> {
        HF.layer_name("", slot)
    }
}
