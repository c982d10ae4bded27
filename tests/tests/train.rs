//! Seed 001's recipe: the loss falls, a seed fixes everything, checkpoints resume exactly,
//! gradient clipping bounds the update, COCO directories train and evaluate, and errors name
//! the bad file or value. Matterport's recipe: losses and two SGD steps equal Matterport's own
//! training graph (tests/fixtures/gen_matterport_train.py), frozen layers and BatchNorm
//! statistics stay bit for bit, narrow runs resume exactly, flips and square fitting move the
//! boxes with the pixels.

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use rpn::{
    Architecture, CocoDirectory, Dataset, Error, Fit, Layers, LrSchedule, ShapesDataset,
    ShapesSource, TrainBatch, TrainConfig, Trainer,
};
use rpn_anchors::ImageSize;
use rpn_model::{MatterportConfig, MatterportRpn, Network};
use rpn_targets::seeded_rng;
use rpn_tests::{hashed, scratch_dir, Fixture};

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
    assert!(err.to_string().contains("seed000, seed001 and the Matterport"), "{err}");
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

trait FlipOrder {
    fn flip_order(self) -> Tensor;
}

impl FlipOrder for Tensor {
    /// `[n−1, …, 0]` of a `[n]` index tensor.
    fn flip_order(self) -> Tensor {
        let mut v = self.to_vec1::<u32>().unwrap();
        v.reverse();
        Tensor::new(v, &Device::Cpu).unwrap()
    }
}

/// `matterport-resnet50` at a reduced width (same graph and names).
fn narrow_matterport(width: usize, pyramid_channels: usize, rpn_channels: usize) -> Architecture {
    let mut arch = arch("matterport-resnet50");
    arch.network = Network::Matterport(MatterportConfig {
        width,
        pyramid_channels,
        rpn_channels,
        ..MatterportConfig::resnet50()
    });
    arch
}

fn shapes_at(side: usize, seed: u64) -> Box<ShapesSource> {
    let mut shapes = ShapesSource::train(seed);
    shapes.shapes.side = side;
    Box::new(shapes)
}

fn tensors_of(trainer: &Trainer) -> BTreeMap<String, Vec<f32>> {
    weights_of(trainer).into_iter().collect()
}

/// Golden: tests/fixtures/gen_matterport_train.py builds Matterport's training graph from the
/// installed mrcnn (frozen-BN blocks, FPN, `build_rpn_model`, `rpn_class_loss_graph`,
/// `rpn_bbox_loss_graph`, `compile`'s L2 loss, `set_trainable` with `train`'s "4+" regex) and
/// runs two steps of tf-keras' `SGD(0.001, momentum=0.9, clipnorm=5.0)` on
/// `build_rpn_targets`' targets.
#[test]
fn matterport_recipe_matches_matterports_training_graph() {
    let fx = Fixture::load("matterport_train.safetensors");
    let arch = narrow_matterport(8, 32, 512);
    let config = TrainConfig { layers: Layers::From4, ..TrainConfig::matterport() };
    let mut trainer = Trainer::new(&arch, config, shapes_at(128, 0)).unwrap();
    let Network::Matterport(net) = arch.network else { unreachable!() };
    let (convs, bns) = MatterportRpn::keras_layer_names(&net);
    hashed::set_weights(&trainer.varmap, &convs, &bns);
    let before = tensors_of(&trainer);
    assert_eq!(
        trainer.trained_tensors().count() as i64,
        fx.i64("trainable_count").data[0],
        "the same tensors learn as under Keras' set_trainable"
    );

    let rpn_match = fx.i64("rpn_match");
    let batch = TrainBatch {
        images: hashed::tensor(&[2, 128, 128, 3], 91, 200.0),
        rpn_match: Tensor::from_vec(rpn_match.data, rpn_match.shape.as_slice(), &Device::Cpu)
            .unwrap(),
        rpn_bbox: rpn_tests::tensor(&fx.f32("rpn_bbox")),
    };
    for step in 1..=2 {
        let ours = trainer.step_on(&batch).unwrap();
        let keras = fx.f32(&format!("loss_step{step}")).data;
        rpn_tests::assert_close(
            &format!("step {step} losses (objectness, box)"),
            &[ours.objectness, ours.box_regression],
            &keras,
            1e-5,
            0.0,
        );
    }
    let after = tensors_of(&trainer);
    for name in ["res3a_branch2a.weight", "res3a_branch2a.bias", "conv1.weight", "bn_conv1.weight"]
    {
        assert_eq!(after[name], before[name], "{name} is frozen under 4+");
    }
    for (name, values) in &after {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            assert_eq!(values, &before[name], "{name}: frozen BatchNorm statistics");
        }
    }
    let mut checked = 0;
    for key in fx.keys_with_prefix("after/") {
        let name = key.trim_start_matches("after/");
        let keras = fx.f32(&key).data;
        let (ours, start) = (&after[name], &before[name]);
        let scale = keras.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = ours.iter().zip(&keras).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5 * scale, "{name}: max diff {worst} at scale {scale}");
        // The update itself (after − before), which is ~1000× smaller than the weights.
        let update: Vec<f32> = keras.iter().zip(start).map(|(k, s)| k - s).collect();
        let ours_update: Vec<f32> = ours.iter().zip(start).map(|(o, s)| o - s).collect();
        let update_scale = update.iter().fold(0f32, |m, v| m.max(v.abs()));
        let update_worst =
            ours_update.iter().zip(&update).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(
            update_worst <= 2e-3 * update_scale.max(1e-12),
            "{name}: update differs by {update_worst} at scale {update_scale}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "the fixture names the tensors it checks ({checked})");
}

#[test]
fn matterport_heads_change_nothing_outside_rpn_and_fpn_and_resume_exactly() {
    let dir = scratch_dir("matterport-heads");
    let arch = narrow_matterport(4, 16, 32);
    let config =
        TrainConfig { layers: Layers::Heads, batch_size: 2, seed: 4, ..TrainConfig::matterport() };
    let mut straight = Trainer::new(&arch, config, shapes_at(64, 4)).unwrap();
    assert!(straight.batch_norm_frozen());
    assert!(straight.trained_tensors().all(|n| n.starts_with("rpn_") || n.starts_with("fpn_")));
    let before = tensors_of(&straight);
    let uninterrupted: Vec<f32> = (0..3).map(|_| straight.step().unwrap().total()).collect();
    let after = tensors_of(&straight);
    for (name, values) in &after {
        let head = name.starts_with("rpn_") || name.starts_with("fpn_");
        if head {
            assert_ne!(values, &before[name], "{name} learns under heads");
        } else {
            assert_eq!(values, &before[name], "{name} must not change by a single bit");
        }
    }
    // A narrow run checkpoints and resumes under the architecture's name, exactly.
    let mut first = Trainer::new(&arch, config, shapes_at(64, 4)).unwrap();
    first.step().unwrap();
    let checkpoint = dir.join("checkpoint.safetensors");
    first.save_checkpoint(&checkpoint).unwrap();
    let mut resumed = Trainer::resume(&checkpoint, shapes_at(64, 4)).unwrap();
    assert_eq!(resumed.config().layers, Layers::Heads);
    let rest: Vec<f32> = (0..2).map(|_| resumed.step().unwrap().total()).collect();
    assert_eq!(rest, uninterrupted[1..], "resumed losses continue bit for bit");
    assert_eq!(tensors_of(&resumed), after);
    // Its final weights load wherever ported ones do.
    let weights = dir.join("final.safetensors");
    resumed.save_weights(&weights).unwrap();
    let proposer =
        rpn::Proposer::load(&"matterport-resnet50".parse().unwrap(), &weights, Default::default())
            .unwrap();
    let image = ShapesSource::held_out(4).get(0).unwrap();
    assert!(!proposer.propose_pixels(&image.pixels, 1, image.size).unwrap()[0]
        .proposals
        .is_empty());
    let err = resumed.recompute_bn_statistics(1).unwrap_err();
    assert!(err.to_string().contains("frozen"), "{err}");
    // Matterport's stages: heads, then 4+; the newly trained tensors start at zero velocity.
    let staged = TrainConfig { layers: Layers::From4, ..config };
    let mut stage2 = Trainer::resume_with(&checkpoint, shapes_at(64, 4), staged).unwrap();
    assert!(stage2.trained_tensors().any(|n| n.starts_with("res4")));
    assert!(stage2.step().unwrap().total().is_finite());
}

#[test]
fn absurd_widths_are_refused_before_anything_is_allocated() {
    let err = Trainer::new(
        &narrow_matterport(100_000, 16, 32),
        TrainConfig::matterport(),
        shapes_at(64, 0),
    )
    .unwrap_err();
    assert!(matches!(err, Error::OverMemoryBudget { .. }), "{err}");
}

#[test]
fn matterport_loss_falls_from_scratch() {
    let arch = narrow_matterport(4, 16, 32);
    let config = TrainConfig { batch_size: 4, seed: 1, ..TrainConfig::matterport() };
    let mut trainer = Trainer::new(&arch, config, shapes_at(64, 1)).unwrap();
    let losses: Vec<f32> = (0..12).map(|_| trainer.step().unwrap().total()).collect();
    let first = losses[..3].iter().sum::<f32>() / 3.0;
    let last = losses[9..].iter().sum::<f32>() / 3.0;
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(last < 0.7 * first, "loss should fall by 30 % within 12 steps: {losses:?}");
}

#[test]
fn init_weights_load_by_name_and_shape() {
    let dir = scratch_dir("matterport-init");
    let arch = narrow_matterport(4, 16, 32);
    let config = TrainConfig { layers: Layers::Heads, ..TrainConfig::matterport() };
    let mut source =
        Trainer::new(&arch, TrainConfig { seed: 9, ..config }, shapes_at(64, 0)).unwrap();
    source.step().unwrap();
    let weights = dir.join("init.safetensors");
    source.save_weights(&weights).unwrap();
    let mut trainer = Trainer::new(&arch, config, shapes_at(64, 0)).unwrap();
    trainer.load_initial_weights(&weights).unwrap();
    assert_eq!(tensors_of(&trainer), tensors_of(&source));
    // Another width does not fit: the error names the tensor and both shapes.
    let other = Trainer::new(&narrow_matterport(8, 16, 32), config, shapes_at(64, 0));
    let err = other.unwrap().load_initial_weights(&weights).unwrap_err();
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.contains("conv1") && chain.contains("init.safetensors"), "{chain}");
    trainer.step().unwrap();
    let err = trainer.load_initial_weights(&weights).unwrap_err().to_string();
    assert!(err.contains("before the first step"), "{err}");
}

#[test]
fn flips_and_square_fitting_move_boxes_with_pixels() {
    let arch = narrow_matterport(4, 16, 32);
    let config = TrainConfig { batch_size: 8, ..TrainConfig::matterport() };
    let mut plain = Trainer::new(&arch, config, shapes_at(64, 0)).unwrap();
    let mut flipped =
        Trainer::new(&arch, TrainConfig { flip: true, ..config }, shapes_at(64, 0)).unwrap();
    let (a, b) = (plain.batch(0).unwrap(), flipped.batch(0).unwrap());
    let (mut same, mut mirrored) = (0, 0);
    for i in 0..8 {
        let (x, y) = (a.images.get(i).unwrap(), b.images.get(i).unwrap());
        let reversed = Tensor::arange(0u32, 64, &Device::Cpu).unwrap().flip_order();
        let mirror = x.index_select(&reversed, 1).unwrap();
        let eq = |p: &Tensor, q: &Tensor| {
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == q.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        if eq(&x, &y) {
            same += 1;
        } else {
            assert!(eq(&mirror, &y), "image {i} is neither itself nor its mirror");
            mirrored += 1;
            // The targets follow: as many positives as before (anchors are symmetric).
            let positives = |t: &TrainBatch| {
                t.rpn_match
                    .get(i)
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap()
                    .iter()
                    .filter(|&&v| v == 1)
                    .count()
            };
            assert_eq!(positives(&a), positives(&b), "image {i}");
        }
    }
    assert!(same > 0 && mirrored > 0, "{same} kept, {mirrored} flipped");

    // Matterport square fitting: a 128×96 image into 128² keeps its scale and pads 16 rows
    // above and below; boxes move down by 16.
    let dir = scratch_dir("coco-square");
    let originals = write_coco_dir(&dir, 2);
    let size = ImageSize::new(128, 128).unwrap();
    let coco = CocoDirectory::open(&dir, size)
        .unwrap()
        .with_fit(Fit::MatterportSquare { min_dim: 800 })
        .unwrap();
    assert!(coco.describe().contains("Matterport square"), "{}", coco.describe());
    let sample = coco.get(0).unwrap();
    for (a, b) in sample.boxes.iter().zip(&originals[0].boxes) {
        let expected = [b.x1 * 2.0, b.y1 * 1.5 + 16.0, b.x2 * 2.0, b.y2 * 1.5 + 16.0];
        rpn_tests::assert_close("square box", &a.to_xyxy(), &expected, 0.0, 1e-3);
    }
    assert!(sample.pixels[..128 * 16 * 3].iter().all(|&v| v == 0.0), "zero padding on top");
    let err = CocoDirectory::open(&dir, ImageSize::new(128, 64).unwrap())
        .unwrap()
        .with_fit(Fit::MatterportSquare { min_dim: 800 })
        .unwrap_err();
    assert!(err.to_string().contains("128×64"), "{err}");
}
