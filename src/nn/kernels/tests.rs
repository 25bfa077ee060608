//! Each fused kernel against its differentiable reference (forward and every input gradient),
//! against finite differences, and in bf16-representable data.

#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor, Var};

use super::reference_only;
use crate::nn::Mode;
use crate::nn::init::Rng;
use crate::nn::ops::{self, SelfAttention};
use crate::train::loss;
use crate::train::optim::{AdamW, AdamWConfig};

type Op<'a> = dyn Fn(&[Tensor]) -> crate::Result<Tensor> + 'a;

fn normal(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The output of `op` and the gradient of `Σ r · out` (a fixed random `r`) for every input.
fn run(op: &Op<'_>, inputs: &[Tensor]) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = op(&tensors).unwrap();
    let r = normal(out.dims(), 99).to_dtype(out.dtype()).unwrap();
    let objective = (&out * r)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = objective.backward().unwrap();
    let g = vars
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .expect("every input gets a gradient")
                .clone()
        })
        .collect();
    (out, g)
}

/// `max |a − b| / max |b|`.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    assert_eq!(a.dims(), b.dims());
    let diff = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1e-30)
}

/// The fused and the reference form of `op` agree within `tol` in output and gradients.
fn matches_reference(what: &str, op: &Op<'_>, inputs: &[Tensor], tol: f32) {
    let (out, grads) = run(op, inputs);
    let (want, want_grads) = reference_only(|| run(op, inputs));
    let e = rel(&out, &want);
    assert!(e <= tol, "{what}: output differs by {e}");
    for (i, (g, w)) in grads.iter().zip(&want_grads).enumerate() {
        let e = rel(g, w);
        assert!(e <= tol, "{what}: gradient of input {i} differs by {e}");
    }
}

/// The fused gradient of every input against central differences at a few coordinates.
fn matches_finite_differences(what: &str, op: &Op<'_>, inputs: &[Tensor]) {
    let (_, grads) = run(op, inputs);
    let r = {
        let out = op(inputs).unwrap();
        normal(out.dims(), 99)
    };
    let objective = |xs: &[Tensor]| -> f64 {
        let out = op(xs).unwrap();
        f64::from(
            (out * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        )
    };
    let h = 1e-2f32;
    for (i, (x, g)) in inputs.iter().zip(&grads).enumerate() {
        let values: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let analytic: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        for at in [0, values.len() / 2, values.len() - 1] {
            let shifted = |delta: f32| {
                let mut v = values.clone();
                v[at] += delta;
                let mut xs = inputs.to_vec();
                xs[i] = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
                objective(&xs)
            };
            let numeric = (shifted(h) - shifted(-h)) / (2.0 * f64::from(h));
            let a = f64::from(analytic[at]);
            assert!(
                (numeric - a).abs() <= 2e-2 * a.abs().max(1.0),
                "{what}: input {i}[{at}] analytic {a}, numeric {numeric}"
            );
        }
    }
}

/// Inputs rounded to bf16: the fused f32 kernel against the reference in bf16.
fn matches_in_bf16(what: &str, op: &Op<'_>, inputs: &[Tensor]) {
    let rounded: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::BF16).unwrap())
        .collect();
    let widened: Vec<Tensor> = rounded
        .iter()
        .map(|t| t.to_dtype(DType::F32).unwrap())
        .collect();
    let (out, _) = run(op, &widened);
    let (want, _) = reference_only(|| run(op, &rounded));
    let e = rel(&out, &want);
    assert!(e <= 3e-2, "{what}: bf16 output differs by {e}");
}

fn check_all(what: &str, op: &Op<'_>, inputs: &[Tensor]) {
    matches_reference(what, op, inputs, 1e-5);
    matches_finite_differences(what, op, inputs);
    matches_in_bf16(what, op, inputs);
}

#[test]
fn linear_matches_reference() {
    for (rows, k, n) in [(7, 5, 3), (1, 9, 4), (33, 17, 11)] {
        let x = normal(&[rows, k], 1);
        let w = normal(&[n, k], 2);
        let b = normal(&[n], 3);
        let with_bias = |t: &[Tensor]| ops::linear(&t[0], &t[1], Some(&t[2]), None);
        check_all("linear with bias", &with_bias, &[x.clone(), w.clone(), b]);
        let without = |t: &[Tensor]| ops::linear(&t[0], &t[1], None, None);
        check_all("linear", &without, &[x, w]);
    }
}

#[test]
fn linear_takes_leading_dimensions_and_returns_contiguous_weight_gradients() {
    let x = normal(&[2, 3, 5], 1);
    let w = Var::from_tensor(&normal(&[4, 5], 2)).unwrap();
    let y = ops::linear(&x, w.as_tensor(), None, None).unwrap();
    assert_eq!(y.dims(), &[2, 3, 4]);
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(w.as_tensor()).unwrap().is_contiguous());
    assert!(grads.get(&x).is_none(), "a constant input gets no gradient");
}

#[test]
fn layer_norm_matches_reference() {
    for (rows, d) in [(9, 13), (1, 8), (40, 192)] {
        let x = normal(&[rows, d], 4).affine(3.0, 1.0).unwrap();
        let w = (normal(&[d], 5) + 1.0).unwrap();
        let b = normal(&[d], 6);
        let op = |t: &[Tensor]| ops::layer_norm(&t[0], &t[1], Some(&t[2]), 1e-6, Mode::Train);
        check_all("layer_norm", &op, &[x.clone(), w.clone(), b]);
        let op = |t: &[Tensor]| ops::layer_norm(&t[0], &t[1], None, 1e-5, Mode::Train);
        matches_reference("layer_norm without bias", &op, &[x, w], 1e-5);
    }
}

#[test]
fn rms_norm_matches_reference() {
    for (rows, d) in [(9, 13), (1, 8), (6, 64)] {
        let x = normal(&[rows, d], 7);
        let w = (normal(&[d], 8) + 1.0).unwrap();
        let op = |t: &[Tensor]| ops::rms_norm(&t[0], &t[1], 1e-5, Mode::Train);
        check_all("rms_norm", &op, &[x, w]);
    }
}

#[test]
fn gelu_and_swiglu_match_reference() {
    let a = (normal(&[5, 37], 9) * 3.0).unwrap();
    let b = normal(&[5, 37], 10);
    check_all(
        "gelu",
        &|t: &[Tensor]| ops::gelu(&t[0]),
        std::slice::from_ref(&a),
    );
    check_all("swiglu", &|t: &[Tensor]| ops::swiglu(&t[0], &t[1]), &[a, b]);
}

#[test]
fn rope_matches_reference() {
    let (b, t, heads, d) = (2, 5, 3, 6);
    let (cos, sin) = ops::rope_tables(t, d, 10_000.0, None, &Device::Cpu).unwrap();
    let x = normal(&[b, t, heads * d], 11);
    let fused = |x: &[Tensor]| Ok(super::rope(&x[0], heads, &cos, &sin)?);
    let reference = |x: &[Tensor]| {
        let split = ops::split_heads(&x[0], heads)?;
        ops::merge_heads(&ops::rope(&split, &cos, &sin, Mode::Train)?)
    };
    let (out, grads) = run(&fused, std::slice::from_ref(&x));
    let (want, want_grads) = run(&reference, std::slice::from_ref(&x));
    assert!(rel(&out, &want) <= 1e-5);
    assert!(rel(&grads[0], &want_grads[0]) <= 1e-5);
    matches_finite_differences("rope", &fused, &[x]);
}

/// An attention configuration: (batch, seq, heads, kv heads, head dim, causal, padded, rope).
type AttentionCase = (usize, usize, usize, usize, usize, bool, bool, bool);

const ATTENTION_CASES: [AttentionCase; 6] = [
    (2, 5, 4, 2, 6, true, false, true),
    (3, 7, 3, 3, 5, false, true, false),
    (1, 1, 2, 1, 4, true, false, true),
    (2, 6, 6, 2, 8, true, false, false),
    (2, 9, 2, 2, 7, false, false, false),
    (2, 4, 2, 1, 4, true, true, true),
];

#[test]
fn attention_matches_reference() {
    for (i, &(b, t, heads, kv, d, causal, padded, rotary)) in ATTENTION_CASES.iter().enumerate() {
        let (cos, sin) = ops::rope_tables(t, d, 10_000.0, None, &Device::Cpu).unwrap();
        // Batch row `r` pads its last `r` positions (row 0 none).
        let padded_at = |j: usize| j % t + j / t >= t;
        let keep: Vec<f32> = (0..b * t)
            .map(|j| if padded_at(j) { 0.0 } else { 1.0 })
            .collect();
        let mask = Tensor::from_vec(keep, (b, t), &Device::Cpu).unwrap();
        let spec = SelfAttention {
            heads,
            kv_heads: kv,
            causal,
            key_mask: padded.then_some(&mask),
            rope: rotary.then_some((&cos, &sin)),
        };
        let op = |x: &[Tensor]| ops::self_attention(&x[0], &x[1], &x[2], &spec, Mode::Train, None);
        let inputs = [
            normal(&[b, t, heads * d], 12),
            normal(&[b, t, kv * d], 13),
            normal(&[b, t, kv * d], 14),
        ];
        // The reference's masks and rotary tables are f32, so there is no bf16 reference.
        matches_reference(&format!("attention case {i}"), &op, &inputs, 1e-5);
        matches_finite_differences(&format!("attention case {i}"), &op, &inputs);
        if !rotary {
            let packed = |x: &[Tensor]| ops::self_attention_packed(&x[0], &spec, Mode::Train, None);
            let qkv = [normal(&[b, t, (heads + 2 * kv) * d], 15)];
            matches_reference(&format!("packed attention case {i}"), &packed, &qkv, 1e-5);
            matches_finite_differences(&format!("packed attention case {i}"), &packed, &qkv);
        }
    }
}

#[test]
fn packed_attention_equals_attention_on_the_slices() {
    let (b, t, heads, kv, d) = (2, 5, 4, 2, 3);
    let spec = SelfAttention {
        heads,
        kv_heads: kv,
        causal: true,
        key_mask: None,
        rope: None,
    };
    let qkv = normal(&[b, t, (heads + 2 * kv) * d], 16);
    let packed = ops::self_attention_packed(&qkv, &spec, Mode::Train, None).unwrap();
    let part = |at, width| qkv.narrow(2, at, width).unwrap();
    let (q, k, v) = (
        part(0, heads * d),
        part(heads * d, kv * d),
        part((heads + kv) * d, kv * d),
    );
    let apart = ops::self_attention(&q, &k, &v, &spec, Mode::Train, None).unwrap();
    assert_eq!(
        packed.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        apart.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let bad = normal(&[b, t, (heads + 2 * kv) * d + 1], 17);
    assert!(ops::self_attention_packed(&bad, &spec, Mode::Train, None).is_err());
}

#[test]
fn cross_entropy_matches_reference() {
    for (rows, classes) in [(6, 11), (1, 3), (64, 10)] {
        let logits = (normal(&[rows, classes], 15) * 4.0).unwrap();
        let ids: Vec<u32> = (0..rows).map(|r| ((r * 7 + 3) % classes) as u32).collect();
        let ids = Tensor::from_vec(ids, rows, &Device::Cpu).unwrap();
        let op = |x: &[Tensor]| loss::cross_entropy(&x[0], &ids);
        check_all("cross_entropy", &op, &[logits]);
    }
}

#[test]
fn kl_distill_matches_reference() {
    for (i, (shape, tau)) in [(vec![5, 13], 1.0), (vec![1, 3], 3.0), (vec![2, 4, 7], 2.0)]
        .into_iter()
        .enumerate()
    {
        let student = (normal(&shape, 20 + i as u64) * 3.0).unwrap();
        let teacher = (normal(&shape, 30 + i as u64) * 3.0).unwrap();
        let op = |x: &[Tensor]| loss::kl_distill(&x[0], &teacher, tau);
        // The teacher is an f32 constant here, so there is no bf16 reference.
        let what = format!("kl_distill {shape:?} τ={tau}");
        matches_reference(&what, &op, std::slice::from_ref(&student), 1e-5);
        matches_finite_differences(&what, &op, &[student]);
    }
    // The same logits are at distance 0, with a zero gradient.
    let same = normal(&[3, 9], 40);
    let var = Var::from_tensor(&same).unwrap();
    let kl = loss::kl_distill(var.as_tensor(), &same, 2.0).unwrap();
    assert!(kl.to_scalar::<f32>().unwrap().abs() < 1e-6);
    let grad = kl.backward().unwrap();
    let g = grad.get(var.as_tensor()).unwrap();
    assert!(
        g.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            < 1e-7
    );
}

#[test]
fn cross_entropy_rejects_a_target_outside_the_classes() {
    let logits = normal(&[2, 3], 1);
    let ids = Tensor::from_vec(vec![0u32, 3], 2, &Device::Cpu).unwrap();
    let err = loss::cross_entropy(&logits, &ids).unwrap_err().to_string();
    assert!(err.contains("target 3"), "{err}");
}

#[test]
fn fused_adamw_matches_reference_steps() {
    let run_steps = || {
        let w = Var::from_tensor(&normal(&[5, 7], 16)).unwrap();
        let b = Var::from_tensor(&normal(&[7], 17)).unwrap();
        let vars = vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())];
        let mut opt = AdamW::new(vars, AdamWConfig::default()).unwrap();
        let x = normal(&[3, 5], 18);
        for step in 0..4 {
            let y = x
                .matmul(w.as_tensor())
                .unwrap()
                .broadcast_add(b.as_tensor())
                .unwrap();
            let loss = (y.sqr().unwrap().sum_all().unwrap() * (1.0 + step as f64)).unwrap();
            opt.backward_step(&loss, 1.0, 1e-2).unwrap();
        }
        let m = opt.m["w"].clone();
        (
            w.as_tensor().copy().unwrap(),
            b.as_tensor().copy().unwrap(),
            m,
        )
    };
    let fused = run_steps();
    let reference = reference_only(run_steps);
    assert!(rel(&fused.0, &reference.0) <= 1e-5);
    assert!(rel(&fused.1, &reference.1) <= 1e-5);
    assert!(rel(&fused.2, &reference.2) <= 1e-5);
}

#[test]
fn reference_only_switches_the_kernels_off_and_back_on() {
    let x = normal(&[2, 2], 1);
    assert!(super::fusable(&[&x]));
    assert!(!reference_only(|| super::fusable(&[&x])));
    assert!(super::fusable(&[&x]));
    assert!(!super::fusable(&[&x.to_dtype(DType::BF16).unwrap()]));
}

/// The fused pre-norm sublayer where the kernels run, else written out in the ops it fuses.
fn sublayer(t: &[Tensor], mixer: &ops::SublayerMixer<'_>, eps: f64) -> crate::Result<Tensor> {
    let weights = ops::SublayerWeights {
        norm: (&t[1], Some(&t[2])),
        input: (&t[3], Some(&t[4])),
        output: (&t[5], Some(&t[6])),
    };
    if let Some(y) = ops::fused_pre_norm_sublayer(&t[0], &weights, *mixer, eps)? {
        return Ok(y);
    }
    let x = ops::layer_norm(&t[0], &t[1], Some(&t[2]), eps, Mode::Train)?;
    let projected = ops::linear(&x, &t[3], Some(&t[4]), None)?;
    let mixed = match mixer {
        ops::SublayerMixer::Attention(spec) => {
            ops::self_attention_packed(&projected, spec, Mode::Train, None)?
        }
        ops::SublayerMixer::Gelu => ops::gelu(&projected)?,
    };
    Ok((&t[0] + ops::linear(&mixed, &t[5], Some(&t[6]), None)?)?)
}

/// `[h, norm w, norm b, input w, input b, output w, output b]` for a sublayer of `width`
/// whose input projection has `inner` rows and whose output projection reads `mixed`.
fn sublayer_inputs(shape: (usize, usize, usize), inner: usize, mixed: usize) -> Vec<Tensor> {
    let (b, t, width) = shape;
    vec![
        normal(&[b, t, width], 20).affine(2.0, 0.5).unwrap(),
        (normal(&[width], 21) + 1.0).unwrap(),
        normal(&[width], 22),
        (normal(&[inner, width], 23) * 0.5).unwrap(),
        normal(&[inner], 24),
        (normal(&[width, mixed], 25) * 0.5).unwrap(),
        normal(&[width], 26),
    ]
}

#[test]
fn fused_sublayers_match_their_written_out_form() {
    for (b, t, width, inner) in [(2, 5, 12, 17), (1, 1, 8, 8), (3, 7, 6, 24)] {
        let inputs = sublayer_inputs((b, t, width), inner, inner);
        let op = |x: &[Tensor]| sublayer(x, &ops::SublayerMixer::Gelu, 1e-6);
        check_all(&format!("mlp sublayer {b}x{t}x{width}"), &op, &inputs);
    }
    // Heads of 3 over the width, grouped-query heads, one position, a batch of one.
    for (b, t, heads, kv, d) in [
        (2, 5, 4, 4, 3),
        (3, 7, 4, 2, 3),
        (1, 1, 2, 1, 4),
        (2, 9, 3, 3, 5),
    ] {
        let spec = SelfAttention {
            heads,
            kv_heads: kv,
            causal: false,
            key_mask: None,
            rope: None,
        };
        let inputs = sublayer_inputs((b, t, heads * d), (heads + 2 * kv) * d, heads * d);
        let mixer = ops::SublayerMixer::Attention(&spec);
        let op = |x: &[Tensor]| sublayer(x, &mixer, 1e-6);
        let what = format!("attention sublayer {b}x{t}, {heads} heads over {kv}");
        check_all(&what, &op, &inputs);
    }
}

#[test]
fn a_fused_sublayer_refuses_weights_that_do_not_fit() {
    let inputs = sublayer_inputs((2, 3, 8), 12, 12);
    let mut wrong = inputs.clone();
    wrong[5] = normal(&[8, 11], 27);
    let weights = ops::SublayerWeights {
        norm: (&wrong[1], Some(&wrong[2])),
        input: (&wrong[3], Some(&wrong[4])),
        output: (&wrong[5], Some(&wrong[6])),
    };
    let err = ops::fused_pre_norm_sublayer(&wrong[0], &weights, ops::SublayerMixer::Gelu, 1e-6)
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not fit a width of 8"), "{err}");
}

#[test]
fn a_fused_sublayer_gives_no_gradient_to_constants() {
    let inputs = sublayer_inputs((2, 3, 8), 12, 12);
    let w = Var::from_tensor(&inputs[3]).unwrap();
    let weights = ops::SublayerWeights {
        norm: (&inputs[1], Some(&inputs[2])),
        input: (w.as_tensor(), Some(&inputs[4])),
        output: (&inputs[5], Some(&inputs[6])),
    };
    let y = ops::fused_pre_norm_sublayer(&inputs[0], &weights, ops::SublayerMixer::Gelu, 1e-6)
        .unwrap()
        .expect("f32 on the CPU runs fused");
    let grads = y.sum_all().unwrap().backward().unwrap();
    let dw = grads
        .get(w.as_tensor())
        .expect("the variable gets its gradient");
    assert_eq!(dw.dims(), &[12, 8]);
    assert!(dw.is_contiguous());
    assert!(
        grads.get(&inputs[0]).is_none(),
        "a constant input gets no gradient"
    );
}
