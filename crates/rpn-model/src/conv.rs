//! 2-D convolution as im2col + one GEMM on the CPU.
//!
//! candle's CPU `conv2d` spends about as long gathering its columns as multiplying them, and its
//! backward pass goes through a direct `conv_transpose2d` that is 3–5× slower than a GEMM. Here the
//! columns are gathered from an NHWC copy (each kernel tap copies `C` contiguous values), the
//! product is a single `[B·Ho·Wo, k·k·C] × [k·k·C, O]` matmul, and the backward pass is two GEMMs
//! (candle's matmul gradient) plus a scatter-add of the column gradient ([`Col2Im`]). On a 2-core
//! machine this made seed 001's training step about twice as fast; the seed ResNets now train
//! through the NHWC kernels of `train_ops` instead, and this path serves the NCHW models that
//! train (Matterport's and torchvision's heads and FPN, seed 002) and `RPN_CPU_KERNELS=off`.
//! Other devices keep candle's convolution (cuDNN on CUDA).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::Conv2d;

/// Geometry shared by [`Im2Col`] and [`Col2Im`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    batch: usize,
    height: usize,
    width: usize,
    channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn rows(&self) -> usize {
        self.batch * self.out_height() * self.out_width()
    }

    fn row_len(&self) -> usize {
        self.kernel * self.kernel * self.channels
    }

    /// Calls `f(row, tap, input_pixel)` for every kernel tap that falls inside the image: `row` is
    /// the output position `(b·Ho + oy)·Wo + ox`, `tap` is `ky·k + kx`, `input_pixel` is
    /// `(b·H + iy)·W + ix`. Taps in the zero padding are skipped.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (ho, wo, k) = (self.out_height(), self.out_width(), self.kernel);
        for b in 0..self.batch {
            for oy in 0..ho {
                for ox in 0..wo {
                    let row = (b * ho + oy) * wo + ox;
                    for ky in 0..k {
                        let Some(iy) = (oy * self.stride + ky).checked_sub(self.padding) else {
                            continue;
                        };
                        if iy >= self.height {
                            continue;
                        }
                        for kx in 0..k {
                            let Some(ix) = (ox * self.stride + kx).checked_sub(self.padding) else {
                                continue;
                            };
                            if ix < self.width {
                                f(row, ky * k + kx, (b * self.height + iy) * self.width + ix);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The `f32` values of a contiguous CPU storage, or an error naming `op`.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{op}: expected f32 storage") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input"),
    }
}

/// NHWC `[B, H, W, C]` → columns `[B·Ho·Wo, k·k·C]`, column `(ky·k + kx)·C + c`.
struct Im2Col(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, self.name())?;
        let g = self.0;
        let (c, row_len) = (g.channels, g.row_len());
        let mut cols = vec![0f32; g.rows() * row_len];
        g.for_each_tap(|row, tap, pixel| {
            let dst = row * row_len + tap * c;
            cols[dst..dst + c].copy_from_slice(&input[pixel * c..pixel * c + c]);
        });
        Ok((CpuStorage::F32(cols), Shape::from((g.rows(), row_len))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

/// The adjoint of [`Im2Col`]: adds every column value back onto the input pixel it came from.
struct Col2Im(Geometry);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = contiguous_f32(storage, layout, self.name())?;
        let g = self.0;
        let (c, row_len) = (g.channels, g.row_len());
        let mut image = vec![0f32; g.batch * g.height * g.width * c];
        g.for_each_tap(|row, tap, pixel| {
            let src = &cols[row * row_len + tap * c..][..c];
            for (acc, v) in image[pixel * c..pixel * c + c].iter_mut().zip(src) {
                *acc += v;
            }
        });
        Ok((CpuStorage::F32(image), Shape::from((g.batch, g.height, g.width, c))))
    }
}

/// A `candle_nn::Conv2d` (square kernel, no dilation or groups) whose CPU `f32` forward and
/// backward passes run as im2col + GEMM when gradients are tracked (training); inference and
/// other devices use candle's convolution. Same weights (`[O, I, k, k]`), same results up to
/// float summation order.
#[derive(Debug, Clone)]
pub(crate) struct Conv(pub(crate) Conv2d);

impl Conv {
    fn gemm_path(&self, x: &Tensor) -> bool {
        let cfg = self.0.config();
        let (_, _, kh, kw) = self.0.weight().dims4().unwrap_or_default();
        // Without gradients candle's convolution is as fast or faster (it skips the NHWC
        // copies); the GEMM path pays off in training, where candle's backward is slow.
        let needs_grad = x.track_op() || self.0.weight().track_op();
        needs_grad
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && kh == kw
            && cfg.dilation == 1
            && cfg.groups == 1
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.gemm_path(x) {
            return self.0.forward(x);
        }
        let (batch, channels, height, width) = x.dims4()?;
        let weight = self.0.weight();
        let (out_channels, in_channels, kernel, _) = weight.dims4()?;
        if in_channels != channels {
            candle_core::bail!("conv: input has {channels} channels, the kernel {in_channels}")
        }
        let cfg = self.0.config();
        if height + 2 * cfg.padding < kernel || width + 2 * cfg.padding < kernel {
            candle_core::bail!(
                "conv: {height}×{width} input is smaller than the {kernel}×{kernel} kernel"
            )
        }
        let g = Geometry {
            batch,
            height,
            width,
            channels,
            kernel,
            stride: cfg.stride,
            padding: cfg.padding,
        };
        let cols = x.permute((0, 2, 3, 1))?.contiguous()?.apply_op1(Im2Col(g))?;
        // `[O, I, k, k]` → `[O, k, k, I]` to match the column order, then transposed for the GEMM.
        let w = weight.permute((0, 2, 3, 1))?.reshape((out_channels, g.row_len()))?;
        let mut y = cols.matmul(&w.t()?)?;
        if let Some(bias) = self.0.bias() {
            y = y.broadcast_add(bias)?;
        }
        y.reshape((batch, g.out_height(), g.out_width(), out_channels))?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }
}

/// `candle_nn::conv2d` (weights `{vb}.weight` `[O, I, k, k]` and `{vb}.bias`) as a [`Conv`].
pub(crate) fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    config: candle_nn::Conv2dConfig,
    vb: candle_nn::VarBuilder,
) -> Result<Conv> {
    candle_nn::conv2d(in_channels, out_channels, kernel, config, vb).map(Conv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::Conv2dConfig;

    /// Forward values and both gradients against candle's own convolution, for the geometries
    /// the models use (3×3 "same", 1×1, 1×1 stride 2, 3×3 stride 2, odd sizes).
    #[test]
    fn matches_candle_conv_and_its_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (k, stride, padding, h, w) in
            [(3, 1, 1, 7, 5), (1, 1, 0, 6, 4), (1, 2, 0, 6, 8), (3, 2, 1, 9, 7), (3, 1, 0, 5, 5)]
        {
            let x = Var::randn(0f32, 1.0, (2, 3, h, w), &dev)?;
            let weight = Var::randn(0f32, 1.0, (4, 3, k, k), &dev)?;
            let bias = Var::randn(0f32, 1.0, 4, &dev)?;
            let cfg = Conv2dConfig { padding, stride, ..Default::default() };
            let candle_conv =
                Conv2d::new(weight.as_tensor().clone(), Some(bias.as_tensor().clone()), cfg);
            let ours = Conv(candle_conv.clone());
            let probe = Tensor::randn(0f32, 1.0, candle_conv.forward(&x)?.shape(), &dev)?;
            let run = |m: &dyn Module| -> Result<Vec<Tensor>> {
                let y = m.forward(&x)?;
                let grads = (&y * &probe)?.sum_all()?.backward()?;
                let grad = |v: &Var| {
                    grads.get(v).cloned().ok_or_else(|| candle_core::Error::Msg("no grad".into()))
                };
                Ok(vec![y, grad(&x)?, grad(&weight)?, grad(&bias)?])
            };
            let (expected, actual) = (run(&candle_conv)?, run(&ours)?);
            for (name, (e, a)) in ["y", "dx", "dw", "db"].iter().zip(expected.iter().zip(&actual)) {
                assert_eq!(e.dims(), a.dims(), "{name} k={k} s={stride}");
                let diff = (e - a)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let scale = e.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                assert!(diff <= 1e-5 * scale, "{name} k={k} s={stride} p={padding}: {diff}");
            }
        }
        Ok(())
    }

    /// candle 0.11's own conv backward fails when height and width need different output
    /// paddings (3×3 stride 2 on 9×6: "shape mismatch in add"); the GEMM path has no such case.
    #[test]
    fn stride_two_gradient_on_uneven_sides() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (1, 2, 9, 6), &dev)?;
        let weight = Tensor::randn(0f32, 1.0, (3, 2, 3, 3), &dev)?;
        let cfg = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let y = Conv(Conv2d::new(weight, None, cfg)).forward(&x)?;
        assert_eq!(y.dims(), &[1, 3, 5, 3]);
        let grads = y.sum_all()?.backward()?;
        assert_eq!(grads.get(&x).map(|g| g.dims().to_vec()), Some(vec![1, 2, 9, 6]));
        Ok(())
    }
}
