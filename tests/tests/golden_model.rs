//! `rpn-model` against real tf-keras: the seed models' outputs and parameter counts.
//!
//! Fixture: `tests/fixtures/model.safetensors`, written by `tests/fixtures/gen_model.py`, which
//! builds each seed model in tf-keras exactly as the notebook does and sets every weight and BN
//! statistic from an integer hash evaluated identically here. Kernels are generated in Keras'
//! HWIO layout and transposed to OIHW with `(3, 2, 0, 1)` as a port must.

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rpn_model::{
    nhwc_to_nchw, Seed002Head, SeedResNet, SeedResNetConfig, SeedRpn, SeedRpnHead, Vgg16,
};
use rpn_tests::hashed::{set_weights as set_hashed_weights, tensor as hashed};
use rpn_tests::Fixture;

/// `(total, non-trainable)` parameters: BN moving statistics are Keras' non-trainable weights.
fn param_counts(varmap: &VarMap) -> [i64; 2] {
    let vars = varmap.data().lock().unwrap();
    let total: usize = vars.values().map(|v| v.elem_count()).sum();
    let frozen: usize = vars
        .iter()
        .filter(|(k, _)| k.ends_with("running_mean") || k.ends_with("running_var"))
        .map(|(_, v)| v.elem_count())
        .sum();
    [total as i64, frozen as i64]
}

/// `max |a − b| ≤ 1e-4 · max |b|`, the parity criterion.
fn assert_parity(what: &str, ours: &Tensor, keras: &[f32], shape: &[usize]) {
    assert_eq!(ours.dims(), shape, "{what}: shape");
    let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = keras.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(keras).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max |Δ| = {worst}, max |keras| = {scale}");
}

fn seed_rpn_parity(name: &str, config: SeedResNetConfig, shape: [usize; 3], input_salt: u32) {
    let f = Fixture::load("model.safetensors");
    let varmap = VarMap::new();
    let model =
        SeedRpn::new(&config, 9, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))
            .unwrap();
    assert_eq!(
        param_counts(&varmap),
        f.i64(&format!("{name}/params")).data[..],
        "{name}: parameter counts"
    );

    let (mut convs, bns) = SeedResNet::keras_creation_order(&config);
    convs = convs.into_iter().map(|c| format!("backbone.{c}")).collect();
    convs.extend(SeedRpnHead::keras_creation_order().into_iter().map(|c| format!("rpn.{c}")));
    let bns: Vec<String> = bns.into_iter().map(|b| format!("backbone.{b}")).collect();
    set_hashed_weights(&varmap, &convs, &bns);

    let images = hashed(&[2, shape[0], shape[1], shape[2]], input_salt, 2.0);
    let out = model.forward_nhwc(&images).unwrap();
    for (key, tensor) in [("logits", &out.logits), ("probs", &out.probs), ("deltas", &out.deltas)] {
        let expected = f.f32(&format!("{name}/{key}"));
        assert_parity(&format!("{name} {key}"), tensor, &expected.data, &expected.shape);
    }
}

#[test]
fn seed000_equals_keras_on_a_non_square_input() {
    seed_rpn_parity("seed000", SeedResNetConfig::seed000(), [64, 48, 3], 77);
}

#[test]
fn seed001_equals_keras_on_a_non_square_input() {
    seed_rpn_parity("seed001", SeedResNetConfig::seed001(), [48, 80, 3], 78);
}

#[test]
fn seed002_head_equals_keras() {
    let f = Fixture::load("model.safetensors");
    let varmap = VarMap::new();
    let head = Seed002Head::new(512, 9, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))
        .unwrap();
    assert_eq!(param_counts(&varmap), f.i64("seed002/params").data[..]);
    set_hashed_weights(&varmap, &Seed002Head::keras_creation_order(), &[]);
    let out = head.forward_nhwc(&hashed(&[1, 6, 10, 512], 79, 2.0)).unwrap();
    for (key, tensor) in [("classification", &out.classification), ("location", &out.location)] {
        let expected = f.f32(&format!("seed002/{key}"));
        assert_parity(&format!("seed002 {key}"), tensor, &expected.data, &expected.shape);
    }
}

#[test]
fn vgg16_body_equals_keras_applications_vgg16() {
    let f = Fixture::load("model.safetensors");
    let varmap = VarMap::new();
    let vgg = Vgg16::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    assert_eq!(param_counts(&varmap), f.i64("vgg16/params").data[..]);
    set_hashed_weights(&varmap, &Vgg16::keras_creation_order(), &[]);
    let images = nhwc_to_nchw(&hashed(&[1, 64, 96, 3], 80, 2.0)).unwrap();
    let features =
        vgg.forward(&images).unwrap().permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
    let expected = f.f32("vgg16/features");
    assert_parity("vgg16 block5_conv3", &features, &expected.data, &expected.shape);
}

/// The counts in `seeds-digest.md` (verified there with real tf-keras), checked here as well as
/// against this fixture's Keras models above.
#[test]
fn parameter_counts_match_the_seed_digest() {
    let count = |config: SeedResNetConfig| {
        let varmap = VarMap::new();
        SeedRpn::new(&config, 9, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))
            .unwrap();
        param_counts(&varmap)
    };
    assert_eq!(count(SeedResNetConfig::seed000()), [9_276_086, 27_520]);
    assert_eq!(count(SeedResNetConfig::seed001())[0], 754_486);
    let varmap = VarMap::new();
    Seed002Head::new(512, 9, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    assert_eq!(param_counts(&varmap)[0], 2_382_893);
}
