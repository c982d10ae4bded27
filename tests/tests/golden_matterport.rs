//! Matterport Mask R-CNN's RPN against Matterport's own graph code run by TensorFlow.
//!
//! Fixtures written by `tests/fixtures/gen_matterport.py` (oracle virtualenv):
//! `matterport.safetensors` (ResNet-50-FPN from the installed `mrcnn` package with hashed
//! weights; its P2–P6, RPN outputs, `ProposalLayer` proposals, `PyramidROIAlign` crops, TF
//! `crop_and_resize` cases, ResNet-101 parameter count) and `keras/matterport_narrow.h5` (a
//! reduced-width model with Matterport's names and nested `rpn_model`, plus two `mrcnn_*` heads).

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rpn::{Proposer, ProposerOptions};
use rpn_anchors::{Bbox, ImageSize};
use rpn_keras::{port, PortOptions};
use rpn_model::{crop_and_resize, pyramid_roi_align, KerasLayout, MatterportConfig, MatterportRpn};
use rpn_tests::{assert_scaled, fixtures_dir, hashed, tensor, Fixture};

fn hashed_resnet50() -> MatterportRpn {
    let varmap = hashed::matterport_resnet50();
    MatterportRpn::new(&MatterportConfig::resnet50(), hashed::frozen(&varmap)).unwrap()
}

#[test]
fn resnet50_fpn_rpn_and_proposal_layer_match_matterport() {
    let f = Fixture::load("matterport.safetensors");
    let model = hashed_resnet50();
    let image = tensor(&f.f32("image"));
    let out = model.forward_nhwc(&image).unwrap();
    for (i, p) in out.pyramid.iter().enumerate() {
        let name = format!("P{}", i + 2);
        let nhwc = p.permute((0, 2, 3, 1)).unwrap();
        assert_scaled(&name, &nhwc, &f.f32(&name), 1e-4);
    }
    assert_scaled("rpn_class_logits", &out.logits, &f.f32("rpn_class_logits"), 1e-4);
    assert_scaled("rpn_class", &out.probs, &f.f32("rpn_class"), 1e-4);
    assert_scaled("rpn_bbox", &out.deltas, &f.f32("rpn_bbox"), 1e-4);

    // Proposals: our layer on our outputs, against TF's ProposalLayer on Keras' outputs.
    // Through the one proposal entry point, Matterport's tensor path (molded input).
    let arch = "matterport-resnet50".parse().unwrap();
    let proposer = Proposer::from_model(
        &arch,
        rpn_model::Model::Matterport(model),
        None,
        ProposerOptions::default(),
    )
    .unwrap();
    let ours = proposer.propose_molded(&image).unwrap().remove(0);
    assert_eq!(ours.input, ImageSize::new(128, 128).unwrap());
    let theirs: Vec<[f32; 4]> = f.rows4_of("rpn_rois");
    let real = theirs.iter().filter(|b| b.iter().any(|v| *v != 0.0)).count();
    assert_eq!(ours.rois.len(), real, "same number of proposals before the padding");
    assert_eq!(ours.padded_len, 1000);
    assert_eq!(ours.padded_rois().len(), theirs.len());
    assert!(ours.levels.iter().all(|l| (2..=6).contains(l)), "levels are P2..P6");
    // Scores that differ by float rounding between TF's and our convolutions can swap ranks of
    // near-tied anchors (and NMS then keeps a near-identical neighbour): count rows that agree.
    let same = ours
        .rois
        .iter()
        .zip(&theirs)
        .filter(|(p, t)| Bbox::from_yxyx(p.to_yxyx()).iou(&Bbox::from_yxyx(**t)) >= 0.99)
        .count();
    assert!(same as f64 >= 0.99 * real as f64, "{same} of {real} proposals equal in order");
}

#[test]
fn pyramid_roi_align_and_crop_and_resize_match_tensorflow() {
    let f = Fixture::load("matterport.safetensors");
    // PyramidROIAlign over Keras' own P2–P5 (NHWC → NCHW), so only the pooling is compared.
    let pyramid: Vec<Tensor> = ["P2", "P3", "P4", "P5"]
        .iter()
        .map(|p| tensor(&f.f32(p)).permute((0, 3, 1, 2)).unwrap().contiguous().unwrap())
        .collect();
    let boxes = f.rows4_of("roi_boxes");
    let pooled = pyramid_roi_align(&pyramid, &[boxes], (128, 128), (3, 3)).unwrap();
    assert_scaled("PyramidROIAlign", &pooled, &f.f32("roi_pooled"), 1e-6);

    let image = tensor(&f.f32("cr_image"));
    let boxes = f.rows4_of("cr_boxes");
    let indices = f.indices("cr_box_indices");
    for (key, crop) in [("cr_2x3", (2, 3)), ("cr_1x1", (1, 1))] {
        let ours = crop_and_resize(&image, &boxes, &indices, crop).unwrap();
        assert_scaled(key, &ours, &f.f32(key), 1e-6);
    }
}

#[test]
fn resnet101_has_keras_parameter_count() {
    let f = Fixture::load("matterport.safetensors");
    let keras = f.i64("params_resnet101").data[0] as usize;
    let ours: usize = rpn_tests::network("matterport-resnet101")
        .tensor_shapes()
        .unwrap()
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum();
    assert_eq!(ours, keras);
}

#[test]
fn a_matterport_h5_ports_by_name_and_skips_the_heads() {
    let config = MatterportConfig {
        width: 8,
        pyramid_channels: 16,
        rpn_channels: 16,
        ..MatterportConfig::resnet50()
    };
    let varmap = VarMap::new();
    MatterportRpn::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))
        .unwrap();
    let expected: BTreeMap<String, Vec<usize>> =
        varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
    let (convs, bns) = MatterportRpn::keras_layer_names(&config);
    let layout = KerasLayout { convs, bns, named: true };
    let h5 = fixtures_dir().join("keras/matterport_narrow.h5");
    let ported = port(&h5, &layout, &expected, &PortOptions::default()).unwrap();
    assert_eq!(ported.skipped, ["mrcnn_class_conv1", "mrcnn_class_logits"]);
    assert!(ported.tensors.contains_key("rpn_conv_shared.weight"), "nested rpn_model split");

    let tensors: HashMap<String, Tensor> = ported
        .tensors
        .iter()
        .map(|(k, (shape, data))| {
            (k.clone(), Tensor::from_vec(data.clone(), shape.as_slice(), &Device::Cpu).unwrap())
        })
        .collect();
    let model =
        MatterportRpn::new(&config, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
            .unwrap();
    let f = Fixture::load("keras/matterport_narrow_expected.safetensors");
    let out = model.forward_nhwc(&tensor(&f.f32("image"))).unwrap();
    assert_scaled("narrow rpn_class_logits", &out.logits, &f.f32("rpn_class_logits"), 1e-4);
    assert_scaled("narrow rpn_bbox", &out.deltas, &f.f32("rpn_bbox"), 1e-4);

    let err = port(
        &h5,
        &rpn_tests::network("matterport-resnet50").keras_layout(),
        &expected,
        &PortOptions { exclude: vec!["mrcnn_*".into()] },
    );
    assert!(err.is_ok(), "excluding the heads by glob is not a problem: {err:?}");
}

/// The CLI end to end on the hashed ResNet-50 (weights written here, 28 M values):
/// `forward` writes P2–P6 and the RPN outputs, `propose --input` Matterport's `rpn_rois`,
/// `propose --image` boxes in the original image's pixels.
#[test]
fn cli_forward_and_propose_reproduce_matterport() {
    let dir = rpn_tests::scratch_dir("matterport-cli");
    let varmap = hashed::matterport_resnet50();
    let weights = dir.join("r50.safetensors");
    varmap.save(&weights).unwrap();
    let f = Fixture::load("matterport.safetensors");
    let input = dir.join("image.npy");
    tensor(&f.f32("image")).write_npy(&input).unwrap();
    let rpn = |args: &[&str]| rpn_cli::run(std::iter::once("rpn").chain(args.iter().copied()));
    let (w, i) = (weights.to_str().unwrap(), input.to_str().unwrap());

    let out = dir.join("out.npz");
    rpn(&[
        "forward",
        "--arch",
        "matterport-resnet50",
        "--weights",
        w,
        "--input",
        i,
        "-o",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let npz: HashMap<String, Tensor> = Tensor::read_npz(&out).unwrap().into_iter().collect();
    assert_scaled("cli P3", &npz["P3"], &f.f32("P3"), 1e-4);
    assert_scaled("cli rpn_bbox", &npz["rpn_bbox"], &f.f32("rpn_bbox"), 1e-4);

    let props = dir.join("props.npz");
    let report = rpn(&[
        "propose",
        "--arch",
        "matterport-resnet50",
        "--weights",
        w,
        "--input",
        i,
        "--format",
        "matterport",
        "-o",
        props.to_str().unwrap(),
    ])
    .unwrap();
    assert!(report.contains("128×128 molded"), "{report}");
    let npz: HashMap<String, Tensor> = Tensor::read_npz(&props).unwrap().into_iter().collect();
    // Without --top, `--format matterport` keeps every row of the layer, padded like rpn_rois.
    assert_eq!(npz["proposals"].dims(), &[1, 1000, 4]);
    let ours = npz["proposals"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let theirs = f.rows4_of("rpn_rois");
    let same = ours
        .chunks_exact(4)
        .zip(&theirs)
        .filter(|(o, t)| {
            Bbox::from_yxyx([o[0], o[1], o[2], o[3]]).iou(&Bbox::from_yxyx(**t)) >= 0.99
        })
        .count();
    assert!(same >= 990, "{same} of 1000 proposals equal in order");

    // An image file: molded to 128² (`--image-size` is IMAGE_MAX_DIM), boxes back in its pixels.
    let png = dir.join("photo.png");
    image::RgbImage::from_fn(100, 60, |x, y| image::Rgb([(x * 2) as u8, (y * 4) as u8, 120]))
        .save(&png)
        .unwrap();
    let json = dir.join("props.json");
    rpn(&[
        "propose",
        "--arch",
        "matterport-resnet50",
        "--weights",
        w,
        "--image",
        png.to_str().unwrap(),
        "--image-size",
        "128",
        "--top",
        "20",
        "-o",
        json.to_str().unwrap(),
    ])
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let img = &v["images"][0];
    // 100×60 → scale 1.28 (max side 128), 128×77 centred: window (y1, x1, y2, x2) = (25, 0, 102, 128).
    assert_eq!(img["window"], serde_json::json!([25.0, 0.0, 102.0, 128.0]));
    let proposals = img["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 20);
    for p in proposals {
        let b: Vec<f64> =
            p["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 100.0 && b[3] <= 60.0, "in the photo: {b:?}");
        assert!((2..=6).contains(&p["level"].as_u64().unwrap()));
    }

    let bad = dir.join("bad.npy");
    Tensor::zeros((1, 96, 128, 3), DType::F32, &Device::Cpu).unwrap().write_npy(&bad).unwrap();
    let err = rpn(&[
        "forward",
        "--arch",
        "matterport-resnet50",
        "--weights",
        w,
        "--input",
        bad.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
    .unwrap_err();
    let chain = rpn_cli::error_chain(&err);
    assert!(chain.contains("divisible by 64"), "{chain}");
}
