//! CPU kernels for RPN networks, on NHWC `f32` slices: inference and training.
//!
//! Slices in, slices out, like `rpn-proposals`: no candle here, so the kernels can be tested and
//! benchmarked alone and `rpn-model` stays about models. What a ResNet-FPN RPN needs:
//!
//! - [`Conv2d`]: any `kh × kw` kernel, any stride, explicit or TF "same" [`Padding`], as one GEMM
//!   per block of output rows. A 1×1 stride-1 convolution multiplies the input rows themselves (no
//!   im2col); other shapes gather their rows block by block (im2col in pieces that stay in cache);
//!   3×3 stride-1 layers run Winograd: F(4×4, 3×3) on output maps of at least 16×16, F(2×2, 3×3)
//!   on smaller ones.
//!   A fused [`Epilogue`] adds the bias, an optional residual and an optional ReLU while the block
//!   is still in cache. BatchNorm folds into the weights ([`Conv2d::fold_batch_norm`]).
//! - [`max_pool`] (TF "same", symmetric or no padding; a 1×1 window with stride 2 is FPN's P6) and
//!   [`upsample2_add`] (the FPN's nearest ×2 upsample added to the lateral).
//! - Training: [`Conv2d::backward_input`] (a stride-1 layer's input gradient is the flipped
//!   stride-1 convolution, Winograd included; other strides multiply `dy · Wᵀ` and add the windows
//!   back, one image per thread) and [`Conv2d::backward_weights`] (`windowsᵀ · dy`, a reduction
//!   over every pixel, computed per fixed unit of weight rows); [`batch_norm_train`] and
//!   [`batch_norm_train_backward`] (training-mode BatchNorm with the ReLU after it fused);
//!   [`add_relu`] and [`relu_backward`] for the residual sum.
//! - [`Workers`]: the threads and their scratch buffers, reused from call to call.
//!
//! **Determinism.** Work is split over output rows (GEMM's M) in blocks whose size depends on the
//! layer's shape only, never on the thread count, and each block is computed start to end by one
//! thread; a reduction is never split between threads (the weight gradient's reduction over
//! pixels runs in a fixed order of chunks inside one unit; BatchNorm's channel sums add fixed
//! chunks in order). So 1 and N threads give the same bits (tested).
//!
//! **CPU dispatch.** The forward pass's GEMM is our own (`panel_gemm.rs`): weights packed once
//! into 16-column panels when the layer is built, a 6×64 AVX-512 or 6×16 AVX2 + FMA micro-kernel
//! chosen at run time (a portable one elsewhere), the epilogue applied in registers. The two
//! SIMD kernels give the same bits; [`CpuIsa::active`] says which one runs, and
//! [`CPU_ISA_ENV`] (`RPN_CPU_ISA=avx512|avx2|portable`) forces a family the CPU has. The gradients' GEMMs are
//! the `gemm` crate's (candle's), built with its `x86-v4` kernels: AVX-512 machines use 512-bit
//! micro-kernels, AVX2/FMA machines 256-bit ones, chosen at run time. Nothing assumes
//! `target-cpu=native`. [`fma_peak_gflops`] measures the machine's FMA peak, to read throughput
//! as a share of it.
//!
//! ```
//! use rpn_kernels::{Conv2d, Epilogue, Nhwc, Padding, Workers};
//!
//! // A 3×3 "same" convolution, 2 → 1 channels, every weight 1: each output sums its window.
//! let conv = Conv2d::from_oihw(&[1.0; 18], [1, 2, 3, 3], Some(&[0.5]), 1, Padding::symmetric(1))?;
//! let input = Nhwc::new(1, 2, 2, 2);
//! let mut out = vec![0.0; 4];
//! let shape = conv.forward(&[1.0; 8], input, Epilogue::RELU, &mut out, &Workers::new(2))?;
//! assert_eq!(shape, Nhwc::new(1, 2, 2, 1));
//! assert_eq!(out, [8.5; 4]); // 4 pixels × 2 channels in every window, plus the bias
//! # Ok::<(), rpn_kernels::KernelError>(())
//! ```

mod batch_norm;
mod conv;
mod conv_grad;
mod elementwise;
mod error;
mod gemm;
mod isa;
mod panel_gemm;
mod peak;
mod pool;
mod shape;
mod winograd;
mod workers;

pub use batch_norm::{batch_norm_train, batch_norm_train_backward, BatchMoments};
pub use conv::{Conv2d, Epilogue};
pub use conv_grad::ConvGradients;
pub use elementwise::{add_relu, relu_backward};
pub use error::KernelError;
pub use isa::{CpuIsa, CPU_ISA_ENV};
pub use peak::fma_peak_gflops;
pub use pool::{max_pool, max_pool_shape, upsample2_add};
pub use shape::{Nhwc, Padding};
pub use workers::Workers;
