//! Gradients of [`Conv2d`] for training, as GEMMs on NHWC.
//!
//! With `y = windows(x) · W` (`windows: [M, K]`, `W: [K, O]`, `M = B·Ho·Wo` output pixels,
//! `K = kh·kw·C`):
//!
//! - **input gradient** `dx = col2im(dy · Wᵀ)`. A stride-1 convolution's input gradient is itself
//!   a stride-1 convolution of `dy` — kernel flipped, channels swapped, padding `k − 1 − p` — so it
//!   runs through [`Conv2d::forward`] (Winograd included for 3×3 layers). Other strides multiply
//!   `dy · Wᵀ` in blocks of rows and add each window back onto the pixels it came from, one image
//!   per thread (windows of different images never overlap, so no two threads add to one pixel).
//! - **weight gradient** `dW = windows(x)ᵀ · dy`, a reduction over all `M` pixels. The `K` rows of
//!   `dW` are cut into fixed units; each unit is computed by one thread over all pixels in a fixed
//!   order of chunks (its own columns of the windows gathered chunk by chunk), so the reduction is
//!   never split between threads and the bits do not depend on the thread count.
//! - **bias gradient** `db = Σ dy` over pixels (f32 sums per chunk of rows, f64 across chunks).

use crate::gemm::{matmul_views, MatRef};
use crate::{Conv2d, Epilogue, KernelError, Nhwc, Padding, Workers};

/// Output rows per GEMM in the strided input gradient.
const INPUT_GRAD_ROWS: usize = 256;
/// Pixels per chunk of the weight gradient's reduction (gathered `[chunk, unit]` stays in L2).
const WEIGHT_GRAD_CHUNK: usize = 512;
/// Pixels per partial sum of the bias gradient.
const BIAS_GRAD_CHUNK: usize = 256;

/// What [`Conv2d::backward_weights`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvGradients {
    /// `∂loss/∂W` in PyTorch/candle `[O, I, kh, kw]` order.
    pub weight_oihw: Vec<f32>,
    /// `∂loss/∂b`, `[O]`.
    pub bias: Vec<f32>,
}

impl Conv2d {
    /// The stride-1 convolution whose forward pass is this one's input gradient: weights flipped
    /// in both directions with input and output channels swapped, padding `k − 1 − p` on each
    /// side, no bias. `None` for strides above 1.
    pub fn input_gradient_conv(&self) -> Option<Conv2d> {
        if self.stride != 1 {
            return None;
        }
        let (kh, kw, c, o) = (self.kernel_h, self.kernel_w, self.in_channels, self.out_channels);
        let taps = kh * kw;
        // packed[(tap·C + c)·O + o] = W[o, c, tap]; the flipped kernel's tap t reads tap T−1−t.
        let mut packed = vec![0f32; self.packed.len()];
        for tap in 0..taps {
            let source = &self.packed[(taps - 1 - tap) * c * o..][..c * o];
            for out_channel in 0..o {
                let row = &mut packed[(tap * o + out_channel) * c..][..c];
                for (in_channel, value) in row.iter_mut().enumerate() {
                    *value = source[in_channel * o + out_channel];
                }
            }
        }
        let p = self.padding;
        let padding = Padding {
            top: kh - 1 - p.top,
            left: kw - 1 - p.left,
            bottom: kh - 1 - p.bottom,
            right: kw - 1 - p.right,
        };
        let conv = Conv2d {
            kernel_h: kh,
            kernel_w: kw,
            in_channels: o,
            out_channels: c,
            stride: 1,
            padding,
            packed,
            bias: vec![0.0; c],
            winograd: None,
        };
        Some(conv.with_winograd(true))
    }

    /// Writes `∂loss/∂x` for an input of shape `input` into `grad_in` (overwritten), given
    /// `grad_out = ∂loss/∂y` in the output's shape.
    pub fn backward_input(
        &self,
        grad_out: &[f32],
        input: Nhwc,
        grad_in: &mut [f32],
        workers: &Workers,
    ) -> Result<(), KernelError> {
        let out = self.output_shape(input)?;
        out.check("output gradient", grad_out)?;
        input.check("input gradient", grad_in)?;
        if let Some(transposed) = self.input_gradient_conv() {
            transposed.forward(grad_out, out, Epilogue::LINEAR, grad_in, workers)?;
            return Ok(());
        }
        if input.is_empty() {
            return Ok(());
        }
        // Wᵀ as a view of the packed `[K, O]` weights.
        let (window, n) = (self.packed.len() / self.out_channels, self.out_channels);
        let weights_t = MatRef::transposed(&self.packed, n);
        let image_len = input.height * input.width * input.channels;
        let out_pixels = out.height * out.width;
        workers.for_each_block(grad_in, image_len, 1, |b, image, scratch| {
            image.fill(0.0);
            let mut first = 0;
            while first < out_pixels {
                let rows = INPUT_GRAD_ROWS.min(out_pixels - first);
                scratch.resize(rows * window, 0.0);
                let dy = &grad_out[(b * out_pixels + first) * n..][..rows * n];
                let windows = &mut scratch[..rows * window];
                matmul_views(rows, n, window, MatRef::row_major(dy, n), weights_t, windows, false);
                self.scatter_windows(windows, input, out, first, image);
                first += rows;
            }
        });
        Ok(())
    }

    /// Adds the window gradients of one image's output pixels `first..` back onto `image`
    /// (`[H, W, C]`): the adjoint of the forward pass's gather.
    fn scatter_windows(
        &self,
        windows: &[f32],
        input: Nhwc,
        out: Nhwc,
        first: usize,
        image: &mut [f32],
    ) {
        let c = self.in_channels;
        let (kh, kw, s) = (self.kernel_h, self.kernel_w, self.stride);
        let (top, left) = (self.padding.top, self.padding.left);
        for (r, window) in windows.chunks_exact(kh * kw * c).enumerate() {
            let pixel = first + r;
            let (oy, ox) = (pixel / out.width, pixel % out.width);
            for (tap, values) in window.chunks_exact(c).enumerate() {
                let iy = (oy * s + tap / kw).wrapping_sub(top);
                let ix = (ox * s + tap % kw).wrapping_sub(left);
                if iy < input.height && ix < input.width {
                    let at = (iy * input.width + ix) * c;
                    for (acc, v) in image[at..at + c].iter_mut().zip(values) {
                        *acc += v;
                    }
                }
            }
        }
    }

    /// `∂loss/∂W` and `∂loss/∂b` from the layer's input `x` (shape `input`) and
    /// `grad_out = ∂loss/∂y`.
    pub fn backward_weights(
        &self,
        x: &[f32],
        input: Nhwc,
        grad_out: &[f32],
        workers: &Workers,
    ) -> Result<ConvGradients, KernelError> {
        input.check("convolution input", x)?;
        let out = self.output_shape(input)?;
        out.check("output gradient", grad_out)?;
        let (window, n) = (self.packed.len() / self.out_channels, self.out_channels);
        let pixels = out.pixels()?;
        // dW in the packed `[K, O]` layout, one unit of K rows per job.
        let mut packed_grad = vec![0f32; window * n];
        let unit = if window <= 128 { 32 } else { 128 };
        let pointwise = self.is_pointwise();
        let dy_all = MatRef::row_major(grad_out, n);
        workers.for_each_block(&mut packed_grad, n, unit, |k0, block, scratch| {
            let ku = block.len() / n;
            block.fill(0.0);
            let mut first = 0;
            while first < pixels {
                let rows = WEIGHT_GRAD_CHUNK.min(pixels - first);
                let dy = MatRef { data: &grad_out[first * n..], ..dy_all };
                let windows_t = if pointwise {
                    // The windows are the input rows: columns k0.. of rows first.., transposed.
                    MatRef { data: &x[first * window + k0..], row_stride: 1, col_stride: window }
                } else {
                    scratch.resize(rows * ku, 0.0);
                    self.gather_columns(x, input, out, first, k0, ku, &mut scratch[..rows * ku]);
                    MatRef::transposed(&scratch[..rows * ku], ku)
                };
                matmul_views(ku, rows, n, windows_t, dy, block, true);
                first += rows;
            }
        });
        let (o, c, taps) = (n, self.in_channels, self.kernel_h * self.kernel_w);
        let mut weight_oihw = vec![0f32; packed_grad.len()];
        for out_channel in 0..o {
            for in_channel in 0..c {
                for tap in 0..taps {
                    weight_oihw[(out_channel * c + in_channel) * taps + tap] =
                        packed_grad[(tap * c + in_channel) * o + out_channel];
                }
            }
        }
        Ok(ConvGradients { weight_oihw, bias: column_sums(grad_out, n) })
    }

    /// Columns `k0 .. k0 + ku` of the windows of output rows `first..`, into `dst`
    /// (`[rows, ku]`); zeros where a tap falls in the padding.
    #[allow(clippy::too_many_arguments)]
    fn gather_columns(
        &self,
        x: &[f32],
        input: Nhwc,
        out: Nhwc,
        first: usize,
        k0: usize,
        ku: usize,
        dst: &mut [f32],
    ) {
        let c = self.in_channels;
        let (kw, s) = (self.kernel_w, self.stride);
        let (top, left) = (self.padding.top, self.padding.left);
        let rows_per_image = out.height * out.width;
        for (r, row) in dst.chunks_exact_mut(ku).enumerate() {
            let pixel = first + r;
            let (b, p) = (pixel / rows_per_image, pixel % rows_per_image);
            let (oy, ox) = (p / out.width, p % out.width);
            let mut column = k0;
            while column < k0 + ku {
                let (tap, channel) = (column / c, column % c);
                let len = (c - channel).min(k0 + ku - column);
                let segment = &mut row[column - k0..column - k0 + len];
                let iy = (oy * s + tap / kw).wrapping_sub(top);
                let ix = (ox * s + tap % kw).wrapping_sub(left);
                if iy < input.height && ix < input.width {
                    let at = ((b * input.height + iy) * input.width + ix) * c + channel;
                    segment.copy_from_slice(&x[at..at + len]);
                } else {
                    segment.fill(0.0);
                }
                column += len;
            }
        }
    }
}

/// Per-column sums of a row-major `[rows, n]` matrix: f32 within chunks of rows, f64 across.
fn column_sums(values: &[f32], n: usize) -> Vec<f32> {
    let mut total = vec![0f64; n];
    let mut partial = vec![0f32; n];
    for chunk in values.chunks(BIAS_GRAD_CHUNK * n.max(1)) {
        partial.fill(0.0);
        for row in chunk.chunks_exact(n) {
            for (p, v) in partial.iter_mut().zip(row) {
                *p += v;
            }
        }
        for (t, p) in total.iter_mut().zip(&partial) {
            *t += f64::from(*p);
        }
    }
    total.into_iter().map(|t| t as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(777);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The gradients written out from the definition `y = Σ_taps x·W + b` (f64 sums):
    /// `(dx, dW [O, I, kh, kw], db)`.
    fn reference(
        x: &[f32],
        input: Nhwc,
        weight: &[f32],
        [o, i, kh, kw]: [usize; 4],
        stride: usize,
        pad: Padding,
        dy: &[f32],
        out: Nhwc,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mut dx, mut dw, mut db) =
            (vec![0f64; x.len()], vec![0f64; weight.len()], vec![0f64; o]);
        for b in 0..input.batch {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    let g = &dy[((b * out.height + oy) * out.width + ox) * o..][..o];
                    for oc in 0..o {
                        db[oc] += f64::from(g[oc]);
                    }
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky).wrapping_sub(pad.top);
                            let ix = (ox * stride + kx).wrapping_sub(pad.left);
                            if iy >= input.height || ix >= input.width {
                                continue;
                            }
                            let at = ((b * input.height + iy) * input.width + ix) * i;
                            for oc in 0..o {
                                for c in 0..i {
                                    let w = ((oc * i + c) * kh + ky) * kw + kx;
                                    dx[at + c] += f64::from(g[oc]) * f64::from(weight[w]);
                                    dw[w] += f64::from(g[oc]) * f64::from(x[at + c]);
                                }
                            }
                        }
                    }
                }
            }
        }
        (dx, dw, db)
    }

    fn assert_close(name: &str, actual: &[f32], expected: &[f64], tolerance: f64) {
        assert_eq!(actual.len(), expected.len(), "{name}: length");
        let scale = expected.iter().fold(1f64, |m, v| m.max(v.abs()));
        for (n, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!((f64::from(*a) - e).abs() <= tolerance * scale, "{name}[{n}]: {a} vs {e}");
        }
    }

    /// Every geometry the seeds, Matterport and torchvision train (and odd ones), against the
    /// definition, on 1 and 3 threads with the same bits.
    #[test]
    fn gradients_match_the_definition_on_every_geometry() {
        // (kernel, stride, padding, height, width, in, out)
        let cases = [
            (1, 1, Padding::VALID, 5, 7, 6, 5),
            (1, 1, Padding::VALID, 30, 20, 40, 200), // K rows over several units
            (1, 2, Padding::VALID, 8, 6, 4, 3),
            (1, 2, Padding::VALID, 7, 5, 4, 3),
            (3, 1, Padding::symmetric(1), 6, 5, 3, 4),
            (3, 1, Padding::symmetric(1), 9, 7, 16, 17), // input gradient through Winograd
            (3, 1, Padding::VALID, 6, 8, 2, 3),
            (3, 1, Padding { top: 0, left: 1, bottom: 2, right: 1 }, 5, 6, 3, 4),
            (3, 2, Padding::symmetric(1), 9, 6, 3, 4),
            (3, 2, Padding::tf_same(8, 8, 3, 2), 8, 8, 2, 3),
            (7, 2, Padding::symmetric(3), 11, 10, 3, 5),
            (2, 2, Padding::VALID, 7, 6, 3, 2),
        ];
        for (n, &(k, stride, pad, h, w, i, o)) in cases.iter().enumerate() {
            let input = Nhwc::new(2, h, w, i);
            let x = values(input.len().unwrap(), n as u32);
            let weight = values(o * i * k * k, 100 + n as u32);
            let conv = Conv2d::from_oihw(&weight, [o, i, k, k], None, stride, pad).unwrap();
            let out = conv.output_shape(input).unwrap();
            let dy = values(out.len().unwrap(), 200 + n as u32);
            let (edx, edw, edb) =
                reference(&x, input, &weight, [o, i, k, k], stride, pad, &dy, out);
            let mut runs = Vec::new();
            for threads in [1, 3] {
                let workers = Workers::new(threads);
                let mut dx = vec![f32::NAN; x.len()];
                conv.backward_input(&dy, input, &mut dx, &workers).unwrap();
                let grads = conv.backward_weights(&x, input, &dy, &workers).unwrap();
                // Winograd's transforms round differently from a direct sum: 1e-5 of scale.
                assert_close(&format!("case {n} dx"), &dx, &edx, 1e-5);
                assert_close(&format!("case {n} dW"), &grads.weight_oihw, &edw, 1e-5);
                assert_close(&format!("case {n} db"), &grads.bias, &edb, 1e-6);
                runs.push((dx, grads));
            }
            assert_eq!(runs[0], runs[1], "case {n}: 1 and 3 threads differ");
        }
    }

    #[test]
    fn wrong_gradient_lengths_are_errors() {
        let conv =
            Conv2d::from_oihw(&[1.0; 18], [2, 1, 3, 3], None, 1, Padding::symmetric(1)).unwrap();
        let input = Nhwc::new(1, 4, 4, 1);
        let workers = Workers::new(1);
        let err = conv.backward_input(&[0.0; 31], input, &mut [0.0; 16], &workers).unwrap_err();
        assert!(err.to_string().contains("output gradient"), "{err}");
        let err = conv.backward_weights(&[0.0; 15], input, &[0.0; 32], &workers).unwrap_err();
        assert!(err.to_string().contains("convolution input"), "{err}");
    }
}
