//! `rpn-loss` against TensorFlow/Keras (seeds 001, 002) and torchvision: values and gradients,
//! plus gradients against finite differences in `f64`.
//!
//! Fixture: `tests/fixtures/loss.safetensors`, written by `tests/fixtures/gen_loss.py`.

// Test helpers unwrap: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor, Var};
use rpn_loss::{matterport_losses, seed002_losses, sigmoid_losses, Normalization, RpnLosses};
use rpn_tests::{assert_close, Fixture};

fn tensor(f: &Fixture, key: &str) -> Tensor {
    let a = f.f32(key);
    Tensor::from_vec(a.data, a.shape.as_slice(), &Device::Cpu).unwrap()
}

fn int_tensor(f: &Fixture, key: &str) -> Tensor {
    let a = f.i64(key);
    Tensor::from_vec(a.data, a.shape.as_slice(), &Device::Cpu).unwrap()
}

/// torchvision's labels are floats (1, 0, −1); our losses take them as integers.
fn label_tensor(f: &Fixture, key: &str) -> Tensor {
    tensor(f, key).to_dtype(DType::I64).unwrap()
}

fn scalar(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32).unwrap().to_vec0::<f32>().unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The gradient of `loss` w.r.t. `var`, zeros when `var` does not influence it.
fn grad(loss: &Tensor, var: &Var) -> Vec<f32> {
    let grads = loss.backward().unwrap();
    grads.get(var).map(flat).unwrap_or_else(|| vec![0.0; var.elem_count()])
}

#[test]
fn seed001_losses_and_gradients_equal_tensorflow() {
    let f = Fixture::load("loss.safetensors");
    for case in ["seed001", "seed001_unlabelled"] {
        let logits = Var::from_tensor(&tensor(&f, &format!("{case}/logits"))).unwrap();
        let deltas = Var::from_tensor(&tensor(&f, &format!("{case}/deltas"))).unwrap();
        let m = int_tensor(&f, &format!("{case}/rpn_match"));
        let target = tensor(&f, &format!("{case}/target_bbox"));
        let l = matterport_losses(&m, &logits, &target, &deltas).unwrap();
        assert_close(
            &format!("{case} class loss"),
            &[scalar(&l.objectness)],
            &f.f32(&format!("{case}/class_loss")).data,
            1e-5,
            1e-6,
        );
        assert_close(
            &format!("{case} bbox loss"),
            &[scalar(&l.box_regression)],
            &f.f32(&format!("{case}/bbox_loss")).data,
            1e-5,
            1e-6,
        );
        let g = grad(&l.objectness, &logits);
        assert_close(
            &format!("{case} d class / d logits"),
            &g,
            &f.f32(&format!("{case}/grad_logits")).data,
            1e-4,
            1e-7,
        );
        let g = grad(&l.box_regression, &deltas);
        assert_close(
            &format!("{case} d bbox / d deltas"),
            &g,
            &f.f32(&format!("{case}/grad_deltas")).data,
            1e-4,
            1e-7,
        );
        assert!(g.iter().all(|v| v.is_finite()), "{case}: gradients must never be NaN");
    }
}

#[test]
fn seed002_losses_and_gradients_equal_keras() {
    let f = Fixture::load("loss.safetensors");
    let probs = Var::from_tensor(&tensor(&f, "seed002/probs")).unwrap();
    let location = Var::from_tensor(&tensor(&f, "seed002/location")).unwrap();
    let l = seed002_losses(
        &probs,
        &tensor(&f, "seed002/targets"),
        &location,
        &tensor(&f, "seed002/location_targets"),
    )
    .unwrap();
    assert_close("bce", &[scalar(&l.objectness)], &f.f32("seed002/bce").data, 1e-5, 1e-6);
    assert_close("mse", &[scalar(&l.box_regression)], &f.f32("seed002/mse").data, 1e-5, 1e-6);
    assert_close(
        "d bce / d p",
        &grad(&l.objectness, &probs),
        &f.f32("seed002/grad_probs").data,
        1e-4,
        1e-7,
    );
    assert_close(
        "d mse / d location",
        &grad(&l.box_regression, &location),
        &f.f32("seed002/grad_location").data,
        1e-4,
        1e-8,
    );
}

#[test]
fn torchvision_losses_and_gradients_equal_compute_loss() {
    let f = Fixture::load("loss.safetensors");
    let logits = Var::from_tensor(&tensor(&f, "tv/logits")).unwrap();
    let deltas = Var::from_tensor(&tensor(&f, "tv/deltas")).unwrap();
    let l = sigmoid_losses(
        &label_tensor(&f, "tv/labels"),
        &logits,
        &deltas,
        &tensor(&f, "tv/target_deltas"),
        Normalization::Torchvision,
    )
    .unwrap();
    assert_close(
        "loss_objectness",
        &[scalar(&l.objectness)],
        &f.f32("tv/loss_objectness").data,
        1e-5,
        1e-6,
    );
    assert_close(
        "loss_rpn_box_reg",
        &[scalar(&l.box_regression)],
        &f.f32("tv/loss_rpn_box_reg").data,
        1e-5,
        1e-6,
    );
    let total = l.total().unwrap();
    let grads = total.backward().unwrap();
    assert_close(
        "d / d logits",
        &flat(grads.get(&logits).unwrap()),
        &f.f32("tv/grad_logits").data,
        1e-4,
        1e-8,
    );
    assert_close(
        "d / d deltas",
        &flat(grads.get(&deltas).unwrap()),
        &f.f32("tv/grad_deltas").data,
        1e-4,
        1e-8,
    );
}

/// detectron2 differs from torchvision only in normalisation and L1 (β = 0): its sums over
/// `256 · N` relate to torchvision's terms exactly (detectron2 is not on PyPI to run it).
#[test]
fn detectron2_normalisation_relates_to_torchvision() {
    let f = Fixture::load("loss.safetensors");
    let (labels, logits, deltas, targets) = (
        label_tensor(&f, "tv/labels"),
        tensor(&f, "tv/logits"),
        tensor(&f, "tv/deltas"),
        tensor(&f, "tv/target_deltas"),
    );
    let tv =
        sigmoid_losses(&labels, &logits, &deltas, &targets, Normalization::Torchvision).unwrap();
    let d2 = sigmoid_losses(
        &labels,
        &logits,
        &deltas,
        &targets,
        Normalization::Detectron2 { batch_size_per_image: 256 },
    )
    .unwrap();
    let sampled = flat(&labels).iter().filter(|l| **l >= 0.0).count() as f32;
    assert_close(
        "objectness",
        &[scalar(&d2.objectness) * 512.0],
        &[scalar(&tv.objectness) * sampled],
        1e-5,
        0.0,
    );
    // L1 of the positives, summed, from the inputs directly.
    let (l, p, t) = (flat(&labels), flat(&deltas), flat(&targets));
    let l1: f32 = (0..l.len())
        .filter(|&i| l[i] > 0.0)
        .flat_map(|i| (0..4).map(move |k| (i, k)))
        .map(|(i, k)| (p[i * 4 + k] - t[i * 4 + k]).abs())
        .sum();
    assert_close("box", &[scalar(&d2.box_regression) * 512.0], &[l1], 1e-5, 0.0);
}

/// Central differences in f64 at a few coordinates, for every loss.
#[test]
fn gradients_match_finite_differences() {
    let f = Fixture::load("loss.safetensors");
    let f64t = |t: Tensor| t.to_dtype(DType::F64).unwrap();
    let check = |name: &str, x: &Tensor, loss: &dyn Fn(&Tensor) -> RpnLosses| {
        let var = Var::from_tensor(x).unwrap();
        let l = loss(&var);
        let total = l.total().unwrap();
        let g = total
            .backward()
            .unwrap()
            .get(&var)
            .map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .unwrap_or_else(|| vec![0.0; x.elem_count()]);
        let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in (0..base.len()).step_by((base.len() / 7).max(1)) {
            let h = 1e-6;
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
                loss(&t).total().unwrap().to_vec0::<f64>().unwrap()
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (numeric - g[i]).abs() <= 1e-6 + 1e-4 * numeric.abs(),
                "{name}[{i}]: autograd {} vs numeric {numeric}",
                g[i]
            );
        }
    };
    let m = int_tensor(&f, "seed001/rpn_match");
    let target = f64t(tensor(&f, "seed001/target_bbox"));
    let deltas = f64t(tensor(&f, "seed001/deltas"));
    let logits = f64t(tensor(&f, "seed001/logits"));
    check("seed001 logits", &logits, &|x| matterport_losses(&m, x, &target, &deltas).unwrap());
    check("seed001 deltas", &deltas, &|x| matterport_losses(&m, &logits, &target, x).unwrap());
    let (t, lt) =
        (f64t(tensor(&f, "seed002/targets")), f64t(tensor(&f, "seed002/location_targets")));
    let loc = f64t(tensor(&f, "seed002/location"));
    // Probabilities away from the clip edges, where the derivative exists.
    let probs = f64t(tensor(&f, "seed002/probs")).clamp(0.01, 0.99).unwrap();
    check("seed002 probs", &probs, &|x| seed002_losses(x, &t, &loc, &lt).unwrap());
    let (labels, tv_logits, tv_deltas, tv_t) = (
        label_tensor(&f, "tv/labels"),
        f64t(tensor(&f, "tv/logits")),
        f64t(tensor(&f, "tv/deltas")),
        f64t(tensor(&f, "tv/target_deltas")),
    );
    for norm in
        [Normalization::Torchvision, Normalization::Detectron2 { batch_size_per_image: 256 }]
    {
        check("sigmoid logits", &tv_logits, &|x| {
            sigmoid_losses(&labels, x, &tv_deltas, &tv_t, norm).unwrap()
        });
        check("sigmoid deltas", &tv_deltas, &|x| {
            sigmoid_losses(&labels, &tv_logits, x, &tv_t, norm).unwrap()
        });
    }
}

#[test]
fn shape_errors_name_the_shapes() {
    let logits = Tensor::zeros((2, 10, 2), DType::F32, &Device::Cpu).unwrap();
    let m = Tensor::zeros((2, 9), DType::I64, &Device::Cpu).unwrap();
    let d = Tensor::zeros((2, 10, 4), DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::zeros((2, 5, 4), DType::F32, &Device::Cpu).unwrap();
    let err = matterport_losses(&m, &logits, &t, &d).unwrap_err();
    assert!(err.to_string().contains("rpn_match must have shape [2, 10], got [2, 9]"), "{err}");
    // Labels are compared exactly: a float tensor is refused, not rounded.
    let float = Tensor::zeros((2, 10), DType::F32, &Device::Cpu).unwrap();
    let err = matterport_losses(&float, &logits, &t, &d).unwrap_err();
    assert!(err.to_string().contains("rpn_match must be an integer tensor"), "{err}");
}
