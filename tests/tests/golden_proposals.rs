//! `rpn-proposals` against torchvision NMS, TensorFlow NMS and Matterport's `ProposalLayer`.
//!
//! Fixture: `tests/fixtures/proposals.safetensors`, written by `tests/fixtures/gen_proposals.py`.

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use rpn_anchors::{AnchorConfig, ImageSize};
use rpn_proposals::{batched_nms, generate_proposals, nms, Objectness, ProposalConfig};
use rpn_tests::{assert_close, Fixture};

const SETS: &[&str] =
    &["sparse6000", "clustered6000", "ties", "degenerate", "all_suppressed", "empty"];

fn fixture() -> Fixture {
    Fixture::load("proposals.safetensors")
}

fn indices(f: &Fixture, key: &str) -> Vec<usize> {
    f.indices(key)
}

#[test]
fn nms_keep_lists_equal_torchvision() {
    let f = fixture();
    for set in SETS {
        let boxes = f.boxes_xyxy(&format!("nms/{set}/boxes_xyxy"));
        let scores = f.f32(&format!("nms/{set}/scores")).data;
        let keep = nms(&boxes, &scores, 0.7, usize::MAX).unwrap();
        assert_eq!(keep, indices(&f, &format!("nms/{set}/tv_keep")), "{set}");
    }
}

#[test]
fn batched_nms_equals_torchvision() {
    let f = fixture();
    for set in SETS {
        let boxes = f.boxes_xyxy(&format!("nms/{set}/boxes_xyxy"));
        let scores = f.f32(&format!("nms/{set}/scores")).data;
        let groups: Vec<u32> =
            f.i64(&format!("nms/{set}/groups")).data.iter().map(|&g| g as u32).collect();
        let keep = batched_nms(&boxes, &scores, &groups, 0.7, usize::MAX).unwrap();
        assert_eq!(keep, indices(&f, &format!("nms/{set}/tv_batched_keep")), "{set}");
    }
}

/// TensorFlow stops at `max_output_size`; so does our cap, with the same list.
#[test]
fn capped_nms_equals_tensorflow() {
    let f = fixture();
    for set in SETS {
        let boxes = f.boxes_xyxy(&format!("nms/{set}/boxes_xyxy"));
        let scores = f.f32(&format!("nms/{set}/scores")).data;
        for cap in [1000, 2000] {
            let keep = nms(&boxes, &scores, 0.7, cap).unwrap();
            assert_eq!(
                keep,
                indices(&f, &format!("nms/{set}/tf_keep_cap{cap}")),
                "{set} cap {cap}"
            );
        }
    }
}

/// `lowbias32`, as `gen_proposals.py` computes it with numpy `uint32`.
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^ (x >> 16)
}

/// A float in [0, 1) with 24 significant bits: exact on both sides.
fn unit(i: usize, k: u32) -> f32 {
    (lowbias32((i as u32).wrapping_mul(8).wrapping_add(k)) >> 8) as f32 / (1u32 << 24) as f32
}

/// Matterport's ProposalLayer (top 6000, decode with std, clip to [0, 1], TF NMS 0.7, pad) run
/// by TensorFlow, against `ProposalConfig::matterport_*` on the same normalised anchors.
#[test]
fn matterport_proposal_layer_equals_the_tf_graph() {
    let f = fixture();
    for (case, side, config) in [
        ("mp1024_inference", 1024, ProposalConfig::matterport_inference()),
        ("mp128_training", 128, ProposalConfig::matterport_training()),
    ] {
        let image = ImageSize::new(side, side).unwrap();
        let anchors = AnchorConfig::matterport_fpn().generate_matterport_normalized(image).unwrap();
        let probs: Vec<f32> = (0..anchors.len()).map(|i| unit(i, 0)).collect();
        let deltas: Vec<[f32; 4]> = (0..anchors.len())
            .map(|i| std::array::from_fn(|k| (unit(i, k as u32 + 1) - 0.5) * 4.0))
            .collect();
        let proposals = generate_proposals(
            &config,
            &anchors,
            Objectness::Probabilities(&probs),
            &deltas,
            image,
        )
        .unwrap();

        let expected = f.rows4(&format!("proposals/{case}/rois_yxyx"));
        let ours: Vec<[f32; 4]> = proposals.padded_boxes().iter().map(|b| b.to_yxyx()).collect();
        assert_eq!(ours.len(), expected.len(), "{case}: padded row count");
        let valid = expected.iter().filter(|r| r.iter().any(|v| *v != 0.0)).count();
        assert_eq!(proposals.items.len(), valid, "{case}: proposals before padding");
        // Same boxes in the same order. `exp` in Rust's libm and TF's Eigen may differ by an ulp,
        // and `y1 = cy − h/2` near 0 turns that into ~1e-7 absolute (1e-4 px at 1024²).
        assert_close(case, &ours.concat(), &expected.concat(), 1e-6, 1e-6);
        // Scores come with the boxes, best first, and are the inputs' probabilities.
        for p in &proposals.items {
            assert_eq!(p.score, probs[p.anchor]);
            assert_eq!(anchors.level_of(p.anchor), Some(p.level));
        }
    }
}
