//! Behaviour the peers do not pin down, and the properties every caller relies on.

use proptest::prelude::*;
use rpn_anchors::{AnchorConfig, Anchors, Bbox, BoxCoder, ImageSize};

use crate::*;

fn image() -> ImageSize {
    ImageSize::new(64, 64).unwrap()
}

fn seed_anchors() -> Anchors {
    AnchorConfig::seed001().generate(image()).unwrap()
}

/// The brute-force rule written straight from Matterport's `build_rpn_targets`, over a dense
/// matrix: the reference the indexed matcher must reproduce exactly.
fn dense_reference(anchors: &[Bbox], gt: &[Bbox]) -> Vec<AnchorMatch> {
    let iou: Vec<Vec<f32>> =
        anchors.iter().map(|a| gt.iter().map(|g| a.iou(g)).collect()).collect();
    let mut labels = vec![AnchorMatch::Ignored; anchors.len()];
    let argmax = |row: &[f32]| {
        row.iter().enumerate().fold(0, |best, (j, v)| if *v > row[best] { j } else { best })
    };
    for (i, row) in iou.iter().enumerate() {
        let max = row.iter().copied().fold(0.0, f32::max);
        if max < 0.3 {
            labels[i] = AnchorMatch::Negative;
        }
    }
    for g in 0..gt.len() {
        let best = iou.iter().map(|r| r[g]).fold(0.0, f32::max);
        for (i, row) in iou.iter().enumerate() {
            if row[g] == best {
                labels[i] = AnchorMatch::Positive { gt: argmax(row) as u32 };
            }
        }
    }
    for (i, row) in iou.iter().enumerate() {
        if row.iter().any(|v| *v >= 0.7) {
            labels[i] = AnchorMatch::Positive { gt: argmax(row) as u32 };
        }
    }
    labels
}

fn gt_box() -> impl Strategy<Value = Bbox> {
    (-10.0f32..70.0, -10.0f32..70.0, 1.0f32..40.0, 1.0f32..40.0)
        .prop_map(|(x, y, w, h)| Bbox::new(x, y, x + w, y + h))
}

#[test]
fn no_gt_means_all_negative_and_crowd_keeps_some_from_being_negative() {
    let anchors = seed_anchors();
    let matcher = Matcher::new(anchors.clone(), MatcherConfig::default()).unwrap();
    let crowd = [Bbox::new(0.0, 0.0, 20.0, 20.0)];
    let m = matcher.match_anchors(&[], &crowd, image()).unwrap();
    assert_eq!(m.num_positive(), 0);
    let not_negative = m.labels.iter().filter(|l| **l == AnchorMatch::Ignored).count();
    assert!(not_negative > 0 && not_negative < anchors.len());
    for (a, l) in anchors.boxes().iter().zip(&m.labels) {
        assert_eq!(*l == AnchorMatch::Ignored, a.iou(&crowd[0]) >= 0.001, "{a:?}");
    }
}

#[test]
fn invalid_gt_is_an_error_naming_the_box() {
    let anchors = seed_anchors();
    let matcher = Matcher::new(anchors.clone(), MatcherConfig::default()).unwrap();
    let gt = [Bbox::new(0.0, 0.0, 5.0, 5.0), Bbox::new(10.0, 3.0, 10.0, 20.0)];
    let err = matcher.match_anchors(&gt, &[], image()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GT box 1 is invalid: x1=10 y1=3 x2=10 y2=20 (needs finite coordinates, x2 > x1 and y2 > y1)"
    );
    let err =
        matcher.match_anchors(&[], &[Bbox::new(f32::NAN, 0.0, 1.0, 1.0)], image()).unwrap_err();
    assert!(err.to_string().starts_with("crowd box 0 is invalid: x1=NaN"), "{err}");
}

#[test]
fn zero_iou_gt_forces_everything_unless_min_forced_iou_is_set() {
    let anchors = seed_anchors();
    let far = [Bbox::new(500.0, 500.0, 510.0, 510.0)];
    let peers = Matcher::new(anchors.clone(), MatcherConfig::default())
        .unwrap()
        .match_anchors(&far, &[], image())
        .unwrap();
    assert_eq!(peers.num_positive(), anchors.len(), "the peers' rule: every anchor ties at IoU 0");
    let config = MatcherConfig { min_forced_iou: f32::MIN_POSITIVE, ..MatcherConfig::default() };
    let guarded =
        Matcher::new(anchors.clone(), config).unwrap().match_anchors(&far, &[], image()).unwrap();
    assert_eq!((guarded.num_positive(), guarded.num_negative()), (0, anchors.len()));
}

#[test]
fn forcing_gt_option_regresses_to_the_gt_that_forced() {
    // Anchor (-8, -8, 8, 8)-like boxes: GT 0 large and covering, GT 1 tiny inside the same anchor.
    let anchors = seed_anchors();
    let gt = [Bbox::new(0.0, 0.0, 40.0, 40.0), Bbox::new(30.0, 30.0, 31.0, 31.0)];
    let own = Matcher::new(anchors.clone(), MatcherConfig::default())
        .unwrap()
        .match_anchors(&gt, &[], image())
        .unwrap();
    let config =
        MatcherConfig { forced_target: ForcedTarget::ForcingGt, ..MatcherConfig::default() };
    let forcing =
        Matcher::new(anchors.clone(), config).unwrap().match_anchors(&gt, &[], image()).unwrap();
    let mut differs = 0;
    for (o, f) in own.labels.iter().zip(&forcing.labels) {
        assert_eq!(o.is_positive(), f.is_positive());
        differs += usize::from(o != f);
    }
    assert!(
        differs > 0,
        "GT 1's forced anchors overlap GT 0 more: OwnArgmax names GT 0, ForcingGt GT 1"
    );
    assert!(forcing.labels.contains(&AnchorMatch::Positive { gt: 1 }));
}

#[test]
fn border_policy_ignores_crossing_anchors() {
    let anchors = seed_anchors();
    let config = MatcherConfig {
        border: BorderPolicy::IgnoreOutside { tolerance: 0.0 },
        ..MatcherConfig::default()
    };
    let m = Matcher::new(anchors.clone(), config)
        .unwrap()
        .match_anchors(&[Bbox::new(0.0, 0.0, 12.0, 12.0)], &[], image())
        .unwrap();
    for (a, l) in anchors.boxes().iter().zip(&m.labels) {
        let inside = a.x1 >= 0.0 && a.y1 >= 0.0 && a.x2 <= 64.0 && a.y2 <= 64.0;
        assert!(inside || *l == AnchorMatch::Ignored, "{a:?} crosses the border but is {l:?}");
    }
    assert!(m.num_positive() > 0, "the forced best anchor is chosen among inside anchors");
}

#[test]
fn ignore_regions_override_positives() {
    let anchors = seed_anchors();
    let gt = [Bbox::new(8.0, 8.0, 24.0, 24.0)];
    let config = MatcherConfig {
        crowd: CrowdPolicy::IgnoreCovered { min_coverage: 0.5 },
        ..MatcherConfig::default()
    };
    let m =
        Matcher::new(anchors.clone(), config).unwrap().match_anchors(&gt, &gt, image()).unwrap();
    assert_eq!(m.num_positive(), 0);
}

#[test]
fn matterport_layout_packs_positives_in_anchor_order() {
    let anchors = [
        Bbox::new(0.0, 0.0, 10.0, 10.0),
        Bbox::new(5.0, 5.0, 15.0, 15.0),
        Bbox::new(20.0, 20.0, 30.0, 30.0),
    ];
    let gt = [Bbox::new(21.0, 20.0, 30.0, 31.0), Bbox::new(0.0, 0.0, 10.0, 11.0)];
    let labels =
        [AnchorMatch::Positive { gt: 1 }, AnchorMatch::Negative, AnchorMatch::Positive { gt: 0 }];
    let coder = BoxCoder::matterport();
    let t = matterport_targets(&anchors, &gt, &labels, &coder, 4).unwrap();
    assert_eq!(t.rpn_match, [1, -1, 1]);
    assert_eq!(
        t.rpn_bbox,
        [coder.encode(&anchors[0], &gt[1]), coder.encode(&anchors[2], &gt[0]), [0.0; 4], [0.0; 4]]
    );
    let err = matterport_targets(&anchors, &gt, &labels, &coder, 1).unwrap_err();
    assert_eq!(err, TargetError::TooManyPositives { positives: 2, rows: 1 });
    let tv = torchvision_targets(&anchors, &gt, &labels, &coder).unwrap();
    assert_eq!(tv.labels, [1.0, 0.0, 1.0]);
    assert_eq!(tv.matched_gt_boxes, [gt[1], Bbox::default(), gt[0]]);
    assert_eq!(tv.deltas[1], [0.0; 4]);
}

proptest! {
    // 64 cases by default (each matches 4,608 anchors); `cargo xtask fuzz` sets PROPTEST_CASES.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn indexed_matcher_equals_the_dense_rule(gt in prop::collection::vec(gt_box(), 0..6)) {
        let anchors = seed_anchors();
        let m = Matcher::new(anchors.clone(), MatcherConfig::default()).unwrap().match_anchors(&gt, &[], image()).unwrap();
        if gt.is_empty() {
            prop_assert!(m.labels.iter().all(|l| *l == AnchorMatch::Negative));
        } else {
            prop_assert_eq!(m.labels, dense_reference(anchors.boxes(), &gt));
        }
    }

    #[test]
    fn every_gt_overlapping_an_anchor_gets_a_positive(gt in prop::collection::vec(gt_box(), 1..6), eps in prop_oneof![Just(0.0f32), Just(1e-5)]) {
        let anchors = seed_anchors();
        let config = MatcherConfig { tie_epsilon: eps, ..MatcherConfig::default() };
        let m = Matcher::new(anchors.clone(), config).unwrap().match_anchors(&gt, &[], image()).unwrap();
        for g in &gt {
            if anchors.boxes().iter().any(|a| a.iou(g) > 0.0) {
                let best = anchors.boxes().iter().map(|a| a.iou(g)).fold(0.0, f32::max);
                prop_assert!(anchors.boxes().iter().zip(&m.labels).any(|(a, l)| l.is_positive() && a.iou(g) >= best - eps));
            }
        }
    }

    #[test]
    fn sampler_counts_follow_the_formulas(n_pos in 0usize..400, n_neg in 0usize..400, n_ign in 0usize..50, batch in 1usize..300, fraction in 0.0f32..=1.0, seed in any::<u64>()) {
        let mut labels: Vec<AnchorMatch> = std::iter::repeat_n(AnchorMatch::Positive { gt: 0 }, n_pos)
            .chain(std::iter::repeat_n(AnchorMatch::Negative, n_neg))
            .chain(std::iter::repeat_n(AnchorMatch::Ignored, n_ign))
            .collect();
        let before = labels.clone();
        let mut sampler = Sampler::new(SamplerConfig { batch_size: batch, positive_fraction: fraction }).unwrap();
        let counts = sampler.sample(&mut labels, &mut seeded_rng(seed));
        let max_pos = (batch as f64 * f64::from(fraction)) as usize;
        prop_assert_eq!(counts.positive, n_pos.min(max_pos));
        prop_assert_eq!(counts.negative, n_neg.min(batch - counts.positive));
        prop_assert_eq!(labels.iter().filter(|l| l.is_positive()).count(), counts.positive);
        prop_assert_eq!(labels.iter().filter(|l| **l == AnchorMatch::Negative).count(), counts.negative);
        // Sampled ⊆ candidates: nothing changes class except to Ignored.
        for (b, a) in before.iter().zip(&labels) {
            prop_assert!(a == b || *a == AnchorMatch::Ignored);
        }
        // Same seed ⇒ same sample.
        let mut again = before.clone();
        sampler.sample(&mut again, &mut seeded_rng(seed));
        prop_assert_eq!(again, labels);
    }

    #[test]
    fn no_panic_on_arbitrary_finite_input(raw in prop::collection::vec(prop::array::uniform4(-1e6f32..1e6), 0..8)) {
        let anchors = seed_anchors();
        let matcher = Matcher::new(anchors.clone(), MatcherConfig::default()).unwrap();
        let boxes: Vec<Bbox> = raw.iter().map(|r| Bbox::from_xyxy(*r)).collect();
        match matcher.match_anchors(&boxes, &boxes, image()) {
            Ok(m) => prop_assert_eq!(m.labels.len(), anchors.len()),
            Err(TargetError::InvalidBox { index, .. }) => prop_assert!(!boxes[index].is_valid()),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    /// Arbitrary thresholds (NaN, inverted, out of [0, 1]) and boxes with NaN or infinite
    /// corners: a typed error, or labels for every anchor; never a panic.
    #[test]
    fn any_matcher_config_and_boxes_are_an_answer_or_an_error(
        positive in prop_oneof![0.0f32..1.0, Just(f32::NAN), Just(1.5f32)],
        negative in prop_oneof![0.0f32..1.0, Just(f32::NAN), Just(-0.5f32)],
        eps in prop_oneof![0.0f32..0.1, Just(f32::NAN), Just(-1.0f32)],
        raw in prop::collection::vec(prop::array::uniform4(prop_oneof![4 => -100.0f32..100.0, 1 => Just(f32::NAN), 1 => Just(f32::INFINITY)]), 0..6),
    ) {
        let config = MatcherConfig { positive_iou: positive, negative_iou: negative, tie_epsilon: eps, ..MatcherConfig::default() };
        let anchors = seed_anchors();
        let boxes: Vec<Bbox> = raw.iter().map(|r| Bbox::from_xyxy(*r)).collect();
        if let Ok(matcher) = Matcher::new(anchors.clone(), config) {
            if let Ok(m) = matcher.match_anchors(&boxes, &[], image()) {
                prop_assert_eq!(m.labels.len(), anchors.len());
            }
        }
    }
}
