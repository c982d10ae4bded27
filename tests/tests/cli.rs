//! The `rpn` command line (`rpn_cli::run`, exactly what the binary runs) end to end:
//! port a real Keras file, run it on an `.npy`, inspect files, and fail cleanly.
//!
//! Fixtures: `tests/fixtures/keras/seed001.h5` (`gen_keras.py`) and seed 001's Keras outputs in
//! `tests/fixtures/model.safetensors` (`gen_model.py`), for the same hashed weights and input.

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{Device, Tensor};
use rpn_cli::{run, CliError};
use rpn_tests::{fixtures_dir, scratch_dir, Fixture};

fn rpn(args: &[&str]) -> Result<String, CliError> {
    run(std::iter::once("rpn").chain(args.iter().copied()))
}

#[test]
fn port_then_forward_reproduces_keras() {
    let dir = scratch_dir("forward");
    let h5 = fixtures_dir().join("keras/seed001.h5");
    let weights = dir.join("seed001.safetensors");
    let report = rpn(&[
        "port-keras",
        h5.to_str().unwrap(),
        "--arch",
        "seed001",
        "-o",
        weights.to_str().unwrap(),
    ])
    .unwrap();
    assert!(report.starts_with("ported 54 tensors (754486 values) of seed001"), "{report}");

    // The input gen_model.py fed Keras: hashed((2, 48, 80, 3), salt 78, scale 2).
    let input = dir.join("x.npy");
    rpn_tests::hashed::tensor(&[2, 48, 80, 3], 78, 2.0).write_npy(&input).unwrap();
    let out = dir.join("out.npz");
    let report = rpn(&[
        "forward",
        "--arch",
        "seed001",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert!(report.contains("rpn_class_logits [2, 8640, 2]"), "{report}");

    let npz: std::collections::HashMap<String, Tensor> =
        Tensor::read_npz(&out).unwrap().into_iter().collect();
    let keras = Fixture::load("model.safetensors");
    for (ours, theirs) in [
        ("rpn_class_logits", "seed001/logits"),
        ("rpn_class", "seed001/probs"),
        ("rpn_bbox", "seed001/deltas"),
    ] {
        let a = npz[ours].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = keras.f32(theirs).data;
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "{ours}: {worst} vs scale {scale}");
    }

    let listing = rpn(&["inspect", weights.to_str().unwrap()]).unwrap();
    assert!(listing.ends_with("54 tensors, 754486 values"), "{listing}");
    assert!(listing.contains("backbone.stem_conv.weight  F32  [64, 3, 3, 3]"), "{listing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failures_are_one_message_and_leave_no_output() {
    let dir = scratch_dir("errors");
    let h5 = fixtures_dir().join("keras/seed001.h5");
    let out = dir.join("out.safetensors");
    let out_s = out.to_str().unwrap();

    let err =
        rpn(&["port-keras", h5.to_str().unwrap(), "--arch", "seed9", "-o", out_s]).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown architecture `seed9` (expected one of: seed000, seed001, seed002, "),
        "{err}"
    );

    let err =
        rpn(&["port-keras", h5.to_str().unwrap(), "--arch", "seed000", "-o", out_s]).unwrap_err();
    let first_problem = err.to_string().lines().nth(1).unwrap_or_default().trim().to_owned();
    assert!(first_problem.starts_with("the file has 11 conv layers, the model 46"), "{err}");

    let truncated = dir.join("truncated.h5");
    let bytes = std::fs::read(&h5).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = rpn(&["port-keras", truncated.to_str().unwrap(), "--arch", "seed001", "-o", out_s])
        .unwrap_err();
    assert!(err.to_string().contains("truncated.h5"), "{err}");
    assert!(!out.exists(), "a failed port must not leave an output file");

    // Weights of the wrong architecture are refused before running, naming tensor and shapes.
    let weights = dir.join("seed001.safetensors");
    rpn(&[
        "port-keras",
        h5.to_str().unwrap(),
        "--arch",
        "seed001",
        "-o",
        weights.to_str().unwrap(),
    ])
    .unwrap();
    let npy = dir.join("x.npy");
    Tensor::zeros((1, 64, 64, 3), candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .write_npy(&npy)
        .unwrap();
    let err = rpn(&[
        "forward",
        "--arch",
        "seed000",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        npy.to_str().unwrap(),
        "-o",
        dir.join("o.npz").to_str().unwrap(),
    ])
    .unwrap_err();
    let chain = rpn_cli::error_chain(&err);
    assert!(chain.contains("no tensor `backbone.stage0.block2"), "{chain}");
    assert!(!dir.join("o.npz").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// README's first command block: the demo line, with a small budget appended.
fn readme_demo_args() -> Vec<String> {
    let readme = std::fs::read_to_string(fixtures_dir().join("../../README.md")).unwrap();
    let block = readme.split("```").nth(1).expect("README opens with a command block");
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with("cargo run"))
        .expect("README's first block runs the demo with cargo run");
    let command = line.split('#').next().unwrap().trim();
    let (cargo, args) = command.split_once(" -- ").expect("cargo run … -- ARGS");
    assert_eq!(cargo, "cargo run --release -p rpn-cli", "README's main job is the rpn CLI");
    args.split_whitespace().map(String::from).collect()
}

#[test]
fn readme_demo_command_runs_with_a_tiny_budget() {
    let dir = scratch_dir("demo");
    let mut args = readme_demo_args();
    assert_eq!(args.first().map(String::as_str), Some("demo"));
    let out = dir.join("out");
    args.extend(["--steps", "2", "--images", "6", "-o"].map(String::from));
    args.push(out.to_str().unwrap().to_owned());
    let report = rpn(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    assert!(report.contains("held-out recall (IoU 0.5, top 100)"), "{report}");
    for file in [
        "final.safetensors",
        "loss.csv",
        "loss.png",
        "recall.json",
        "proposals_0.png",
        "proposals_3.png",
    ] {
        assert!(out.join(file).is_file(), "demo did not write {file}");
    }
    let recall: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("recall.json")).unwrap()).unwrap();
    assert_eq!(recall["images"], 6);
    for key in ["recall_iou0.5_top100", "recall_iou0.7_top100", "ar_top100", "ar_top1000"] {
        let v = recall[key].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    let png = image::open(out.join("proposals_0.png")).unwrap();
    assert_eq!((png.width(), png.height()), (384, 384 + 24), "64×64 shapes at 6×, legend below");
    let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "header + 2 steps:\n{csv}");
}

#[test]
fn train_resume_eval_and_propose_from_the_command_line() {
    let dir = scratch_dir("train");
    let run_dir = dir.join("run");
    let run = run_dir.to_str().unwrap();
    let train = |steps: &str, resume: bool| {
        let mut args =
            vec!["train", "--steps", steps, "--batch-size", "2", "--seed", "4", "-o", run];
        if resume {
            args.push("--resume");
        }
        rpn(&args)
    };
    let report = train("2", false).unwrap();
    assert!(report.contains("for 2 steps of 2"), "{report}");
    let report = train("3", true).unwrap();
    assert!(report.contains("for 3 steps"), "{report}");
    let csv = std::fs::read_to_string(run_dir.join("loss.csv")).unwrap();
    let steps: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(steps, ["1", "2", "3"], "a resumed run appends to loss.csv:\n{csv}");
    let err = train("3", true).unwrap_err();
    assert!(err.to_string().contains("already at step 3"), "{err}");

    let weights = run_dir.join("final.safetensors");
    let json = rpn(&[
        "eval",
        "--weights",
        weights.to_str().unwrap(),
        "--images",
        "4",
        "--seed",
        "9",
        "--json",
    ])
    .unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["images"], 4);
    let w = weights.to_str().unwrap();
    let err = rpn(&["eval", "--weights", w, "--images", "2", "--nms-iou", "1.5"]).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("--nms-iou") && message.contains("1.5 must be in (0, 1]"), "{err}");
    assert_eq!(err.exit_code(), 2, "a bad flag value is a usage error");
    let looser = rpn(&[
        "eval",
        "--weights",
        w,
        "--images",
        "4",
        "--seed",
        "9",
        "--nms-iou",
        "0.5",
        "--json",
    ])
    .unwrap();
    let looser: serde_json::Value = serde_json::from_str(&looser).unwrap();
    assert_eq!(looser["gt_boxes"], report["gt_boxes"], "same images, another NMS threshold");
    assert!(report["gt_boxes"].as_u64().unwrap() >= 4, "every shapes image has a shape");

    // A 96×80 PNG: the network runs at 96×80 (seed 001's stride 2 divides both).
    let image_path = dir.join("picture.png");
    image::RgbImage::from_fn(96, 80, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, 90]))
        .save(&image_path)
        .unwrap();
    let out = dir.join("proposals.json");
    let drawn = dir.join("drawn.png");
    let report = rpn(&[
        "propose",
        "--arch",
        "seed001",
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        image_path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--draw",
        drawn.to_str().unwrap(),
        "--top",
        "7",
    ])
    .unwrap();
    assert!(report.contains("drew"), "{report}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let first = &json["images"][0];
    assert_eq!((first["width"].as_u64(), first["height"].as_u64()), (Some(96), Some(80)));
    let proposals = first["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 7);
    for p in proposals {
        let b: Vec<f64> =
            p["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 96.0 && b[3] <= 80.0, "clipped: {b:?}");
    }
    let scores: Vec<f64> = proposals.iter().map(|p| p["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked best first: {scores:?}");
    assert!(drawn.is_file());

    let err =
        rpn(&["eval", "--arch", "seed000", "--weights", weights.to_str().unwrap()]).unwrap_err();
    assert!(err.to_string().contains("not seed000 weights"), "{err}");
    let err = rpn(&["train", "--dataset", "/no/such/dir", "--steps", "1", "-o", run]).unwrap_err();
    assert!(err.to_string().contains("neither `shapes` nor a directory"), "{err}");
}

#[test]
fn seed002_proposes_on_images_with_a_vgg16_backbone() {
    use candle_nn::{VarBuilder, VarMap};
    let dir = scratch_dir("seed002");
    let save = |arch: rpn_model::Network, name: &str| {
        let varmap = VarMap::new();
        arch.build(VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu))
            .unwrap();
        let path = dir.join(name);
        varmap.save(&path).unwrap();
        path
    };
    let head = save(rpn_tests::network("seed002"), "head.safetensors");
    let vgg = save(rpn_tests::network("vgg16"), "vgg16.safetensors");
    let png = dir.join("photo.png");
    image::RgbImage::from_fn(100, 70, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, 60]))
        .save(&png)
        .unwrap();
    let out = dir.join("p.json");
    let (h, v, p, o) = (
        head.to_str().unwrap(),
        vgg.to_str().unwrap(),
        png.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let err =
        rpn(&["propose", "--arch", "seed002", "--weights", h, "--image", p, "-o", o]).unwrap_err();
    assert!(err.to_string().contains("--backbone-weights"), "{err}");
    let err = rpn(&[
        "propose",
        "--arch",
        "seed002",
        "--weights",
        v,
        "--backbone-weights",
        h,
        "--image",
        p,
        "-o",
        o,
    ])
    .unwrap_err();
    assert!(err.to_string().contains("not seed002 weights"), "swapped files: {err}");
    rpn(&[
        "propose",
        "--arch",
        "seed002",
        "--weights",
        h,
        "--backbone-weights",
        v,
        "--image",
        p,
        "--top",
        "5",
        "-o",
        o,
    ])
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let first = &json["images"][0];
    // 100×70 runs at 96×64 (multiples of VGG16's stride 16); boxes come back in 100×70 pixels.
    assert_eq!(first["input_size"], serde_json::json!([64, 96]));
    let proposals = first["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 5);
    for p in proposals {
        let b: Vec<f64> =
            p["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 100.0 && b[3] <= 70.0, "{b:?}");
        let s = p["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s), "sigmoid score {s}");
    }
}

/// `rpn propose` for every architecture through one code path (`rpn::Proposer`) and one JSON
/// schema, on a 12-megapixel JPEG: each architecture's size policy shrinks it (seeds: the trained
/// 64×64; seed 002: longest side bounded; Matterport: IMAGE_MAX_DIM), boxes come back in the
/// photo's pixels, and an input over the memory budget is refused before anything is written.
/// Weights are random (`VarMap` init, or the hashed Matterport ResNet-50): only the plumbing is
/// checked here; parity is the golden tests'.
#[test]
fn every_architecture_proposes_on_a_12_megapixel_photo_with_one_schema() {
    use candle_nn::{VarBuilder, VarMap};
    let dir = scratch_dir("propose-12mp");
    let save = |name: &str| {
        let varmap = VarMap::new();
        rpn_tests::network(name)
            .build(VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu))
            .unwrap();
        let path = dir.join(format!("{name}.safetensors"));
        varmap.save(&path).unwrap();
        path
    };
    let photo = dir.join("photo.jpg");
    image::RgbImage::from_fn(4000, 3000, |x, y| {
        image::Rgb([(x / 16) as u8, (y / 12) as u8, ((x + y) / 28) as u8])
    })
    .save(&photo)
    .unwrap();
    let matterport = dir.join("matterport-resnet50.safetensors");
    rpn_tests::hashed::matterport_resnet50().save(&matterport).unwrap();
    let (seed001, seed002, vgg16) = (save("seed001"), save("seed002"), save("vgg16"));

    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let cases: Vec<(&str, Vec<String>, [u64; 2])> = vec![
        ("seed001", vec!["--weights".into(), s(&seed001)], [64, 64]),
        (
            "seed002",
            vec![
                "--weights".into(),
                s(&seed002),
                "--backbone-weights".into(),
                s(&vgg16),
                "--image-size".into(),
                "160".into(),
            ],
            [112, 160],
        ),
        (
            "matterport-resnet50",
            vec!["--weights".into(), s(&matterport), "--image-size".into(), "128".into()],
            [128, 128],
        ),
    ];
    for (arch, extra, input_size) in cases {
        let out = dir.join(format!("{arch}.json"));
        let mut args = vec!["propose", "--arch", arch, "--image"];
        let (photo_s, out_s) = (s(&photo), s(&out));
        args.push(&photo_s);
        args.extend(extra.iter().map(String::as_str));
        args.extend(["--top", "20", "-o", &out_s]);
        let report = rpn(&args).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert!(report.contains("1 image(s)"), "{arch}: {report}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(json["box_format"], "x1,y1,x2,y2 in original-image pixels", "{arch}");
        let entry = &json["images"][0];
        assert_eq!(entry["file"], s(&photo).as_str(), "{arch}");
        assert_eq!((entry["width"].as_u64(), entry["height"].as_u64()), (Some(4000), Some(3000)));
        assert_eq!(entry["input_size"], serde_json::json!(input_size), "{arch}");
        let proposals = entry["proposals"].as_array().unwrap();
        assert!(!proposals.is_empty() && proposals.len() <= 20, "{arch}: {}", proposals.len());
        for p in proposals {
            let b: Vec<f64> =
                p["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(
                b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 4000.0 && b[3] <= 3000.0 && b[0] <= b[2],
                "{arch}: {b:?} is not inside the photo"
            );
            assert!((0.0..=1.0).contains(&p["score"].as_f64().unwrap()), "{arch}");
            assert!(p["level"].is_u64(), "{arch}");
        }
        if arch.starts_with("matterport") {
            assert!(entry["window"].is_array() && entry["scale"].is_f64(), "Matterport extras");
        }
    }

    // Over the budget: refused up front, nothing written.
    let out = dir.join("refused.json");
    let err = rpn(&[
        "propose",
        "--arch",
        "matterport-resnet50",
        "--weights",
        &s(&matterport),
        "--image",
        &s(&photo),
        "--memory-budget",
        "64M",
        "-o",
        &s(&out),
    ])
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("memory budget") && message.contains("1024×1024"), "{message}");
    assert!(!out.exists(), "nothing is written when the input is refused");

    // Flags that only mean something for Matterport are refused for the others.
    let err = rpn(&[
        "propose",
        "--arch",
        "seed001",
        "--weights",
        &s(&seed001),
        "--image",
        &s(&photo),
        "--format",
        "matterport",
        "-o",
        &s(&out),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("--format is for the Matterport"), "{err}");
}

/// torchvision's RPN from the command line: `inspect` and `port-torch` on a real torchvision
/// checkpoint (`tests/fixtures/gen_torchvision.py`; narrow, so the full-width architecture
/// refuses it with a report), then `propose` and `forward` at full width with random weights
/// (parity with torchvision itself is `golden_torchvision.rs`'s).
#[test]
fn torchvision_checkpoints_inspect_port_propose_and_forward() {
    let dir = scratch_dir("torchvision");
    let pth = fixtures_dir().join("torch/torchvision_narrow.pth");
    let listing = rpn(&["inspect", pth.to_str().unwrap()]).unwrap();
    assert!(listing.contains("(PyTorch state dict)"), "{listing}");
    assert!(listing.contains("rpn.head.cls_logits.weight  F32  [3, 16, 1, 1]"), "{listing}");
    assert!(listing.contains("roi_heads."), "{listing}");

    let out = dir.join("tv.safetensors");
    let o = out.to_str().unwrap();
    let err =
        rpn(&["port-torch", pth.to_str().unwrap(), "--arch", "torchvision-resnet50-fpn", "-o", o])
            .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("does not fit the model") && text.contains("[8, 3, 7, 7]"), "{text}");
    assert!(!out.exists());
    let err =
        rpn(&["port-torch", pth.to_str().unwrap(), "--arch", "seed001", "-o", o]).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    let h5 = fixtures_dir().join("keras/seed001.h5");
    let err =
        rpn(&["port-keras", h5.to_str().unwrap(), "--arch", "torchvision-resnet50-fpn", "-o", o])
            .unwrap_err();
    assert!(err.to_string().contains("port-torch"), "{err}");

    // Full width, random weights, saved under torchvision's keys.
    let arch: rpn::Architecture = "torchvision-resnet50-fpn".parse().unwrap();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    arch.network.build(vb).unwrap();
    varmap.save(&out).unwrap();
    let a = dir.join("a.png");
    let b = dir.join("b.png");
    image::RgbImage::from_fn(160, 120, |x, y| image::Rgb([x as u8, y as u8, 60])).save(&a).unwrap();
    image::RgbImage::from_fn(90, 200, |x, y| image::Rgb([y as u8, x as u8, 200])).save(&b).unwrap();
    let json = dir.join("p.json");
    let report = rpn(&[
        "propose",
        "--arch",
        "torchvision-resnet50-fpn",
        "--weights",
        o,
        "--image",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--image-size",
        "128",
        "--top",
        "50",
        "-o",
        json.to_str().unwrap(),
    ])
    .unwrap();
    assert!(report.contains("2 image(s)"), "{report}");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for (entry, (w, h)) in
        value["images"].as_array().unwrap().iter().zip([(160.0, 120.0), (90.0, 200.0)])
    {
        let input = entry["input_size"].as_array().unwrap();
        assert!(input.iter().all(|s| s.as_u64().unwrap() % 32 == 0), "padded to 32: {input:?}");
        let proposals = entry["proposals"].as_array().unwrap();
        assert_eq!(proposals.len(), 50);
        for p in proposals {
            let b: Vec<f64> =
                p["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h, "{b:?} in {w}×{h}");
            assert!((2..=6).contains(&p["level"].as_u64().unwrap()));
        }
    }

    let npy = dir.join("x.npy");
    Tensor::zeros((1, 64, 96, 3), candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .write_npy(&npy)
        .unwrap();
    let npz = dir.join("o.npz");
    let report = rpn(&[
        "forward",
        "--arch",
        "torchvision-resnet50-fpn",
        "--weights",
        o,
        "--input",
        npy.to_str().unwrap(),
        "-o",
        npz.to_str().unwrap(),
    ])
    .unwrap();
    // P2…P6 of 64×96: 16×24 + 8×12 + 4×6 + 2×3 + 1×2 cells, 3 anchors each.
    assert!(
        report.contains("objectness [1, 1536]") && report.contains("deltas [1, 1536, 4]"),
        "{report}"
    );
    // RPNHead's own per-level layout: [B, A, H, W] and [B, 4A, H, W] (P2 of 64×96 is 16×24).
    assert!(
        report.contains("objectness_p2 [1, 3, 16, 24]")
            && report.contains("bbox_pred_p6 [1, 12, 1, 2]"),
        "{report}"
    );
}

/// `rpn train --arch matterport-resnet50` (narrow, from scratch), fine-tuned heads-only from its
/// weights with `--init`, evaluated; the usage errors of the Matterport-only flags.
#[test]
fn matterport_train_init_heads_and_eval_from_the_command_line() {
    let dir = scratch_dir("cli-matterport-train");
    let (scratch_run, heads_run) = (dir.join("scratch"), dir.join("heads"));
    let common = ["train", "--arch", "matterport-resnet50", "--width", "4", "--image-size", "64"];
    let report = rpn(&[
        &common[..],
        &["--steps", "2", "--batch-size", "2", "--border", "ignore", "--flip"],
        &["-o", scratch_run.to_str().unwrap()],
    ]
    .concat())
    .unwrap();
    assert!(report.contains("BatchNorm frozen"), "{report}");
    let csv = std::fs::read_to_string(scratch_run.join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "a header and a row per step:\n{csv}");
    assert!(scratch_run.join("loss.png").is_file());
    let first = scratch_run.join("final.safetensors");
    let first_tensors = rpn::read_safetensors(&first, &Device::Cpu).unwrap().0;
    // The names `port-keras` writes, so fine-tuned files load wherever ported ones do.
    for name in [
        "conv1.weight",
        "bn_conv1.running_var",
        "res5c_branch2c.weight",
        "fpn_p2.weight",
        "rpn_conv_shared.weight",
        "rpn_bbox_pred.bias",
    ] {
        assert!(first_tensors.contains_key(name), "final.safetensors lacks {name}");
    }

    rpn(&[
        &common[..],
        &["--steps", "2", "--batch-size", "2", "--layers", "heads", "--seed", "5"],
        &["--init", first.to_str().unwrap(), "-o", heads_run.to_str().unwrap()],
    ]
    .concat())
    .unwrap();
    let tuned =
        rpn::read_safetensors(&heads_run.join("final.safetensors"), &Device::Cpu).unwrap().0;
    for (name, before) in &first_tensors {
        let same = before.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == tuned[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let head = name.starts_with("rpn_") || name.starts_with("fpn_");
        assert!(same != head, "{name}: heads-only training must change exactly rpn_*/fpn_*");
    }

    let json = rpn(&[
        "eval",
        "--arch",
        "matterport-resnet50",
        "--weights",
        heads_run.join("final.safetensors").to_str().unwrap(),
        "--image-size",
        "64",
        "--images",
        "4",
        "--json",
    ])
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(value["recall_iou0.5_top100"].as_f64().is_some_and(|r| (0.0..=1.0).contains(&r)));

    for (args, needle) in [
        (&["train", "--arch", "seed001", "--width", "4"][..], "only the Matterport networks"),
        (&["train", "--arch", "seed001", "--layers", "heads"][..], "layer selections"),
        (
            &["train", "--arch", "matterport-resnet50", "--layers", "6+"][..],
            "unknown layer selection",
        ),
        (&["train", "--arch", "matterport-resnet50", "--border", "sideways"][..], "keep or ignore"),
        (
            &["train", "--arch", "matterport-resnet50", "--image-size", "96"][..],
            "multiple of its stride 64",
        ),
    ] {
        let out = dir.join("refused");
        let err =
            rpn(&[args, &["--steps", "1", "-o", out.to_str().unwrap()]].concat()).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        assert!(err.to_string().contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?}: a usage error creates nothing");
    }
    // Initial weights that are not a weights file: one error naming it, before any step.
    let out = dir.join("bad-init");
    let err =
        rpn(&[&common[..], &["--steps", "1", "--init", "/dev/zero", "-o", out.to_str().unwrap()]]
            .concat())
        .unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("/dev/zero"), "{err}");
    assert!(!out.join("loss.csv").exists() && !out.join("final.safetensors").exists());
}
