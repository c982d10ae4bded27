//! Properties of NMS and of the proposal stage over arbitrary inputs.

use proptest::prelude::*;
use rpn_anchors::{AnchorConfig, Bbox, ImageSize};

use crate::*;

fn any_box() -> impl Strategy<Value = Bbox> {
    let coord = prop_oneof![10 => 0.0f32..100.0, 1 => Just(f32::NAN), 1 => Just(f32::INFINITY), 1 => Just(50.0f32)];
    (coord.clone(), coord.clone(), 0.0f32..60.0, 0.0f32..60.0)
        .prop_map(|(x, y, w, h)| Bbox::new(x, y, x + w, y + h))
}

fn any_score() -> impl Strategy<Value = f32> {
    prop_oneof![10 => 0.0f32..1.0, 1 => Just(0.5f32), 1 => Just(f32::NAN), 1 => Just(f32::NEG_INFINITY)]
}

/// Greedy NMS written the textbook way (suppress forward, O(N²)): the reference.
fn reference_nms(boxes: &[Bbox], scores: &[f32], t: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a], scores[b]);
        sa.is_nan().cmp(&sb.is_nan()).then(sb.total_cmp(&sa)).then(a.cmp(&b))
    });
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[k + 1..] {
            if boxes[i].iou(&boxes[j]) > t {
                suppressed[j] = true;
            }
        }
    }
    keep
}

proptest! {
    #[test]
    fn nms_equals_the_textbook_algorithm(items in prop::collection::vec((any_box(), any_score()), 0..60), t in 0.0f32..1.0) {
        let (boxes, scores): (Vec<Bbox>, Vec<f32>) = items.into_iter().unzip();
        let keep = nms(&boxes, &scores, t, usize::MAX).unwrap();
        prop_assert_eq!(&keep, &reference_nms(&boxes, &scores, t));
        // Subsequence in score order, no kept pair above t, every dropped box overlaps a kept one.
        for w in keep.windows(2) {
            prop_assert!(!(scores[w[1]] > scores[w[0]]));
        }
        for (a, &i) in keep.iter().enumerate() {
            for &j in &keep[a + 1..] {
                prop_assert!(!(boxes[i].iou(&boxes[j]) > t));
            }
        }
        for i in (0..boxes.len()).filter(|i| !keep.contains(i)) {
            prop_assert!(keep.iter().any(|&k| boxes[k].iou(&boxes[i]) > t));
        }
        // The cap keeps a prefix.
        let capped = nms(&boxes, &scores, t, 3).unwrap();
        prop_assert_eq!(&capped[..], &keep[..keep.len().min(3)]);
    }

    #[test]
    fn batched_nms_is_the_merge_of_per_group_nms(items in prop::collection::vec((any_box(), 0.0f32..1.0, 0u32..3), 0..50), t in 0.0f32..1.0) {
        let boxes: Vec<Bbox> = items.iter().map(|x| x.0).collect();
        let scores: Vec<f32> = items.iter().map(|x| x.1).collect();
        let groups: Vec<u32> = items.iter().map(|x| x.2).collect();
        let keep = batched_nms(&boxes, &scores, &groups, t, usize::MAX).unwrap();
        let mut expected = Vec::new();
        for g in 0..3 {
            let idx: Vec<usize> = (0..boxes.len()).filter(|&i| groups[i] == g).collect();
            let sub: Vec<Bbox> = idx.iter().map(|&i| boxes[i]).collect();
            let sub_scores: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
            expected.extend(reference_nms(&sub, &sub_scores, t).into_iter().map(|k| idx[k]));
        }
        expected.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        prop_assert_eq!(keep, expected);
    }

    /// Arbitrary configuration values (NaN IoU, zero counts, NaN thresholds, small padding):
    /// a typed error or proposals that respect the configuration, never a panic.
    #[test]
    fn any_proposal_config_is_an_answer_or_an_error(
        nms_iou in prop_oneof![0.0f32..1.0, Just(f32::NAN), Just(-1.0f32), Just(2.0f32)],
        post in 0usize..50,
        pad in prop::option::of(0usize..60),
        threshold in prop::option::of(prop_oneof![0.0f32..1.0, Just(f32::NAN)]),
        seed in any::<u32>(),
    ) {
        let image = ImageSize::new(64, 64).unwrap();
        let anchors = AnchorConfig::seed000().generate(image).unwrap();
        let h = |i: usize, k: u32| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(k)) >> 8) as f32 / (1 << 24) as f32;
        let logits: Vec<f32> = (0..anchors.len()).map(|i| h(i, 1) * 10.0 - 5.0).collect();
        let deltas: Vec<[f32; 4]> = (0..anchors.len()).map(|i| [h(i, 2) - 0.5, h(i, 3) - 0.5, h(i, 4) - 0.5, h(i, 5) - 0.5]).collect();
        let config = ProposalConfig { nms_iou, post_nms_top_k: post, pad_to: pad, score_threshold: threshold, ..ProposalConfig::torchvision_test() };
        if let Ok(p) = generate_proposals(&config, &anchors, Objectness::Logits(&logits), &deltas, image) {
            prop_assert!(p.items.len() <= post);
            prop_assert!(p.items.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn proposals_never_panic_and_are_sorted(seed in any::<u32>(), nan_every in 2usize..50) {
        let image = ImageSize::new(64, 64).unwrap();
        let anchors = AnchorConfig::seed000().generate(image).unwrap();
        let h = |i: usize, k: u32| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(k)) >> 8) as f32 / (1 << 24) as f32;
        let logits: Vec<f32> = (0..anchors.len()).map(|i| if i % nan_every == 0 { f32::NAN } else { h(i, 1) * 10.0 - 5.0 }).collect();
        let deltas: Vec<[f32; 4]> = (0..anchors.len()).map(|i| if i % (nan_every + 1) == 0 { [0.0, 0.0, 1e30, 0.0] } else { [h(i, 2) - 0.5, h(i, 3) - 0.5, h(i, 4) - 0.5, h(i, 5) - 0.5] }).collect();
        for config in [ProposalConfig::torchvision_test(), ProposalConfig::detectron2_test(), ProposalConfig { clip: Clip::Image, ..ProposalConfig::matterport_inference() }] {
            let p = generate_proposals(&config, &anchors, Objectness::Logits(&logits), &deltas, image).unwrap();
            prop_assert!(p.items.windows(2).all(|w| w[0].score >= w[1].score));
            prop_assert!(p.items.iter().all(|x| x.bbox.x1.is_finite() && x.bbox.x2 <= 64.0 && x.bbox.y1 >= 0.0));
            prop_assert!(p.items.len() <= config.post_nms_top_k);
        }
        let strict = ProposalConfig { non_finite: NonFinite::Error, ..ProposalConfig::torchvision_test() };
        let is_nonfinite_error = matches!(
            generate_proposals(&strict, &anchors, Objectness::Logits(&logits), &deltas, image),
            Err(ProposalError::NonFinite { .. })
        );
        prop_assert!(is_nonfinite_error);
    }
}

#[test]
fn length_mismatch_and_bad_config_are_errors() {
    let image = ImageSize::new(64, 64).unwrap();
    let anchors = AnchorConfig::seed000().generate(image).unwrap();
    let err = generate_proposals(
        &ProposalConfig::torchvision_test(),
        &anchors,
        Objectness::Logits(&[0.0; 3]),
        &[],
        image,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "`objectness` has length 3, expected 576");
    let config = ProposalConfig { pad_to: Some(10), ..ProposalConfig::matterport_inference() };
    let err = generate_proposals(
        &config,
        &anchors,
        Objectness::Logits(&[0.0; 576]),
        &[[0.0; 4]; 576],
        image,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "proposal config: `pad_to` must be ≥ post_nms_top_k, got 10");
}

#[test]
fn padding_gives_matterports_fixed_rows() {
    let image = ImageSize::new(64, 64).unwrap();
    let anchors = AnchorConfig::seed000().generate(image).unwrap();
    let probs: Vec<f32> = (0..anchors.len()).map(|i| i as f32 / 1000.0).collect();
    let config = ProposalConfig { clip: Clip::Image, ..ProposalConfig::matterport_inference() };
    let p = generate_proposals(
        &config,
        &anchors,
        Objectness::Probabilities(&probs),
        &[[0.0; 4]; 576],
        image,
    )
    .unwrap();
    assert!(p.items.len() < 1000);
    let boxes = p.padded_boxes();
    assert_eq!(boxes.len(), 1000);
    assert!(boxes[p.items.len()..].iter().all(|b| *b == Bbox::default()));
    assert_eq!(p.items[0].anchor, 575, "the highest probability comes first");
}
