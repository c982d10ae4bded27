//! NMS in the RPN regime (6000 → 1000, 12000 → 2000, 5 levels × 1000) and Matterport's whole
//! proposal layer at 1024² (261,888 anchors → 1000 proposals).
//!
//! `cargo xtask bench proposals` first runs `benches/proposals_peers.py` (torchvision `nms` /
//! `batched_nms`, TF `non_max_suppression`, Matterport's `ProposalLayer` as a `tf.function`), which
//! writes inputs and peer outputs to `target/bench/proposals_io.safetensors`; this bench checks our
//! outputs equal theirs before timing. Alone (`cargo bench -p rpn-proposals`) it times its own inputs.

// Benches panic on broken inputs or unequal outputs: nothing should be timed then.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use rpn_anchors::{AnchorConfig, Bbox, ImageSize};
use rpn_proposals::{
    generate_proposals_with, nms_into, NmsScratch, Objectness, ProposalConfig, ProposalScratch,
};
use safetensors::SafeTensors;

fn io_path() -> PathBuf {
    let dir = std::env::var_os("RPN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench"));
    dir.join("proposals_io.safetensors")
}

fn f32s(t: &SafeTensors<'_>, key: &str) -> Vec<f32> {
    let view = t.tensor(key).unwrap_or_else(|e| panic!("bench io: no `{key}`: {e}"));
    view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn i64s(t: &SafeTensors<'_>, key: &str) -> Vec<usize> {
    let view = t.tensor(key).unwrap_or_else(|e| panic!("bench io: no `{key}`: {e}"));
    view.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as usize)
        .collect()
}

fn boxes(v: &[f32], yx: bool) -> Vec<Bbox> {
    v.chunks_exact(4)
        .map(|r| {
            let r = [r[0], r[1], r[2], r[3]];
            if yx {
                Bbox::from_yxyx(r)
            } else {
                Bbox::from_xyxy(r)
            }
        })
        .collect()
}

/// Deterministic stand-ins for the peer inputs (boxes scattered over 1024², scores in [0, 1)).
fn synthetic(n: usize, seed: u32) -> (Vec<Bbox>, Vec<f32>) {
    let h = |i: usize, k: u32| {
        let x =
            (i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(k.wrapping_add(0x9E37_79B9));
        (x.wrapping_mul(0x846C_A68B) >> 8) as f32 / (1u32 << 24) as f32
    };
    let b = (0..n)
        .map(|i| {
            let (cx, cy, w, h2) = (
                h(i, 1) * 1024.0,
                h(i, 2) * 1024.0,
                16.0 + h(i, 3) * 200.0,
                16.0 + h(i, 4) * 200.0,
            );
            Bbox::from_center_size(cx, cy, w, h2)
        })
        .collect();
    (b, (0..n).map(|i| h(i, 5)).collect())
}

fn benches(c: &mut Criterion) {
    let bytes = std::fs::read(io_path()).ok();
    let io =
        bytes.as_deref().map(|b| SafeTensors::deserialize(b).expect("bench io is not safetensors"));
    if io.is_none() {
        eprintln!(
            "no peer io at {}: timing synthetic inputs (run `cargo xtask bench proposals`)",
            io_path().display()
        );
    }
    let mut g = c.benchmark_group("proposals");
    let mut scratch = NmsScratch::default();
    let mut keep = Vec::new();

    for (set, cap, seed) in [
        ("sparse6000", 1000, 1),
        ("clustered6000", 1000, 2),
        ("sparse12000", 2000, 3),
        ("clustered12000", 2000, 4),
    ] {
        let (b, s) = match &io {
            Some(t) => {
                let b = boxes(&f32s(t, &format!("{set}/boxes_xyxy")), false);
                let s = f32s(t, &format!("{set}/scores"));
                nms_into(&b, &s, None, 0.7, cap, &mut scratch, &mut keep).expect("valid input");
                assert_eq!(
                    keep,
                    i64s(t, &format!("{set}/keep")),
                    "{set}: keep list differs from torchvision"
                );
                eprintln!("checked: {set} keep list equals torchvision's ({} boxes)", keep.len());
                (b, s)
            }
            None => synthetic(if set.ends_with("12000") { 12_000 } else { 6000 }, seed),
        };
        g.bench_function(format!("nms_{set}_cap{cap}"), |bench| {
            bench.iter(|| {
                nms_into(black_box(&b), black_box(&s), None, 0.7, cap, &mut scratch, &mut keep)
            })
        });
    }

    let (b, s, groups) = match &io {
        Some(t) => {
            let b = boxes(&f32s(t, "levels5x1000/boxes_xyxy"), false);
            let s = f32s(t, "levels5x1000/scores");
            let groups: Vec<u32> =
                i64s(t, "levels5x1000/groups").into_iter().map(|g| g as u32).collect();
            nms_into(&b, &s, Some(&groups), 0.7, 1000, &mut scratch, &mut keep)
                .expect("valid input");
            assert_eq!(
                keep,
                i64s(t, "levels5x1000/keep"),
                "batched keep list differs from torchvision"
            );
            eprintln!("checked: per-level keep list equals torchvision's batched_nms");
            (b, s, groups)
        }
        None => {
            let (b, s) = synthetic(5000, 5);
            (b, s, (0..5000).map(|i| i / 1000).collect())
        }
    };
    g.bench_function("batched_nms_5x1000_cap1000", |bench| {
        bench.iter(|| {
            nms_into(
                black_box(&b),
                black_box(&s),
                Some(&groups),
                0.7,
                1000,
                &mut scratch,
                &mut keep,
            )
        })
    });

    let image = ImageSize::new(1024, 1024).expect("static size");
    let anchors =
        AnchorConfig::matterport_fpn().generate_matterport_normalized(image).expect("preset");
    let (probs, deltas): (Vec<f32>, Vec<[f32; 4]>) = match &io {
        Some(t) => {
            let d = f32s(t, "layer/deltas");
            (
                f32s(t, "layer/fg_probs"),
                d.chunks_exact(4).map(|r| [r[0], r[1], r[2], r[3]]).collect(),
            )
        }
        None => {
            let (_, p) = synthetic(anchors.len(), 6);
            let (_, d) = synthetic(anchors.len() * 4, 7);
            (
                p,
                d.chunks_exact(4)
                    .map(|r| [r[0] - 0.5, r[1] - 0.5, r[2] - 0.5, r[3] - 0.5])
                    .collect(),
            )
        }
    };
    let config = ProposalConfig::matterport_inference();
    let mut s = ProposalScratch::default();
    if let Some(t) = &io {
        let ours = generate_proposals_with(
            &config,
            &anchors,
            Objectness::Probabilities(&probs),
            &deltas,
            image,
            &mut s,
        )
        .expect("valid input");
        let expected = boxes(&f32s(t, "layer/rois_yxyx"), true);
        let got = ours.padded_boxes();
        assert_eq!(got.len(), expected.len());
        for (i, (a, e)) in got.iter().zip(&expected).enumerate() {
            let close = a.to_xyxy().iter().zip(e.to_xyxy()).all(|(x, y)| (x - y).abs() <= 1e-6);
            assert!(close, "proposal {i}: {a:?} vs Matterport's {e:?}");
        }
        eprintln!("checked: Matterport proposal layer rois equal ({} proposals)", ours.items.len());
    }
    g.bench_function("matterport_proposal_layer_1024/matterport", |bench| {
        bench.iter(|| {
            generate_proposals_with(
                &config,
                &anchors,
                Objectness::Probabilities(black_box(&probs)),
                &deltas,
                image,
                &mut s,
            )
        })
    });
    g.finish();
}

criterion_group!(proposals, benches);
criterion_main!(proposals);
