//! Seeds 000/001's bottleneck ResNet.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{batch_norm, BatchNormConfig, Conv2dConfig, VarBuilder};

use crate::batch_norm::{BatchNormMode, Bn};
use crate::conv::{conv2d, Conv};
use crate::cpu_plan::{PlanBuilder, Value};
use crate::train_ops;

use crate::{KERAS_BN_EPS, KERAS_BN_UPDATE};

/// Stages of the seed ResNet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedResNetConfig {
    /// Bottleneck blocks per stage; each stage halves the resolution and doubles the filters.
    pub blocks: Vec<usize>,
    /// Filters of the stem and of the first stage's bottleneck (4× that leaves the block).
    pub filters: usize,
}

impl SeedResNetConfig {
    /// Seed 000: `blocks=[3, 6, 4]`, 64 filters; 64×64 → 8×8×1024.
    pub fn seed000() -> Self {
        Self { blocks: vec![3, 6, 4], filters: 64 }
    }

    /// Seed 001: `blocks=[2]`, 64 filters; 64×64 → 32×32×256.
    pub fn seed001() -> Self {
        Self { blocks: vec![2], filters: 64 }
    }
}

/// Conv + Keras BatchNorm (epsilon 1e-3), the pair every layer of the seed ResNet uses.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv,
    bn: Bn,
}

impl ConvBn {
    /// `{prefix}_conv` and `{prefix}_bn` in `vb`.
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        vb: &VarBuilder,
        prefix: &str,
    ) -> Result<Self> {
        // Keras "same" for 3×3 stride 1 pads 1 on every side; the 1×1 layers are "valid".
        let cfg = Conv2dConfig { padding: k / 2, stride, ..Default::default() };
        let conv = conv2d(c_in, c_out, k, cfg, vb.pp(format!("{prefix}_conv")))?;
        let bn_cfg =
            BatchNormConfig { eps: KERAS_BN_EPS, momentum: KERAS_BN_UPDATE, ..Default::default() };
        let bn = Bn(batch_norm(c_out, bn_cfg, vb.pp(format!("{prefix}_bn")))?);
        Ok(Self { conv, bn })
    }

    fn forward_mode(&self, x: &Tensor, mode: BatchNormMode) -> Result<Tensor> {
        self.bn.forward_mode(&self.conv.forward(x)?, mode)
    }

    /// Batch-statistics `mode` on NHWC activations through the CPU kernels, ReLU fused if `relu`.
    fn batch_stats_nhwc(&self, x: &Tensor, relu: bool, mode: BatchNormMode) -> Result<Tensor> {
        self.bn.batch_stats_nhwc(&train_ops::conv(x, &self.conv.0)?, relu, mode)
    }

    fn parts(&self) -> crate::cpu_plan::ConvBn<'_> {
        (&self.conv, &self.bn.0)
    }
}

/// `building_block(filters, block)` of the seeds: 1×1 (stride 2 in block 0) → 3×3 → 1×1 (4f),
/// each with BN, ReLU between; shortcut 1×1 + BN in block 0, identity otherwise; add, ReLU.
#[derive(Debug, Clone)]
struct Bottleneck {
    a: ConvBn,
    b: ConvBn,
    c: ConvBn,
    shortcut: Option<ConvBn>,
}

impl Bottleneck {
    fn new(c_in: usize, filters: usize, first: bool, vb: VarBuilder) -> Result<Self> {
        let stride = if first { 2 } else { 1 };
        Ok(Self {
            a: ConvBn::new(c_in, filters, 1, stride, &vb, "a")?,
            b: ConvBn::new(filters, filters, 3, 1, &vb, "b")?,
            c: ConvBn::new(filters, 4 * filters, 1, 1, &vb, "c")?,
            shortcut: if first {
                Some(ConvBn::new(c_in, 4 * filters, 1, stride, &vb, "shortcut")?)
            } else {
                None
            },
        })
    }

    fn forward_mode(&self, x: &Tensor, mode: BatchNormMode) -> Result<Tensor> {
        let y = self.a.forward_mode(x, mode)?.relu()?;
        let y = self.b.forward_mode(&y, mode)?.relu()?;
        let y = self.c.forward_mode(&y, mode)?;
        let shortcut = match &self.shortcut {
            Some(s) => s.forward_mode(x, mode)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }

    /// [`Bottleneck::forward_mode`] in a batch-statistics mode on NHWC activations (CPU kernels).
    fn batch_stats_nhwc(&self, x: &Tensor, mode: BatchNormMode) -> Result<Tensor> {
        let y = self.a.batch_stats_nhwc(x, true, mode)?;
        let y = self.b.batch_stats_nhwc(&y, true, mode)?;
        let y = self.c.batch_stats_nhwc(&y, false, mode)?;
        let shortcut = match &self.shortcut {
            Some(s) => s.batch_stats_nhwc(x, false, mode)?,
            None => x.clone(),
        };
        train_ops::add_relu(&y, &shortcut)
    }

    /// The block in a CPU plan.
    fn plan(&self, g: &mut PlanBuilder, x: Value) -> Result<Value> {
        let convs = [self.a.parts(), self.b.parts(), self.c.parts()];
        g.bottleneck(x, convs, self.shortcut.as_ref().map(ConvBn::parts))
    }
}

/// The seed ResNet feature extractor (NCHW in, NCHW out).
///
/// `VarBuilder` paths (each conv has `weight` `[out, in, kh, kw]` and `bias`; each BN `weight`,
/// `bias`, `running_mean`, `running_var`):
/// - `stem_conv`, `stem_bn`: 3×3, 3 → `filters`;
/// - `stage{s}.block{b}.{a,b,c}_{conv,bn}`: the bottleneck's 1×1, 3×3, 1×1 layers;
/// - `stage{s}.block0.shortcut_{conv,bn}`: the projection of each stage's first block.
///
/// [`SeedResNet::keras_creation_order`] lists the convs and BNs in the order the seed code
/// creates them, which is how auto-named Keras checkpoints (`conv2d_17`, …) map onto these paths.
#[derive(Debug, Clone)]
pub struct SeedResNet {
    stem: ConvBn,
    stages: Vec<Vec<Bottleneck>>,
    out_channels: usize,
}

impl SeedResNet {
    /// Builds the backbone from `vb`.
    pub fn new(config: &SeedResNetConfig, vb: VarBuilder) -> Result<Self> {
        if config.blocks.contains(&0) || config.filters == 0 {
            candle_core::bail!(
                "seed ResNet needs ≥ 1 block per stage and filters > 0, got {config:?}"
            )
        }
        let stem = ConvBn::new(3, config.filters, 3, 1, &vb, "stem")?;
        let (mut c_in, mut filters) = (config.filters, config.filters);
        let mut stages = Vec::with_capacity(config.blocks.len());
        for (s, &n) in config.blocks.iter().enumerate() {
            let vs = vb.pp(format!("stage{s}"));
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                blocks.push(Bottleneck::new(c_in, filters, b == 0, vs.pp(format!("block{b}")))?);
                c_in = 4 * filters;
            }
            stages.push(blocks);
            filters *= 2;
        }
        Ok(Self { stem, stages, out_channels: c_in })
    }

    /// Channels of the output feature map (`4 · filters · 2^(stages−1)`).
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Inference forward pass (BN with the moving statistics); [`ModuleT::forward_t`] trains.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_mode(x, BatchNormMode::Inference)
    }

    /// The forward pass with every BatchNorm in `mode`.
    pub fn forward_mode(&self, x: &Tensor, mode: BatchNormMode) -> Result<Tensor> {
        let mut x = self.stem.forward_mode(x, mode)?.relu()?;
        for block in self.stages.iter().flatten() {
            x = block.forward_mode(&x, mode)?;
        }
        Ok(x)
    }

    /// [`SeedResNet::forward_mode`] on NHWC images through the CPU kernels, NHWC out, for the
    /// modes that use batch statistics (training and calibration); gradients are computed by
    /// `rpn-kernels` (see `train_ops`).
    pub(crate) fn batch_stats_nhwc(&self, images: &Tensor, mode: BatchNormMode) -> Result<Tensor> {
        let mut x = self.stem.batch_stats_nhwc(images, true, mode)?;
        for block in self.stages.iter().flatten() {
            x = block.batch_stats_nhwc(&x, mode)?;
        }
        Ok(x)
    }

    /// The backbone in a CPU plan (inference mode), from `x`.
    pub(crate) fn plan(&self, g: &mut PlanBuilder, x: Value) -> Result<Value> {
        let mut x = g.conv_bn(self.stem.parts(), x, None, true)?;
        for block in self.stages.iter().flatten() {
            x = block.plan(g, x)?;
        }
        Ok(x)
    }

    /// Total stride (`2^stages`).
    pub fn stride(&self) -> usize {
        1 << self.stages.len()
    }

    /// `(conv paths, bn paths)` in the seed code's creation order: stem, then per block
    /// `a, b, c` and (block 0) `shortcut`.
    pub fn keras_creation_order(config: &SeedResNetConfig) -> (Vec<String>, Vec<String>) {
        let mut names = vec!["stem".to_owned()];
        for (s, &n) in config.blocks.iter().enumerate() {
            for b in 0..n {
                for layer in ["a", "b", "c"] {
                    names.push(format!("stage{s}.block{b}.{layer}"));
                }
                if b == 0 {
                    names.push(format!("stage{s}.block{b}.shortcut"));
                }
            }
        }
        (
            names.iter().map(|n| format!("{n}_conv")).collect(),
            names.iter().map(|n| format!("{n}_bn")).collect(),
        )
    }
}

/// `train = true` normalises with batch statistics and updates the moving ones (Keras momentum
/// 0.99); `false` uses the moving statistics (inference, and Keras' frozen BN).
impl ModuleT for SeedResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_mode(x, if train { BatchNormMode::Train } else { BatchNormMode::Inference })
    }
}
