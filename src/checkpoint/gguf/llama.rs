//! The llama architecture: llama.cpp tensor names to Hugging Face names, the q/k RoPE
//! un-permutation, and a `LlamaForCausalLM` `config.json` from GGUF metadata.

use serde_json::{Map, Value as Json, json};

use super::parse::{Parsed, Value};

/// What to do to a tensor's rows after dequantisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixup {
    /// Nothing: the layout matches HF.
    None,
    /// Undo llama.cpp's RoPE permutation with this many heads.
    Unpermute(usize),
}

/// The HF name of a llama.cpp tensor name, or `None` when the name is not a llama tensor.
pub fn hf_name(gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (part, suffix) = rest.split_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// The fix-up a llama.cpp tensor needs, given the head counts.
pub fn fixup(gguf: &str, heads: usize, kv_heads: usize) -> Fixup {
    match gguf.split('.').nth(2) {
        Some("attn_q") if gguf.starts_with("blk.") => Fixup::Unpermute(heads),
        Some("attn_k") if gguf.starts_with("blk.") => Fixup::Unpermute(kv_heads),
        _ => Fixup::None,
    }
}

/// Undo llama.cpp's q/k permutation on `rows` rows of `row_bytes` bytes each.
///
/// numpy: `W.reshape(n, rows/n/2, 2, in).swapaxes(1, 2).reshape(rows, in)`: HF row
/// `h*rows/n + a*half + b` is GGUF row `h*rows/n + b*2 + a`. The caller checks that `rows`
/// is a multiple of `2 * n`.
pub fn unpermute_rows(src: &[u8], rows: usize, n: usize, row_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    let per_head = rows / n;
    let half = per_head / 2;
    // HF rows in order: head h, rotary half a, index b.
    for h in 0..n {
        for a in 0..2 {
            for b in 0..half {
                let gg = h * per_head + b * 2 + a;
                out.extend_from_slice(&src[gg * row_bytes..(gg + 1) * row_bytes]);
            }
        }
    }
    out
}

/// Reads `llama.*` keys, naming the missing or malformed one.
pub struct Meta<'a> {
    parsed: &'a Parsed,
    arch: &'a str,
}

impl<'a> Meta<'a> {
    /// Metadata of architecture `arch`.
    pub fn new(parsed: &'a Parsed, arch: &'a str) -> Meta<'a> {
        Meta { parsed, arch }
    }

    /// An optional unsigned integer key below the architecture prefix.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, String> {
        let full = format!("{}.{key}", self.arch);
        match self.parsed.get(&full) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("`{full}` is {v:?}; expected a non-negative integer")),
        }
    }

    /// A required unsigned integer key below the architecture prefix.
    pub fn u64(&self, key: &str) -> Result<u64, String> {
        self.opt_u64(key)?
            .ok_or_else(|| format!("metadata key `{}.{key}` is missing", self.arch))
    }

    /// An optional float key below the architecture prefix.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, String> {
        let full = format!("{}.{key}", self.arch);
        match self.parsed.get(&full) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("`{full}` is {v:?}; expected a number")),
        }
    }
}

/// Head counts `(heads, kv_heads)` from metadata, both non-zero.
pub fn head_counts(parsed: &Parsed) -> Result<(usize, usize), String> {
    let meta = Meta::new(parsed, "llama");
    let heads = meta.u64("attention.head_count")?;
    let kv = meta.opt_u64("attention.head_count_kv")?.unwrap_or(heads);
    if heads == 0 || kv == 0 || heads > 1 << 16 || kv > heads {
        return Err(format!(
            "head counts are {heads} (query) and {kv} (key/value); expected 1 <= kv <= heads <= 65536"
        ));
    }
    Ok((heads as usize, kv as usize))
}

/// A Hugging Face `LlamaForCausalLM` config from llama GGUF metadata, keys sorted.
pub fn hf_config(parsed: &Parsed) -> Result<Json, String> {
    let meta = Meta::new(parsed, "llama");
    let hidden = meta.u64("embedding_length")?;
    let layers = meta.u64("block_count")?;
    let ffn = meta.u64("feed_forward_length")?;
    let (heads, kv_heads) = head_counts(parsed)?;
    let head_dim = match meta.opt_u64("attention.key_length")? {
        Some(k) => k,
        None => hidden / heads as u64,
    };
    let context = meta.opt_u64("context_length")?.unwrap_or(2048);
    let eps = meta
        .opt_f64("attention.layer_norm_rms_epsilon")?
        .unwrap_or(1e-5);
    let theta = meta.opt_f64("rope.freq_base")?.unwrap_or(10000.0);

    let embd = parsed
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight");
    let tokens = parsed
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map(|a| a.len() as u64);
    let vocab = match (meta.opt_u64("vocab_size")?, embd.and_then(|t| t.dims.get(1))) {
        (Some(v), _) => v,
        (None, Some(&rows)) => rows,
        (None, None) => tokens.ok_or("cannot tell the vocabulary size: no `llama.vocab_size`, no `token_embd.weight`, no tokenizer tokens")?,
    };
    let tied = !parsed.tensors.iter().any(|t| t.name == "output.weight");
    let token_id = |key: &str| -> Result<Json, String> {
        match parsed.get(key) {
            None => Ok(Json::Null),
            Some(v) => v
                .as_u64()
                .map(Json::from)
                .ok_or_else(|| format!("`{key}` is {v:?}; expected a token id")),
        }
    };

    let mut entries: Vec<(&str, Json)> = vec![
        ("architectures", json!(["LlamaForCausalLM"])),
        ("attention_bias", json!(false)),
        ("attention_dropout", json!(0.0)),
        ("bos_token_id", token_id("tokenizer.ggml.bos_token_id")?),
        ("eos_token_id", token_id("tokenizer.ggml.eos_token_id")?),
        ("head_dim", json!(head_dim)),
        ("hidden_act", json!("silu")),
        ("hidden_size", json!(hidden)),
        ("intermediate_size", json!(ffn)),
        ("max_position_embeddings", json!(context)),
        ("mlp_bias", json!(false)),
        ("model_type", json!("llama")),
        ("num_attention_heads", json!(heads)),
        ("num_hidden_layers", json!(layers)),
        ("num_key_value_heads", json!(kv_heads)),
        ("pad_token_id", token_id("tokenizer.ggml.padding_token_id")?),
        ("rms_norm_eps", json!(eps)),
        ("rope_theta", json!(theta)),
        ("tie_word_embeddings", json!(tied)),
        ("torch_dtype", json!("float32")),
        ("vocab_size", json!(vocab)),
    ];
    // Token ids the file does not give are left out rather than written as null.
    entries.retain(|(k, v)| !(k.ends_with("_token_id") && v.is_null()));
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut map = Map::new();
    for (k, v) in entries {
        map.insert(k.to_string(), v);
    }
    Ok(Json::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(
            hf_name("blk.12.ffn_down.weight").as_deref(),
            Some("model.layers.12.mlp.down_proj.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("blk.0.attn_qq.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(fixup("blk.3.attn_k.weight", 9, 3), Fixup::Unpermute(3));
        assert_eq!(fixup("blk.3.attn_v.weight", 9, 3), Fixup::None);
    }

    /// Apply llama.cpp's HF->GGUF permutation (numpy `reshape(n, 2, half, in).swapaxes(1, 2)`)
    /// naively, then check that `unpermute_rows` undoes it.
    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (n, rows, cols) = (3usize, 12usize, 2usize);
        let half = rows / n / 2;
        let hf: Vec<u32> = (0..(rows * cols) as u32).collect();
        let mut gguf = vec![0u32; hf.len()];
        for h in 0..n {
            for i in 0..half {
                for j in 0..2 {
                    // permuted shape (n, half, 2): element [h, i, j] = hf[h, j, i]
                    let dst_row = h * (rows / n) + i * 2 + j;
                    let src_row = h * (rows / n) + j * half + i;
                    for c in 0..cols {
                        gguf[dst_row * cols + c] = hf[src_row * cols + c];
                    }
                }
            }
        }
        let bytes: Vec<u8> = gguf.iter().flat_map(|v| v.to_le_bytes()).collect();
        let back = unpermute_rows(&bytes, rows, n, cols * 4);
        let back: Vec<u32> = back
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(back, hf);
        // Row 1 of head 0 in GGUF order is HF row `half` (the second rotary half).
        assert_eq!(gguf[cols], hf[half * cols]);
    }
}
