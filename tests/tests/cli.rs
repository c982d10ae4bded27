//! The `rpn` command line (`rpn_cli::run`, exactly what the binary runs) end to end:
//! port a real Keras file, run it on an `.npy`, inspect files, and fail cleanly.
//!
//! Fixtures: `tests/fixtures/keras/seed001.h5` (`gen_keras.py`) and seed 001's Keras outputs in
//! `tests/fixtures/model.safetensors` (`gen_model.py`), for the same hashed weights and input.

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use rpn_cli::{run, CliError};
use rpn_tests::{fixtures_dir, Fixture};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rpn-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rpn(args: &[&str]) -> Result<String, CliError> {
    run(std::iter::once("rpn").chain(args.iter().copied()))
}

#[test]
fn port_then_forward_reproduces_keras() {
    let dir = scratch_dir("forward");
    let h5 = fixtures_dir().join("keras/seed001.h5");
    let weights = dir.join("seed001.safetensors");
    let report = rpn(&[
        "port-keras",
        h5.to_str().unwrap(),
        "--arch",
        "seed001",
        "-o",
        weights.to_str().unwrap(),
    ])
    .unwrap();
    assert!(report.starts_with("ported 54 tensors (754486 values) of seed001"), "{report}");

    // The input gen_model.py fed Keras: hashed((2, 48, 80, 3), salt 78, scale 2).
    let input = dir.join("x.npy");
    rpn_tests::hashed::tensor(&[2, 48, 80, 3], 78, 2.0).write_npy(&input).unwrap();
    let out = dir.join("out.npz");
    let report = rpn(&[
        "forward",
        "--arch",
        "seed001",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert!(report.contains("rpn_class_logits [2, 8640, 2]"), "{report}");

    let npz: std::collections::HashMap<String, Tensor> =
        Tensor::read_npz(&out).unwrap().into_iter().collect();
    let keras = Fixture::load("model.safetensors");
    for (ours, theirs) in [
        ("rpn_class_logits", "seed001/logits"),
        ("rpn_class", "seed001/probs"),
        ("rpn_bbox", "seed001/deltas"),
    ] {
        let a = npz[ours].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = keras.f32(theirs).data;
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "{ours}: {worst} vs scale {scale}");
    }

    let listing = rpn(&["inspect", weights.to_str().unwrap()]).unwrap();
    assert!(listing.ends_with("54 tensors, 754486 values"), "{listing}");
    assert!(listing.contains("backbone.stem_conv.weight  F32  [64, 3, 3, 3]"), "{listing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failures_are_one_message_and_leave_no_output() {
    let dir = scratch_dir("errors");
    let h5 = fixtures_dir().join("keras/seed001.h5");
    let out = dir.join("out.safetensors");
    let out_s = out.to_str().unwrap();

    let err =
        rpn(&["port-keras", h5.to_str().unwrap(), "--arch", "seed9", "-o", out_s]).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown architecture `seed9` (expected one of: seed000, seed001, seed002)"),
        "{err}"
    );

    let err =
        rpn(&["port-keras", h5.to_str().unwrap(), "--arch", "seed000", "-o", out_s]).unwrap_err();
    let first_problem = err.to_string().lines().nth(1).unwrap_or_default().trim().to_owned();
    assert!(first_problem.starts_with("the file has 11 conv layers, the model 46"), "{err}");

    let truncated = dir.join("truncated.h5");
    let bytes = std::fs::read(&h5).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = rpn(&["port-keras", truncated.to_str().unwrap(), "--arch", "seed001", "-o", out_s])
        .unwrap_err();
    assert!(err.to_string().contains("truncated.h5"), "{err}");
    assert!(!out.exists(), "a failed port must not leave an output file");

    // Weights of the wrong architecture are refused before running, naming tensor and shapes.
    let weights = dir.join("seed001.safetensors");
    rpn(&[
        "port-keras",
        h5.to_str().unwrap(),
        "--arch",
        "seed001",
        "-o",
        weights.to_str().unwrap(),
    ])
    .unwrap();
    let npy = dir.join("x.npy");
    Tensor::zeros((1, 64, 64, 3), candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .write_npy(&npy)
        .unwrap();
    let err = rpn(&[
        "forward",
        "--arch",
        "seed000",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        npy.to_str().unwrap(),
        "-o",
        dir.join("o.npz").to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("has no tensor `backbone.stage0.block2"), "{err}");
    assert!(!dir.join("o.npz").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
