//! Matterport's RPN at 1024² on CPU (batch 1): ResNet-50-FPN + RPN head + proposal layer,
//! ours against Keras/TF (the same graph) and torchvision's R50-FPN RPN (a timing reference).
//!
//! `cargo xtask bench matterport` first runs `tests/benches/matterport_peers.py`, which times the
//! peers on 2 threads and writes the Keras graph's outputs for a hashed input; this bench builds
//! our model with the same hashed weights, checks its RPN outputs (within 1e-4 of their scale)
//! and proposals (≥ 99 % equal in order) against Keras', then times the whole pipeline and
//! prints the convolutions' GFLOP/s. A second row times the ResNet-50 body alone (C2…C5, C5
//! checked against Keras') against Keras/TF's `resnet_graph` and torchvision's `resnet50`.

// Benches panic on broken inputs or unequal outputs: nothing should be timed then.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use rpn::{Proposer, ProposerOptions};
use rpn_anchors::Bbox;
use rpn_model::{MatterportConfig, MatterportRpn, Model};
use rpn_tests::hashed;

const SIDE: usize = 1024;

fn io_path() -> PathBuf {
    let dir = std::env::var_os("RPN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"));
    dir.join("matterport_io.safetensors")
}

/// Multiply-adds × 2 of every convolution at `SIDE²`: each layer's output resolution follows
/// from its name (`conv1` stride 2, `res{s}…` stride 2^s, `fpn_…{l}` stride 2^l, the RPN head on
/// all five levels).
fn conv_flops(config: &MatterportConfig) -> f64 {
    conv_flops_where(config, |_| true)
}

/// [`conv_flops`] of the layers whose names `keep` accepts.
fn conv_flops_where(config: &MatterportConfig, keep: impl Fn(&str) -> bool) -> f64 {
    let shapes = rpn_tests::network("matterport-resnet50").tensor_shapes().unwrap();
    let (convs, _) = MatterportRpn::keras_layer_names(config);
    let area = |stride: usize| ((SIDE / stride) * (SIDE / stride)) as f64;
    convs
        .iter()
        .filter(|name| keep(name))
        .map(|name| {
            let w = &shapes[&format!("{name}.weight")];
            let per_pixel = 2.0 * w.iter().product::<usize>() as f64;
            let pixels = if name == "conv1" {
                area(2)
            } else if let Some(stage) = name.strip_prefix("res") {
                area(1 << (stage.as_bytes()[0] - b'0'))
            } else if name.starts_with("fpn_") {
                area(1 << (name.as_bytes()[name.len() - 1] - b'0'))
            } else {
                (2..=6).map(|l| area(1 << l)).sum()
            };
            per_pixel * pixels
        })
        .sum()
}

/// Panics unless `ours` is within 1e-4 of the scale of Keras' `theirs`, value by value.
fn check_close(name: &str, ours: &candle_core::Tensor, theirs: &candle_core::Tensor) {
    let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{name}: sizes differ");
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{name}: ours differ from Keras by {worst} (scale {scale})");
}

fn benches(c: &mut Criterion) {
    let Ok(bytes) = std::fs::read(io_path()) else {
        panic!("no peer io at {}: run `cargo xtask bench matterport`", io_path().display())
    };
    let io = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    let config = MatterportConfig::resnet50();
    let varmap = hashed::matterport_resnet50();
    let model = MatterportRpn::new(&config, hashed::frozen(&varmap)).unwrap();
    let image = io["image"].clone();
    let outputs = model.forward_nhwc(&image).unwrap();
    // The body row's model runs only after the full row is timed and its memory recorded.
    let body_model = model.clone();
    let arch = "matterport-resnet50".parse().unwrap();
    let proposer =
        Proposer::from_model(&arch, Model::Matterport(model), None, ProposerOptions::default())
            .unwrap();

    for (name, ours) in [("rpn_class_logits", &outputs.logits), ("rpn_bbox", &outputs.deltas)] {
        check_close(name, ours, &io[name]);
    }
    let theirs: Vec<Bbox> = io["rpn_rois"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .chunks_exact(4)
        .map(|t| Bbox::from_yxyx([t[0], t[1], t[2], t[3]]))
        .collect();
    let run = proposer.propose_molded(&image).unwrap();
    let ours: Vec<Bbox> = run[0].rois.iter().map(|b| Bbox::from_yxyx(b.to_yxyx())).collect();
    let in_order = ours.iter().zip(&theirs).filter(|(a, b)| a.iou(b) >= 0.99).count();
    // 261,888 anchors with near-tied scores: a swap of two neighbours shifts every later row of
    // an index-by-index comparison, so the set is what must agree; the order is reported.
    let in_set = ours.iter().filter(|a| theirs.iter().any(|b| a.iou(b) >= 0.99)).count();
    assert!(in_set >= 990, "only {in_set} of 1000 proposals are among Matterport's");
    eprintln!(
        "checked: RPN outputs equal Keras'; proposals: {in_set}/1000 among Matterport's, \
         {in_order}/1000 at the same rank (1024²)"
    );

    let flops = conv_flops(&config);
    let start = std::time::Instant::now();
    let _ = proposer.propose_molded(&image).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "convolutions: {:.1} GFLOP per image; one run {:.0} ms = {:.1} GFLOP/s",
        flops / 1e9,
        secs * 1e3,
        flops / 1e9 / secs
    );

    let mut g = c.benchmark_group("matterport");
    g.sample_size(10);
    g.bench_function("resnet50_fpn_rpn_proposals_1024", |b| {
        b.iter(|| proposer.propose_molded(&image).unwrap())
    });
    let threads = candle_core::utils::get_num_threads();
    // Peak RSS so far: this pipeline (and the peer's io), before the body row adds its plan.
    rpn_tests::record_network_row(
        "matterport",
        "resnet50_fpn_rpn_proposals_1024",
        Some(flops / 1e9),
        threads,
    );
    let c5 =
        body_model.backbone_nhwc(&image).unwrap().pop().unwrap().permute((0, 2, 3, 1)).unwrap();
    check_close("C5", &c5, &io["c5"]);
    eprintln!("checked: C5 equals Keras' (1024²)");
    g.bench_function("resnet50_body_1024", |b| {
        b.iter(|| body_model.backbone_nhwc(&image).unwrap())
    });
    g.finish();
    let body_flops = conv_flops_where(&config, |name| name == "conv1" || name.starts_with("res"));
    rpn_tests::record_network_row(
        "matterport",
        "resnet50_body_1024",
        Some(body_flops / 1e9),
        threads,
    );
}

criterion_group!(matterport, benches);
criterion_main!(matterport);
