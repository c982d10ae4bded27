//! torchvision's Faster R-CNN RPN against torchvision itself.
//!
//! Fixtures written by `tests/fixtures/gen_torchvision.py` (oracle virtualenv):
//! `torch/torchvision_narrow.pth` (a whole reduced-width `FasterRCNN` state dict saved by
//! `torch.save`, `FrozenBatchNorm2d`, seeded random weights and statistics),
//! `torch/tv_v2_narrow.pth` (the `fasterrcnn_resnet50_fpn_v2` layout) and
//! `torchvision.safetensors` (its `GeneralizedRCNNTransform` batches, `RPNHead` outputs,
//! anchors and `filter_proposals` results on images of three aspect ratios).

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use candle_core::Device;
use rpn_anchors::{AnchorConfig, FeatureShape, ImageSize};
use rpn_model::{Model, Network, TorchvisionConfig};
use rpn_proposals::{generate_proposals, Objectness, ProposalConfig};
use rpn_tests::{assert_scaled, fixtures_dir, tensor, Fixture};

/// The fixture's network: torchvision's graph at 1/8 of the widths, 16 FPN channels.
fn narrow() -> Network {
    Network::Torchvision(TorchvisionConfig {
        width: 8,
        fpn_channels: 16,
        ..TorchvisionConfig::resnet50_fpn()
    })
}

fn ported_model() -> (Model, Vec<String>) {
    let pth = fixtures_dir().join("torch/torchvision_narrow.pth");
    let weights = rpn_torch::port(&pth, &narrow()).unwrap();
    let skipped = weights.skipped.clone();
    let tensors = weights.tensors.into_iter().collect();
    (narrow().build_from(tensors, &Device::Cpu).unwrap(), skipped)
}

#[test]
fn ported_state_dict_reproduces_torchvisions_rpn_head_and_proposals() {
    let f = Fixture::load("torchvision.safetensors");
    let (model, skipped) = ported_model();
    assert!(
        !skipped.is_empty() && skipped.iter().all(|k| k.starts_with("roi_heads.")),
        "{skipped:?}"
    );
    let Model::Torchvision(model) = model else { panic!("not a torchvision model") };

    let batch = tensor(&f.f32("batch_tensor"));
    let out = model.forward(&batch).unwrap();
    assert_scaled("objectness", &out.objectness, &f.f32("objectness"), 1e-4);
    assert_scaled("deltas", &out.deltas, &f.f32("deltas"), 1e-4);
    // The per-level outputs are the same numbers in RPNHead's own [N, A, H, W] layout.
    let (p2_logits, p2_boxes) = &out.per_level[0];
    let (_, a, h2, w2) = p2_logits.dims4().unwrap();
    assert_eq!(p2_boxes.dims4().unwrap(), (2, 4 * a, h2, w2));
    let first = p2_logits.get(0).unwrap().get(1).unwrap().get(2).unwrap().get(3).unwrap();
    let flat = out.objectness.get(0).unwrap().get((2 * w2 + 3) * a + 1).unwrap();
    assert_eq!(first.to_scalar::<f32>().unwrap(), flat.to_scalar::<f32>().unwrap());

    // torchvision's anchors for the padded batch: strides `image // grid` per level.
    let (_, _, h, w) = batch.dims4().unwrap();
    let padded = ImageSize::new(h as u32, w as u32).unwrap();
    let shapes: Vec<FeatureShape> = out
        .pyramid
        .iter()
        .map(|p| {
            let (_, _, fh, fw) = p.dims4().unwrap();
            FeatureShape { height: fh as u32, width: fw as u32 }
        })
        .collect();
    let anchors = AnchorConfig::torchvision_fpn().generate_for_shapes(padded, &shapes).unwrap();
    let theirs = f.f32("anchors_b0");
    let ours: Vec<f32> = anchors.boxes().iter().flat_map(|b| b.to_xyxy()).collect();
    assert_eq!(ours, theirs.data, "anchors equal bit for bit");

    // Proposals for each image of the batch (clipped to its own resized size), from
    // torchvision's head outputs: the same boxes at the same ranks.
    let objectness = f.f32("objectness");
    let deltas = f.f32("deltas");
    let sizes = f.i64("batch_sizes").data;
    let n = anchors.len();
    for i in 0..2 {
        let image = ImageSize::new(sizes[2 * i] as u32, sizes[2 * i + 1] as u32).unwrap();
        let logits = &objectness.data[i * n..(i + 1) * n];
        let d: Vec<[f32; 4]> = deltas.data[i * n * 4..(i + 1) * n * 4]
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect();
        let config = ProposalConfig::torchvision_test();
        let p =
            generate_proposals(&config, &anchors, Objectness::Logits(logits), &d, image).unwrap();
        let theirs = f.f32(&format!("proposals_{i}"));
        let scores = f.f32(&format!("scores_{i}"));
        assert_eq!(p.items.len(), scores.data.len(), "image {i}: proposal count");
        let same = p
            .items
            .iter()
            .zip(theirs.data.chunks_exact(4))
            .filter(|(a, b)| {
                a.bbox.to_xyxy().iter().zip(b.iter()).all(|(x, y)| (x - y).abs() <= 1e-3)
            })
            .count();
        assert!(same * 100 >= 99 * p.items.len(), "image {i}: {same} of {} equal", p.items.len());
        eprintln!(
            "image {i}: {same} of {} proposals equal torchvision's at the same rank",
            p.items.len()
        );
        for (a, s) in p.items.iter().zip(&scores.data) {
            assert!((a.score - s).abs() <= 1e-5, "image {i}: score {} vs {s}", a.score);
        }
    }
}

#[test]
fn port_reports_skipped_heads_and_refuses_the_wrong_width() {
    let pth = fixtures_dir().join("torch/torchvision_narrow.pth");
    let full = Network::Torchvision(TorchvisionConfig::resnet50_fpn());
    let err = rpn_torch::port(&pth, &full).unwrap_err().to_string();
    assert!(err.contains("backbone.body.conv1.weight") && err.contains("[8, 3, 7, 7]"), "{err}");
    let entries = rpn_torch::read_state_dict(&pth).unwrap();
    assert!(entries
        .iter()
        .any(|e| e.name == "rpn.head.cls_logits.weight" && e.shape == [3, 16, 1, 1]));
    assert!(entries.iter().any(|e| e.name.starts_with("roi_heads.")));
}

/// The fixture's image `key` (uint8 values stored as f32) as an 8-bit RGB image.
fn picture(f: &Fixture, key: &str) -> image::DynamicImage {
    let a = f.f32(&format!("image_{key}"));
    let (h, w) = (a.shape[0] as u32, a.shape[1] as u32);
    let bytes = a.data.iter().map(|&v| v as u8).collect();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, bytes).unwrap())
}

#[test]
fn generalized_rcnn_transform_matches_torchvision() {
    let f = Fixture::load("torchvision.safetensors");
    for key in ["a", "b", "c"] {
        let (values, size) = rpn::torchvision_transform(&picture(&f, key), 128, 200).unwrap();
        let theirs_size = f.i64(&format!("size_{key}")).data;
        assert_eq!([size.height as i64, size.width as i64], theirs_size[..], "{key}: resized size");
        let theirs = f.f32(&format!("tensor_{key}"));
        let padded = rpn::torchvision_padded(size, 32);
        assert_eq!(theirs.shape, [1, 3, padded.height as usize, padded.width as usize]);
        let (ph, pw) = (padded.height as usize, padded.width as usize);
        let (h, w) = (size.height as usize, size.width as usize);
        let mut worst = 0f32;
        for c in 0..3 {
            for y in 0..ph {
                for x in 0..pw {
                    let t = theirs.data[(c * ph + y) * pw + x];
                    let ours = if y < h && x < w { values[(y * w + x) * 3 + c] } else { 0.0 };
                    worst = worst.max((t - ours).abs());
                }
            }
        }
        // Normalised values span about ±2.6: 1e-5 is a few ulps of the bilinear blend.
        assert!(worst <= 1e-5, "{key}: max diff {worst}");
    }
}

#[test]
fn the_proposer_runs_torchvisions_rpn_end_to_end_on_a_batch_of_two_sizes() {
    let f = Fixture::load("torchvision.safetensors");
    let base: rpn::Architecture = "torchvision-resnet50-fpn".parse().unwrap();
    let mut spec = base.rpn().unwrap().clone();
    spec.preprocessing = rpn::Preprocessing::TorchvisionTransform {
        min_size: 128,
        max_size: 200,
        size_divisible: 32,
    };
    let arch = rpn::Architecture::with_rpn(base.name, base.summary, narrow(), spec);
    let (model, _) = ported_model();
    let proposer =
        rpn::Proposer::from_model(&arch, model, None, rpn::ProposerOptions::default()).unwrap();
    let images = [picture(&f, "a"), picture(&f, "b")];
    let results = proposer.propose_batch(&images).unwrap();
    for (i, r) in results.iter().enumerate() {
        let boxes = f.f32(&format!("original_{i}"));
        let scores = f.f32(&format!("scores_{i}"));
        assert_eq!(r.proposals.len(), scores.data.len(), "image {i}: count");
        let same = r
            .proposals
            .iter()
            .zip(boxes.data.chunks_exact(4))
            .filter(|(p, b)| {
                p.bbox.to_xyxy().iter().zip(b.iter()).all(|(x, y)| (x - y).abs() <= 1e-2)
            })
            .count();
        assert!(
            same * 100 >= 99 * r.proposals.len(),
            "image {i}: {same} of {} equal",
            r.proposals.len()
        );
        eprintln!("Proposer, image {i}: {same} of {} equal at the same rank", r.proposals.len());
        let worst = r
            .proposals
            .iter()
            .zip(&scores.data)
            .map(|(p, s)| (p.score - s).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "image {i}: scores differ by {worst}");
        assert!(r.proposals.iter().all(|p| (2..=6).contains(&p.level)));
    }
}

#[test]
fn v2_state_dict_reproduces_torchvisions_v2_rpn_head() {
    let f = Fixture::load("torchvision.safetensors");
    let v2 = Network::Torchvision(TorchvisionConfig {
        width: 8,
        fpn_channels: 16,
        ..TorchvisionConfig::resnet50_fpn_v2()
    });
    let pth = fixtures_dir().join("torch/tv_v2_narrow.pth");
    let weights = rpn_torch::port(&pth, &v2).unwrap();
    assert!(weights.tensors.contains_key("backbone.fpn.inner_blocks.0.1.running_var"));
    assert!(weights.tensors.contains_key("rpn.head.conv.1.0.weight"));
    let Model::Torchvision(model) =
        v2.build_from(weights.tensors.into_iter().collect(), &Device::Cpu).unwrap()
    else {
        panic!("not a torchvision model")
    };
    let out = model.forward(&tensor(&f.f32("batch_tensor"))).unwrap();
    assert_scaled("v2 objectness", &out.objectness, &f.f32("v2_objectness"), 1e-4);
    assert_scaled("v2 deltas", &out.deltas, &f.f32("v2_deltas"), 1e-4);
    // A v1 checkpoint is not a v2 one: the FPN's BatchNorms and second head conv are missing.
    let v1_pth = fixtures_dir().join("torch/torchvision_narrow.pth");
    let err = rpn_torch::port(&v1_pth, &v2).unwrap_err().to_string();
    assert!(err.contains("missing tensor `rpn.head.conv.1.0.weight`"), "{err}");
}

#[test]
fn backbone_and_rpn_saved_apart_port_to_the_same_weights() {
    let dir = fixtures_dir().join("torch");
    let whole = rpn_torch::port(&dir.join("torchvision_narrow.pth"), &narrow()).unwrap();
    let (backbone, rpn) = (dir.join("tv_backbone.pth"), dir.join("tv_rpn.pth"));
    let parts = rpn_torch::port_files(&[&backbone, &rpn], &narrow()).unwrap();
    assert!(parts.skipped.is_empty(), "{:?}", parts.skipped);
    assert_eq!(parts.tensors.len(), whole.tensors.len());
    for (key, t) in &whole.tensors {
        let p = &parts.tensors[key];
        let diff = (t - p).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{key}");
    }
    // Alone, each part is missing the other's tensors; together with the whole, keys repeat.
    let err = rpn_torch::port(&rpn, &narrow()).unwrap_err().to_string();
    assert!(err.contains("missing tensor `backbone.body.conv1.weight`"), "{err}");
    let whole_path = dir.join("torchvision_narrow.pth");
    let err = rpn_torch::port_files(&[&whole_path, &rpn], &narrow()).unwrap_err().to_string();
    assert!(err.contains("`rpn.head.cls_logits.weight` is in both"), "{err}");
}
