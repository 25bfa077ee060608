//! GGUF reading on the real SmolLM2-135M-Instruct Q4_1 file, checked against an independent
//! scalar dequantiser written here.

use std::collections::HashMap;
use std::time::Instant;

use lgreg::checkpoint::TensorSource;
use lgreg::checkpoint::gguf::GgufFile;

use crate::support::smollm2_gguf;

fn open() -> GgufFile {
    GgufFile::open(&smollm2_gguf()).expect("the SmolLM2 GGUF opens")
}

#[test]
fn smollm2_tensors_have_hf_names_and_shapes() {
    let g = open();
    let t = g.tensors();
    assert_eq!(t.len(), 272);
    let params: usize = t.iter().map(|i| i.numel()).sum();
    assert_eq!(params, 134_515_008);
    let shape = |n: &str| g.require(n).unwrap().shape.clone();
    assert_eq!(shape("model.embed_tokens.weight"), [49152, 576]);
    assert_eq!(shape("model.norm.weight"), [576]);
    assert!(g.info("lm_head.weight").is_none());
    for l in 0..30 {
        let p = format!("model.layers.{l}");
        assert_eq!(shape(&format!("{p}.input_layernorm.weight")), [576]);
        assert_eq!(
            shape(&format!("{p}.post_attention_layernorm.weight")),
            [576]
        );
        assert_eq!(shape(&format!("{p}.self_attn.q_proj.weight")), [576, 576]);
        assert_eq!(shape(&format!("{p}.self_attn.k_proj.weight")), [192, 576]);
        assert_eq!(shape(&format!("{p}.self_attn.v_proj.weight")), [192, 576]);
        assert_eq!(shape(&format!("{p}.self_attn.o_proj.weight")), [576, 576]);
        assert_eq!(shape(&format!("{p}.mlp.gate_proj.weight")), [1536, 576]);
        assert_eq!(shape(&format!("{p}.mlp.up_proj.weight")), [1536, 576]);
        assert_eq!(shape(&format!("{p}.mlp.down_proj.weight")), [576, 1536]);
    }
    assert!(t.windows(2).all(|w| w[0].name < w[1].name));
}

/// A minimal independent reading of the GGUF tensor table.
struct RefTensor {
    dims: Vec<usize>,
    ty: u32,
    offset: usize,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> u32 {
        let v = u32::from_le_bytes(self.b[self.pos..self.pos + 4].try_into().unwrap());
        self.pos += 4;
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_le_bytes(self.b[self.pos..self.pos + 8].try_into().unwrap());
        self.pos += 8;
        v
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        let s = String::from_utf8(self.b[self.pos..self.pos + n].to_vec()).unwrap();
        self.pos += n;
        s
    }
    fn skip_value(&mut self, ty: u32) {
        match ty {
            0 | 1 | 7 => self.pos += 1,
            2 | 3 => self.pos += 2,
            4..=6 => self.pos += 4,
            10..=12 => self.pos += 8,
            8 => {
                self.string();
            }
            9 => {
                let elem = self.u32();
                let n = self.u64();
                for _ in 0..n {
                    self.skip_value(elem);
                }
            }
            _ => panic!("unknown value type {ty}"),
        }
    }
}

fn reference_table(bytes: &[u8]) -> (HashMap<String, RefTensor>, usize) {
    let mut r = Reader { b: bytes, pos: 8 };
    let n_tensors = r.u64();
    let n_kv = r.u64();
    for _ in 0..n_kv {
        r.string();
        let ty = r.u32();
        r.skip_value(ty);
    }
    let mut table = HashMap::new();
    for _ in 0..n_tensors {
        let name = r.string();
        let n_dims = r.u32();
        let dims = (0..n_dims).map(|_| r.u64() as usize).collect();
        let ty = r.u32();
        let offset = r.u64() as usize;
        table.insert(name, RefTensor { dims, ty, offset });
    }
    let data_start = r.pos.div_ceil(32) * 32;
    (table, data_start)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Plain scalar dequantisation, element by element.
fn reference_dequant(data: &[u8], ty: u32, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (block, j) = (i / 32, i % 32);
        let v = match ty {
            0 => f32::from_le_bytes(data[4 * i..4 * i + 4].try_into().unwrap()),
            3 => {
                let b = &data[20 * block..20 * block + 20];
                let q = if j < 16 {
                    b[4 + j] & 0xf
                } else {
                    b[4 + j - 16] >> 4
                };
                f16_at(b, 0) * q as f32 + f16_at(b, 2)
            }
            8 => {
                let b = &data[34 * block..34 * block + 34];
                f16_at(b, 0) * (b[2 + j] as i8) as f32
            }
            _ => panic!("the fixture has no ggml type {ty}"),
        };
        out.push(v);
    }
    out
}

/// The GGUF name behind an HF name, with the number of heads to unpermute over.
fn gguf_name(hf: &str) -> (String, Option<usize>) {
    match hf {
        "model.embed_tokens.weight" => return ("token_embd.weight".into(), None),
        "model.norm.weight" => return ("output_norm.weight".into(), None),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let (gguf, heads) = match part {
        "input_layernorm.weight" => ("attn_norm", None),
        "post_attention_layernorm.weight" => ("ffn_norm", None),
        "self_attn.q_proj.weight" => ("attn_q", Some(9)),
        "self_attn.k_proj.weight" => ("attn_k", Some(3)),
        "self_attn.v_proj.weight" => ("attn_v", None),
        "self_attn.o_proj.weight" => ("attn_output", None),
        "mlp.gate_proj.weight" => ("ffn_gate", None),
        "mlp.up_proj.weight" => ("ffn_up", None),
        "mlp.down_proj.weight" => ("ffn_down", None),
        other => panic!("unexpected tensor {other}"),
    };
    (format!("blk.{layer}.{gguf}.weight"), heads)
}

#[test]
fn smollm2_every_tensor_matches_a_scalar_reference() {
    let g = open();
    let bytes = std::fs::read(smollm2_gguf()).unwrap();
    let (table, data_start) = reference_table(&bytes);
    assert_eq!(table.len(), 272);
    let mut by_type = HashMap::new();
    for info in g.tensors() {
        let (name, heads) = gguf_name(&info.name);
        let t = &table[&name];
        *by_type.entry(t.ty).or_insert(0) += 1;
        let n: usize = t.dims.iter().product();
        let deq = reference_dequant(&bytes[data_start + t.offset..], t.ty, n);
        let want = match heads {
            None => deq,
            Some(heads) => {
                // numpy: W.reshape(heads, out/heads/2, 2, in).swapaxes(1, 2).reshape(out, in)
                let (cols, rows) = (t.dims[0], t.dims[1]);
                let half = rows / heads / 2;
                let mut w = vec![0f32; n];
                for h in 0..heads {
                    for a in 0..2 {
                        for b in 0..half {
                            for c in 0..cols {
                                let src = ((h * half + b) * 2 + a) * cols + c;
                                let dst = ((h * 2 + a) * half + b) * cols + c;
                                w[dst] = deq[src];
                            }
                        }
                    }
                }
                w
            }
        };
        let got = g.read(&info.name).unwrap();
        assert_eq!(got.len(), 4 * n, "{}", info.name);
        for (i, (g4, w)) in got.chunks_exact(4).zip(&want).enumerate() {
            let gv = f32::from_le_bytes(g4.try_into().unwrap());
            assert_eq!(
                gv.to_bits(),
                w.to_bits(),
                "{} element {i}: {gv} vs {w}",
                info.name
            );
        }
    }
    assert_eq!(by_type[&3], 210);
    assert_eq!(by_type[&0], 61);
    assert_eq!(by_type[&8], 1);
}

#[test]
fn smollm2_dequantises_quickly() {
    let g = open();
    let start = Instant::now();
    let mut total = 0usize;
    for info in g.tensors() {
        total += g.read(&info.name).unwrap().len();
    }
    let took = start.elapsed();
    eprintln!("dequantised {total} bytes of f32 in {took:?}");
    assert_eq!(total, 134_515_008 * 4);
}

#[test]
fn smollm2_hf_config() {
    let c = open().hf_config().unwrap();
    assert_eq!(c["architectures"], serde_json::json!(["LlamaForCausalLM"]));
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["num_hidden_layers"], 30);
    assert_eq!(c["hidden_size"], 576);
    assert_eq!(c["num_attention_heads"], 9);
    assert_eq!(c["num_key_value_heads"], 3);
    assert_eq!(c["head_dim"], 64);
    assert_eq!(c["intermediate_size"], 1536);
    assert_eq!(c["vocab_size"], 49152);
    assert_eq!(c["rope_theta"], 100000.0);
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["bos_token_id"], 1);
    assert_eq!(c["eos_token_id"], 2);
    assert_eq!(c["pad_token_id"], 2);
    assert_eq!(c["max_position_embeddings"], 8192);
    assert_eq!(c["hidden_act"], "silu");
    let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
    assert!(keys.is_sorted(), "{keys:?}");
}

#[test]
fn smollm2_tokenizer_matches_transformers() {
    let g = open();
    let json = g
        .tokenizer_json()
        .unwrap()
        .expect("a gpt2 tokenizer is rebuilt");
    assert_eq!(json, g.tokenizer_json().unwrap().unwrap(), "deterministic");
    let tok = tokenizers::Tokenizer::from_bytes(&json).unwrap();
    let ids = |text: &str| tok.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(
        ids("The capital of France is Paris."),
        [504, 3575, 282, 4649, 314, 7042, 30]
    );
    assert_eq!(
        ids("To be, or not to be: that is the question."),
        [
            2068, 325, 28, 355, 441, 288, 325, 42, 338, 314, 260, 1962, 30
        ]
    );
    assert_eq!(
        ids("  indented\ttabs\nand 12345 numbers, émigré café 🤖!"),
        [
            216, 641, 6574, 197, 100, 7366, 198, 397, 216, 33, 34, 35, 36, 37, 2966, 28, 26411,
            22757, 27968, 37366, 15107, 114, 240, 17
        ]
    );
    let text = "  indented\ttabs\nand 12345 numbers, émigré café 🤖!";
    let back = tok.decode(&ids(text), false).unwrap();
    assert_eq!(back, text, "byte-level decoding round-trips");
    assert_eq!(
        ids("<|im_start|>user")[0],
        1,
        "control tokens are matched whole"
    );
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
}

#[test]
fn smollm2_opens_through_checkpoint_open() {
    let ckpt = lgreg::checkpoint::open(&smollm2_gguf()).unwrap();
    assert_eq!(ckpt.format, lgreg::checkpoint::Format::Gguf);
    assert_eq!(ckpt.source.tensors().len(), 272);
    assert_eq!(ckpt.config.as_ref().unwrap()["num_hidden_layers"], 30);
    let names: Vec<&str> = ckpt.side_files.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["tokenizer.json"]);
}
