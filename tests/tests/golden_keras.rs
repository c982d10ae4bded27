//! `rpn-keras` on real Keras files: Keras 2 `save_weights` (auto names), a Keras 2 full-model
//! file and a Keras 3 `.weights.h5`, ported and run, against Keras' own outputs.
//!
//! Fixtures: `tests/fixtures/keras/*`, written by `tests/fixtures/gen_keras.py`; seed 001's
//! expected outputs are `model.safetensors`'s (same hashed weights, `gen_model.py`).

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rpn_keras::{
    port, read_keras_file, write_safetensors, KerasFileKind, PortError, PortOptions, PortedWeights,
};
use rpn_model::Seed002Head;
use rpn_tests::hashed::tensor as hashed;
use rpn_tests::{fixtures_dir, Fixture};

fn keras_file(name: &str) -> PathBuf {
    fixtures_dir().join("keras").join(name)
}

fn var_builder(weights: &PortedWeights) -> VarBuilder<'static> {
    let tensors: HashMap<String, Tensor> = weights
        .tensors
        .iter()
        .map(|(k, (shape, data))| {
            (k.clone(), Tensor::from_vec(data.clone(), shape.as_slice(), &Device::Cpu).unwrap())
        })
        .collect();
    VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
}

fn shapes_of_seed002_in64() -> BTreeMap<String, Vec<usize>> {
    let varmap = VarMap::new();
    Seed002Head::new(64, 9, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    let vars = varmap.data().lock().unwrap();
    vars.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect()
}

fn assert_parity(what: &str, ours: &Tensor, keras: &[f32]) {
    let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(ours.len(), keras.len(), "{what}");
    let scale = keras.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(keras).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max |Δ| = {worst}, max |keras| = {scale}");
}

#[test]
fn seed001_keras2_weights_port_and_run_like_keras() {
    let path = keras_file("seed001.h5");
    assert_eq!(read_keras_file(&path).unwrap().0, KerasFileKind::Keras2Weights);
    let arch = rpn_tests::network("seed001");
    let weights =
        port(&path, &arch.keras_layout(), &arch.tensor_shapes().unwrap(), &PortOptions::default())
            .unwrap();
    let rpn_model::Model::SeedRpn(model) = arch.build(var_builder(&weights)).unwrap() else {
        panic!("seed001 is an RPN")
    };
    let out = model.forward_nhwc(&hashed(&[2, 48, 80, 3], 78, 2.0)).unwrap();
    let f = Fixture::load("model.safetensors");
    assert_parity("logits", &out.logits, &f.f32("seed001/logits").data);
    assert_parity("deltas", &out.deltas, &f.f32("seed001/deltas").data);
}

#[test]
fn seed002_full_model_and_keras3_files_port_to_the_same_weights() {
    let layout = rpn_tests::network("seed002").keras_layout();
    let shapes = shapes_of_seed002_in64();
    let expected = Fixture::load("keras/expected.safetensors");
    let mut ported = Vec::new();
    for (file, kind) in [
        ("seed002_in64_model.h5", KerasFileKind::Keras2Model),
        ("seed002_in64.weights.h5", KerasFileKind::Keras3Weights),
    ] {
        let path = keras_file(file);
        assert_eq!(read_keras_file(&path).unwrap().0, kind, "{file}");
        let weights = port(&path, &layout, &shapes, &PortOptions::default()).unwrap();
        let head = Seed002Head::new(64, 9, var_builder(&weights)).unwrap();
        let out = head.forward_nhwc(&hashed(&[1, 5, 7, 64], 81, 2.0)).unwrap();
        assert_parity(
            &format!("{file} classification"),
            &out.classification,
            &expected.f32("seed002_in64/classification").data,
        );
        assert_parity(
            &format!("{file} location"),
            &out.location,
            &expected.f32("seed002_in64/location").data,
        );
        ported.push(weights);
    }
    // Keras 3 names the layers conv2d, conv2d_1, conv2d_2: creation order recovers 3x3, location, classification.
    assert_eq!(ported[0], ported[1]);
}

#[test]
fn written_safetensors_round_trip_and_leave_no_temporary_file() {
    let arch = rpn_tests::network("seed001");
    let weights = port(
        &keras_file("seed001.h5"),
        &arch.keras_layout(),
        &arch.tensor_shapes().unwrap(),
        &PortOptions::default(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("rpn-keras-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("seed001.safetensors");
    write_safetensors(&weights, &out).unwrap();
    let back = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(back.len(), weights.tensors.len());
    let (shape, data) = &weights.tensors["backbone.stage0.block0.shortcut_conv.weight"];
    let t = &back["backbone.stage0.block0.shortcut_conv.weight"];
    assert_eq!(t.dims(), shape.as_slice());
    assert_eq!(&t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), data);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only the output file remains");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_name_the_tensor_and_both_shapes() {
    // Seed 002's layers on 64 channels against the 512-channel seed 002.
    let err = port(
        &keras_file("seed002_in64_model.h5"),
        &rpn_tests::network("seed002").keras_layout(),
        &rpn_tests::network("seed002").tensor_shapes().unwrap(),
        &PortOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("shape mismatch for `3x3/kernel` → `3x3.weight`: file [512, 64, 3, 3], model [512, 512, 3, 3]"), "{msg}");

    // A seed 001 checkpoint ported as seed 000: counts differ, and tensors are missing.
    let err = port(
        &keras_file("seed001.h5"),
        &rpn_tests::network("seed000").keras_layout(),
        &rpn_tests::network("seed000").tensor_shapes().unwrap(),
        &PortOptions::default(),
    )
    .unwrap_err();
    let PortError::Mismatch { problems, .. } = &err else { panic!("{err}") };
    assert!(
        problems.iter().any(|p| p.starts_with("the file has 11 conv layers, the model 46")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.starts_with("missing tensor `")), "{problems:?}");

    // Excluding layers (Matterport's `exclude=`) makes them missing, by name.
    let options = PortOptions { exclude: vec!["classification".into()] };
    let err = port(
        &keras_file("seed002_in64_model.h5"),
        &rpn_tests::network("seed002").keras_layout(),
        &shapes_of_seed002_in64(),
        &options,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("missing tensor `classification.weight` [9, 512, 1, 1]"),
        "{err}"
    );

    // A truncated file is a read error naming the file.
    let bytes = std::fs::read(keras_file("seed001.h5")).unwrap();
    let truncated = std::env::temp_dir().join(format!("rpn-truncated-{}.h5", std::process::id()));
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let err = port(
        &truncated,
        &rpn_tests::network("seed001").keras_layout(),
        &rpn_tests::network("seed001").tensor_shapes().unwrap(),
        &PortOptions::default(),
    )
    .unwrap_err();
    std::fs::remove_file(&truncated).unwrap();
    assert!(matches!(err, PortError::Read { .. } | PortError::NotKeras { .. }), "{err}");
    assert!(err.to_string().contains("rpn-truncated"), "{err}");
}
