//! TF "same" 3×3 stride-2 max-pooling with a backward pass (candle's max-pool has none unless
//! the kernel equals the stride): Matterport's stem pool when its layers train.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use crate::conv::contiguous_f32;

/// A 3×3/2 window over `planes` NCHW planes of `height × width`, `top`/`left` rows/columns of
/// virtual −∞ padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    planes: usize,
    height: usize,
    width: usize,
    out_height: usize,
    out_width: usize,
    top: usize,
    left: usize,
}

impl Window {
    /// The plane index of the largest value in the window of output `(oy, ox)`, the first in
    /// scan order on ties (as TF's `MaxPoolGrad` on CPU, which routes the gradient there).
    fn argmax(&self, plane: &[f32], oy: usize, ox: usize) -> Option<usize> {
        let mut best: Option<(usize, f32)> = None;
        for ky in 0..3 {
            let Some(iy) = (oy * 2 + ky).checked_sub(self.top).filter(|&y| y < self.height) else {
                continue;
            };
            for kx in 0..3 {
                let Some(ix) = (ox * 2 + kx).checked_sub(self.left).filter(|&x| x < self.width)
                else {
                    continue;
                };
                let at = iy * self.width + ix;
                if best.is_none_or(|(_, max)| plane[at] > max) {
                    best = Some((at, plane[at]));
                }
            }
        }
        best.map(|(at, _)| at)
    }
}

struct MaxPool(Window);

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "tf-same-max-pool-3x3-s2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, self.name())?;
        let w = self.0;
        let in_plane = w.height * w.width;
        let mut out = Vec::with_capacity(w.planes * w.out_height * w.out_width);
        for plane in input.chunks_exact(in_plane) {
            for oy in 0..w.out_height {
                for ox in 0..w.out_width {
                    out.push(w.argmax(plane, oy, ox).map_or(f32::NEG_INFINITY, |at| plane[at]));
                }
            }
        }
        let (b, c, _, _) = layout.shape().dims4()?;
        Ok((CpuStorage::F32(out), Shape::from((b, c, w.out_height, w.out_width))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&grad, &MaxPoolBackward(self.0))?))
    }
}

/// Each output's gradient added to the input pixel that was its window's maximum.
struct MaxPoolBackward(Window);

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "tf-same-max-pool-3x3-s2-backward"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(input, input_layout, self.name())?;
        let grad = contiguous_f32(grad, grad_layout, self.name())?;
        let w = self.0;
        let (in_plane, out_plane) = (w.height * w.width, w.out_height * w.out_width);
        let mut dx = vec![0f32; input.len()];
        for (p, (plane, g)) in
            input.chunks_exact(in_plane).zip(grad.chunks_exact(out_plane)).enumerate()
        {
            let d = &mut dx[p * in_plane..(p + 1) * in_plane];
            for oy in 0..w.out_height {
                for ox in 0..w.out_width {
                    if let Some(at) = w.argmax(plane, oy, ox) {
                        d[at] += g[oy * w.out_width + ox];
                    }
                }
            }
        }
        Ok((CpuStorage::F32(dx), input_layout.shape().clone()))
    }
}

/// TF "same" max-pool 3×3 stride 2 of NCHW `x`: pads `max((⌈n/2⌉ − 1)·2 + 3 − n, 0)` in total,
/// the extra pixel at the bottom/right, with −∞ (taps in the padding are skipped).
///
/// With gradients tracked on the CPU (training) it is a custom op with TF's backward pass (the
/// gradient goes to the first maximum of each window); otherwise candle's max-pool on the
/// zero-padded input, which is the same for post-ReLU (≥ 0) inputs.
pub(crate) fn tf_same_max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let pad = |n: usize| {
        let total = ((n.div_ceil(2)).saturating_sub(1) * 2 + 3).saturating_sub(n);
        (total / 2, total - total / 2)
    };
    let (b, c, h, w) = x.dims4()?;
    let ((top, bottom), (left, right)) = (pad(h), pad(w));
    if x.track_op() && x.device().is_cpu() && x.dtype() == DType::F32 {
        let window = Window {
            planes: b * c,
            height: h,
            width: w,
            out_height: h.div_ceil(2),
            out_width: w.div_ceil(2),
            top,
            left,
        };
        return x.contiguous()?.apply_op1(MaxPool(window));
    }
    x.pad_with_zeros(2, top, bottom)?.pad_with_zeros(3, left, right)?.max_pool2d_with_stride(3, 2)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn forward_matches_candle_and_gradient_goes_to_the_first_maximum() {
        // Post-ReLU-like values with ties (zeros and a repeated maximum).
        let values: Vec<f32> =
            (0..2 * 3 * 7 * 6).map(|i| ((i * 37 % 11) as f32 - 3.0).max(0.0)).collect();
        let x = Var::from_vec(values.clone(), (2, 3, 7, 6), &Device::Cpu).unwrap();
        let ours = tf_same_max_pool_3x3_s2(x.as_tensor()).unwrap();
        let plain = tf_same_max_pool_3x3_s2(&x.as_tensor().detach()).unwrap();
        assert_eq!(ours.dims(), &[2, 3, 4, 3]);
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            plain.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let grads = ours.sum_all().unwrap().backward().unwrap();
        let dx = grads.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Every output sends exactly 1 to one input of its window: the first maximum.
        assert_eq!(dx.iter().sum::<f32>(), (2 * 3 * 4 * 3) as f32);
        let plane = &values[..42];
        // Output (0, 0) of plane 0: window rows 0..2, columns 0..2 (TF pads 0 on top/left for
        // 7 → 4 and 6 → 3: total padding 2 and 1, the extra at the bottom/right).
        let (mut best, mut at) = (f32::NEG_INFINITY, 0);
        for y in 0..3 {
            for x in 0..3 {
                if plane[y * 6 + x] > best {
                    (best, at) = (plane[y * 6 + x], y * 6 + x);
                }
            }
        }
        assert!(dx[at] >= 1.0, "the first maximum at {at} gets the gradient");
    }
}
