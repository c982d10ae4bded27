//! Seed 000's forward pass on CPU (64×64, batch 8): ours against Keras/TF and PyTorch.
//!
//! `cargo xtask bench seed_forward` first runs `tests/benches/seed_forward_peers.py`, which builds
//! the notebook's model in tf-keras with hashed weights (and PyTorch with the same weights), times
//! both on 2 threads and writes Keras' outputs; this bench builds our model with the same hashed
//! weights, checks its outputs equal Keras' within 1e-4 of their scale, then times it.

// Benches panic on broken inputs or unequal outputs: nothing should be timed then.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use rpn_model::Model;
use rpn_tests::hashed;

fn io_path() -> PathBuf {
    let dir = std::env::var_os("RPN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"));
    dir.join("seed_forward_io.safetensors")
}

fn benches(c: &mut Criterion) {
    let varmap = VarMap::new();
    let arch = rpn_tests::network("seed000");
    // Built once to create the variables, which the hash then fills.
    arch.build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    let layout = arch.keras_layout();
    hashed::set_weights(&varmap, &layout.convs, &layout.bns);
    // As a user runs it: weights loaded as plain tensors, not trainable variables.
    let Model::SeedRpn(model) = arch.build(hashed::frozen(&varmap)).unwrap() else {
        unreachable!("seed000 is an RPN")
    };
    let images = hashed::tensor(&[8, 64, 64, 3], 90, 2.0);

    if let Ok(bytes) = std::fs::read(io_path()) {
        let keras =
            safetensors::SafeTensors::deserialize(&bytes).expect("bench io is not safetensors");
        let out = model.forward_nhwc(&images).unwrap();
        for (name, ours) in [("logits", &out.logits), ("deltas", &out.deltas)] {
            let theirs: Vec<f32> = keras
                .tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-4 * scale,
                "{name}: ours differ from Keras by {worst} (scale {scale})"
            );
        }
        eprintln!("checked: seed000 outputs equal Keras' (batch 8, 64x64)");
    } else {
        eprintln!("no peer io at {}: timing without the equality check", io_path().display());
    }

    let mut g = c.benchmark_group("seed_forward");
    g.sample_size(10);
    g.bench_function("seed000_forward_64x64_b8", |b| {
        b.iter(|| model.forward_nhwc(&images).unwrap())
    });
    g.finish();
    let threads = candle_core::utils::get_num_threads();
    let gflop = seed_conv_flops(&arch, 64, 8) / 1e9;
    rpn_tests::record_network_row("seed_forward", "seed000_forward_64x64_b8", Some(gflop), threads);
}

/// Multiply-adds × 2 of seed 000's convolutions on `batch` images of `side²`: the stem runs at
/// full resolution, stage `s` at `side / 2^(s+1)` (its first block's 1×1 convs have stride 2),
/// the head at the last stage's resolution.
fn seed_conv_flops(arch: &rpn_model::Network, side: usize, batch: usize) -> f64 {
    let shapes = arch.tensor_shapes().unwrap();
    let stages = match arch {
        rpn_model::Network::SeedRpn { backbone, .. } => backbone.blocks.len(),
        _ => unreachable!("seed000 is a seed RPN"),
    };
    shapes
        .iter()
        .filter(|(name, dims)| dims.len() == 4 && name.ends_with("weight"))
        .map(|(name, dims)| {
            let side_out = if name.starts_with("backbone.stem") {
                side
            } else if let Some(rest) = name.strip_prefix("backbone.stage") {
                side >> (rest.as_bytes()[0] - b'0' + 1)
            } else {
                side >> stages
            };
            2.0 * (dims.iter().product::<usize>() * side_out * side_out * batch) as f64
        })
        .sum()
}

criterion_group!(seed_forward, benches);
criterion_main!(seed_forward);
