//! One seed 001 training step on CPU (64×64, batch 20): ours against Keras/TF and PyTorch.
//!
//! `cargo xtask bench train_step` first runs `tests/benches/train_step_peers.py`, which builds the
//! notebook's model in tf-keras with hashed weights and BN statistics (and PyTorch with the same
//! weights), runs two steps of seed 001's recipe on hashed images and targets, and times a step on
//! 2 threads. This bench builds our model with the same hashed weights, runs the same two steps
//! (BatchNorm in training mode, seed 001's losses, Keras' SGD with momentum), checks both steps'
//! losses equal Keras' (relative 1e-4), then times a step, with freed memory kept in the process
//! as the `rpn` CLI keeps it ([`rpn::retain_freed_memory`]).

// Benches panic on broken inputs or unequal outputs: nothing should be timed then.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use rpn::{SgdMomentum, TrainConfig};
use rpn_loss::matterport_losses;
use rpn_model::{Model, SeedRpn};
use rpn_tests::hashed;

fn io_path() -> PathBuf {
    let dir = std::env::var_os("RPN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"));
    dir.join("train_step_io.safetensors")
}

struct Step {
    model: SeedRpn,
    optimizer: SgdMomentum,
    images: Tensor,
    rpn_match: Tensor,
    rpn_bbox: Tensor,
}

impl Step {
    fn run(&mut self) -> [f32; 2] {
        let out = self.model.forward_nhwc_t(&self.images, true).unwrap();
        let losses =
            matterport_losses(&self.rpn_match, &out.logits, &self.rpn_bbox, &out.deltas).unwrap();
        let values = [
            losses.objectness.to_vec0::<f32>().unwrap(),
            losses.box_regression.to_vec0::<f32>().unwrap(),
        ];
        self.optimizer.backward_step(&losses.total().unwrap(), 5e-4).unwrap();
        values
    }
}

fn benches(c: &mut Criterion) {
    // As the `rpn` CLI does: keep freed memory for the next step (TF and PyTorch pool theirs).
    rpn::retain_freed_memory();
    let Ok(bytes) = std::fs::read(io_path()) else {
        panic!("no peer io at {}: run `cargo xtask bench train_step`", io_path().display())
    };
    let io = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    let varmap = VarMap::new();
    let arch = rpn_tests::network("seed001");
    let Model::SeedRpn(model) =
        arch.build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap()
    else {
        unreachable!("seed001 is an RPN")
    };
    let layout = arch.keras_layout();
    hashed::set_weights(&varmap, &layout.convs, &layout.bns);
    let trainable: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut step = Step {
        model,
        optimizer: SgdMomentum::new(trainable, TrainConfig::default()).unwrap(),
        images: io["images"].clone(),
        rpn_match: io["rpn_match"].to_dtype(candle_core::DType::I64).unwrap(),
        rpn_bbox: io["rpn_bbox"].clone(),
    };
    let keras: Vec<Vec<f32>> = io["keras_losses"].to_vec2().unwrap();
    for (i, expected) in keras.iter().enumerate() {
        let ours = step.run();
        for (name, (a, e)) in ["objectness", "box"].iter().zip(ours.iter().zip(expected)) {
            assert!(
                (a - e).abs() <= 1e-4 * e.abs().max(1e-3),
                "step {}: {name} {a} vs Keras {e}",
                i + 1
            );
        }
    }
    eprintln!("checked: seed001 losses of two training steps equal Keras' (batch 20, 64x64)");

    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    g.bench_function("seed001_train_step_64x64_b20", |b| b.iter(|| step.run()));
    g.finish();
}

criterion_group!(train_step, benches);
criterion_main!(train_step);
