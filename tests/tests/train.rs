//! Seed 001's recipe on synthetic shapes: the loss falls, and a seed fixes everything.

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use rpn::{ShapesDataset, TrainConfig, Trainer};
use rpn_targets::seeded_rng;

#[test]
fn loss_falls_over_a_few_steps_and_the_seed_fixes_it() {
    let config = TrainConfig { batch_size: 4, seed: 3, ..TrainConfig::default() };
    let mut trainer = Trainer::seed001(config).unwrap();
    let losses: Vec<f32> = (0..10).map(|_| trainer.step().unwrap().total()).collect();
    let first = losses[..3].iter().sum::<f32>() / 3.0;
    let last = losses[7..].iter().sum::<f32>() / 3.0;
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(last < 0.9 * first, "loss should fall by 10 % within 10 steps: {losses:?}");

    let mut again = Trainer::seed001(config).unwrap();
    assert_eq!(again.step().unwrap().total(), losses[0], "same seed, same first step");
}

#[test]
fn shapes_are_drawn_inside_their_boxes() {
    let data = ShapesDataset::default();
    let mut rng = seeded_rng(11);
    for _ in 0..20 {
        let img = data.sample(&mut rng);
        assert_eq!(img.pixels.len(), 64 * 64 * 3);
        assert!(!img.boxes.is_empty() && img.boxes.len() <= 3);
        for (shape, b) in img.shapes.iter().zip(&img.boxes) {
            assert!(
                b.is_valid() && b.x1 >= 0.0 && b.x2 <= 64.0 && b.y1 >= 0.0 && b.y2 <= 64.0,
                "{b:?}"
            );
            // The shape's centre pixel has the shape's colour unless a later shape covers it.
            let (x, y) = (shape.cx as usize, shape.cy as usize);
            let covered_later = img.shapes.iter().skip_while(|s| *s != shape).skip(1).any(|s| {
                let b = s.bbox(64.0);
                (b.x1..b.x2).contains(&(x as f32 + 0.5)) && (b.y1..b.y2).contains(&(y as f32 + 0.5))
            });
            if !covered_later {
                let p = &img.pixels[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
                assert_eq!(p, shape.color, "centre of {shape:?}");
            }
        }
    }
}
