//! candle models of the seed notebooks: backbones and RPN heads with Keras numerics.
//!
//! - [`SeedResNet`]: seeds 000/001's bottleneck ResNet (3×3 stem, stages of bottleneck blocks,
//!   1×1 stride-2 projection in each stage's first block); [`SeedResNetConfig::seed000`]
//!   (`[3, 6, 4]`, stride 8, 1024 channels) and [`SeedResNetConfig::seed001`] (`[2]`, stride 2,
//!   256 channels).
//! - [`SeedRpnHead`]: seeds 000/001's head (3×3 256 *linear*, `2k` logits, `4k` deltas) and
//!   [`Seed002Head`]: seed 002's head on 512-channel features (3×3 512 ReLU, `k` sigmoid, `4k`).
//! - [`Vgg16`]: the VGG16 convolutional body (Keras `block1_conv1` … `block5_conv3`), so seed
//!   002's head runs on images.
//! - [`SeedRpn`]: backbone + head, images in, Keras-layout outputs out.
//! - [`MatterportRpn`]: Matterport Mask R-CNN's ResNet-50/101-FPN with the shared RPN head over
//!   P2–P6 (Keras layer names, TF "same" pooling, frozen BN), and [`pyramid_roi_align`] /
//!   [`crop_and_resize`], the TF-exact hand-off to a second stage.
//!
//! Conventions at the API edge are Keras': images are **NHWC** `f32`; RPN outputs are
//! `[B, H·W·k, 2]` logits/probabilities and `[B, H·W·k, 4]` deltas with row `(y·W + x)·k + a`
//! (the head's NCHW output is permuted to NHWC before reshaping); seed 002 returns `[B, H, W, k]`
//! and `[B, H, W, 4k]`. Inside, tensors are NCHW as candle's convolutions expect. BatchNorm uses
//! Keras' epsilon 1e-3 and the moving statistics (inference).
//!
//! `VarBuilder` paths are stable, documented names ([`SeedResNet`] lists them); Keras layer names
//! are used where Keras has meaningful ones (seed 002, VGG16). Parameter counts equal Keras'
//! exactly: seed 000 9,276,086 (27,520 non-trainable), seed 001 754,486, seed 002 2,382,893.

mod batch_norm;
mod conv;
mod cpu_plan;
mod head;
mod matterport;
mod network;
mod pool;
mod resnet;
mod roi_align;
mod torchvision;
mod train_ops;
mod vgg;

pub use batch_norm::BatchNormMode;
pub use head::{RpnOutputs, Seed002Head, Seed002Outputs, SeedRpnHead, SeedRpnHeadConfig};
pub use matterport::{
    MatterportConfig, MatterportOutputs, MatterportRpn, ResNetDepth, MATTERPORT_SIDE_MULTIPLE,
};
pub use network::{KerasLayout, Model, Network, WeightsError};
pub use resnet::{SeedResNet, SeedResNetConfig};
pub use roi_align::{crop_and_resize, pyramid_roi_align, roi_level};
pub use torchvision::{
    TorchvisionConfig, TorchvisionOutputs, TorchvisionRpn, TORCHVISION_SIZE_DIVISIBLE, TORCH_BN_EPS,
};
pub use vgg::Vgg16;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// Keras `BatchNormalization` default epsilon (PyTorch/candle default 1e-5 would shift outputs).
pub const KERAS_BN_EPS: f64 = 1e-3;

/// Weight of a batch's statistics in the moving ones: Keras' `momentum = 0.99` keeps 0.99 of the
/// old value, candle's `momentum` names the new value's share, hence 0.01.
pub const KERAS_BN_UPDATE: f64 = 0.01;

/// Images NHWC (Keras) → NCHW (candle), checking the rank.
pub fn nhwc_to_nchw(images: &Tensor) -> Result<Tensor> {
    if images.rank() != 4 {
        candle_core::bail!("expected NHWC images [B, H, W, C], got shape {:?}", images.dims())
    }
    images.permute((0, 3, 1, 2))?.contiguous()
}

/// A seed 000/001 RPN: [`SeedResNet`] + [`SeedRpnHead`].
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use rpn_model::{SeedResNetConfig, SeedRpn};
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let model = SeedRpn::new(&SeedResNetConfig::seed001(), 9, vb)?;
/// let images = Tensor::zeros((2, 64, 48, 3), DType::F32, &Device::Cpu)?; // NHWC, any size /2
/// let out = model.forward_nhwc(&images)?;
/// assert_eq!(out.logits.dims(), &[2, 32 * 24 * 9, 2]);
/// assert_eq!(out.deltas.dims(), &[2, 32 * 24 * 9, 4]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SeedRpn {
    /// The backbone, at `backbone.*`.
    pub backbone: SeedResNet,
    /// The head, at `rpn.*`.
    pub head: SeedRpnHead,
    /// The CPU inference plan, compiled on first use.
    plan: cpu_plan::PlanCache,
}

impl SeedRpn {
    /// Builds the model with `k` anchors per cell (9 in the seeds): `backbone.*` and `rpn.*` in `vb`.
    pub fn new(config: &SeedResNetConfig, anchors_per_cell: usize, vb: VarBuilder) -> Result<Self> {
        let backbone = SeedResNet::new(config, vb.pp("backbone"))?;
        let head_config = SeedRpnHeadConfig {
            in_channels: backbone.out_channels(),
            ..SeedRpnHeadConfig::seed(anchors_per_cell)
        };
        let head = SeedRpnHead::new(&head_config, vb.pp("rpn"))?;
        Ok(Self { backbone, head, plan: cpu_plan::PlanCache::default() })
    }

    /// NHWC images → Keras-layout RPN outputs (inference: BN moving statistics). Each image side
    /// must be divisible by the stride.
    pub fn forward_nhwc(&self, images: &Tensor) -> Result<RpnOutputs> {
        self.forward_nhwc_t(images, false)
    }

    /// As [`SeedRpn::forward_nhwc`]; `train = true` runs BatchNorm in training mode (batch
    /// statistics, moving averages updated).
    pub fn forward_nhwc_t(&self, images: &Tensor, train: bool) -> Result<RpnOutputs> {
        let mode = if train { BatchNormMode::Train } else { BatchNormMode::Inference };
        self.forward_nhwc_mode(images, mode)
    }

    /// As [`SeedRpn::forward_nhwc`] with the backbone's BatchNorms in `mode` (e.g.
    /// [`BatchNormMode::Calibrate`] to recompute population statistics after training).
    ///
    /// In inference mode, on the CPU, for `f32` inputs without gradients and a model whose
    /// weights are plain tensors (not `Var`s), this runs the compiled CPU plan (NHWC kernels,
    /// BN folded); otherwise candle's ops. In training and calibration modes on the CPU (`f32`)
    /// the layers run as `rpn-kernels` custom ops on NHWC activations, differentiable through
    /// candle's autograd. Training and calibration change the BN statistics, so they drop the
    /// plan (it is compiled again on the next inference call).
    pub fn forward_nhwc_mode(&self, images: &Tensor, mode: BatchNormMode) -> Result<RpnOutputs> {
        if images.rank() != 4 {
            candle_core::bail!("expected NHWC images [B, H, W, C], got shape {:?}", images.dims())
        }
        let (_, h, w, _) = images.dims4()?;
        let s = self.backbone.stride();
        if h % s != 0 || w % s != 0 {
            candle_core::bail!("image size {h}x{w} is not divisible by the backbone stride {s}")
        }
        if mode != BatchNormMode::Inference {
            self.plan.clear();
            if train_ops::applies(images) {
                return self.head.train_nhwc(&self.backbone.batch_stats_nhwc(images, mode)?);
            }
        } else if cpu_plan::plan_applies(images) {
            if let Some(plan) = self.plan.get(|| self.compile_plan())? {
                return self.forward_plan(&plan, images);
            }
        }
        self.forward_candle(images, mode)
    }

    fn forward_candle(&self, images: &Tensor, mode: BatchNormMode) -> Result<RpnOutputs> {
        let x = nhwc_to_nchw(images)?;
        self.head.forward(&self.backbone.forward_mode(&x, mode)?)
    }

    fn compile_plan(&self) -> Result<cpu_plan::CpuPlan> {
        let mut g = cpu_plan::PlanBuilder::default();
        let features = self.backbone.plan(&mut g, cpu_plan::PlanBuilder::INPUT)?;
        let (class, bbox) = self.head.plan(&mut g, features)?;
        g.output(class);
        g.output(bbox);
        Ok(g.finish())
    }

    fn forward_plan(&self, plan: &cpu_plan::CpuPlan, images: &Tensor) -> Result<RpnOutputs> {
        let (input, shape) = cpu_plan::plan_input(images)?;
        let mut outputs = plan.run(input, shape)?.into_iter();
        let (Some(class), Some(bbox)) = (outputs.next(), outputs.next()) else {
            candle_core::bail!("CPU plan: the seed head has two outputs")
        };
        let logits = cpu_plan::keras_rows(&[class], 2)?;
        let deltas = cpu_plan::keras_rows(&[bbox], 4)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        Ok(RpnOutputs { logits, probs, deltas })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 000's RPN with random weights and BatchNorm statistics, as plain tensors.
    fn random_seed000() -> Result<SeedRpn> {
        let network =
            Network::SeedRpn { backbone: SeedResNetConfig::seed000(), anchors_per_cell: 9 };
        match cpu_plan::tests::random_model(&network)? {
            Model::SeedRpn(model) => Ok(model),
            _ => candle_core::bail!("seed000 built a model that is not an RPN"),
        }
    }

    /// Running the large-map layers a few images at a time gives the bits of one pass over the
    /// batch: here the stem and the first stage run in chunks of 2 images and 1 (batch 3), the
    /// smaller maps on the joined batch.
    #[test]
    fn chunked_plan_runs_give_the_same_bits() -> Result<()> {
        let model = random_seed000()?;
        let images = Tensor::randn(0f32, 1.0, (3, 32, 32, 3), &candle_core::Device::Cpu)?;
        let plan = model.compile_plan()?;
        let (input, shape) = cpu_plan::plan_input(&images)?;
        let whole = plan.run_chunked(input.clone(), shape, 3)?;
        for per_chunk in [1, 2] {
            let chunked = plan.run_chunked(input.clone(), shape, per_chunk)?;
            assert_eq!(chunked.len(), whole.len());
            for ((a, a_shape), (b, b_shape)) in chunked.iter().zip(&whole) {
                assert_eq!(a_shape, b_shape, "{per_chunk} per chunk");
                assert!(
                    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == b.len(),
                    "{per_chunk} per chunk: outputs differ"
                );
            }
        }
        Ok(())
    }

    /// The seed 000 CPU plan against candle's path (random weights and BN statistics).
    #[test]
    fn seed_cpu_plan_matches_candle() -> Result<()> {
        let model = random_seed000()?;
        let images = Tensor::randn(0f32, 1.0, (2, 32, 48, 3), &candle_core::Device::Cpu)?;
        let plan = model.compile_plan()?;
        let fast = model.forward_plan(&plan, &images)?;
        let slow = model.forward_candle(&images, BatchNormMode::Inference)?;
        cpu_plan::tests::assert_close("logits", &fast.logits, &slow.logits)?;
        cpu_plan::tests::assert_close("probs", &fast.probs, &slow.probs)?;
        cpu_plan::tests::assert_close("deltas", &fast.deltas, &slow.deltas)?;
        Ok(())
    }

    /// Seed 001's training-mode forward pass through the NHWC kernels against candle's NCHW ops:
    /// outputs, every parameter's gradient and the updated moving statistics; then the
    /// calibration mode's moving statistics. Two models with the same weights, one per path.
    #[test]
    fn nhwc_training_path_matches_candle() -> Result<()> {
        use candle_core::{DType, Device, Var};
        use candle_nn::VarMap;
        let dev = Device::Cpu;
        let network =
            Network::SeedRpn { backbone: SeedResNetConfig::seed001(), anchors_per_cell: 9 };
        let build = |varmap: &VarMap| -> Result<SeedRpn> {
            let Model::SeedRpn(model) =
                network.build(VarBuilder::from_varmap(varmap, DType::F32, &dev))?
            else {
                unreachable!()
            };
            Ok(model)
        };
        let (kernels, candle) = (VarMap::new(), VarMap::new());
        let (fast, slow) = (build(&kernels)?, build(&candle)?);
        let vars = |varmap: &VarMap| -> Vec<(String, Var)> {
            let mut vars: Vec<_> = varmap.data().lock().map_or_else(
                |_| Vec::new(),
                |d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            );
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            vars
        };
        // Random statistics and weights away from the initialisation, the same in both.
        for ((name, a), (_, b)) in vars(&kernels).iter().zip(&vars(&candle)) {
            let value = if name.ends_with("running_var") {
                Tensor::rand(0.5f32, 1.5, a.shape(), &dev)?
            } else {
                (Tensor::randn(0f32, 0.2, a.shape(), &dev)? + a.as_tensor())?
            };
            a.set(&value)?;
            b.set(&value)?;
        }
        let images = Tensor::randn(0f32, 1.0, (3, 16, 24, 3), &dev)?;
        let out_fast = fast.forward_nhwc_mode(&images, BatchNormMode::Train)?;
        let out_slow = slow.forward_candle(&images, BatchNormMode::Train)?;
        let probe_logits = Tensor::randn(0f32, 1.0, out_slow.logits.shape(), &dev)?;
        let probe_deltas = Tensor::randn(0f32, 1.0, out_slow.deltas.shape(), &dev)?;
        let loss = |out: &RpnOutputs| -> Result<Tensor> {
            out.logits.mul(&probe_logits)?.sum_all()? + out.deltas.mul(&probe_deltas)?.sum_all()?
        };
        let (grads_fast, grads_slow) = (loss(&out_fast)?.backward()?, loss(&out_slow)?.backward()?);
        cpu_plan::tests::assert_close("logits", &out_fast.logits, &out_slow.logits)?;
        cpu_plan::tests::assert_close("deltas", &out_fast.deltas, &out_slow.deltas)?;
        for ((name, a), (_, b)) in vars(&kernels).iter().zip(&vars(&candle)) {
            if name.starts_with("backbone") && name.contains("running") {
                cpu_plan::tests::assert_close(name, a.as_tensor(), b.as_tensor())?;
                continue;
            }
            match (grads_fast.get(a), grads_slow.get(b)) {
                // A bias before a training-mode BatchNorm gets Σ dx of the BatchNorm, zero up to
                // rounding on both paths: compare it with the scale of its weight's gradient.
                (Some(ga), Some(gb))
                    if name.starts_with("backbone") && name.ends_with("conv.bias") =>
                {
                    let weight = vars(&kernels)
                        .into_iter()
                        .find(|(n, _)| *n == name.replace("bias", "weight"))
                        .and_then(|(_, w)| grads_fast.get(&w).cloned());
                    let scale = match weight {
                        Some(w) => w.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?,
                        None => panic!("{name}: no weight gradient"),
                    };
                    for g in [ga, gb] {
                        let worst = g.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                        assert!(
                            worst <= 1e-3 * scale,
                            "{name}: {worst} vs weight gradient {scale}"
                        );
                    }
                }
                (Some(ga), Some(gb)) => cpu_plan::tests::assert_close(name, ga, gb)?,
                other => panic!("{name}: gradient present on one path only: {other:?}"),
            }
        }
        for batches_seen in 0..2 {
            let mode = BatchNormMode::Calibrate { batches_seen };
            fast.forward_nhwc_mode(&images, mode)?;
            slow.forward_candle(&images, mode)?;
        }
        for ((name, a), (_, b)) in vars(&kernels).iter().zip(&vars(&candle)) {
            cpu_plan::tests::assert_close(name, a.as_tensor(), b.as_tensor())?;
        }
        Ok(())
    }
}
