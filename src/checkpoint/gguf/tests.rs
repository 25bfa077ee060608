//! Unit tests on small hand-built GGUF files.

use half::{bf16, f16};

use super::dequant::dequantize;
use super::parse::{GgmlType, Value, parse};
use super::*;

/// Builds GGUF byte buffers for tests.
struct Builder {
    version: u32,
    n_kv: u64,
    kv: Vec<u8>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Builder {
    fn new() -> Builder {
        Builder {
            version: 3,
            n_kv: 0,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// A llama file with 2 heads and 1 KV head.
    fn llama() -> Builder {
        let mut b = Builder::new();
        b.kv_str("general.architecture", "llama");
        b.kv_u32("llama.attention.head_count", 2);
        b.kv_u32("llama.attention.head_count_kv", 1);
        b
    }

    fn kv_raw(&mut self, key: &str, ty: u32, value: &[u8]) {
        put_str(&mut self.kv, key);
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend(value);
        self.n_kv += 1;
    }

    fn kv_u32(&mut self, key: &str, v: u32) {
        self.kv_raw(key, 4, &v.to_le_bytes());
    }

    fn kv_f32(&mut self, key: &str, v: f32) {
        self.kv_raw(key, 6, &v.to_le_bytes());
    }

    fn kv_str(&mut self, key: &str, v: &str) {
        let mut val = Vec::new();
        put_str(&mut val, v);
        self.kv_raw(key, 8, &val);
    }

    fn kv_str_array(&mut self, key: &str, items: &[&str]) {
        let mut val = Vec::new();
        val.extend(8u32.to_le_bytes());
        val.extend((items.len() as u64).to_le_bytes());
        for s in items {
            put_str(&mut val, s);
        }
        self.kv_raw(key, 9, &val);
    }

    fn kv_i32_array(&mut self, key: &str, items: &[i32]) {
        let mut val = Vec::new();
        val.extend(5u32.to_le_bytes());
        val.extend((items.len() as u64).to_le_bytes());
        for v in items {
            val.extend(v.to_le_bytes());
        }
        self.kv_raw(key, 9, &val);
    }

    /// `dims` innermost first, as GGUF stores them.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) {
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, data));
    }

    fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = (offset + data.len() as u64).div_ceil(32) * 32;
        }
        for (_, _, _, data) in &self.tensors {
            out.resize(out.len().div_ceil(32) * 32, 0);
            out.extend(data);
        }
        out
    }

    fn open(&self) -> Result<GgufFile> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.gguf");
        fs_err::write(&path, self.build())?;
        GgufFile::open(&path)
    }
}

/// A deterministic byte stream (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }

    /// The bits of a finite f16 in [-1, 1).
    fn half(&mut self) -> [u8; 2] {
        let x = (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        f16::from_f32(x).to_le_bytes()
    }
}

fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn h(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Random blocks of `block_bytes` with finite f16 fields at `half_at` offsets.
fn random_blocks(rng: &mut Rng, n: usize, block_bytes: usize, half_at: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut b = rng.bytes(block_bytes);
        for &o in half_at {
            b[o..o + 2].copy_from_slice(&rng.half());
        }
        out.extend(b);
    }
    out
}

fn run(ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let dst = dequantize(ty, src).unwrap();
    assert_eq!(dst.len(), n * 4);
    to_f32(&dst)
}

/// Check every element against `reference(block, index_in_block)`, bit for bit.
fn check(ty: GgmlType, blocks: usize, half_at: &[usize], reference: impl Fn(&[u8], usize) -> f32) {
    let (be, bb) = ty.block().unwrap();
    let (be, bb) = (be as usize, bb as usize);
    let src = random_blocks(&mut Rng(0x9e37_79b9_7f4a_7c15), blocks, bb, half_at);
    let got = run(ty, &src, blocks * be);
    for (i, g) in got.iter().enumerate() {
        let want = reference(&src[i / be * bb..(i / be + 1) * bb], i % be);
        assert_eq!(
            g.to_bits(),
            want.to_bits(),
            "{ty:?} element {i}: {g} vs {want}"
        );
    }
}

/// Nibble `i` of a 32-weight block whose 16 quant bytes start at `at`.
fn nibble(b: &[u8], at: usize, i: usize) -> u8 {
    if i < 16 {
        b[at + i] & 15
    } else {
        b[at + i - 16] >> 4
    }
}

#[test]
fn dequant_float_types() {
    let vals = [1.5f32, -2.25, 0.0, 65504.0];
    let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(run(GgmlType::F32, &f32_bytes, 4), vals);
    let f16_bytes: Vec<u8> = vals
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    assert_eq!(run(GgmlType::F16, &f16_bytes, 4), vals);
    let bf_bytes: Vec<u8> = vals[..3]
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect();
    assert_eq!(run(GgmlType::BF16, &bf_bytes, 3), &vals[..3]);
}

#[test]
fn dequant_q8_0() {
    check(GgmlType::Q8_0, 5, &[0], |b, i| {
        h(b, 0) * (b[2 + i] as i8) as f32
    });
}

#[test]
fn dequant_q4_0() {
    check(GgmlType::Q4_0, 5, &[0], |b, i| {
        (nibble(b, 2, i) as f32 - 8.0) * h(b, 0)
    });
}

#[test]
fn dequant_q4_1() {
    check(GgmlType::Q4_1, 5, &[0, 2], |b, i| {
        nibble(b, 4, i) as f32 * h(b, 0) + h(b, 2)
    });
}

/// The 6-bit scale and min of sub-block `s` (0..8), unpacked bit by bit from the 12 bytes.
fn kscale(sc: &[u8], s: usize) -> (f32, f32) {
    let (scale, min) = if s < 4 {
        (sc[s] & 0x3f, sc[s + 4] & 0x3f)
    } else {
        let lo_s = sc[s + 4] & 0x0f;
        let lo_m = sc[s + 4] >> 4;
        let hi_s = sc[s - 4] >> 6;
        let hi_m = sc[s] >> 6;
        (lo_s + 16 * hi_s, lo_m + 16 * hi_m)
    };
    (scale as f32, min as f32)
}

#[test]
fn dequant_q4_k() {
    check(GgmlType::Q4K, 3, &[0, 2], |b, i| {
        let (chunk, within) = (i / 64, i % 64);
        let s = 2 * chunk + within / 32;
        let byte = b[16 + 32 * chunk + within % 32];
        let q = if within < 32 { byte & 15 } else { byte >> 4 };
        let (sc, m) = kscale(&b[4..16], s);
        (h(b, 0) * sc) * q as f32 - h(b, 2) * m
    });
}

#[test]
fn dequant_q5_k() {
    check(GgmlType::Q5K, 3, &[0, 2], |b, i| {
        let (chunk, within) = (i / 64, i % 64);
        let s = 2 * chunk + within / 32;
        let l = within % 32;
        let byte = b[48 + 32 * chunk + l];
        let low = if within < 32 { byte & 15 } else { byte >> 4 };
        let high = (b[16 + l] >> s) & 1;
        let (sc, m) = kscale(&b[4..16], s);
        (h(b, 0) * sc) * (low + 16 * high) as f32 - h(b, 2) * m
    });
}

#[test]
fn dequant_q6_k() {
    check(GgmlType::Q6K, 3, &[208], |b, i| {
        let (half, j) = (i / 128, i % 128);
        let (quarter, l) = (j / 32, j % 32);
        let ql = b[64 * half + 32 * (quarter % 2) + l];
        let low = if quarter < 2 { ql & 15 } else { ql >> 4 };
        let high = (b[128 + 32 * half + l] >> (2 * quarter)) & 3;
        let q = (low | (high << 4)) as i32 - 32;
        let scale = b[192 + 8 * half + 2 * quarter + l / 16] as i8;
        h(b, 208) * scale as f32 * q as f32
    });
}

#[test]
fn header_and_metadata_parse() {
    let mut b = Builder::llama();
    b.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    b.kv_str_array("tokenizer.ggml.tokens", &["a", "b"]);
    // A nested array: [[1, 2], []] of i32.
    let mut nested = Vec::new();
    nested.extend(9u32.to_le_bytes());
    nested.extend(2u64.to_le_bytes());
    nested.extend(5u32.to_le_bytes());
    nested.extend(2u64.to_le_bytes());
    nested.extend(1i32.to_le_bytes());
    nested.extend(2i32.to_le_bytes());
    nested.extend(5u32.to_le_bytes());
    nested.extend(0u64.to_le_bytes());
    b.kv_raw("test.nested", 9, &nested);
    b.kv_raw("test.flag", 7, &[1]);
    b.tensor("output_norm.weight", &[4], 0, vec![0; 16]);
    b.tensor("blk.0.ffn_up.weight", &[32, 2], 8, vec![0; 68]);
    let bytes = b.build();
    let p = parse(&bytes).unwrap();
    assert_eq!(p.version, 3);
    assert_eq!(p.metadata.len(), 7);
    assert_eq!(
        p.get("llama.attention.layer_norm_rms_epsilon")
            .and_then(Value::as_f64),
        Some(1e-5)
    );
    assert_eq!(
        p.get("test.nested"),
        Some(&Value::Array(vec![
            Value::Array(vec![Value::I32(1), Value::I32(2)]),
            Value::Array(vec![]),
        ]))
    );
    assert_eq!(p.get("test.flag"), Some(&Value::Bool(true)));
    assert_eq!(p.tensors.len(), 2);
    assert_eq!(p.tensors[1].dims, [32, 2]);
    assert_eq!(p.tensors[1].ggml_type, GgmlType::Q8_0);
    assert_eq!(p.data_start % 32, 0);
    assert_eq!(p.tensors[1].start, p.data_start + 32);
    assert_eq!(p.tensors[1].len, 68);
}

#[test]
fn opens_llama_file_with_hf_names_and_shapes() {
    let mut b = Builder::llama();
    let vals: Vec<f32> = (0..8).map(|v| v as f32).collect();
    b.tensor(
        "blk.0.ffn_up.weight",
        &[2, 4],
        0,
        vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    b.tensor("token_embd.weight", &[1, 3], 1, vec![0; 6]);
    let g = b.open().unwrap();
    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.embed_tokens.weight",
            "model.layers.0.mlp.up_proj.weight"
        ]
    );
    assert_eq!(g.tensors()[1].shape, [4, 2]);
    assert_eq!(g.tensors()[1].dtype, DType::F32);
    assert_eq!(
        g.read_f32("model.layers.0.mlp.up_proj.weight").unwrap(),
        vals
    );
    assert_eq!(g.read_f32("model.embed_tokens.weight").unwrap(), [0.0; 3]);
    assert!(matches!(g.read("nope"), Err(Error::MissingTensor { .. })));
}

#[test]
fn attn_q_and_k_are_unpermuted() {
    // 2 heads for q, 1 for k; 8 rows of 1 column whose value is the GGUF row index.
    let mut b = Builder::llama();
    let rows: Vec<u8> = (0..8).flat_map(|v| (v as f32).to_le_bytes()).collect();
    b.tensor("blk.0.attn_q.weight", &[1, 8], 0, rows.clone());
    b.tensor("blk.0.attn_k.weight", &[1, 8], 0, rows);
    let g = b.open().unwrap();
    // Per head of 4 rows, GGUF interleaves the two rotary halves: HF row (a, b) = GGUF b*2 + a.
    assert_eq!(
        g.read_f32("model.layers.0.self_attn.q_proj.weight")
            .unwrap(),
        [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
    );
    assert_eq!(
        g.read_f32("model.layers.0.self_attn.k_proj.weight")
            .unwrap(),
        [0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0]
    );
}

fn open_err(b: &Builder) -> String {
    match b.open() {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_data_is_refused() {
    let mut b = Builder::llama();
    b.tensor("blk.0.ffn_up.weight", &[32, 4], 3, vec![0; 80]);
    let mut bytes = b.build();
    bytes.truncate(bytes.len() - 10);
    let err = parse(&bytes).unwrap_err();
    assert!(
        err.starts_with("truncated: tensor `blk.0.ffn_up.weight` needs 80 bytes"),
        "{err}"
    );
    assert!(
        err.contains(&format!("the file is {} bytes", bytes.len())),
        "{err}"
    );
}

#[test]
fn unknown_and_unsupported_types_are_refused() {
    let mut b = Builder::llama();
    b.tensor("blk.0.attn_q.weight", &[32, 2], 99, vec![0; 64]);
    let err = open_err(&b);
    assert!(
        err.contains("tensor `blk.0.attn_q.weight` has unknown ggml type 99; supported: F32, F16"),
        "{err}"
    );
    let mut b = Builder::llama();
    b.tensor("blk.0.attn_q.weight", &[32, 2], 6, vec![0; 64]);
    let err = open_err(&b);
    assert!(
        err.contains("ggml type Q5_0 (6), which lgreg cannot dequantise"),
        "{err}"
    );
}

#[test]
fn bad_magic_and_versions_are_refused() {
    let mut bytes = Builder::new().build();
    bytes[0] = b'X';
    assert!(parse(&bytes).unwrap_err().starts_with("magic is"));
    let mut b = Builder::new();
    b.version = 1;
    let err = parse(&b.build()).unwrap_err();
    assert!(err.contains("version 1 is not supported"), "{err}");
    b.version = 2;
    assert_eq!(parse(&b.build()).unwrap().version, 2);
    b.version = 4;
    assert!(parse(&b.build()).unwrap_err().contains("version 4"));
}

#[test]
fn absurd_lengths_and_counts_are_refused() {
    let mut b = Builder::new();
    let mut val = Vec::new();
    val.extend(u64::MAX.to_le_bytes());
    b.kv_raw("general.name", 8, &val);
    let err = parse(&b.build()).unwrap_err();
    assert!(err.contains("claims 18446744073709551615 bytes"), "{err}");

    let mut bytes = Builder::new().build();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = parse(&bytes).unwrap_err();
    assert!(
        err.starts_with("the tensor count is 18446744073709551615"),
        "{err}"
    );

    let mut b = Builder::llama();
    b.tensor(
        "blk.0.ffn_up.weight",
        &[1 << 32, 1 << 32, 1 << 32],
        0,
        vec![],
    );
    assert!(open_err(&b).contains("overflows"));
}

#[test]
fn names_architectures_and_duplicates_are_checked() {
    let mut b = Builder::llama();
    b.tensor("blk.0.mystery.weight", &[4], 0, vec![0; 16]);
    assert!(open_err(&b).contains("tensor `blk.0.mystery.weight` has no Hugging Face name"));

    let mut b = Builder::new();
    b.kv_str("general.architecture", "qwen2");
    assert!(open_err(&b).contains("architecture `qwen2` is not supported; only `llama`"));

    let mut b = Builder::llama();
    b.tensor("output_norm.weight", &[4], 0, vec![0; 16]);
    b.tensor("output_norm.weight", &[4], 0, vec![0; 16]);
    assert!(open_err(&b).contains("appears twice"));
}

#[test]
fn config_and_tokenizer_from_metadata() {
    let mut b = Builder::llama();
    b.kv_u32("llama.embedding_length", 8);
    b.kv_u32("llama.block_count", 1);
    b.kv_u32("llama.feed_forward_length", 16);
    b.kv_f32("llama.rope.freq_base", 100000.0);
    b.kv_str("tokenizer.ggml.model", "gpt2");
    b.kv_str("tokenizer.ggml.pre", "smollm");
    b.kv_str_array("tokenizer.ggml.tokens", &["<s>", "a", "b", "ab"]);
    b.kv_i32_array("tokenizer.ggml.token_type", &[3, 1, 1, 1]);
    b.kv_str_array("tokenizer.ggml.merges", &["a b"]);
    b.tensor("token_embd.weight", &[8, 4], 0, vec![0; 128]);
    let g = b.open().unwrap();
    let c = g.hf_config().unwrap();
    assert_eq!(c["vocab_size"], 4);
    assert_eq!(c["head_dim"], 4);
    assert_eq!(c["num_key_value_heads"], 1);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["rope_theta"], 100000.0);
    let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
    assert!(keys.is_sorted());
    let tok: serde_json::Value =
        serde_json::from_slice(&g.tokenizer_json().unwrap().unwrap()).unwrap();
    assert_eq!(tok["model"]["vocab"]["ab"], 3);
    assert_eq!(tok["added_tokens"][0]["content"], "<s>");
    assert_eq!(tok["added_tokens"][0]["special"], true);
    assert_eq!(tok["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
}

#[test]
fn damaged_files_give_errors_not_panics() {
    let mut b = Builder::llama();
    b.kv_u32("llama.embedding_length", 8);
    b.kv_u32("llama.block_count", 1);
    b.kv_u32("llama.feed_forward_length", 16);
    b.kv_str("tokenizer.ggml.model", "gpt2");
    b.kv_str_array("tokenizer.ggml.tokens", &["a", "b", "ab"]);
    b.kv_str_array("tokenizer.ggml.merges", &["a b"]);
    b.tensor("blk.0.attn_q.weight", &[32, 4], 3, Rng(7).bytes(80));
    b.tensor("token_embd.weight", &[32, 3], 8, Rng(8).bytes(102));
    let good = b.build();
    let exercise = |bytes: &[u8]| {
        if let Ok(p) = parse(bytes) {
            let _ = hf_tensors(&p);
            let _ = super::llama::hf_config(&p);
            let _ = super::tokenizer::tokenizer_json(&p);
            for t in &p.tensors {
                let _ = dequantize(t.ggml_type, &bytes[t.start..t.start + t.len]);
            }
        }
    };
    for len in 0..good.len() {
        exercise(&good[..len]);
    }
    for i in 0..good.len() {
        for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] = v;
            exercise(&bad);
        }
    }
}
