//! Seed 001's recipe: the loss falls, a seed fixes everything, checkpoints resume exactly,
//! gradient clipping bounds the update, COCO directories train and evaluate, and errors name
//! the bad file or value.

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use rpn::{
    CocoDirectory, Dataset, Error, LrSchedule, ShapesDataset, ShapesSource, TrainConfig, Trainer,
};
use rpn_anchors::ImageSize;
use rpn_targets::seeded_rng;
use rpn_tests::scratch_dir;

fn small(seed: u64) -> TrainConfig {
    TrainConfig { batch_size: 2, seed, ..TrainConfig::default() }
}

fn weights_of(trainer: &Trainer) -> Vec<(String, Vec<f32>)> {
    let vars = trainer.varmap.data().lock().unwrap();
    let mut all: Vec<_> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn a_resumed_run_continues_exactly() {
    let dir = scratch_dir("resume");
    let config = TrainConfig {
        schedule: LrSchedule::Step { every: 2, gamma: 0.5 },
        clip_grad_norm: Some(50.0),
        ..small(5)
    };
    let mut straight = Trainer::seed001(config).unwrap();
    let uninterrupted: Vec<f32> = (0..4).map(|_| straight.step().unwrap().total()).collect();

    let mut first = Trainer::seed001(config).unwrap();
    let before: Vec<f32> = (0..2).map(|_| first.step().unwrap().total()).collect();
    let checkpoint = dir.join("checkpoint.safetensors");
    first.save_checkpoint(&checkpoint).unwrap();
    drop(first);
    let mut resumed =
        Trainer::resume(&checkpoint, Box::new(ShapesSource::train(config.seed))).unwrap();
    assert_eq!(resumed.steps_done(), 2);
    assert_eq!(*resumed.config(), config);
    let after: Vec<f32> = (0..2).map(|_| resumed.step().unwrap().total()).collect();
    // Bitwise: weights, BN statistics, velocities, data order and anchor samples all restored.
    assert_eq!([before, after].concat(), uninterrupted);
    assert_eq!(weights_of(&resumed), weights_of(&straight));
}

#[test]
fn resume_names_what_is_wrong_with_the_file() {
    let dir = scratch_dir("resume-errors");
    let trainer = Trainer::seed001(small(1)).unwrap();
    let weights_only = dir.join("final.safetensors");
    trainer.save_weights(&weights_only).unwrap();
    let err = Trainer::resume(&weights_only, Box::new(ShapesSource::train(1))).unwrap_err();
    assert!(err.to_string().contains("no `format` in its metadata"), "{err}");
    let missing = dir.join("nope.safetensors");
    let err = Trainer::resume(&missing, Box::new(ShapesSource::train(1))).unwrap_err();
    assert!(err.to_string().contains("nope.safetensors: cannot read"), "{err}");
    assert!(!dir.join("final.safetensors.tmp").exists(), "the temporary file is renamed away");
}

#[test]
fn clipping_bounds_the_first_update() {
    // Keras' first momentum step is `w ← w − lr·g`, so with clipping ‖Δw‖ ≤ lr · max_norm.
    let (lr, max_norm) = (0.1, 1e-3);
    let config = TrainConfig { lr, clip_grad_norm: Some(max_norm), ..small(2) };
    let mut trainer = Trainer::seed001(config).unwrap();
    let before = weights_of(&trainer);
    let step = trainer.step().unwrap();
    assert!(step.grad_norm > 10.0 * max_norm, "the test needs a gradient larger than the clip");
    let after = weights_of(&trainer);
    let moved: f64 = before
        .iter()
        .zip(&after)
        .filter(|(b, _)| !b.0.ends_with("running_mean") && !b.0.ends_with("running_var"))
        .flat_map(|(b, a)| b.1.iter().zip(&a.1).map(|(x, y)| ((x - y) as f64).powi(2)))
        .sum::<f64>()
        .sqrt();
    assert!(moved <= lr * max_norm * 1.01, "moved {moved}, bound {}", lr * max_norm);
    assert!(
        moved >= lr * max_norm * 0.9,
        "moved {moved}: the clipped step should be near the bound"
    );
}

#[test]
fn bad_hyper_parameters_are_rejected_by_name() {
    for (config, needle) in [
        (TrainConfig { lr: -1.0, ..small(0) }, "learning rate -1"),
        (TrainConfig { batch_size: 0, ..small(0) }, "batch size 0"),
        (TrainConfig { momentum: 1.5, ..small(0) }, "momentum"),
        (TrainConfig { clip_grad_norm: Some(f64::NAN), ..small(0) }, "clipping norm NaN"),
    ] {
        let err = Trainer::seed001(config).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let err =
        Trainer::new(&arch("seed002"), small(0), Box::new(ShapesSource::train(0))).unwrap_err();
    assert!(err.to_string().contains("seed000 and seed001"), "{err}");
}

/// Writes `n` shapes images at 128×96 (so loading must resize) with COCO `[x, y, w, h]` boxes.
fn write_coco_dir(dir: &Path, n: usize) -> Vec<rpn::Sample> {
    let shapes = ShapesSource::train(42);
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    let mut samples = Vec::new();
    for i in 0..n {
        let s = shapes.get(i).unwrap();
        let rgb: Vec<u8> = s.pixels.iter().map(|v| (v * 255.0).round() as u8).collect();
        let small = image::RgbImage::from_raw(64, 64, rgb).unwrap();
        let big = image::imageops::resize(&small, 128, 96, image::imageops::FilterType::Nearest);
        let name = format!("img{i}.png");
        big.save(dir.join(&name)).unwrap();
        images.push(
            serde_json::json!({"id": 100 + i, "file_name": name, "width": 128, "height": 96}),
        );
        for b in &s.boxes {
            let (x, y) = (b.x1 * 2.0, b.y1 * 1.5);
            annotations.push(serde_json::json!({
                "image_id": 100 + i, "bbox": [x, y, b.width() * 2.0, b.height() * 1.5], "iscrowd": 0
            }));
        }
        samples.push(s);
    }
    let json = serde_json::json!({"images": images, "annotations": annotations});
    std::fs::write(dir.join("annotations.json"), json.to_string()).unwrap();
    samples
}

#[test]
fn a_coco_directory_loads_trains_and_evaluates() {
    let dir = scratch_dir("coco");
    let originals = write_coco_dir(&dir, 3);
    let size = ImageSize::new(64, 64).unwrap();
    let coco = CocoDirectory::open(&dir, size).unwrap();
    assert_eq!(coco.num_images(), Some(3));
    for (i, original) in originals.iter().enumerate() {
        let s = coco.get(i).unwrap();
        assert_eq!((s.size, s.pixels.len()), (size, 64 * 64 * 3));
        assert_eq!(s.boxes.len(), original.boxes.len());
        for (a, b) in s.boxes.iter().zip(&original.boxes) {
            assert!((a.x1 - b.x1).abs() < 1e-4 && (a.y2 - b.y2).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }
    let mut trainer = Trainer::new(&arch("seed001"), small(0), Box::new(coco.clone())).unwrap();
    assert!(trainer.step().unwrap().total().is_finite());
    let report = trainer.proposer().unwrap().evaluate(&coco, 100, 2, |_| {}).unwrap();
    assert_eq!(report.images, 3, "a finite set is evaluated once");
    assert_eq!(report.gt_boxes, originals.iter().map(|s| s.boxes.len()).sum::<usize>());
    assert!((0.0..=1.0).contains(&report.ar_top100));
}

#[test]
fn coco_errors_name_the_file_and_the_problem() {
    let dir = scratch_dir("coco-errors");
    let size = ImageSize::new(64, 64).unwrap();
    let err = CocoDirectory::open(&dir, size).unwrap_err();
    assert!(matches!(err, Error::Data { .. }) && err.to_string().contains("annotations.json"));
    let json = r#"{"images": [{"id": 1, "file_name": "a.png"}],
                   "annotations": [{"image_id": 7, "bbox": [0, 0, 4, 4]}]}"#;
    std::fs::write(dir.join("annotations.json"), json).unwrap();
    let err = CocoDirectory::open(&dir, size).unwrap_err();
    assert!(err.to_string().contains("image id 7, which is not in `images`"), "{err}");
    let json = r#"{"images": [{"id": 1, "file_name": "a.png"}], "annotations": []}"#;
    std::fs::write(dir.join("annotations.json"), json).unwrap();
    let err = CocoDirectory::open(&dir, size).unwrap().get(0).unwrap_err();
    assert!(err.to_string().contains("a.png: cannot decode"), "{err}");
}

#[test]
fn loss_falls_over_a_few_steps_and_the_seed_fixes_it() {
    let config = TrainConfig { batch_size: 4, seed: 3, ..TrainConfig::default() };
    assert_eq!(config.lr, 5e-4, "seed 001's SGD(lr=0.0005, momentum=0.9)");
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

#[test]
fn a_proposer_is_a_snapshot_of_the_weights() {
    let mut trainer = Trainer::seed001(small(6)).unwrap();
    trainer.step().unwrap();
    let proposer = trainer.proposer().unwrap();
    let image = ShapesSource::held_out(6).get(0).unwrap();
    let propose = |p: &rpn::Proposer| p.propose_pixels(&image.pixels, 1, image.size).unwrap();
    let before = propose(&proposer);
    trainer.step().unwrap();
    assert_eq!(propose(&proposer), before, "training moved a snapshot");
    assert_ne!(propose(&trainer.proposer().unwrap()), before);
}

fn arch(name: &str) -> rpn::Architecture {
    name.parse().unwrap()
}
