//! The aux nets' constraints hold through training, and gradients reach every free parameter.

use candle_core::{Device, Tensor};

use super::*;
use crate::algorithm::{Algorithm, sws::Sws, tleg::Tleg};
use crate::anatomy::Param;
use crate::nn::init::{VitSpec, random};
use crate::nn::{Input, Mode};
use crate::train::optim::{AdamW, AdamWConfig};

fn spec(layers: usize) -> ModelConfig {
    VitSpec {
        image_size: 8,
        patch_size: 4,
        channels: 3,
        hidden: 16,
        layers,
        heads: 2,
        classes: 3,
        class_token: true,
    }
    .config()
}

fn student(algorithm: &dyn Algorithm, layers: usize, init: AuxInit) -> (Box<dyn AuxNet>, Model) {
    let teacher = random(&spec(4), 3, &Device::Cpu).unwrap();
    let config = spec(layers);
    let aux = algorithm
        .aux_net(&AuxRequest {
            config: &config,
            teacher: &teacher,
            init,
            seed: 9,
            ratio: &[1, 2, 1],
        })
        .unwrap();
    let model = Model::new(config, aux.params(), Device::Cpu);
    (aux, model)
}

fn images() -> Tensor {
    let values: Vec<f32> = (0..2 * 3 * 8 * 8)
        .map(|i| ((i * 37) % 11) as f32 / 11.0 - 0.5)
        .collect();
    Tensor::from_vec(values, (2, 3, 8, 8), &Device::Cpu).unwrap()
}

/// A loss that touches every layer: the squared logits.
fn loss(model: &Model) -> Tensor {
    let out = model
        .forward(&Input::Images(images()), Mode::Train, false)
        .unwrap();
    out.output.sqr().unwrap().mean_all().unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn layer(model: &Model, l: usize, role: Role, param: Param) -> Vec<f32> {
    let slot = Slot {
        layer: Some(l),
        role,
        param,
    };
    values(&model.params.get(&slot).unwrap().unwrap())
}

fn var(model: &Model, name: &str) -> Vec<f32> {
    let (_, v) = model
        .vars()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no variable {name}"));
    values(v.as_tensor())
}

#[test]
fn tleg_layers_stay_on_the_line_and_gradients_reach_a_and_b() {
    let (_, model) = student(&Tleg, 6, AuxInit::Random);
    let vars = model.vars();
    let grads = loss(&model).backward().unwrap();
    for (name, v) in &vars {
        let g = grads.get(v.as_tensor());
        let norm = g.map_or(0.0, |g| values(g).iter().map(|x| x.abs()).sum::<f32>());
        let tleg = name.starts_with("tleg.");
        assert!(!tleg || norm > 0.0, "{name}: no gradient");
    }
    let mut opt = AdamW::new(vars, AdamWConfig::default()).unwrap();
    let qkv = "tleg.base.blocks.0.attn.qkv.weight";
    let slope = "tleg.slope.blocks.0.attn.qkv.weight";
    let before = (var(&model, qkv), var(&model, slope));
    for _ in 0..3 {
        opt.backward_step(&loss(&model), 1.0, 1e-2).unwrap();
        let (b, a) = (var(&model, qkv), var(&model, slope));
        for l in 0..6 {
            let got = layer(&model, l, Role::AttnQkv, Param::Weight);
            for ((g, b), a) in got.iter().zip(&b).zip(&a) {
                assert!((g - (b + (l as f32 / 6.0) * a)).abs() < 1e-6, "layer {l}");
            }
        }
    }
    assert_ne!(before.0, var(&model, qkv), "B did not move");
    assert_ne!(before.1, var(&model, slope), "A did not move");
}

#[test]
fn tleg_random_init_is_the_papers_and_a_warm_start_keeps_the_teachers_globals() {
    let (_, model) = student(&Tleg, 4, AuxInit::Random);
    assert!(
        var(&model, "tleg.slope.blocks.0.norm1.weight")
            .iter()
            .all(|&x| x == 0.0)
    );
    assert!(
        var(&model, "tleg.base.blocks.0.norm1.weight")
            .iter()
            .all(|&x| x == 1.0)
    );
    assert!(
        var(&model, "tleg.slope.blocks.0.attn.qkv.bias")
            .iter()
            .all(|&x| x == 0.0)
    );
    assert!(
        var(&model, "tleg.slope.blocks.0.mlp.fc1.weight")
            .iter()
            .any(|&x| x != 0.0)
    );
    let (_, fitted) = student(&Tleg, 4, AuxInit::Fit);
    let teacher = random(&spec(4), 3, &Device::Cpu).unwrap();
    // The line fitted to the teacher's 4 layers gives back its globals exactly.
    let head = crate::nn::param::global(Role::Head, Param::Weight);
    assert_eq!(
        values(&fitted.params.get(&head).unwrap().unwrap()),
        values(&teacher.params.get(&head).unwrap().unwrap())
    );
}

#[test]
fn an_sws_stage_is_one_tensor_so_one_update_moves_all_its_layers() {
    let (_, model) = student(&Sws, 4, AuxInit::Random);
    let grads = loss(&model).backward().unwrap();
    for (name, v) in model.vars() {
        let g = grads.get(v.as_tensor());
        let norm = g.map_or(0.0, |g| values(g).iter().map(|x| x.abs()).sum::<f32>());
        assert!(
            !name.starts_with("sws.") || norm > 0.0,
            "{name}: no gradient"
        );
    }
    let stage_of = [0, 1, 1, 2];
    let mut opt = AdamW::new(model.vars(), AdamWConfig::default()).unwrap();
    let before: Vec<Vec<f32>> = (0..4)
        .map(|l| layer(&model, l, Role::MlpUp, Param::Weight))
        .collect();
    opt.backward_step(&loss(&model), 1.0, 1e-2).unwrap();
    let after: Vec<Vec<f32>> = (0..4)
        .map(|l| layer(&model, l, Role::MlpUp, Param::Weight))
        .collect();
    assert_eq!(after[1], after[2], "layers of one stage differ");
    for l in 0..4 {
        assert_ne!(
            before[l], after[l],
            "layer {l} (stage {}) did not move",
            stage_of[l]
        );
    }
    assert_ne!(after[0], after[1]);
    assert_ne!(after[2], after[3]);
}

#[test]
fn a_warm_start_needs_the_teachers_width() {
    let teacher = random(&spec(4), 3, &Device::Cpu).unwrap();
    let narrow = ModelConfig {
        hidden: 8,
        intermediate: 32,
        ..spec(6)
    };
    let err = Tleg
        .aux_net(&AuxRequest {
            config: &narrow,
            teacher: &teacher,
            init: AuxInit::Fit,
            seed: 1,
            ratio: &[1],
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("AUX.INIT") && err.contains("random"), "{err}");
    // At random, a narrower aux net is built.
    assert!(
        Tleg.aux_net(&AuxRequest {
            config: &narrow,
            teacher: &teacher,
            init: AuxInit::Random,
            seed: 1,
            ratio: &[1],
        })
        .is_ok()
    );
}

#[test]
fn a_narrower_aux_net_selects_the_teachers_leading_channels_and_whole_heads() {
    let teacher = random(&spec(5), 3, &Device::Cpu).unwrap();
    let narrow = ModelConfig {
        hidden: 8,
        heads: 1,
        kv_heads: 1,
        intermediate: 32,
        ..spec(5)
    };
    let request = |init| AuxRequest {
        config: &narrow,
        teacher: &teacher,
        init,
        seed: 1,
        ratio: &[1, 3, 1],
    };
    let aux = Sws.aux_net(&request(AuxInit::Select)).unwrap();
    let model = Model::new(narrow.clone(), aux.params(), Device::Cpu);
    // Stage 1 is the teacher's middle layer of its stage (layers 1-3: layer 2), narrowed.
    let got = layer(&model, 1, Role::AttnQkv, Param::Weight);
    let full = layer(&teacher, 2, Role::AttnQkv, Param::Weight);
    let want: Vec<f32> = [0, 16, 32]
        .iter()
        .flat_map(|&third| (third..third + 8).flat_map(|row| full[row * 16..row * 16 + 8].to_vec()))
        .collect();
    assert_eq!(got, want);
    let head = crate::nn::param::global(Role::Head, Param::Weight);
    let full_head = values(&teacher.params.get(&head).unwrap().unwrap());
    let want_head: Vec<f32> = (0..3)
        .flat_map(|c| full_head[c * 16..c * 16 + 8].to_vec())
        .collect();
    assert_eq!(
        values(&model.params.get(&head).unwrap().unwrap()),
        want_head
    );
    // It runs, and TLEG selects the same way; a changed head width is refused.
    loss(&model);
    assert!(Tleg.aux_net(&request(AuxInit::Select)).is_ok());
    let split_heads = ModelConfig {
        heads: 2,
        kv_heads: 2,
        ..narrow.clone()
    };
    let err = Tleg
        .aux_net(&AuxRequest {
            config: &split_heads,
            ..request(AuxInit::Select)
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("head width"), "{err}");
}
