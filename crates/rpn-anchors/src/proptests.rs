//! Property tests: the invariants every caller relies on, over arbitrary inputs.

use proptest::prelude::*;

use crate::{
    iou_matrix, AnchorConfig, Bbox, BoxCoder, CellOrder, ImageSize, PyramidLevel, RatioConvention,
};

/// Proper boxes with sides from 1 px to 1000 px anywhere in a ±2000 px square.
fn proper_box() -> impl Strategy<Value = Bbox> {
    (-2000.0f32..2000.0, -2000.0f32..2000.0, 1.0f32..1000.0, 1.0f32..1000.0)
        .prop_map(|(x, y, w, h)| Bbox::new(x, y, x + w, y + h))
}

/// Any four floats, including NaN, infinities and inverted boxes.
fn any_box() -> impl Strategy<Value = Bbox> {
    let coord = prop_oneof![
        8 => -1e4f32..1e4,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(0.0f32),
    ];
    (coord.clone(), coord.clone(), coord.clone(), coord)
        .prop_map(|(a, b, c, d)| Bbox::new(a, b, c, d))
}

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-4 * scale.max(1.0)
}

proptest! {
    #[test]
    fn iou_is_symmetric_and_in_unit_interval(a in any_box(), b in any_box()) {
        let (ab, ba) = (a.iou(&b), b.iou(&a));
        prop_assert!((0.0..=1.0).contains(&ab), "iou {ab} for {a:?} {b:?}");
        prop_assert_eq!(ab.to_bits(), ba.to_bits());
    }

    #[test]
    fn iou_of_a_proper_box_with_itself_is_one(a in proper_box()) {
        prop_assert_eq!(a.iou(&a), 1.0);
    }

    #[test]
    fn iou_matrix_equals_scalar_iou(rows in prop::collection::vec(any_box(), 0..6), cols in prop::collection::vec(any_box(), 0..6)) {
        let mut out = vec![f32::NAN; rows.len() * cols.len()];
        iou_matrix(&rows, &cols, &mut out).unwrap();
        for (i, r) in rows.iter().enumerate() {
            for (j, c) in cols.iter().enumerate() {
                prop_assert_eq!(out[i * cols.len() + j].to_bits(), r.iou(c).to_bits());
            }
        }
    }

    #[test]
    fn decode_inverts_encode(anchor in proper_box(), target in proper_box()) {
        let ratio_w = target.width() / anchor.width();
        let ratio_h = target.height() / anchor.height();
        for coder in [BoxCoder::matterport(), BoxCoder::torchvision_rpn(), BoxCoder::torchvision_roi_heads()] {
            // torchvision's clamp caps growth at 1000/16: outside it decode ∘ encode is not the identity by design.
            if matches!(coder, BoxCoder::XyWh { .. }) && (ratio_w > 62.0 || ratio_h > 62.0) {
                continue;
            }
            let back = coder.decode(&anchor, coder.encode(&anchor, &target));
            let scale = target.width().max(target.height()).max(target.x2.abs()).max(target.y2.abs());
            for (b, t) in back.to_xyxy().into_iter().zip(target.to_xyxy()) {
                prop_assert!(close(b, t, scale), "{coder:?}: {back:?} vs {target:?}");
            }
        }
    }

    #[test]
    fn decode_never_panics(anchor in any_box(), d in prop::array::uniform4(prop_oneof![-1e3f32..1e3, Just(f32::NAN), Just(f32::INFINITY)])) {
        let _ = BoxCoder::matterport().decode(&anchor, d);
        let _ = BoxCoder::torchvision_rpn().decode(&anchor, d);
    }

    #[test]
    fn layout_conversions_round_trip(b in proper_box(), h in 2u32..4000, w in 2u32..4000) {
        prop_assert_eq!(Bbox::from_yxyx(b.to_yxyx()), b);
        prop_assert_eq!(Bbox::from_xyxy(b.to_xyxy()), b);
        let image = ImageSize::new(h, w).unwrap();
        let back = Bbox::from_matterport_normalized(b.to_matterport_normalized(image), image);
        for (x, y) in back.to_xyxy().into_iter().zip(b.to_xyxy()) {
            prop_assert!(close(x, y, y.abs()), "{back:?} vs {b:?}");
        }
    }

    #[test]
    fn anchor_count_and_order_follow_the_grid(
        h in 1u32..700,
        w in 1u32..700,
        strides in prop::collection::vec(1u32..80, 1..4),
        n_sizes in 1usize..3,
        ratios in prop::collection::vec(0.25f32..4.0, 1..4),
        size_major in any::<bool>(),
        wh in any::<bool>(),
    ) {
        let config = AnchorConfig {
            levels: strides.iter().map(|&stride| PyramidLevel { stride, sizes: (1..=n_sizes).map(|k| (k * 16) as f32).collect() }).collect(),
            ratios: ratios.clone(),
            ratio_convention: if wh { RatioConvention::WidthOverHeight } else { RatioConvention::HeightOverWidth },
            cell_order: if size_major { CellOrder::SizeMajor } else { CellOrder::RatioMajor },
            ..AnchorConfig::matterport_fpn()
        };
        let anchors = config.generate(ImageSize::new(h, w).unwrap()).unwrap();
        let per_cell = n_sizes * ratios.len();
        let expected: usize = strides.iter().map(|&s| h.div_ceil(s) as usize * w.div_ceil(s) as usize * per_cell).sum();
        prop_assert_eq!(anchors.len(), expected);
        // Spot-check the order: the last anchor of each level is centred on its last cell.
        for level in anchors.levels() {
            let last = anchors.boxes()[level.range().end - 1];
            let (cx, cy) = last.center();
            let (ex, ey) = (((level.shape.width - 1) * level.stride_x) as f32, ((level.shape.height - 1) * level.stride_y) as f32);
            prop_assert!(close(cx, ex, ex) && close(cy, ey, ey), "{last:?} not centred at ({ex}, {ey})");
            prop_assert_eq!(anchors.level_of(level.start), anchors.level_of(level.range().end - 1));
        }
    }

    /// Library entry point with arbitrary configuration values (stride 0, NaN and negative
    /// sizes, odd offsets) and image sizes: an answer or a typed error, never a panic; an
    /// answer has exactly Σ cells × anchors per cell boxes.
    #[test]
    fn any_anchor_config_is_an_answer_or_an_error(
        levels in prop::collection::vec((0u32..40, prop::collection::vec(prop_oneof![4 => 1.0f32..300.0, 1 => Just(f32::NAN), 1 => Just(-8.0f32), 1 => Just(0.0f32)], 0..3)), 0..4),
        ratios in prop::collection::vec(prop_oneof![4 => 0.2f32..5.0, 1 => Just(f32::INFINITY), 1 => Just(0.0f32)], 0..4),
        offset in prop_oneof![0.0f32..1.0, Just(1.0f32), Just(f32::NAN), Just(-0.5f32)],
        h in 1u32..300, w in 1u32..300,
    ) {
        let config = AnchorConfig {
            levels: levels.into_iter().map(|(stride, sizes)| PyramidLevel { stride, sizes }).collect(),
            ratios,
            offset,
            ..AnchorConfig::matterport_fpn()
        };
        let image = ImageSize::new(h, w).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let valid = config.validate().is_ok();
        prop_assert_eq!(config.feature_shapes(image).is_ok(), valid);
        for result in [config.generate(image).map(|a| a.len()), config.generate_f64(image).map(|a| a.len()), config.generate_matterport_normalized(image).map(|a| a.len())] {
            match result {
                Ok(n) => {
                    prop_assert!(valid);
                    let expected: usize = config.levels.iter().map(|l| {
                        (h.div_ceil(l.stride) * w.div_ceil(l.stride)) as usize * l.sizes.len() * config.ratios.len()
                    }).sum();
                    prop_assert_eq!(n, expected);
                }
                Err(_) => prop_assert!(!valid),
            }
        }
    }
}
