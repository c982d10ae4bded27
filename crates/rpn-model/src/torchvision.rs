//! torchvision's Faster R-CNN RPN (`fasterrcnn_resnet50_fpn` and `_v2`): the `resnet50` body,
//! `FeaturePyramidNetwork` with `LastLevelMaxPool`, and `RPNHead`, with torchvision's state-dict
//! keys as `VarBuilder` paths, so a ported `model.state_dict()` loads by name.
//!
//! torchvision's numerics, which differ from Matterport's: the stride of a stage's first block
//! sits on its 3×3 conv (ResNet v1.5), convolutions of the body have no bias, BatchNorm is
//! `FrozenBatchNorm2d` with epsilon 1e-5 (`nn.BatchNorm2d` in eval mode, the same arithmetic,
//! for `weights_backbone=None`), the stem's max-pool is 3×3/2 with symmetric padding 1, the FPN
//! upsamples by nearest to the lateral's exact size, and P6 is `max_pool2d(P5, 1, 2)`. Inputs are
//! NCHW batches as `GeneralizedRCNNTransform` makes them (normalised, padded to a multiple of 32).

use candle_core::{Module, Result, Tensor};
use candle_nn::{batch_norm, BatchNorm, BatchNormConfig, Conv2dConfig, VarBuilder};

use crate::conv::{conv2d, Conv};
use crate::cpu_plan::{self, CpuPlan, PlanBuilder, PlanCache, PoolPadding, Value};

/// `FrozenBatchNorm2d`'s (and `nn.BatchNorm2d`'s) epsilon.
pub const TORCH_BN_EPS: f64 = 1e-5;

/// `GeneralizedRCNNTransform`'s `size_divisible`: batches are padded to multiples of it.
pub const TORCHVISION_SIZE_DIVISIBLE: usize = 32;

/// Sizes of [`TorchvisionRpn`]. [`TorchvisionConfig::resnet50_fpn`] and
/// [`TorchvisionConfig::resnet50_fpn_v2`] are torchvision's; narrower variants keep the graph
/// and the names (for small test checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorchvisionConfig {
    /// Bottleneck blocks per stage (`resnet50`: 3, 4, 6, 3).
    pub blocks: [usize; 4],
    /// Channels of the stem and of `layer1`'s bottleneck (64); `layer{s}` uses
    /// `width · 2^(s−1)` and outputs 4× that.
    pub width: usize,
    /// `out_channels` of the FPN (256).
    pub fpn_channels: usize,
    /// Anchors per location (3: one size × ratios 0.5, 1, 2 per level).
    pub anchors_per_location: usize,
    /// FPN convolutions are conv (no bias) + BatchNorm (v2: `norm_layer=nn.BatchNorm2d`)
    /// instead of conv with bias (v1).
    pub fpn_norm: bool,
    /// 3×3 conv + ReLU layers of `RPNHead` before the two 1×1 outputs (`conv_depth`: v1 1,
    /// v2 2).
    pub head_convs: usize,
}

impl TorchvisionConfig {
    /// `fasterrcnn_resnet50_fpn` (v1) and `maskrcnn_resnet50_fpn`.
    pub fn resnet50_fpn() -> Self {
        Self {
            blocks: [3, 4, 6, 3],
            width: 64,
            fpn_channels: 256,
            anchors_per_location: 3,
            fpn_norm: false,
            head_convs: 1,
        }
    }

    /// `fasterrcnn_resnet50_fpn_v2` (Li et al., "Benchmarking Detection Transfer Learning with
    /// Vision Transformers"): BatchNorm in the FPN, two convs in the RPN head.
    pub fn resnet50_fpn_v2() -> Self {
        Self { fpn_norm: true, head_convs: 2, ..Self::resnet50_fpn() }
    }
}

/// Conv (no bias) + frozen BN.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv,
    bn: BatchNorm,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        conv: VarBuilder,
        bn: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig { padding: k / 2, stride, ..Default::default() };
        let bn_cfg = BatchNormConfig { eps: TORCH_BN_EPS, ..Default::default() };
        Ok(Self {
            conv: conv2d_no_bias(c_in, c_out, k, cfg, conv)?,
            bn: batch_norm(c_out, bn_cfg, bn)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_core::ModuleT::forward_t(&self.bn, &self.conv.forward(x)?, false)
    }

    fn parts(&self) -> cpu_plan::ConvBn<'_> {
        (&self.conv, &self.bn)
    }
}

fn conv2d_no_bias(
    c_in: usize,
    c_out: usize,
    k: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv> {
    let weight = vb.get((c_out, c_in / cfg.groups, k, k), "weight")?;
    Ok(Conv(candle_nn::Conv2d::new(weight, None, cfg)))
}

/// An FPN convolution: `Conv2dNormActivation` without activation — conv with bias (v1), or conv
/// without bias + BatchNorm (v2), at `{vb}.0` (and `{vb}.1`).
#[derive(Debug, Clone)]
enum FpnConv {
    Plain(Conv),
    Normed(ConvBn),
}

impl FpnConv {
    fn new(c_in: usize, c_out: usize, k: usize, norm: bool, vb: VarBuilder) -> Result<Self> {
        if norm {
            Ok(Self::Normed(ConvBn::new(c_in, c_out, k, 1, vb.pp("0"), vb.pp("1"))?))
        } else {
            let cfg = Conv2dConfig { padding: k / 2, ..Default::default() };
            Ok(Self::Plain(conv2d(c_in, c_out, k, cfg, vb.pp("0"))?))
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Plain(c) => c.forward(x),
            Self::Normed(c) => c.forward(x),
        }
    }

    fn plan(&self, g: &mut PlanBuilder, x: Value) -> Result<Value> {
        match self {
            Self::Plain(c) => {
                let conv = g.conv_weights(c)?;
                Ok(g.conv(conv, x, None, false))
            }
            Self::Normed(c) => g.conv_bn(c.parts(), x, None, false),
        }
    }
}

/// torchvision's `Bottleneck`: 1×1, 3×3 (stride here), 1×1 ×4, projection `downsample`.
#[derive(Debug, Clone)]
struct Bottleneck {
    convs: [ConvBn; 3],
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn new(c_in: usize, planes: usize, stride: usize, vb: &VarBuilder) -> Result<Self> {
        let cb = |i: usize, c_in, c_out, k, s| {
            ConvBn::new(c_in, c_out, k, s, vb.pp(format!("conv{i}")), vb.pp(format!("bn{i}")))
        };
        let downsample = if stride != 1 || c_in != 4 * planes {
            let d = vb.pp("downsample");
            Some(ConvBn::new(c_in, 4 * planes, 1, stride, d.pp("0"), d.pp("1"))?)
        } else {
            None
        };
        Ok(Self {
            convs: [
                cb(1, c_in, planes, 1, 1)?,
                cb(2, planes, planes, 3, stride)?,
                cb(3, planes, 4 * planes, 1, 1)?,
            ],
            downsample,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.convs[0].forward(x)?.relu()?;
        let y = self.convs[1].forward(&y)?.relu()?;
        let y = self.convs[2].forward(&y)?;
        let identity = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        (y + identity)?.relu()
    }

    /// The block in a CPU plan.
    fn plan(&self, g: &mut PlanBuilder, x: Value) -> Result<Value> {
        let convs = [self.convs[0].parts(), self.convs[1].parts(), self.convs[2].parts()];
        g.bottleneck(x, convs, self.downsample.as_ref().map(ConvBn::parts))
    }
}

/// The RPN's raw outputs for a batch, flattened as torchvision's `concat_box_prediction_layers`:
/// rows in level → y → x → anchor order.
#[derive(Debug, Clone)]
pub struct TorchvisionOutputs {
    /// `[B, N]` objectness logits (`RPNHead.cls_logits`).
    pub objectness: Tensor,
    /// `[B, N, 4]` `(dx, dy, dw, dh)` (`RPNHead.bbox_pred`; the RPN's box coder weights are 1).
    pub deltas: Tensor,
    /// The FPN's outputs `'0'…'3', 'pool'` (P2…P6), NCHW.
    pub pyramid: Vec<Tensor>,
    /// `RPNHead`'s own outputs per level, as torchvision returns them: `([N, A, H, W]`
    /// objectness, `[N, 4A, H, W]` deltas) for P2…P6.
    pub per_level: Vec<(Tensor, Tensor)>,
}

/// torchvision's ResNet-FPN with the RPN head.
///
/// `VarBuilder` paths are torchvision's state-dict keys: `backbone.body.conv1`,
/// `backbone.body.bn1`, `backbone.body.layer{1..4}.{i}.{conv,bn}{1,2,3}`,
/// `….downsample.{0,1}`, `backbone.fpn.inner_blocks.{0..3}.0`, `backbone.fpn.layer_blocks.{0..3}.0`,
/// `rpn.head.conv.0.0`, `rpn.head.cls_logits`, `rpn.head.bbox_pred`; v2 adds the FPN's
/// BatchNorms at `….{inner,layer}_blocks.{i}.1` and the second head conv `rpn.head.conv.1.0`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use rpn_model::{TorchvisionConfig, TorchvisionRpn};
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let narrow = TorchvisionConfig { width: 8, fpn_channels: 16, ..TorchvisionConfig::resnet50_fpn() };
/// let model = TorchvisionRpn::new(&narrow, vb)?;
/// let out = model.forward(&Tensor::zeros((1, 3, 64, 96), DType::F32, &Device::Cpu)?)?;
/// // P2…P6 of 64×96: 16×24 + 8×12 + 4×6 + 2×3 + 1×2 cells, 3 anchors each.
/// assert_eq!(out.objectness.dims(), &[1, 3 * (384 + 96 + 24 + 6 + 2)]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TorchvisionRpn {
    stem: ConvBn,
    layers: Vec<Vec<Bottleneck>>,
    inner: Vec<FpnConv>,
    outer: Vec<FpnConv>,
    head_convs: Vec<Conv>,
    cls_logits: Conv,
    bbox_pred: Conv,
    config: TorchvisionConfig,
    /// The CPU inference plan, compiled on first use.
    plan: PlanCache,
}

impl TorchvisionRpn {
    /// Builds the model from `vb` (paths as above).
    pub fn new(config: &TorchvisionConfig, vb: VarBuilder) -> Result<Self> {
        if config.width == 0
            || config.fpn_channels == 0
            || config.anchors_per_location == 0
            || config.head_convs == 0
        {
            candle_core::bail!("torchvision RPN needs non-zero widths, got {config:?}")
        }
        let body = vb.pp("backbone").pp("body");
        let stem = ConvBn::new(3, config.width, 7, 2, body.pp("conv1"), body.pp("bn1"))?;
        let (mut c_in, mut planes) = (config.width, config.width);
        let mut layers = Vec::with_capacity(4);
        let mut outs = Vec::with_capacity(4);
        for (i, &n) in config.blocks.iter().enumerate() {
            let layer = body.pp(format!("layer{}", i + 1));
            let stride = if i == 0 { 1 } else { 2 };
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                let s = if b == 0 { stride } else { 1 };
                blocks.push(Bottleneck::new(c_in, planes, s, &layer.pp(b.to_string()))?);
                c_in = 4 * planes;
            }
            layers.push(blocks);
            outs.push(c_in);
            planes *= 2;
        }
        let fpn = vb.pp("backbone").pp("fpn");
        let f = config.fpn_channels;
        let same = Conv2dConfig { padding: 1, ..Default::default() };
        let norm = config.fpn_norm;
        let inner = outs
            .iter()
            .enumerate()
            .map(|(i, &c)| FpnConv::new(c, f, 1, norm, fpn.pp(format!("inner_blocks.{i}"))))
            .collect::<Result<_>>()?;
        let outer = (0..4)
            .map(|i| FpnConv::new(f, f, 3, norm, fpn.pp(format!("layer_blocks.{i}"))))
            .collect::<Result<_>>()?;
        let head = vb.pp("rpn").pp("head");
        let a = config.anchors_per_location;
        Ok(Self {
            stem,
            layers,
            inner,
            outer,
            head_convs: (0..config.head_convs)
                .map(|i| conv2d(f, f, 3, same, head.pp(format!("conv.{i}.0"))))
                .collect::<Result<_>>()?,
            cls_logits: conv2d(f, a, 1, Default::default(), head.pp("cls_logits"))?,
            bbox_pred: conv2d(f, 4 * a, 1, Default::default(), head.pp("bbox_pred"))?,
            config: *config,
            plan: PlanCache::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TorchvisionConfig {
        &self.config
    }

    /// `layer1`…`layer4` outputs (C2…C5) of an NCHW batch.
    fn body(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let x = self.stem.forward(x)?.relu()?;
        // 3×3/2 max-pool with padding 1; after ReLU, zero padding equals −∞ padding.
        let mut x =
            x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)?;
        let mut c = Vec::with_capacity(4);
        for layer in &self.layers {
            for block in layer {
                x = block.forward(&x)?;
            }
            c.push(x.clone());
        }
        Ok(c)
    }

    /// `FeaturePyramidNetwork` + `LastLevelMaxPool`: P2…P6 from C2…C5.
    fn fpn(&self, c: &[Tensor]) -> Result<Vec<Tensor>> {
        let last = c.len() - 1;
        let mut inner = self.inner[last].forward(&c[last])?;
        let mut results = vec![self.outer[last].forward(&inner)?];
        for i in (0..last).rev() {
            let lateral = self.inner[i].forward(&c[i])?;
            let (_, _, h, w) = lateral.dims4()?;
            inner = (lateral + inner.upsample_nearest2d(h, w)?)?;
            results.insert(0, self.outer[i].forward(&inner)?);
        }
        let p6 = results[last].max_pool2d_with_stride(1, 2)?;
        results.push(p6);
        Ok(results)
    }

    /// A normalised, padded NCHW batch → objectness and deltas over P2…P6.
    ///
    /// On the CPU, for `f32` inputs without gradients whose sides are multiples of 32 and a
    /// model whose weights are plain tensors (not `Var`s), this runs the compiled CPU plan (NHWC
    /// kernels, BN folded; pyramid and per-level maps come back as NCHW views of NHWC buffers);
    /// otherwise candle's ops.
    pub fn forward(&self, images: &Tensor) -> Result<TorchvisionOutputs> {
        let (_, _, h, w) = images.dims4()?;
        let whole = |side: usize| side.is_multiple_of(TORCHVISION_SIZE_DIVISIBLE);
        if whole(h) && whole(w) && cpu_plan::plan_applies(images) {
            if let Some(plan) = self.plan.get(|| self.compile_plan())? {
                return self.forward_plan(&plan, &images.permute((0, 2, 3, 1))?);
            }
        }
        self.forward_candle(images)
    }

    fn forward_candle(&self, images: &Tensor) -> Result<TorchvisionOutputs> {
        let pyramid = self.fpn(&self.body(images)?)?;
        let (mut objectness, mut deltas, mut per_level) = (Vec::new(), Vec::new(), Vec::new());
        for p in &pyramid {
            let mut t = p.clone();
            for conv in &self.head_convs {
                t = conv.forward(&t)?.relu()?;
            }
            let (logits, boxes) = (self.cls_logits.forward(&t)?, self.bbox_pred.forward(&t)?);
            objectness.push(crate::head::to_keras_rows(&logits, 1)?.squeeze(2)?);
            deltas.push(crate::head::to_keras_rows(&boxes, 4)?);
            per_level.push((logits, boxes));
        }
        Ok(TorchvisionOutputs {
            objectness: Tensor::cat(&objectness, 1)?,
            deltas: Tensor::cat(&deltas, 1)?,
            pyramid,
            per_level,
        })
    }
}

impl TorchvisionRpn {
    /// The inference graph, layer for layer as [`TorchvisionRpn::forward_candle`]. Outputs: the
    /// pyramid, then each level's objectness logits, then each level's deltas.
    fn compile_plan(&self) -> Result<CpuPlan> {
        let mut g = PlanBuilder::default();
        let x = g.conv_bn(self.stem.parts(), PlanBuilder::INPUT, None, true)?;
        let pool = PoolPadding::Fixed(rpn_kernels::Padding::symmetric(1));
        let mut x = g.max_pool(x, 3, 2, pool);
        let mut c = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            for block in layer {
                x = block.plan(&mut g, x)?;
            }
            c.push(x);
        }
        let last = c.len() - 1;
        let mut inner = self.inner[last].plan(&mut g, c[last])?;
        let mut pyramid = vec![self.outer[last].plan(&mut g, inner)?];
        for i in (0..last).rev() {
            let lateral = self.inner[i].plan(&mut g, c[i])?;
            inner = g.upsample_add(inner, lateral);
            pyramid.insert(0, self.outer[i].plan(&mut g, inner)?);
        }
        pyramid.push(g.max_pool(
            pyramid[last],
            1,
            2,
            PoolPadding::Fixed(rpn_kernels::Padding::VALID),
        ));
        let trunk: Vec<&Conv> = self.head_convs.iter().collect();
        g.pyramid_head(pyramid, &trunk, &self.cls_logits, &self.bbox_pred)?;
        Ok(g.finish())
    }

    fn forward_plan(&self, plan: &CpuPlan, images_nhwc: &Tensor) -> Result<TorchvisionOutputs> {
        let (input, shape) = cpu_plan::plan_input(images_nhwc)?;
        let out = cpu_plan::PyramidOutputs::new(plan.run(input, shape)?)?;
        let objectness = cpu_plan::keras_rows(&out.classes, 1)?.squeeze(2)?;
        let deltas = cpu_plan::keras_rows(&out.boxes, 4)?;
        let per_level = out
            .classes
            .into_iter()
            .zip(out.boxes)
            .map(|(l, b)| Ok((cpu_plan::nchw_view(l)?, cpu_plan::nchw_view(b)?)))
            .collect::<Result<Vec<_>>>()?;
        let pyramid = out.pyramid;
        Ok(TorchvisionOutputs { objectness, deltas, pyramid, per_level })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU plan against candle's path, v1 and v2 (FPN BatchNorm, two head convs), narrow.
    #[test]
    fn cpu_plan_matches_candle() -> Result<()> {
        for base in [TorchvisionConfig::resnet50_fpn(), TorchvisionConfig::resnet50_fpn_v2()] {
            let config = TorchvisionConfig { width: 8, fpn_channels: 16, ..base };
            let network = crate::Network::Torchvision(config);
            let crate::Model::Torchvision(model) = cpu_plan::tests::random_model(&network)? else {
                unreachable!()
            };
            let images = Tensor::randn(0f32, 1.0, (2, 3, 64, 96), &candle_core::Device::Cpu)?;
            let plan = model.compile_plan()?;
            let fast = model.forward_plan(&plan, &images.permute((0, 2, 3, 1))?)?;
            let slow = model.forward_candle(&images)?;
            cpu_plan::tests::assert_close("objectness", &fast.objectness, &slow.objectness)?;
            cpu_plan::tests::assert_close("deltas", &fast.deltas, &slow.deltas)?;
            for (f, s) in fast.pyramid.iter().zip(&slow.pyramid) {
                cpu_plan::tests::assert_close("pyramid", f, s)?;
            }
            for ((fl, fb), (sl, sb)) in fast.per_level.iter().zip(&slow.per_level) {
                cpu_plan::tests::assert_close("level logits", fl, sl)?;
                cpu_plan::tests::assert_close("level boxes", fb, sb)?;
            }
        }
        Ok(())
    }
}
