//! Property tests of the facade's entry points that take sizes and numbers from users: never a
//! panic, and answers that keep their promises. `cargo xtask fuzz` runs them with 10,000 cases.

use proptest::prelude::*;

use crate::{mold_square, parse_bytes, Error, LrSchedule};

proptest! {
    /// `--memory-budget` text: any string is a number of bytes > 0 or `None`.
    #[test]
    fn parse_bytes_never_panics(text in "\\PC{0,12}", n in any::<u64>(), suffix in "[kKmMgG ]?") {
        if let Some(v) = parse_bytes(&text) {
            prop_assert!(v > 0);
        }
        let expected = match suffix.as_str() {
            "k" | "K" => n.checked_mul(1 << 10),
            "m" | "M" => n.checked_mul(1 << 20),
            "g" | "G" => n.checked_mul(1 << 30),
            _ => Some(n),
        }
        .filter(|&v| v > 0);
        prop_assert_eq!(parse_bytes(&format!("{n}{suffix}")), expected);
    }

    /// Schedules: a valid one gives finite factors in (0, max(1, γ^k)] at every step, and
    /// everything else is refused.
    #[test]
    fn schedules_are_valid_or_refused(
        every in 0usize..50,
        gamma in prop_oneof![0.0f64..2.0, Just(f64::NAN), Just(f64::INFINITY), Just(-1.0)],
        total in 0usize..100,
        floor in prop_oneof![-1.0f64..2.0, Just(f64::NAN)],
        step in 0usize..1000,
    ) {
        for schedule in [LrSchedule::Step { every, gamma }, LrSchedule::Cosine { total_steps: total, floor }] {
            if schedule.validate().is_ok() {
                let f = schedule.factor(step);
                prop_assert!(f.is_finite() && f >= 0.0, "{schedule:?} at {step}: {f}");
            }
        }
    }

    /// Matterport's square molding for any image and IMAGE_MAX_DIM: a typed error, or a
    /// `max_dim`² input whose window lies inside it and maps back inside the original.
    #[test]
    fn mold_square_any_size(w in 0u32..80, h in 0u32..80, min_dim in 0u32..96, max_dim in 0u32..96) {
        let img = image::DynamicImage::new_rgb8(w, h);
        match mold_square(&img, min_dim, max_dim) {
            Ok(m) => {
                prop_assert_eq!((m.size.height, m.size.width), (max_dim, max_dim));
                prop_assert_eq!(m.pixels.len(), (max_dim * max_dim * 3) as usize);
                let win = m.window;
                prop_assert!(win.x1 >= 0.0 && win.y1 >= 0.0 && win.x2 <= max_dim as f32 && win.y2 <= max_dim as f32);
                let back = m.to_original(&win);
                prop_assert!(back.x2 <= w as f32 + 1e-3 && back.y2 <= h as f32 + 1e-3, "{back:?}");
            }
            Err(Error::InvalidValue { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}
