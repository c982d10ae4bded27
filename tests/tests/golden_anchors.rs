//! `rpn-anchors` against torchvision and Matterport.
//!
//! Fixture: `tests/fixtures/anchors.safetensors`, written by `tests/fixtures/gen_anchors.py`
//! (torchvision `AnchorGenerator`/`BoxCoder`/`box_iou`; Matterport `mrcnn.utils`).

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use rpn_anchors::{
    iou_matrix, AnchorConfig, Bbox, BoxCoder, FeatureShape, ImageSize, MATTERPORT_RPN_STD_DEV,
};
use rpn_tests::{assert_close, flat_xyxy, Fixture};

fn fixture() -> Fixture {
    Fixture::load("anchors.safetensors")
}

fn image(h: u32, w: u32) -> ImageSize {
    ImageSize::new(h, w).unwrap()
}

#[test]
fn matterport_pyramid_is_bit_identical() {
    let f = fixture();
    let expected = f.boxes_yxyx("mp/pyramid_256x384/anchors_yxyx");
    let ours = AnchorConfig::matterport_fpn().generate(image(256, 384)).unwrap();
    assert_eq!(ours.len(), expected.len());
    for (i, (a, e)) in ours.boxes().iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "anchor {i}");
    }
}

#[test]
fn matterport_1024_pyramid_count_and_samples() {
    let f = fixture();
    let ours = AnchorConfig::matterport_fpn().generate(image(1024, 1024)).unwrap();
    assert_eq!(ours.len() as i64, f.i64("mp/pyramid_1024/count").data[0]);
    assert_eq!(ours.len(), 261_888);
    let idx = f.indices("mp/pyramid_1024/sample_index");
    let expected = f.boxes_yxyx("mp/pyramid_1024/sample_anchors_yxyx");
    for (&i, e) in idx.iter().zip(&expected) {
        assert_eq!(&ours.boxes()[i], e, "anchor {i}");
    }
}

#[test]
fn torchvision_anchor_generator_is_bit_identical() {
    let f = fixture();
    let grid: Vec<FeatureShape> = f
        .i64("tv/anchors_96x160/grid")
        .data
        .chunks_exact(2)
        .map(|c| FeatureShape { height: c[0] as u32, width: c[1] as u32 })
        .collect();
    let config = AnchorConfig::torchvision_fpn();
    // Our ceil rule reproduces the grid a 32-divisible FPN backbone gives.
    assert_eq!(config.feature_shapes(image(96, 160)).unwrap(), grid);
    let ours = config.generate_for_shapes(image(96, 160), &grid).unwrap();
    assert_eq!(ours.boxes(), f.boxes_xyxy("tv/anchors_96x160/anchors_xyxy"));
}

#[test]
fn torchvision_800x1344_count_and_samples() {
    let f = fixture();
    let ours = AnchorConfig::torchvision_fpn().generate(image(800, 1344)).unwrap();
    assert_eq!(ours.len() as i64, f.i64("tv/anchors_800x1344/count").data[0]);
    let idx = f.indices("tv/anchors_800x1344/sample_index");
    let expected = f.boxes_xyxy("tv/anchors_800x1344/sample_anchors_xyxy");
    for (&i, e) in idx.iter().zip(&expected) {
        assert_eq!(&ours.boxes()[i], e, "anchor {i}");
    }
}

#[test]
fn matterport_compute_overlaps_is_bit_identical() {
    let f = fixture();
    let a = f.boxes_yxyx("mp/overlaps/boxes1_yxyx");
    let b = f.boxes_yxyx("mp/overlaps/boxes2_yxyx");
    let mut ours = vec![0.0; a.len() * b.len()];
    iou_matrix(&a, &b, &mut ours).unwrap();
    let expected = f.f32("mp/overlaps/iou");
    assert_eq!(expected.shape, [a.len(), b.len()]);
    for (i, (o, e)) in ours.iter().zip(&expected.data).enumerate() {
        assert_eq!(o.to_bits(), e.to_bits(), "entry {i}: {o} vs {e}");
    }
}

/// Proper boxes: bit-identical to `torchvision.ops.box_iou`. Empty boxes: ours is exactly 0 where
/// torchvision gives `NaN` (0/0) or a signed zero.
#[test]
fn torchvision_box_iou_matches_and_degenerate_boxes_give_zero() {
    let f = fixture();
    let a = f.boxes_xyxy("tv/box_iou/boxes1_xyxy");
    let b = f.boxes_xyxy("tv/box_iou/boxes2_xyxy");
    let mut ours = vec![0.0; a.len() * b.len()];
    iou_matrix(&a, &b, &mut ours).unwrap();
    let expected = f.f32("tv/box_iou/iou").data;
    let mut nan_pairs = 0;
    for (i, ra) in a.iter().enumerate() {
        for (j, rb) in b.iter().enumerate() {
            let (o, e) = (ours[i * b.len() + j], expected[i * b.len() + j]);
            if ra.is_empty() || rb.is_empty() {
                assert_eq!(o.to_bits(), 0.0f32.to_bits(), "({i}, {j}) empty pair");
                nan_pairs += usize::from(e.is_nan());
                assert!(e.is_nan() || e == 0.0, "torchvision gave {e} for empty pair ({i}, {j})");
            } else {
                assert_eq!(o.to_bits(), e.to_bits(), "({i}, {j}): {o} vs {e}");
            }
        }
    }
    assert!(nan_pairs >= 2, "fixture should contain pairs where torchvision returns NaN");
}

#[test]
fn matterport_box_refinement_over_std() {
    let f = fixture();
    let anchors = f.boxes_yxyx("mp/refine/anchors_yxyx");
    let gt = f.boxes_yxyx("mp/refine/gt_yxyx");
    let mut ours = vec![[0.0; 4]; anchors.len()];
    BoxCoder::matterport().encode_slice(&anchors, &gt, &mut ours).unwrap();
    let expected: Vec<f32> = f.rows4("mp/refine/deltas_over_std").concat();
    // numpy divides the f32 deltas by a float64 std; we divide by the f32 std: ≤ 2 ulp apart.
    assert_close("deltas", &ours.concat(), &expected, 1e-6, 1e-6);
}

#[test]
fn matterport_apply_box_deltas() {
    let f = fixture();
    let anchors = f.boxes_yxyx("mp/apply/anchors_yxyx");
    let raw = f.rows4("mp/apply/raw_deltas");
    let mut ours = vec![Bbox::default(); anchors.len()];
    BoxCoder::Matterport { std_dev: MATTERPORT_RPN_STD_DEV }
        .decode_slice(&anchors, &raw, &mut ours)
        .unwrap();
    let expected = f.boxes_yxyx("mp/apply/boxes_yxyx");
    // Same f32 expression; only `exp` may differ by an ulp between numpy and Rust's libm.
    assert_close("boxes", &flat_xyxy(&ours), &flat_xyxy(&expected), 1e-6, 1e-4);
}

#[test]
fn matterport_norm_boxes_both_ways() {
    let f = fixture();
    let hw = f.i64("mp/norm/image_hw").data;
    let image = image(hw[0] as u32, hw[1] as u32);
    let pixels = f.boxes_yxyx("mp/norm/pixels_yxyx");
    let normalized = f.rows4("mp/norm/normalized");
    let denorm: Vec<i64> = f.i64("mp/norm/denorm_int").data;
    for (i, (b, n)) in pixels.iter().zip(&normalized).enumerate() {
        assert_eq!(&b.to_matterport_normalized(image), n, "norm_boxes row {i}");
        let back = Bbox::from_matterport_normalized(*n, image);
        assert_close("round trip", &back.to_xyxy(), &b.to_xyxy(), 0.0, 1e-3);
        // Matterport's denorm_boxes rounds; rounding our exact inverse gives its integers.
        let rounded: Vec<i64> = back.to_yxyx().iter().map(|v| v.round() as i64).collect();
        assert_eq!(rounded, denorm[i * 4..i * 4 + 4], "denorm_boxes row {i}");
    }
}

#[test]
fn torchvision_box_coder_encode_and_decode() {
    let f = fixture();
    let anchors = f.boxes_xyxy("tv/coder/anchors_xyxy");
    let gt = f.boxes_xyxy("tv/coder/gt_xyxy");
    let raw = f.rows4("tv/coder/raw_deltas");
    for (name, coder) in
        [("w1", BoxCoder::torchvision_rpn()), ("w10", BoxCoder::torchvision_roi_heads())]
    {
        let mut encoded = vec![[0.0; 4]; anchors.len()];
        coder.encode_slice(&anchors, &gt, &mut encoded).unwrap();
        let expected = f.rows4(&format!("tv/coder/{name}/encoded")).concat();
        assert_close(&format!("{name} encode"), &encoded.concat(), &expected, 1e-6, 1e-6);

        let mut decoded = vec![Bbox::default(); anchors.len()];
        coder.decode_slice(&anchors, &raw, &mut decoded).unwrap();
        let expected = f.boxes_xyxy(&format!("tv/coder/{name}/decoded_xyxy"));
        // Rows 0..50 hit the ln(1000/16) clamp: boxes up to 62.5× their anchor.
        assert_close(
            &format!("{name} decode"),
            &flat_xyxy(&decoded),
            &flat_xyxy(&expected),
            1e-6,
            1e-3,
        );
    }
}
