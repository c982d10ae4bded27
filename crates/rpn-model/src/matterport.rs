//! Matterport Mask R-CNN's RPN: ResNet-50/101 (`resnet_graph`), the FPN top-down pathway and
//! the shared `rpn_model` head over P2–P6, with Keras' layer names as `VarBuilder` paths.
//!
//! TF numerics reproduced: the stem is `ZeroPadding2D(3)` + 7×7/2 "valid" conv (= padding 3);
//! the 3×3/2 max-pool is TF "same", which on an even side pads **bottom/right only** (candle's
//! symmetric padding would shift every window by a pixel); strides sit on the 1×1 convs
//! (Caffe-style); BatchNorm is frozen (`TRAIN_BN = False`: moving statistics, epsilon 1e-3);
//! upsampling is nearest ×2; P6 is `MaxPooling2D(1, strides=2)` of P5, i.e. every other pixel.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{batch_norm, ops, BatchNorm, BatchNormConfig, Conv2dConfig, VarBuilder};

use crate::conv::{conv2d, Conv};
use crate::cpu_plan::{self, CpuPlan, PlanBuilder, PlanCache, PoolPadding, Value};
use crate::pool::tf_same_max_pool_3x3_s2;
use crate::KERAS_BN_EPS;

/// ResNet depth: blocks in stage 4 (`resnet_graph(architecture=…)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResNetDepth {
    /// `resnet50`: stage 4 has 6 blocks (`a`–`f`).
    R50,
    /// `resnet101` (Matterport's default `BACKBONE`): stage 4 has 23 blocks (`a`–`w`).
    R101,
}

/// Sizes of [`MatterportRpn`]; `Default`-like presets are [`MatterportConfig::resnet50`] and
/// [`MatterportConfig::resnet101`] (Matterport's). Narrower variants keep the graph and names
/// (for small test checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatterportConfig {
    /// Backbone depth.
    pub depth: ResNetDepth,
    /// Filters of the stem and of stage 2's bottleneck (64); stage `s` uses `width · 2^(s−2)`,
    /// and each block outputs 4× that.
    pub width: usize,
    /// `TOP_DOWN_PYRAMID_SIZE` (256): channels of P2–P6.
    pub pyramid_channels: usize,
    /// Channels of `rpn_conv_shared` (512).
    pub rpn_channels: usize,
    /// `len(RPN_ANCHOR_RATIOS)` (3): anchors per location on every level.
    pub anchors_per_location: usize,
}

impl MatterportConfig {
    /// Matterport's ResNet-50-FPN RPN.
    pub fn resnet50() -> Self {
        Self {
            depth: ResNetDepth::R50,
            width: 64,
            pyramid_channels: 256,
            rpn_channels: 512,
            anchors_per_location: 3,
        }
    }

    /// Matterport's ResNet-101-FPN RPN (the default `BACKBONE`, `mask_rcnn_coco.h5`).
    pub fn resnet101() -> Self {
        Self { depth: ResNetDepth::R101, ..Self::resnet50() }
    }

    fn blocks(&self) -> [usize; 4] {
        match self.depth {
            ResNetDepth::R50 => [3, 4, 6, 3],
            ResNetDepth::R101 => [3, 4, 23, 3],
        }
    }
}

/// Input sides must be multiples of this (`2^6`: P6 has stride 64).
pub const MATTERPORT_SIDE_MULTIPLE: usize = 64;

/// Conv + frozen BN named as Matterport names them (`res2a_branch2a` / `bn2a_branch2a`).
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        names: (&str, &str),
        vb: &VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig { padding: k / 2, stride, ..Default::default() };
        let bn_cfg = BatchNormConfig { eps: KERAS_BN_EPS, ..Default::default() };
        Ok(Self {
            conv: conv2d(c_in, c_out, k, cfg, vb.pp(names.0))?,
            bn: batch_norm(c_out, bn_cfg, vb.pp(names.1))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Frozen BN: `BatchNorm(training=False)` in Matterport's graph.
        candle_core::ModuleT::forward_t(&self.bn, &self.conv.forward(x)?, false)
    }

    fn parts(&self) -> cpu_plan::ConvBn<'_> {
        (&self.conv, &self.bn)
    }
}

/// `conv_block` (with the `branch1` projection) or `identity_block`.
#[derive(Debug, Clone)]
struct Block {
    a: ConvBn,
    b: ConvBn,
    c: ConvBn,
    shortcut: Option<ConvBn>,
}

impl Block {
    fn new(
        c_in: usize,
        filters: usize,
        stage: usize,
        block: char,
        stride: Option<usize>,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let name = |branch: &str| {
            (format!("res{stage}{block}_{branch}"), format!("bn{stage}{block}_{branch}"))
        };
        let conv = |c_in, c_out, k, s, branch: &str| {
            let (conv, bn) = name(branch);
            ConvBn::new(c_in, c_out, k, s, (&conv, &bn), vb)
        };
        let s = stride.unwrap_or(1);
        Ok(Self {
            a: conv(c_in, filters, 1, s, "branch2a")?,
            b: conv(filters, filters, 3, 1, "branch2b")?,
            c: conv(filters, 4 * filters, 1, 1, "branch2c")?,
            shortcut: match stride {
                Some(s) => Some(conv(c_in, 4 * filters, 1, s, "branch1")?),
                None => None,
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.a.forward(x)?.relu()?;
        let y = self.b.forward(&y)?.relu()?;
        let y = self.c.forward(&y)?;
        let shortcut = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }

    /// The same block in a CPU plan.
    fn plan(&self, g: &mut PlanBuilder, x: Value) -> Result<Value> {
        let convs = [self.a.parts(), self.b.parts(), self.c.parts()];
        g.bottleneck(x, convs, self.shortcut.as_ref().map(ConvBn::parts))
    }
}

/// `UpSampling2D(size=2)` (nearest) to `h × w`. An exact doubling is a broadcast and a reshape,
/// whose gradient candle accumulates; candle 0.11's `upsample_nearest2d` backward *replaces* the
/// gradient already accumulated for its input instead of adding to it, which loses the lateral
/// P5's own share in the FPN (the fixture of tests/fixtures/gen_matterport_train.py caught it).
fn upsample_nearest_to(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, c, h0, w0) = x.dims4()?;
    if (h, w) != (2 * h0, 2 * w0) {
        return x.upsample_nearest2d(h, w);
    }
    x.reshape((b, c, h0, 1, w0, 1))?
        .broadcast_as((b, c, h0, 2, w0, 2))?
        .contiguous()?
        .reshape((b, c, h, w))
}

/// `MaxPooling2D(pool_size=1, strides=2)`: pixels `(2i, 2j)`. On even sides (always, for inputs
/// that are multiples of 64) as a reshape and two narrows, which candle can differentiate (its
/// max-pool backward needs the kernel to equal the stride).
fn every_other_pixel(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        return x.max_pool2d_with_stride(1, 2);
    }
    x.reshape((b, c, h / 2, 2, w / 2, 2))?.narrow(3, 0, 1)?.narrow(5, 0, 1)?.reshape((
        b,
        c,
        h / 2,
        w / 2,
    ))
}

/// Errors unless `images` is NHWC with sides divisible by 64 (P6's stride).
fn check_molded_shape(images: &Tensor) -> Result<()> {
    if images.rank() != 4 {
        candle_core::bail!("expected NHWC images [B, H, W, C], got shape {:?}", images.dims())
    }
    let (_, h, w, _) = images.dims4()?;
    if !h.is_multiple_of(MATTERPORT_SIDE_MULTIPLE) || !w.is_multiple_of(MATTERPORT_SIDE_MULTIPLE) {
        candle_core::bail!(
            "Matterport's ResNet-FPN needs image sides divisible by 64 (P6 has stride 64), \
             got {h}×{w}: resize/pad first (e.g. Matterport's `square` mode to 1024×1024)"
        )
    }
    Ok(())
}

/// Everything the RPN computes for a batch.
#[derive(Debug, Clone)]
pub struct MatterportOutputs {
    /// `[B, N, 2]` `rpn_class_logits` (background, foreground), levels P2…P6 concatenated,
    /// each level's rows `(y·W + x)·A + a`.
    pub logits: Tensor,
    /// `[B, N, 2]` `rpn_class` (softmax).
    pub probs: Tensor,
    /// `[B, N, 4]` `rpn_bbox`: `(dy, dx, log dh, log dw)` divided by `RPN_BBOX_STD_DEV`.
    pub deltas: Tensor,
    /// P2…P6, NCHW.
    pub pyramid: Vec<Tensor>,
}

/// Matterport's ResNet-FPN with the shared RPN head.
///
/// `VarBuilder` paths are Matterport's Keras layer names: `conv1`, `bn_conv1`,
/// `res{stage}{block}_branch{2a,2b,2c,1}`, `bn{stage}{block}_branch…`, `fpn_c{2..5}p{2..5}`,
/// `fpn_p{2..5}`, and the head's `rpn_conv_shared`, `rpn_class_raw`, `rpn_bbox_pred` (inside
/// the nested `rpn_model` in `.h5` files).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use rpn_model::{MatterportConfig, MatterportRpn};
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let narrow = MatterportConfig { width: 8, pyramid_channels: 16, rpn_channels: 16, ..MatterportConfig::resnet50() };
/// let model = MatterportRpn::new(&narrow, vb)?;
/// let out = model.forward_nhwc(&Tensor::zeros((1, 64, 128, 3), DType::F32, &Device::Cpu)?)?;
/// // P2…P6 of a 64×128 image: 16×32 + 8×16 + 4×8 + 2×4 + 1×2 cells, 3 anchors each.
/// assert_eq!(out.logits.dims(), &[1, 3 * (512 + 128 + 32 + 8 + 2), 2]);
/// assert!(model.forward_nhwc(&Tensor::zeros((1, 96, 128, 3), DType::F32, &Device::Cpu)?).is_err());
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MatterportRpn {
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    lateral: Vec<Conv>,
    output: Vec<Conv>,
    rpn_shared: Conv,
    rpn_class: Conv,
    rpn_bbox: Conv,
    config: MatterportConfig,
    /// The CPU inference plan, compiled on first use.
    plan: PlanCache,
    /// The body-only plan of [`MatterportRpn::backbone_nhwc`], compiled on first use.
    body_plan: PlanCache,
}

impl MatterportRpn {
    /// Builds the model from `vb` (paths as above).
    pub fn new(config: &MatterportConfig, vb: VarBuilder) -> Result<Self> {
        if config.width == 0 || config.pyramid_channels == 0 || config.rpn_channels == 0 {
            candle_core::bail!("Matterport RPN needs non-zero widths, got {config:?}")
        }
        // `ZeroPadding2D(3)` + "valid" 7×7/2 = padding 3 (`k / 2`).
        let stem = ConvBn::new(3, config.width, 7, 2, ("conv1", "bn_conv1"), &vb)?;
        let mut stages = Vec::with_capacity(4);
        let (mut c_in, mut filters) = (config.width, config.width);
        let mut outs = Vec::with_capacity(4);
        for (i, &n) in config.blocks().iter().enumerate() {
            let stage = i + 2;
            // Stage 2 follows the max-pool: its conv_block keeps the resolution.
            let stride = if stage == 2 { 1 } else { 2 };
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                let name = (b'a' + b as u8) as char;
                let s = if b == 0 { Some(stride) } else { None };
                blocks.push(Block::new(c_in, filters, stage, name, s, &vb)?);
                c_in = 4 * filters;
            }
            outs.push(c_in);
            stages.push(blocks);
            filters *= 2;
        }
        let p = config.pyramid_channels;
        let same = Conv2dConfig { padding: 1, ..Default::default() };
        let lateral = (2..=5)
            .map(|l| conv2d(outs[l - 2], p, 1, Default::default(), vb.pp(format!("fpn_c{l}p{l}"))))
            .collect::<Result<_>>()?;
        let output = (2..=5)
            .map(|l| conv2d(p, p, 3, same, vb.pp(format!("fpn_p{l}"))))
            .collect::<Result<_>>()?;
        let a = config.anchors_per_location;
        Ok(Self {
            stem,
            stages,
            lateral,
            output,
            rpn_shared: conv2d(p, config.rpn_channels, 3, same, vb.pp("rpn_conv_shared"))?,
            rpn_class: conv2d(
                config.rpn_channels,
                2 * a,
                1,
                Default::default(),
                vb.pp("rpn_class_raw"),
            )?,
            rpn_bbox: conv2d(
                config.rpn_channels,
                4 * a,
                1,
                Default::default(),
                vb.pp("rpn_bbox_pred"),
            )?,
            config: *config,
            plan: PlanCache::default(),
            body_plan: PlanCache::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MatterportConfig {
        &self.config
    }

    /// Conv paths and BN paths, each in Matterport's creation order (for reports and tests).
    pub fn keras_layer_names(config: &MatterportConfig) -> (Vec<String>, Vec<String>) {
        let (mut convs, mut bns) = (vec!["conv1".to_owned()], vec!["bn_conv1".to_owned()]);
        for (i, &n) in config.blocks().iter().enumerate() {
            let stage = i + 2;
            for b in 0..n {
                let block = (b'a' + b as u8) as char;
                let branches: &[&str] =
                    if b == 0 { &["2a", "2b", "2c", "1"] } else { &["2a", "2b", "2c"] };
                for branch in branches {
                    convs.push(format!("res{stage}{block}_branch{branch}"));
                    bns.push(format!("bn{stage}{block}_branch{branch}"));
                }
            }
        }
        for l in (2..=5).rev() {
            convs.push(format!("fpn_c{l}p{l}"));
        }
        for l in 2..=5 {
            convs.push(format!("fpn_p{l}"));
        }
        convs.extend(["rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"].map(String::from));
        (convs, bns)
    }

    /// C2…C5 (NCHW) of NCHW images.
    fn backbone(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let x = self.stem.forward(x)?.relu()?;
        let mut x = tf_same_max_pool_3x3_s2(&x)?;
        let mut c = Vec::with_capacity(4);
        for stage in &self.stages {
            for block in stage {
                x = block.forward(&x)?;
            }
            c.push(x.clone());
        }
        Ok(c)
    }

    /// P2…P6 (NCHW) from C2…C5.
    fn pyramid(&self, c: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut top = self.lateral[3].forward(&c[3])?;
        let mut merged = vec![top.clone()];
        for l in (0..3).rev() {
            let (_, _, h, w) = c[l].dims4()?;
            top = (upsample_nearest_to(&top, h, w)? + self.lateral[l].forward(&c[l])?)?;
            merged.push(top.clone());
        }
        merged.reverse(); // P2, P3, P4, P5 before the 3×3 convs
        let mut p: Vec<Tensor> = merged
            .iter()
            .zip(&self.output)
            .map(|(m, conv)| conv.forward(m))
            .collect::<Result<_>>()?;
        let p6 = every_other_pixel(&p[3])?;
        p.push(p6);
        Ok(p)
    }

    /// NHWC images (molded: RGB minus `MEAN_PIXEL`), sides multiples of 64 → RPN outputs.
    ///
    /// On the CPU, for `f32` inputs without gradients and a model whose weights are plain
    /// tensors (not `Var`s), this runs the compiled CPU plan (NHWC kernels, BN folded; the
    /// pyramid comes back as NCHW views of NHWC buffers); otherwise candle's ops.
    pub fn forward_nhwc(&self, images: &Tensor) -> Result<MatterportOutputs> {
        check_molded_shape(images)?;
        if cpu_plan::plan_applies(images) {
            if let Some(plan) = self.plan.get(|| self.compile_plan())? {
                return self.forward_plan(&plan, images);
            }
        }
        self.forward_candle(images)
    }

    /// [`MatterportRpn::forward_nhwc`] with candle's ops.
    fn forward_candle(&self, images: &Tensor) -> Result<MatterportOutputs> {
        let x = crate::nhwc_to_nchw(images)?;
        let pyramid = self.pyramid(&self.backbone(&x)?)?;
        let (mut logits, mut deltas) = (Vec::new(), Vec::new());
        for p in &pyramid {
            let shared = self.rpn_shared.forward(p)?.relu()?;
            logits.push(crate::head::to_keras_rows(&self.rpn_class.forward(&shared)?, 2)?);
            deltas.push(crate::head::to_keras_rows(&self.rpn_bbox.forward(&shared)?, 4)?);
        }
        let logits = Tensor::cat(&logits, 1)?;
        let probs = ops::softmax(&logits, D::Minus1)?;
        Ok(MatterportOutputs { logits, probs, deltas: Tensor::cat(&deltas, 1)?, pyramid })
    }

    /// C2…C5 (NCHW) of NHWC `images` (molded, sides multiples of 64): the ResNet body alone,
    /// for another head or to time the backbone. On the CPU the same rules as
    /// [`MatterportRpn::forward_nhwc`] choose between a compiled plan (C2…C5 come back as NCHW
    /// views of NHWC buffers) and candle's ops.
    pub fn backbone_nhwc(&self, images: &Tensor) -> Result<Vec<Tensor>> {
        check_molded_shape(images)?;
        if cpu_plan::plan_applies(images) {
            if let Some(plan) = self.body_plan.get(|| self.compile_body_plan())? {
                let (input, shape) = cpu_plan::plan_input(images)?;
                return plan.run(input, shape)?.into_iter().map(cpu_plan::nchw_view).collect();
            }
        }
        self.backbone(&crate::nhwc_to_nchw(images)?)
    }

    /// The body in a plan: stem, TF-same pool, the stages; returns C2…C5.
    fn plan_body(&self, g: &mut PlanBuilder) -> Result<Vec<Value>> {
        let x = g.conv_bn(self.stem.parts(), PlanBuilder::INPUT, None, true)?;
        let mut x = g.max_pool(x, 3, 2, PoolPadding::TfSame);
        let mut c = Vec::with_capacity(4);
        for stage in &self.stages {
            for block in stage {
                x = block.plan(g, x)?;
            }
            c.push(x);
        }
        Ok(c)
    }

    /// [`MatterportRpn::backbone_nhwc`]'s plan: outputs C2…C5.
    fn compile_body_plan(&self) -> Result<CpuPlan> {
        let mut g = PlanBuilder::default();
        for c in self.plan_body(&mut g)? {
            g.output(c);
        }
        Ok(g.finish())
    }

    /// The inference graph, layer for layer as [`MatterportRpn::forward_candle`]. Outputs:
    /// P2…P6, then the class logits of each level, then the deltas of each level.
    fn compile_plan(&self) -> Result<CpuPlan> {
        let mut g = PlanBuilder::default();
        let c = self.plan_body(&mut g)?;
        let lateral = |g: &mut PlanBuilder, l: usize| -> Result<Value> {
            let conv = g.conv_weights(&self.lateral[l])?;
            Ok(g.conv(conv, c[l], None, false))
        };
        let mut top = lateral(&mut g, 3)?;
        let mut merged = vec![top];
        for l in (0..3).rev() {
            let lat = lateral(&mut g, l)?;
            top = g.upsample_add(top, lat);
            merged.push(top);
        }
        merged.reverse();
        let mut pyramid = Vec::with_capacity(5);
        for (m, conv) in merged.iter().zip(&self.output) {
            let conv = g.conv_weights(conv)?;
            pyramid.push(g.conv(conv, *m, None, false));
        }
        pyramid.push(g.max_pool(pyramid[3], 1, 2, PoolPadding::Fixed(rpn_kernels::Padding::VALID)));
        g.pyramid_head(pyramid, &[&self.rpn_shared], &self.rpn_class, &self.rpn_bbox)?;
        Ok(g.finish())
    }

    fn forward_plan(&self, plan: &CpuPlan, images: &Tensor) -> Result<MatterportOutputs> {
        let (input, shape) = cpu_plan::plan_input(images)?;
        let out = cpu_plan::PyramidOutputs::new(plan.run(input, shape)?)?;
        let logits = cpu_plan::keras_rows(&out.classes, 2)?;
        let deltas = cpu_plan::keras_rows(&out.boxes, 4)?;
        let probs = ops::softmax(&logits, D::Minus1)?;
        Ok(MatterportOutputs { logits, probs, deltas, pyramid: out.pyramid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU plan against candle's path on random weights and BN statistics, at a narrow
    /// width (every layer kind: stem, TF-same pool, both block kinds, FPN, P6, shared head).
    #[test]
    fn cpu_plan_matches_candle() -> Result<()> {
        let config = MatterportConfig {
            width: 8,
            pyramid_channels: 16,
            rpn_channels: 16,
            ..MatterportConfig::resnet50()
        };
        let model = crate::cpu_plan::tests::random_model(&crate::Network::Matterport(config))?;
        let crate::Model::Matterport(model) = model else { unreachable!() };
        let images = Tensor::randn(0f32, 1.0, (2, 128, 192, 3), &candle_core::Device::Cpu)?;
        let plan = model.compile_plan()?;
        let (fast, slow) = (model.forward_plan(&plan, &images)?, model.forward_candle(&images)?);
        crate::cpu_plan::tests::assert_close("logits", &fast.logits, &slow.logits)?;
        crate::cpu_plan::tests::assert_close("deltas", &fast.deltas, &slow.deltas)?;
        for (p, (f, s)) in fast.pyramid.iter().zip(&slow.pyramid).enumerate() {
            crate::cpu_plan::tests::assert_close(&format!("P{}", p + 2), f, s)?;
        }
        // The body alone: its plan's C2…C5 against candle's.
        let body = model.backbone_nhwc(&images)?;
        let expected = model.backbone(&crate::nhwc_to_nchw(&images)?)?;
        assert_eq!(body.len(), 4);
        for (c, (f, s)) in body.iter().zip(&expected).enumerate() {
            crate::cpu_plan::tests::assert_close(&format!("C{}", c + 2), f, s)?;
        }
        assert!(model.backbone_nhwc(&images.narrow(1, 0, 96)?).is_err(), "sides must be /64");
        Ok(())
    }

    /// A model built on `Var`s (being trained) never gets a plan: its forward keeps candle's
    /// ops, so gradients reach its weights.
    #[test]
    fn models_holding_vars_keep_candles_path() -> Result<()> {
        let varmap = candle_nn::VarMap::new();
        let vb =
            VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
        let config = MatterportConfig {
            width: 8,
            pyramid_channels: 16,
            rpn_channels: 16,
            ..MatterportConfig::resnet50()
        };
        let model = MatterportRpn::new(&config, vb)?;
        assert!(model.plan.get(|| model.compile_plan())?.is_none());
        let images =
            Tensor::zeros((1, 64, 64, 3), candle_core::DType::F32, &candle_core::Device::Cpu)?;
        let grads = model.forward_nhwc(&images)?.logits.sum_all()?.backward()?;
        let vars = varmap.all_vars();
        assert!(vars.iter().any(|v| grads.get(v).is_some()), "no gradient reached a weight");
        Ok(())
    }
}
