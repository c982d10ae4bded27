//! Training on the CPU through `rpn-kernels`: NHWC convolution, training-mode BatchNorm (+ ReLU)
//! and a residual block's `relu(a + b)` as candle custom ops with their backward passes.
//!
//! candle's autograd stays in charge (the optimizer, checkpoints and exact resume are unchanged);
//! what changes is what each layer costs. With NCHW candle ops a seed 001 training step spent as
//! long permuting, copying and allocating as multiplying; here activations stay NHWC from the
//! images to the head's outputs (which are then already in Keras' row order), each convolution
//! is one kernel call forward (Winograd for 3×3 stride 1), one for the input gradient (the
//! flipped stride-1 convolution, Winograd again) and one for the weight gradient, and each
//! BatchNorm is two passes forward and two backward with the ReLU's mask folded in. All of it is
//! deterministic: the same bits on any thread count.
//!
//! Used by the seed ResNets (000/001) and their head in [`BatchNormMode::Train`] on CPU `f32`;
//! other devices and models keep candle's ops. `RPN_CPU_KERNELS=off` turns it off, with the
//! inference plans.
//!
//! [`BatchNormMode::Train`]: crate::BatchNormMode::Train

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rpn_kernels::{BatchMoments, Conv2d, Nhwc, Padding, Workers};

use crate::conv::contiguous_f32;
use crate::cpu_plan::{kernel_error, plans_enabled};

/// The threads every training op shares (candle's thread count, as its own CPU ops use).
fn workers() -> &'static Workers {
    static WORKERS: OnceLock<Workers> = OnceLock::new();
    WORKERS.get_or_init(|| Workers::new(candle_core::utils::get_num_threads()))
}

/// Whether NHWC activations `x` can take the kernel path.
pub(crate) fn applies(x: &Tensor) -> bool {
    plans_enabled() && x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4
}

fn nhwc_of(layout: &Layout) -> Result<Nhwc> {
    let (b, h, w, c) = layout.shape().dims4()?;
    Ok(Nhwc::new(b, h, w, c))
}

fn weight_dims(layout: &Layout) -> Result<[usize; 4]> {
    let (o, i, kh, kw) = layout.shape().dims4()?;
    Ok([o, i, kh, kw])
}

/// A convolution's geometry: stride and padding (weights come in as tensors).
#[derive(Debug, Clone, Copy)]
struct ConvGeometry {
    stride: usize,
    padding: Padding,
}

impl ConvGeometry {
    /// The kernel for `weight` (`[O, I, kh, kw]` values), with Winograd weights if `winograd`.
    fn conv(
        &self,
        weight: &[f32],
        dims: [usize; 4],
        bias: Option<&[f32]>,
        winograd: bool,
    ) -> Result<Conv2d> {
        let conv = Conv2d::from_oihw_gemm(weight, dims, bias, self.stride, self.padding)
            .map_err(kernel_error)?;
        Ok(if winograd { conv.with_winograd(true) } else { conv })
    }
}

/// `(x NHWC, W [O, I, kh, kw], b [O]) → y NHWC`.
struct ConvForward(ConvGeometry);

impl CustomOp3 for ConvForward {
    fn name(&self) -> &'static str {
        "nhwc-conv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let weight = contiguous_f32(s2, l2, self.name())?;
        let bias = contiguous_f32(s3, l3, self.name())?;
        let conv = self.0.conv(weight, weight_dims(l2)?, Some(bias), true)?;
        let input = nhwc_of(l1)?;
        let out = conv.output_shape(input).map_err(kernel_error)?;
        let mut y = vec![0f32; out.len().map_err(kernel_error)?];
        conv.forward(x, input, rpn_kernels::Epilogue::LINEAR, &mut y, workers())
            .map_err(kernel_error)?;
        let shape = Shape::from((out.batch, out.height, out.width, out.channels));
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        // The images need no gradient: skip the stem's input gradient.
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(
                weight,
                &ConvInputGrad { geometry: self.0, input: x.shape().clone() },
            )?)
        } else {
            None
        };
        let packed = x.apply_op3_no_bwd(&dy, weight, &ConvWeightGrad(self.0))?;
        let weights = weight.elem_count();
        let dw = packed.narrow(0, 0, weights)?.reshape(weight.shape())?;
        let db = packed.narrow(0, weights, bias.elem_count())?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `(dy, W) → dx`, the input gradient of [`ConvForward`].
struct ConvInputGrad {
    geometry: ConvGeometry,
    input: Shape,
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "nhwc-conv-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dy = contiguous_f32(s1, l1, self.name())?;
        let weight = contiguous_f32(s2, l2, self.name())?;
        let conv = self.geometry.conv(weight, weight_dims(l2)?, None, false)?;
        let (b, h, w, c) = self.input.dims4()?;
        let input = Nhwc::new(b, h, w, c);
        let mut dx = vec![0f32; input.len().map_err(kernel_error)?];
        conv.backward_input(dy, input, &mut dx, workers()).map_err(kernel_error)?;
        Ok((CpuStorage::F32(dx), self.input.clone()))
    }
}

/// `(x, dy, W) → [dW (flattened) | db]`, the parameter gradients of [`ConvForward`] in one buffer
/// (a custom op has one output).
struct ConvWeightGrad(ConvGeometry);

impl CustomOp3 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "nhwc-conv-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let dy = contiguous_f32(s2, l2, self.name())?;
        let weight = contiguous_f32(s3, l3, self.name())?;
        let conv = self.0.conv(weight, weight_dims(l3)?, None, false)?;
        let grads = conv.backward_weights(x, nhwc_of(l1)?, dy, workers()).map_err(kernel_error)?;
        let mut packed = grads.weight_oihw;
        packed.extend_from_slice(&grads.bias);
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}

/// A candle convolution (`[O, I, kh, kw]` weights, optional bias, symmetric padding) on NHWC
/// activations, differentiable.
pub(crate) fn conv(x: &Tensor, conv: &candle_nn::Conv2d) -> Result<Tensor> {
    let cfg = conv.config();
    if cfg.dilation != 1 || cfg.groups != 1 {
        candle_core::bail!("NHWC training convolution: dilation and groups must be 1, got {cfg:?}")
    }
    let weight = conv.weight();
    let bias = match conv.bias() {
        Some(b) => b.clone(),
        None => Tensor::zeros(weight.dim(0)?, DType::F32, weight.device())?,
    };
    let geometry = ConvGeometry { stride: cfg.stride, padding: Padding::symmetric(cfg.padding) };
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias, ConvForward(geometry))
}

/// `(x NHWC, γ, β) → relu?(γ·(x − μ)/√(σ² + ε) + β)` with the batch's statistics, which the
/// forward pass leaves in `moments` (for the moving averages and the backward pass).
struct BatchNormForward {
    eps: f64,
    relu: bool,
    moments: Arc<Mutex<Option<BatchMoments>>>,
}

impl BatchNormForward {
    fn moments(&self) -> Option<BatchMoments> {
        self.moments.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl CustomOp3 for BatchNormForward {
    fn name(&self) -> &'static str {
        "nhwc-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let gamma = contiguous_f32(s2, l2, self.name())?;
        let beta = contiguous_f32(s3, l3, self.name())?;
        let mut y = vec![0f32; x.len()];
        let moments = rpn_kernels::batch_norm_train(
            x,
            nhwc_of(l1)?.channels,
            gamma,
            beta,
            self.eps,
            self.relu,
            &mut y,
            workers(),
        )
        .map_err(kernel_error)?;
        *self.moments.lock().unwrap_or_else(PoisonError::into_inner) = Some(moments);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(moments) = self.moments() else {
            candle_core::bail!("batch norm backward before its forward pass")
        };
        let backward = BatchNormBackward {
            eps: self.eps,
            relu: self.relu,
            moments,
            gamma: gamma.to_vec1::<f32>()?,
        };
        let packed = x.apply_op3_no_bwd(y, &dy.contiguous()?, &backward)?;
        crate::batch_norm::unpack_gradients(&packed, x, gamma.elem_count())
    }
}

/// `(x, y, dy) → [dx (flattened) | dγ | dβ]`.
struct BatchNormBackward {
    eps: f64,
    relu: bool,
    moments: BatchMoments,
    gamma: Vec<f32>,
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "nhwc-batch-norm-train-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let y = contiguous_f32(s2, l2, self.name())?;
        let dy = contiguous_f32(s3, l3, self.name())?;
        let mut packed = vec![0f32; x.len() + 2 * self.gamma.len()];
        let (dx, _) = packed.split_at_mut(x.len());
        let (dgamma, dbeta) = rpn_kernels::batch_norm_train_backward(
            x,
            y,
            dy,
            &self.gamma,
            &self.moments,
            self.eps,
            self.relu,
            dx,
            workers(),
        )
        .map_err(kernel_error)?;
        let channels = self.gamma.len();
        packed[x.len()..x.len() + channels].copy_from_slice(&dgamma);
        packed[x.len() + channels..].copy_from_slice(&dbeta);
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}

/// Training-mode BatchNorm on NHWC `x` (then ReLU if `relu`); returns the output and the batch's
/// per-channel statistics.
pub(crate) fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchMoments)> {
    let moments = Arc::new(Mutex::new(None));
    let op = BatchNormForward { eps, relu, moments: Arc::clone(&moments) };
    let y = x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let moments = moments.lock().unwrap_or_else(PoisonError::into_inner).clone();
    match moments {
        Some(m) => Ok((y, m)),
        None => candle_core::bail!("batch norm: the forward pass left no statistics"),
    }
}

/// `(a, b) → relu(a + b)`: a residual block's sum and ReLU.
struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = contiguous_f32(s1, l1, self.name())?;
        let b = contiguous_f32(s2, l2, self.name())?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("add-relu: shapes {:?} and {:?} differ", l1.shape(), l2.shape())
        }
        let mut y = vec![0f32; a.len()];
        rpn_kernels::add_relu(a, b, &mut y, workers()).map_err(kernel_error)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = y.apply_op2_no_bwd(&dy.contiguous()?, &ReluGrad)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `(y, dy) → dy · [y > 0]`.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1, self.name())?;
        let dy = contiguous_f32(s2, l2, self.name())?;
        let mut g = vec![0f32; y.len()];
        rpn_kernels::relu_backward(y, dy, &mut g, workers()).map_err(kernel_error)?;
        Ok((CpuStorage::F32(g), l1.shape().clone()))
    }
}

/// `relu(a + b)`, differentiable in both.
pub(crate) fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}
