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
//! - **weight gradient** `dW = windows(x)ᵀ · dy`, a reduction over all `M` pixels, cut into at
//!   most 8 fixed parts of pixels; each part is computed whole by one thread (windows gathered
//!   chunk by chunk, one GEMM per chunk accumulating into the part's own `K × O` buffer) and the
//!   parts are added in order, so the bits do not depend on the thread count. Layers that run
//!   Winograd forward do the same in Winograd's transformed domain (16 GEMMs per block of tiles,
//!   2.25× fewer multiply-adds; see `winograd.rs`).
//! - **bias gradient** `db = Σ dy` over pixels (f32 sums per chunk of rows, f64 across chunks).

use crate::gemm::{matmul_views, MatRef};
use crate::workers::scratch_slice;
use crate::{winograd, Conv2d, Epilogue, KernelError, Nhwc, Padding, Workers};

/// Output rows per GEMM in the strided input gradient.
const INPUT_GRAD_ROWS: usize = 256;
/// Pixels per GEMM of the weight gradient's reduction.
const WEIGHT_GRAD_CHUNK: usize = 512;
/// At most this many partial weight gradients (each `K × O`) are summed: enough to keep every
/// core busy, few enough to bound their memory.
const MAX_PARTS: usize = 8;
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
        Some(Conv2d::assemble([kh, kw, o, c], 1, padding, packed, vec![0.0; c], true))
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
    /// `grad_out = ∂loss/∂y`. Layers that run Winograd forward (3×3, stride 1, ≥ 16 channels)
    /// compute it in Winograd's transformed domain too.
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
        let (c, o, taps) = (self.in_channels, self.out_channels, self.kernel_h * self.kernel_w);
        // dW in the packed `[K, O]` layout.
        let packed_grad = if out.is_empty() {
            vec![0f32; taps * c * o]
        } else if self.winograd_applies() {
            self.weight_grad_winograd(x, input, out, grad_out, workers)
        } else {
            self.weight_grad_gemm(x, input, out, grad_out, workers)?
        };
        let mut weight_oihw = vec![0f32; packed_grad.len()];
        for out_channel in 0..o {
            for in_channel in 0..c {
                for tap in 0..taps {
                    weight_oihw[(out_channel * c + in_channel) * taps + tap] =
                        packed_grad[(tap * c + in_channel) * o + out_channel];
                }
            }
        }
        Ok(ConvGradients { weight_oihw, bias: column_sums(grad_out, o) })
    }

    /// `windowsᵀ · dy` over fixed parts of the pixels, windows gathered chunk by chunk.
    fn weight_grad_gemm(
        &self,
        x: &[f32],
        input: Nhwc,
        out: Nhwc,
        grad_out: &[f32],
        workers: &Workers,
    ) -> Result<Vec<f32>, KernelError> {
        let (window, n) = (self.packed.len() / self.out_channels, self.out_channels);
        let pixels = out.pixels()?;
        let parts = pixels.div_ceil(WEIGHT_GRAD_CHUNK * 4).clamp(1, MAX_PARTS);
        let part_pixels = pixels.div_ceil(parts).next_multiple_of(WEIGHT_GRAD_CHUNK);
        // Rounding up may leave the last parts empty: drop them (every part writes its buffer).
        let parts = pixels.div_ceil(part_pixels);
        let pointwise = self.is_pointwise();
        Ok(sum_of_parts(parts, window * n, workers, |part, acc, scratch| {
            let end = ((part + 1) * part_pixels).min(pixels);
            let mut first = part * part_pixels;
            while first < end {
                let rows = WEIGHT_GRAD_CHUNK.min(end - first);
                let dy = MatRef::row_major(&grad_out[first * n..(first + rows) * n], n);
                let windows_t = if pointwise {
                    // The windows are the input rows themselves.
                    MatRef::transposed(&x[first * window..(first + rows) * window], window)
                } else {
                    let windows = scratch_slice(scratch, rows * window);
                    self.gather(x, input, out, first, windows);
                    MatRef::transposed(windows, window)
                };
                // The part's first product overwrites its buffer (reused between calls, not
                // zeroed); the later ones add to it.
                let accumulate = first != part * part_pixels;
                matmul_views(window, rows, n, windows_t, dy, acc, accumulate);
                first += rows;
            }
        }))
    }

    /// Winograd F(2×2, 3×3)'s weight gradient over fixed parts of the tile blocks.
    fn weight_grad_winograd(
        &self,
        x: &[f32],
        input: Nhwc,
        out: Nhwc,
        grad_out: &[f32],
        workers: &Workers,
    ) -> Vec<f32> {
        let (c, o) = (self.in_channels, self.out_channels);
        let gradient = winograd::WeightGradient {
            layer: winograd::Layer {
                input: x,
                shape: input,
                out,
                top: self.padding.top,
                left: self.padding.left,
                tile: winograd::TileSize::Two,
                weights: &[],
            },
            grad_out,
        };
        let blocks = gradient.blocks();
        let per_part = blocks.len().div_ceil(blocks.len().clamp(1, MAX_PARTS));
        // No empty part: each one's first block writes its whole buffer.
        let parts = blocks.len().div_ceil(per_part);
        let u = sum_of_parts(parts, 16 * c * o, workers, |part, acc, scratch| {
            let part_blocks = blocks.iter().skip(part * per_part).take(per_part);
            for (index, &block) in part_blocks.enumerate() {
                gradient.accumulate(block, acc, scratch, index > 0);
            }
        });
        winograd::untransform_weight_grad(&u, c, o)
    }
}

/// `Σ_part f(part)` for `parts` partial results of `len` values: each part computed whole by one
/// thread into its own zeroed buffer, the partials added in part order — the same bits on any
/// thread count.
///
/// `f` must write every value of its part (the buffers are reused between calls, not zeroed).
fn sum_of_parts<F>(parts: usize, len: usize, workers: &Workers, f: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32], &mut Vec<f32>) + Sync,
{
    // Tens of MiB for the large layers: reused from call to call rather than freshly mapped
    // (page faults) and unmapped (TLB shootdowns) every time.
    let mut partials = workers.take_scratch();
    let partials_of_parts = scratch_slice(&mut partials, parts * len);
    workers.for_each_block(partials_of_parts, len, 1, f);
    let mut chunks = partials_of_parts.chunks_exact(len.max(1));
    let mut total = chunks.next().map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0; len]);
    for partial in chunks {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += p;
        }
    }
    workers.return_scratch(partials);
    total
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
    #[allow(clippy::too_many_arguments)]
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
            // Winograd for both gradients: odd sides, "valid", asymmetric padding.
            (3, 1, Padding::symmetric(1), 9, 7, 16, 17),
            (3, 1, Padding::VALID, 7, 10, 16, 16),
            (3, 1, Padding { top: 0, left: 1, bottom: 2, right: 1 }, 5, 6, 16, 24),
            (3, 1, Padding::VALID, 6, 8, 2, 3),
            (3, 1, Padding { top: 0, left: 1, bottom: 2, right: 1 }, 5, 6, 3, 4),
            (3, 2, Padding::symmetric(1), 9, 6, 3, 4),
            (3, 2, Padding::tf_same(8, 8, 3, 2), 8, 8, 2, 3),
            (7, 2, Padding::symmetric(3), 11, 10, 3, 5),
            (2, 2, Padding::VALID, 7, 6, 3, 2),
        ];
        // Shared by every case: buffers left over from a larger layer must not leak into the next.
        let pools = [Workers::new(1), Workers::new(3)];
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
            for workers in &pools {
                let mut dx = vec![f32::NAN; x.len()];
                conv.backward_input(&dy, input, &mut dx, workers).unwrap();
                let grads = conv.backward_weights(&x, input, &dy, workers).unwrap();
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
