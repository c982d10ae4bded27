//! RPN losses on candle tensors, differentiable, with each peer's normalisation.
//!
//! | function | objectness | box regression | normaliser |
//! |---|---|---|---|
//! | [`matterport_losses`] (seed 001, Matterport) | softmax CE over the two logits of anchors with `rpn_match ≠ 0` | smooth-L1 (threshold 1) of the positives' deltas against the packed targets | means: over labelled anchors; over all `4·#pos` elements |
//! | [`seed002_losses`] (seed 002) | Keras `binary_crossentropy` on sigmoid probabilities | mean squared error | means over all elements |
//! | [`sigmoid_losses`] with [`Normalization::Torchvision`] | BCE with logits over sampled anchors (label ≥ 0) | smooth-L1 β = 1/9 over positives | objectness mean; box sum / #sampled |
//! | [`sigmoid_losses`] with [`Normalization::Detectron2`] | BCE with logits, summed | L1 over positives, summed | both / (`batch_size_per_image` · images) |
//!
//! Labels, matches and packed targets are data, not parameters: they are read on the host to pick
//! rows, and no gradient flows into them. With no labelled anchor (or no positive) a loss is 0 and
//! its gradient is zero — never `NaN` — as the seeds' `K.switch(tf.size(loss) > 0, …, 0)` intends.

use candle_core::{bail, DType, Result, Tensor, D};

/// Two loss terms; add them for the RPN's total.
#[derive(Debug, Clone)]
pub struct RpnLosses {
    /// Scalar objectness loss.
    pub objectness: Tensor,
    /// Scalar box-regression loss.
    pub box_regression: Tensor,
}

impl RpnLosses {
    /// `objectness + box_regression` (the seeds weight both by 1).
    pub fn total(&self) -> Result<Tensor> {
        &self.objectness + &self.box_regression
    }
}

/// How [`sigmoid_losses`] normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Normalization {
    /// torchvision `RegionProposalNetwork.compute_loss`.
    Torchvision,
    /// detectron2 `RPN.losses`: sums divided by `batch_size_per_image · num_images`, even when
    /// fewer anchors were sampled.
    Detectron2 {
        /// `MODEL.RPN.BATCH_SIZE_PER_IMAGE` (256).
        batch_size_per_image: usize,
    },
}

/// A scalar 0 that is still connected to `x`, so its gradient is a (zero) tensor of `x`'s shape:
/// the sum of an empty slice, which stays 0 whatever values `x` holds (no `0 · ∞ = NaN`).
fn connected_zero(x: &Tensor) -> Result<Tensor> {
    x.flatten_all()?.narrow(0, 0, 0)?.sum_all()
}

/// Host copy of a label tensor, checking its shape and that it holds integers: labels are
/// compared exactly, which a float tensor (`0.99999` from some arithmetic) would not allow.
fn labels(t: &Tensor, dims: &[usize], what: &str) -> Result<Vec<i64>> {
    if t.dims() != dims {
        bail!("{what} must have shape {dims:?}, got {:?}", t.dims())
    }
    match t.dtype() {
        DType::I64 | DType::U32 | DType::U8 => t.to_dtype(DType::I64)?.flatten_all()?.to_vec1(),
        other => bail!(
            "{what} must be an integer tensor (i64, u32 or u8: labels are compared exactly), \
             got {other:?}"
        ),
    }
}

fn index(v: Vec<u32>, like: &Tensor) -> Result<Tensor> {
    let n = v.len();
    Tensor::from_vec(v, n, like.device())
}

/// `0.5·d²/β` where `|d| < β`, else `|d| − 0.5·β` (β = 1: Matterport's and seed 001's form).
fn smooth_l1(diff: &Tensor, beta: f64) -> Result<Tensor> {
    let abs = diff.abs()?;
    // The branch mask is data: no gradient through the comparison, as in TF and torch.
    let small = abs.lt(beta)?.to_dtype(diff.dtype())?;
    let quadratic = (abs.sqr()? * (0.5 / beta))?;
    let linear = (&abs - 0.5 * beta)?;
    small.mul(&quadratic)? + small.affine(-1.0, 1.0)?.mul(&linear)?
}

/// Seed 001 / Matterport `rpn_class_loss` and `rpn_bbox_loss`.
///
/// - `rpn_match`: `[B, A]` integers (`i64`), 1 positive, −1 negative, 0 neutral
///   (`rpn_targets::MatterportTargets::rpn_match`);
/// - `logits`: `[B, A, 2]` raw `(background, foreground)` logits (`rpn_class_logits`);
/// - `target_bbox`: `[B, R, 4]` positives' target deltas packed in anchor order, zero-padded
///   (`rpn_bbox` input; `rpn_targets::matterport_targets` builds it);
/// - `deltas`: `[B, A, 4]` predicted deltas (`rpn_bbox` output).
///
/// Objectness: sparse softmax cross-entropy over anchors with `rpn_match ≠ 0`, mean. Box: for
/// each image the predicted deltas of its positives (anchor order) against the first `#pos`
/// target rows (`batch_pack`), smooth-L1 with threshold 1, mean over all elements.
pub fn matterport_losses(
    rpn_match: &Tensor,
    logits: &Tensor,
    target_bbox: &Tensor,
    deltas: &Tensor,
) -> Result<RpnLosses> {
    let (b, a, two) = logits.dims3()?;
    if two != 2 {
        bail!("logits must be [B, A, 2], got {:?}", logits.dims())
    }
    let m = labels(rpn_match, &[b, a], "rpn_match")?;
    if deltas.dims() != [b, a, 4] {
        bail!("deltas must be [{b}, {a}, 4] like the logits, got {:?}", deltas.dims())
    }
    let (tb, rows, four) = target_bbox.dims3()?;
    if tb != b || four != 4 {
        bail!("target_bbox must be [{b}, R, 4], got {:?}", target_bbox.dims())
    }

    // Objectness over labelled anchors.
    let labelled: Vec<u32> = (0..m.len() as u32).filter(|&i| m[i as usize] != 0).collect();
    let objectness = if labelled.is_empty() {
        connected_zero(logits)?
    } else {
        let classes: Vec<u32> = labelled.iter().map(|&i| u32::from(m[i as usize] == 1)).collect();
        let picked = logits.reshape((b * a, 2))?.index_select(&index(labelled, logits)?, 0)?;
        let log_probs = log_softmax_last(&picked)?;
        let chosen = log_probs.gather(&index(classes, logits)?.unsqueeze(1)?, 1)?;
        chosen.neg()?.mean_all()?
    };

    // Box regression over positives, targets packed per image.
    let mut pred_rows = Vec::new();
    let mut target_rows = Vec::new();
    for img in 0..b {
        let positives: Vec<u32> =
            (0..a).filter(|&j| m[img * a + j] == 1).map(|j| (img * a + j) as u32).collect();
        if positives.len() > rows {
            bail!(
                "image {img} has {} positive anchors but target_bbox holds {rows} rows",
                positives.len()
            )
        }
        target_rows.extend((0..positives.len()).map(|r| (img * rows + r) as u32));
        pred_rows.extend(positives);
    }
    let box_regression = if pred_rows.is_empty() {
        connected_zero(deltas)?
    } else {
        let pred = deltas.reshape((b * a, 4))?.index_select(&index(pred_rows, deltas)?, 0)?;
        let target =
            target_bbox.reshape((b * rows, 4))?.index_select(&index(target_rows, deltas)?, 0)?;
        // Seed 001: diff = |target − prediction|.
        smooth_l1(&(target - pred)?, 1.0)?.mean_all()?
    };
    Ok(RpnLosses { objectness, box_regression })
}

/// `log_softmax` over the last dimension, stable: `x − max − log Σ exp(x − max)`.
fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Keras' `epsilon()`, used by `binary_crossentropy` on probabilities.
pub const KERAS_EPSILON: f64 = 1e-7;

/// Seed 002's `{'classification': 'binary_crossentropy', 'location': 'mse'}`.
///
/// - `probs`, `targets`: `[B, H, W, k]` sigmoid objectness and 0/1 targets;
/// - `location`, `location_targets`: `[B, H, W, 4k]` predicted and target deltas.
///
/// BCE as Keras computes it on probabilities: `p` clipped to `[ε, 1 − ε]`, then
/// `−(t·ln(p + ε) + (1 − t)·ln(1 − p + ε))`, mean over all elements (ε = 1e-7); MSE mean.
pub fn seed002_losses(
    probs: &Tensor,
    targets: &Tensor,
    location: &Tensor,
    location_targets: &Tensor,
) -> Result<RpnLosses> {
    if probs.dims() != targets.dims() || location.dims() != location_targets.dims() {
        bail!(
            "shapes differ: probs {:?} vs targets {:?}, location {:?} vs location_targets {:?}",
            probs.dims(),
            targets.dims(),
            location.dims(),
            location_targets.dims()
        )
    }
    let t = targets.to_dtype(probs.dtype())?.detach();
    let p = probs.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)?;
    let pos = (t.mul(&(&p + KERAS_EPSILON)?.log()?))?;
    let neg = t.affine(-1.0, 1.0)?.mul(&p.affine(-1.0, 1.0 + KERAS_EPSILON)?.log()?)?;
    let objectness = (pos + neg)?.neg()?.mean_all()?;
    let box_regression = (location - location_targets.detach())?.sqr()?.mean_all()?;
    Ok(RpnLosses { objectness, box_regression })
}

/// `max(x, 0) − x·y + ln(1 + e^{−|x|})`: BCE with logits, stable for any `x`.
fn bce_with_logits(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let softplus = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    (x.relu()? - x.mul(y)?)? + softplus
}

/// Single-logit RPN losses (torchvision, detectron2).
///
/// - `labels`: `[B, A]` integers (`i64`), 1 positive, 0 negative, −1 ignored — *after* sampling, as
///   `rpn_targets` produces them;
/// - `logits`: `[B, A]` objectness logits; `deltas`, `target_deltas`: `[B, A, 4]` in the
///   coder's layout (only positives' rows are read).
pub fn sigmoid_losses(
    labels_t: &Tensor,
    logits: &Tensor,
    deltas: &Tensor,
    target_deltas: &Tensor,
    normalization: Normalization,
) -> Result<RpnLosses> {
    let (b, a) = logits.dims2()?;
    let l = labels(labels_t, &[b, a], "labels")?;
    if deltas.dims() != [b, a, 4] || target_deltas.dims() != [b, a, 4] {
        bail!(
            "deltas and target_deltas must be [{b}, {a}, 4], got {:?} and {:?}",
            deltas.dims(),
            target_deltas.dims()
        )
    }
    let sampled: Vec<u32> = (0..l.len() as u32).filter(|&i| l[i as usize] >= 0).collect();
    let positives: Vec<u32> = (0..l.len() as u32).filter(|&i| l[i as usize] > 0).collect();
    let n_sampled = sampled.len();

    let objectness = if sampled.is_empty() {
        connected_zero(logits)?
    } else {
        let y: Vec<f32> = sampled.iter().map(|&i| l[i as usize] as f32).collect();
        let n = y.len();
        let x = logits.flatten_all()?.index_select(&index(sampled, logits)?, 0)?;
        let y = Tensor::from_vec(y, n, logits.device())?.to_dtype(logits.dtype())?;
        let per = bce_with_logits(&x, &y)?;
        match normalization {
            Normalization::Torchvision => per.mean_all()?,
            Normalization::Detectron2 { batch_size_per_image } => {
                (per.sum_all()? / (batch_size_per_image * b) as f64)?
            }
        }
    };
    let box_regression = if positives.is_empty() {
        connected_zero(deltas)?
    } else {
        let idx = index(positives, deltas)?;
        let pred = deltas.reshape((b * a, 4))?.index_select(&idx, 0)?;
        let target = target_deltas.reshape((b * a, 4))?.index_select(&idx, 0)?.detach();
        let diff = (pred - target)?;
        match normalization {
            Normalization::Torchvision => {
                (smooth_l1(&diff, 1.0 / 9.0)?.sum_all()? / n_sampled as f64)?
            }
            Normalization::Detectron2 { batch_size_per_image } => {
                (diff.abs()?.sum_all()? / (batch_size_per_image * b) as f64)?
            }
        }
    };
    Ok(RpnLosses { objectness, box_regression })
}
