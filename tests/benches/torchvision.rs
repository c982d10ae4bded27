//! torchvision's Faster R-CNN RPN on one 800×1216 image (CPU, batch 1): transform + ResNet-50-FPN
//! + RPN head + proposals, ours against torchvision itself on the same weights.
//!
//! `cargo xtask bench torchvision` first runs `tests/benches/torchvision_peers.py`, which times
//! torchvision on 2 threads, saves its (seeded random) state dict and its proposals; this bench
//! ports that `.pth` with `rpn_torch::port`, checks our proposals against torchvision's (the same
//! boxes at the same ranks, ≥ 99 %), then times `Proposer::propose` on the image.

// Benches panic on broken inputs or unequal outputs: nothing should be timed then.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use rpn::{Architecture, Proposer, ProposerOptions};

fn bench_dir() -> PathBuf {
    std::env::var_os("RPN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"))
}

fn benches(c: &mut Criterion) {
    let dir = bench_dir();
    let io_path = dir.join("torchvision_io.safetensors");
    let Ok(bytes) = std::fs::read(&io_path) else {
        panic!("no peer io at {}: run `cargo xtask bench torchvision`", io_path.display())
    };
    let io = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    let arch: Architecture = "torchvision-resnet50-fpn".parse().unwrap();
    let weights = rpn_torch::port(&dir.join("torchvision_r50.pth"), &arch.network).unwrap();
    let model =
        arch.network.build_from(weights.tensors.into_iter().collect(), &Device::Cpu).unwrap();
    let proposer = Proposer::from_model(&arch, model, None, ProposerOptions::default()).unwrap();

    let (h, w) = (io["image"].dim(0).unwrap(), io["image"].dim(1).unwrap());
    let pixels: Vec<u8> = io["image"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&v| v as u8)
        .collect();
    let image = image::DynamicImage::ImageRgb8(
        image::RgbImage::from_raw(w as u32, h as u32, pixels).unwrap(),
    );
    let ours = proposer.propose(&image).unwrap();
    let theirs: Vec<[f32; 4]> = io["boxes"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect();
    assert_eq!(ours.proposals.len(), theirs.len(), "proposal count");
    let same = ours
        .proposals
        .iter()
        .zip(&theirs)
        .filter(|(p, t)| p.bbox.to_xyxy().iter().zip(t.iter()).all(|(a, b)| (a - b).abs() <= 0.05))
        .count();
    assert!(same * 100 >= 99 * theirs.len(), "only {same} of {} proposals equal", theirs.len());
    eprintln!("checked: {same}/{} proposals equal torchvision's at the same rank", theirs.len());

    let mut g = c.benchmark_group("torchvision");
    g.sample_size(10);
    g.bench_function("rpn_800x1216", |b| b.iter(|| proposer.propose(&image).unwrap()));
    g.finish();
    let threads = candle_core::utils::get_num_threads();
    rpn_tests::record_network_row("torchvision", "rpn_800x1216", None, threads);
}

criterion_group!(torchvision, benches);
criterion_main!(torchvision);
