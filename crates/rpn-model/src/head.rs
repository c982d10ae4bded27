//! RPN heads of the seeds, with outputs in Keras layout.

use candle_core::{Module, Result, Tensor};
use candle_nn::{ops, Conv2dConfig, VarBuilder};

use crate::conv::{conv2d, Conv};
use crate::cpu_plan::{PlanBuilder, Value};

/// Sizes of [`SeedRpnHead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRpnHeadConfig {
    /// Channels of the feature map.
    pub in_channels: usize,
    /// Channels of the shared 3×3 conv (256 in the seeds).
    pub mid_channels: usize,
    /// Anchors per cell, `k` (9 in the seeds).
    pub anchors_per_cell: usize,
}

impl SeedRpnHeadConfig {
    /// The seeds' head on seed 000's 1024 channels with `k` anchors; set `in_channels` for others.
    pub fn seed(anchors_per_cell: usize) -> Self {
        Self { in_channels: 1024, mid_channels: 256, anchors_per_cell }
    }
}

/// What an RPN head returns, in Keras layout: `N = H·W·k` rows, row `(y·W + x)·k + a`.
#[derive(Debug, Clone)]
pub struct RpnOutputs {
    /// `[B, N, 2]` raw `(background, foreground)` logits (`rpn_class_logits`).
    pub logits: Tensor,
    /// `[B, N, 2]` softmax of the logits (`rpn_class`).
    pub probs: Tensor,
    /// `[B, N, 4]` deltas (`rpn_bbox`), in the order the head was trained with.
    pub deltas: Tensor,
}

/// NCHW `[B, c·k, H, W]` → Keras `[B, H·W·k, c]`: NHWC first, so channel `a·c + j` of cell
/// `(y, x)` lands in row `(y·W + x)·k + a`, column `j`, exactly as Keras' reshape of its NHWC map.
pub(crate) fn to_keras_rows(x: &Tensor, per_anchor: usize) -> Result<Tensor> {
    let (b, _, h, w) = x.dims4()?;
    x.permute((0, 2, 3, 1))?.contiguous()?.reshape((
        b,
        h * w * (x.dim(1)? / per_anchor),
        per_anchor,
    ))
}

/// Seeds 000/001's `rpn_net(inputs, k)`: `Conv2D(256, 3×3, same)` (linear in the seed), then
/// `Conv2D(2k, 1×1)` → logits and `Conv2D(4k, 1×1)` → deltas. Paths: `shared`, `class_raw`, `bbox`.
#[derive(Debug, Clone)]
pub struct SeedRpnHead {
    shared: Conv,
    class_raw: Conv,
    bbox: Conv,
}

impl SeedRpnHead {
    /// Builds the head from `vb`.
    pub fn new(config: &SeedRpnHeadConfig, vb: VarBuilder) -> Result<Self> {
        let k = config.anchors_per_cell;
        let same = Conv2dConfig { padding: 1, ..Default::default() };
        Ok(Self {
            shared: conv2d(config.in_channels, config.mid_channels, 3, same, vb.pp("shared"))?,
            class_raw: conv2d(
                config.mid_channels,
                2 * k,
                1,
                Default::default(),
                vb.pp("class_raw"),
            )?,
            bbox: conv2d(config.mid_channels, 4 * k, 1, Default::default(), vb.pp("bbox"))?,
        })
    }

    /// `paths` of the three convs in the seed's creation order (shared, class, bbox).
    pub fn keras_creation_order() -> Vec<String> {
        ["shared", "class_raw", "bbox"].map(String::from).to_vec()
    }

    /// NCHW features → Keras-layout outputs.
    pub fn forward(&self, features: &Tensor) -> Result<RpnOutputs> {
        // The seed's `Activation("linear")` after the shared conv: no ReLU.
        let shared = self.shared.forward(features)?;
        let logits = to_keras_rows(&self.class_raw.forward(&shared)?, 2)?;
        let probs = ops::softmax_last_dim(&logits)?;
        let deltas = to_keras_rows(&self.bbox.forward(&shared)?, 4)?;
        Ok(RpnOutputs { logits, probs, deltas })
    }

    /// [`SeedRpnHead::forward`] on NHWC features through the CPU training kernels: the NHWC
    /// outputs are already in Keras' row order, so the rows are a reshape, not a copy.
    pub(crate) fn train_nhwc(&self, features: &Tensor) -> Result<RpnOutputs> {
        let shared = crate::train_ops::conv(features, &self.shared.0)?;
        let rows = |t: Tensor, per_anchor: usize| -> Result<Tensor> {
            let (b, h, w, c) = t.dims4()?;
            t.reshape((b, h * w * (c / per_anchor), per_anchor))
        };
        let logits = rows(crate::train_ops::conv(&shared, &self.class_raw.0)?, 2)?;
        let probs = ops::softmax_last_dim(&logits)?;
        let deltas = rows(crate::train_ops::conv(&shared, &self.bbox.0)?, 4)?;
        Ok(RpnOutputs { logits, probs, deltas })
    }

    /// The head in a CPU plan on `features`; returns (class logits, deltas), NHWC.
    pub(crate) fn plan(&self, g: &mut PlanBuilder, features: Value) -> Result<(Value, Value)> {
        let shared = g.conv_weights(&self.shared)?;
        let shared = g.conv(shared, features, None, false);
        let class = g.conv_weights(&self.class_raw)?;
        let bbox = g.conv_weights(&self.bbox)?;
        Ok((g.conv(class, shared, None, false), g.conv(bbox, shared, None, false)))
    }
}

/// Seed 002's outputs, Keras layout.
#[derive(Debug, Clone)]
pub struct Seed002Outputs {
    /// `[B, H, W, k]` sigmoid objectness (`classification`).
    pub classification: Tensor,
    /// `[B, H, W, 4k]` deltas (`location`).
    pub location: Tensor,
}

/// Seed 002's head on 512-channel features: `Conv2D(512, 3×3, same, relu, name="3x3")`,
/// `Conv2D(4k, 1×1, name="location")`, `Conv2D(k, 1×1, sigmoid, name="classification")`.
/// Paths are the Keras names: `3x3`, `location`, `classification`.
#[derive(Debug, Clone)]
pub struct Seed002Head {
    conv: Conv,
    location: Conv,
    classification: Conv,
}

impl Seed002Head {
    /// Builds the head for `k` anchors per cell on `in_channels` (512 in the seed).
    pub fn new(in_channels: usize, anchors_per_cell: usize, vb: VarBuilder) -> Result<Self> {
        let same = Conv2dConfig { padding: 1, ..Default::default() };
        Ok(Self {
            conv: conv2d(in_channels, 512, 3, same, vb.pp("3x3"))?,
            location: conv2d(512, 4 * anchors_per_cell, 1, Default::default(), vb.pp("location"))?,
            classification: conv2d(
                512,
                anchors_per_cell,
                1,
                Default::default(),
                vb.pp("classification"),
            )?,
        })
    }

    /// Paths in the seed's creation order (`3x3`, `location`, `classification`).
    pub fn keras_creation_order() -> Vec<String> {
        ["3x3", "location", "classification"].map(String::from).to_vec()
    }

    /// NHWC features `[B, H, W, C]` (the seed's `Input((None, None, 512))`) → NHWC outputs.
    pub fn forward_nhwc(&self, features: &Tensor) -> Result<Seed002Outputs> {
        let x = self.conv.forward(&crate::nhwc_to_nchw(features)?)?.relu()?;
        let nhwc = |t: Tensor| t.permute((0, 2, 3, 1))?.contiguous();
        let classification = nhwc(ops::sigmoid(&self.classification.forward(&x)?)?)?;
        let location = nhwc(self.location.forward(&x)?)?;
        debug_assert_eq!(classification.dims()[..3], location.dims()[..3]);
        Ok(Seed002Outputs { classification, location })
    }
}
