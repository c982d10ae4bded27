//! The VGG16 convolutional body with Keras layer names.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use rpn_kernels::Padding;

use crate::conv::{conv2d, Conv};
use crate::cpu_plan::{self, PlanBuilder, PlanCache, PoolPadding};

/// `(block, convs, channels)` of VGG16.
const BLOCKS: [(usize, usize, usize); 5] =
    [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)];

/// Keras `VGG16(include_top=False)` without the last pooling: 13 convs 3×3 "same" + ReLU named
/// `block{b}_conv{i}`, 2×2 max-pools (stride 2, "valid") after blocks 1–4, so the output is the
/// 512-channel `block5_conv3` map at stride 16 — the features seed 002's head reads.
#[derive(Debug, Clone)]
pub struct Vgg16 {
    convs: Vec<(usize, Conv)>,
    /// The compiled CPU inference plan, made on first use (see `cpu_plan`).
    plan: PlanCache,
}

impl Vgg16 {
    /// Builds the 13 convs from `vb` (`block1_conv1` … `block5_conv3`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let same = Conv2dConfig { padding: 1, ..Default::default() };
        let mut convs = Vec::new();
        let mut c_in = 3;
        for (block, n, c_out) in BLOCKS {
            for i in 1..=n {
                convs.push((
                    block,
                    conv2d(c_in, c_out, 3, same, vb.pp(format!("block{block}_conv{i}")))?,
                ));
                c_in = c_out;
            }
        }
        Ok(Self { convs, plan: PlanCache::default() })
    }

    /// NHWC images → NCHW `block5_conv3` features. On the CPU, with plain-tensor weights and an
    /// `f32` input that tracks no gradient, a compiled plan runs the layers on `rpn-kernels`
    /// (NHWC throughout; the features come back as an NCHW view); otherwise candle's ops, as
    /// [`Module::forward`].
    pub fn forward_nhwc(&self, images: &Tensor) -> Result<Tensor> {
        if cpu_plan::plan_applies(images) {
            if let Some(plan) = self.plan.get(|| self.compile_plan())? {
                let (input, shape) = cpu_plan::plan_input(images)?;
                let mut outputs = plan.run(input, shape)?.into_iter();
                let Some(features) = outputs.next() else {
                    candle_core::bail!("CPU plan: VGG16 has one output")
                };
                return cpu_plan::nchw_view(features);
            }
        }
        self.forward(&crate::nhwc_to_nchw(images)?)
    }

    /// The body as a CPU plan: each conv with its ReLU fused, the 2×2 "valid" pools.
    fn compile_plan(&self) -> Result<cpu_plan::CpuPlan> {
        let mut g = PlanBuilder::default();
        let mut x = PlanBuilder::INPUT;
        for (i, (block, conv)) in self.convs.iter().enumerate() {
            let weights = g.conv_weights(conv)?;
            x = g.conv(weights, x, None, true);
            if self.ends_pooled_block(i, *block) {
                x = g.max_pool(x, 2, 2, PoolPadding::Fixed(Padding::symmetric(0)));
            }
        }
        g.output(x);
        Ok(g.finish())
    }

    /// Whether conv `i` (of block `block`) is the last of a block followed by a pool (1–4).
    fn ends_pooled_block(&self, i: usize, block: usize) -> bool {
        let last_of_block = self.convs.get(i + 1).is_none_or(|(next, _)| *next != block);
        last_of_block && block < 5
    }

    /// Paths in creation order.
    pub fn keras_creation_order() -> Vec<String> {
        BLOCKS
            .iter()
            .flat_map(|&(b, n, _)| (1..=n).map(move |i| format!("block{b}_conv{i}")))
            .collect()
    }

    /// Total stride of the output (16).
    pub fn stride(&self) -> usize {
        16
    }
}

impl Module for Vgg16 {
    /// NCHW images → NCHW `block5_conv3` features.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, (block, conv)) in self.convs.iter().enumerate() {
            x = conv.forward(&x)?.relu()?;
            if self.ends_pooled_block(i, *block) {
                x = x.max_pool2d(2)?;
            }
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Model, Network};

    /// VGG16 with random weights, as plain tensors.
    fn random_vgg16() -> Result<Vgg16> {
        match cpu_plan::tests::random_model(&Network::Vgg16)? {
            Model::Vgg16(model) => Ok(model),
            _ => candle_core::bail!("Network::Vgg16 built another model"),
        }
    }

    /// The VGG16 CPU plan against candle's path (random weights), odd sides included: the
    /// "valid" pools drop the last row and column.
    #[test]
    fn vgg16_cpu_plan_matches_candle() -> Result<()> {
        let model = random_vgg16()?;
        let images = Tensor::randn(0f32, 1.0, (2, 40, 56, 3), &candle_core::Device::Cpu)?;
        let fast = model.forward_nhwc(&images)?;
        assert!(model.plan.get(|| model.compile_plan())?.is_some(), "plain weights: a plan");
        let slow = model.forward(&crate::nhwc_to_nchw(&images)?)?;
        cpu_plan::tests::assert_close("block5_conv3", &fast, &slow)
    }

    /// Images too small for four 2×2 pools: the plan agrees with candle's path (an empty map or
    /// an error, never a panic).
    #[test]
    fn tiny_images_behave_as_on_candle() -> Result<()> {
        let model = random_vgg16()?;
        for (h, w) in [(1, 1), (5, 7), (15, 16)] {
            let images = Tensor::randn(0f32, 1.0, (1, h, w, 3), &candle_core::Device::Cpu)?;
            let fast = model.forward_nhwc(&images).map(|t| t.dims().to_vec());
            let slow = model.forward(&crate::nhwc_to_nchw(&images)?).map(|t| t.dims().to_vec());
            assert_eq!(fast.is_ok(), slow.is_ok(), "{h}×{w}: {fast:?} vs {slow:?}");
            if let (Ok(fast), Ok(slow)) = (fast, slow) {
                assert_eq!(fast, slow, "{h}×{w}");
            }
        }
        Ok(())
    }
}
