//! `rpn-targets` against Matterport's `build_rpn_targets` and torchvision's `Matcher`.
//!
//! Fixture: `tests/fixtures/targets.safetensors`, written by `tests/fixtures/gen_targets.py`.
//! Labels are compared before random subsampling (the peers draw from global RNGs).

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use rpn_anchors::{AnchorConfig, Anchors, BoxCoder, ImageSize};
use rpn_targets::{matterport_targets, AnchorMatch, Matcher, MatcherConfig};
use rpn_tests::{assert_close, Fixture};

const CASES: &[(&str, &str)] = &[
    ("mp1024_mixed", "mp1024"),
    ("mp1024_random100", "mp1024"),
    ("seed001_shapes", "seed001"),
    ("seed001_outside", "seed001"),
];

fn geometry(name: &str) -> (AnchorConfig, Anchors, ImageSize) {
    let (config, side) = match name {
        "mp1024" => (AnchorConfig::matterport_fpn(), 1024),
        "seed001" => (AnchorConfig::seed001(), 64),
        other => panic!("unknown geometry {other}"),
    };
    let image = ImageSize::new(side, side).unwrap();
    let anchors = config.generate(image).unwrap();
    (config, anchors, image)
}

/// Matterport matches in float64 on float64 anchors: `with_f64_anchors` reproduces its tie sets.
/// In `mp1024_mixed` a 3×3 GT lies inside 32² squares and inside 2:1 anchors of area 1024 ± 1 ulp:
/// in f32 all of them tie (torchvision forces 151 more anchors), in f64 only the squares do.
#[test]
fn labels_and_deltas_equal_matterport_build_rpn_targets() {
    let f = Fixture::load("targets.safetensors");
    for &(case, geo) in CASES {
        let (config, anchors, image) = geometry(geo);
        let gt = f.boxes_yxyx(&format!("{case}/gt_yxyx"));
        let crowd = f.boxes_yxyx(&format!("{case}/crowd_yxyx"));
        let matcher = Matcher::new(anchors.clone(), MatcherConfig::default())
            .unwrap()
            .with_f64_anchors(config.generate_f64(image).unwrap())
            .unwrap();
        let m = matcher.match_anchors(&gt, &crowd, image).unwrap();

        let expected = f.i8(&format!("{case}/mp/rpn_match")).data;
        let ours = m.to_matterport();
        let diff: Vec<usize> =
            (0..ours.len()).filter(|&i| i64::from(ours[i]) != i64::from(expected[i])).collect();
        assert!(
            diff.is_empty(),
            "{case}: {} labels differ, first at anchor {:?}",
            diff.len(),
            diff.first()
        );

        // Deltas of every positive, in anchor order (Matterport computes them in f64).
        let positives = m.num_positive();
        let t =
            matterport_targets(anchors.boxes(), &gt, &m.labels, &BoxCoder::matterport(), positives)
                .unwrap();
        let expected = f.rows4(&format!("{case}/mp/rpn_bbox"));
        assert_eq!(expected.len(), positives, "{case}: positive count");
        assert_close(
            &format!("{case} rpn_bbox"),
            &t.rpn_bbox.concat(),
            &expected.concat(),
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn labels_and_matches_equal_torchvision_matcher() {
    let f = Fixture::load("targets.safetensors");
    for &(case, geo) in CASES {
        let (_, anchors, image) = geometry(geo);
        let gt = f.boxes_yxyx(&format!("{case}/gt_yxyx"));
        // torchvision has no crowd rule: it sees the non-crowd GT only.
        let m = Matcher::new(anchors.clone(), MatcherConfig::default())
            .unwrap()
            .match_anchors(&gt, &[], image)
            .unwrap();
        let expected = f.i8(&format!("{case}/tv/labels")).data;
        let ours = m.to_torchvision();
        let diff: Vec<usize> =
            (0..ours.len()).filter(|&i| ours[i] != f32::from(expected[i])).collect();
        assert!(
            diff.is_empty(),
            "{case}: {} labels differ, first at anchor {:?}",
            diff.len(),
            diff.first()
        );

        let matched: Vec<i64> = m
            .labels
            .iter()
            .filter_map(|l| match l {
                AnchorMatch::Positive { gt } => Some(i64::from(*gt)),
                _ => None,
            })
            .collect();
        assert_eq!(
            matched,
            f.i64(&format!("{case}/tv/positive_matches")).data,
            "{case}: matched GT of positives"
        );
    }
}

/// The precision effect the f64 mode exists for, pinned: e.g. a 3×3 GT lies inside 32² squares
/// and inside 2:1 anchors whose area is 1024 up to rounding; in f32 the squares have the best IoU,
/// in f64 some rectangles do. Matching Matterport's case in f32 therefore changes forced
/// positives among anchors that tie with a GT's best IoU to within 1e-5 (relative) — and nothing else.
#[test]
fn f32_matching_differs_from_matterport_only_in_float_level_ties() {
    let f = Fixture::load("targets.safetensors");
    let (_, anchors, image) = geometry("mp1024");
    let gt = f.boxes_yxyx("mp1024_mixed/gt_yxyx");
    let crowd = f.boxes_yxyx("mp1024_mixed/crowd_yxyx");
    let m = Matcher::new(anchors.clone(), MatcherConfig::default())
        .unwrap()
        .match_anchors(&gt, &crowd, image)
        .unwrap();
    let expected = f.i8("mp1024_mixed/mp/rpn_match").data;
    let best: Vec<f32> =
        gt.iter().map(|g| anchors.boxes().iter().map(|a| a.iou(g)).fold(0.0, f32::max)).collect();
    let mut differ = 0;
    for (i, (ours, theirs)) in m.to_matterport().into_iter().zip(expected).enumerate() {
        if i64::from(ours) != i64::from(theirs) {
            let a = anchors.boxes()[i];
            let near_tie = gt.iter().zip(&best).any(|(g, b)| (a.iou(g) - b).abs() <= 1e-5 * b);
            assert!(near_tie, "anchor {i} {a:?} differs ({ours} vs {theirs}) without a near-tie");
            assert!(ours == 1 || theirs == 1, "anchor {i}: a difference must be a forced positive");
            differ += 1;
        }
    }
    assert!(differ > 0, "the case should exercise the precision difference");
}
