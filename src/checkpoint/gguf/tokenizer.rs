//! A Hugging Face `tokenizer.json` from the tokenizer a GGUF file carries.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is rebuilt, for the pre-tokenizers whose
//! Hugging Face form is known exactly (`gpt-2` and `smollm`); anything else yields `None` so that
//! the weights still convert.

use serde_json::{Map, Value as Json, json};

use super::parse::{Parsed, Value};

/// llama.cpp token type of control tokens (`<|im_start|>` and friends).
const TOKEN_CONTROL: i64 = 3;
/// llama.cpp token type of user-defined added tokens.
const TOKEN_USER_DEFINED: i64 = 4;

/// The `tokenizer.json` document, or `None` for a tokenizer that is absent or unsupported.
///
/// Errors are reasons for [`crate::Error::Gguf`]: a supported tokenizer whose arrays are
/// malformed.
pub fn tokenizer_json(parsed: &Parsed) -> Result<Option<Json>, String> {
    if parsed.get("tokenizer.ggml.model").and_then(Value::as_str) != Some("gpt2") {
        return Ok(None);
    }
    let byte_level = json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": true,
        "use_regex": true,
    });
    let pre_tokenizer = match parsed.get("tokenizer.ggml.pre").and_then(Value::as_str) {
        None | Some("gpt-2") => byte_level,
        Some("smollm") => json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level,
            ],
        }),
        Some(_) => return Ok(None),
    };

    let tokens = string_array(parsed, "tokenizer.ggml.tokens")?;
    let merges = string_array(parsed, "tokenizer.ggml.merges")?;
    let types: Vec<i64> = match parsed.get("tokenizer.ggml.token_type") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
            .ok_or("`tokenizer.ggml.token_type` is not an array of integers")?,
    };
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(format!(
            "`tokenizer.ggml.token_type` has {} entries but `tokenizer.ggml.tokens` has {}",
            types.len(),
            tokens.len()
        ));
    }

    let mut vocab = Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, &tok) in tokens.iter().enumerate() {
        if !vocab.contains_key(tok) {
            vocab.insert(tok.to_string(), json!(id));
        }
        let ty = types.get(id).copied().unwrap_or(1);
        if ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED {
            let special = ty == TOKEN_CONTROL;
            added.push(json!({
                "id": id,
                "content": tok,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": !special,
                "special": special,
            }));
        }
    }
    for (i, m) in merges.iter().enumerate() {
        let ok = m
            .split_once(' ')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(' '));
        if !ok {
            return Err(format!(
                "merge {i} of `tokenizer.ggml.merges` is {m:?}; expected two tokens separated by one space"
            ));
        }
    }

    Ok(Some(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": false,
            "use_regex": true,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": true,
            "use_regex": true,
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    })))
}

fn string_array<'a>(parsed: &'a Parsed, key: &str) -> Result<Vec<&'a str>, String> {
    let arr = parsed
        .get(key)
        .ok_or_else(|| format!("metadata key `{key}` is missing"))?
        .as_array()
        .ok_or_else(|| format!("`{key}` is not an array"))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| format!("`{key}` holds a non-string value {v:?}"))
        })
        .collect()
}
