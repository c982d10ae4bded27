//! Max-pooling and the FPN's nearest ×2 upsample-add, on NHWC buffers.

use crate::{KernelError, Nhwc, Padding, Workers};

/// Output pixels per block of work (blocks are cut by pixel count only: same bits on any
/// thread count, though max and add are exact anyway).
const PIXELS_PER_BLOCK: usize = 1024;

/// The output shape of a `kernel × kernel` max-pool with `stride` and `padding` over `input`.
pub fn max_pool_shape(
    input: Nhwc,
    kernel: usize,
    stride: usize,
    padding: Padding,
) -> Result<Nhwc, KernelError> {
    if kernel == 0
        || stride == 0
        || padding.top.max(padding.left).max(padding.bottom).max(padding.right) >= kernel
    {
        return Err(KernelError::Invalid {
            what: "max-pool",
            detail: format!("window {kernel}, stride {stride}, padding {padding:?}"),
        });
    }
    let (ho, wo) = padding.output(input, kernel, kernel, stride)?;
    Ok(Nhwc::new(input.batch, ho, wo, input.channels))
}

/// Max over each `kernel × kernel` window with `stride`; padded cells never win (they count as
/// −∞, as in TF and PyTorch). TF "same" 3×3/2 is `Padding::tf_same(h, w, 3, 2)`, torchvision's
/// stem pool `Padding::symmetric(1)`, FPN's P6 (`MaxPooling2D(1, strides=2)`) kernel 1 stride 2.
/// `out` must hold [`max_pool_shape`]'s values; returns that shape.
pub fn max_pool(
    input: &[f32],
    shape: Nhwc,
    kernel: usize,
    stride: usize,
    padding: Padding,
    out: &mut [f32],
    workers: &Workers,
) -> Result<Nhwc, KernelError> {
    shape.check("max-pool input", input)?;
    let out_shape = max_pool_shape(shape, kernel, stride, padding)?;
    out_shape.check("max-pool output", out)?;
    let c = shape.channels;
    if out_shape.is_empty() {
        return Ok(out_shape);
    }
    let plane = out_shape.height * out_shape.width;
    workers.for_each_block(out, c, PIXELS_PER_BLOCK, |first, block, _| {
        for (p, dst) in block.chunks_exact_mut(c).enumerate() {
            let pixel = first + p;
            let (b, rest) = (pixel / plane, pixel % plane);
            let (oy, ox) = (rest / out_shape.width, rest % out_shape.width);
            dst.fill(f32::NEG_INFINITY);
            for ky in 0..kernel {
                let iy = (oy * stride + ky).wrapping_sub(padding.top);
                if iy >= shape.height {
                    continue;
                }
                for kx in 0..kernel {
                    let ix = (ox * stride + kx).wrapping_sub(padding.left);
                    if ix >= shape.width {
                        continue;
                    }
                    let at = ((b * shape.height + iy) * shape.width + ix) * c;
                    for (m, v) in dst.iter_mut().zip(&input[at..at + c]) {
                        // A NaN anywhere in the window wins and stays (PyTorch's rule).
                        if *v > *m || v.is_nan() {
                            *m = *v;
                        }
                    }
                }
            }
        }
    });
    Ok(out_shape)
}

/// `large += upsample×2(small)` with nearest neighbours: `large[b, y, x, c] +=
/// small[b, y/2, x/2, c]` (Keras `UpSampling2D(2)`, PyTorch `interpolate(scale 2, "nearest")`).
/// `large` must be exactly twice `small`'s height and width, with the same batch and channels.
pub fn upsample2_add(
    small: &[f32],
    small_shape: Nhwc,
    large: &mut [f32],
    large_shape: Nhwc,
    workers: &Workers,
) -> Result<(), KernelError> {
    small_shape.check("upsampled input", small)?;
    large_shape.check("upsample-add target", large)?;
    let doubled = Nhwc::new(
        small_shape.batch,
        2 * small_shape.height,
        2 * small_shape.width,
        small_shape.channels,
    );
    if doubled != large_shape {
        return Err(KernelError::Invalid {
            what: "upsample-add",
            detail: format!(
                "{small_shape:?} doubled is {doubled:?}, the target is {large_shape:?}"
            ),
        });
    }
    let c = large_shape.channels;
    if large_shape.is_empty() {
        return Ok(());
    }
    let plane = large_shape.height * large_shape.width;
    workers.for_each_block(large, c, PIXELS_PER_BLOCK, |first, block, _| {
        for (p, dst) in block.chunks_exact_mut(c).enumerate() {
            let pixel = first + p;
            let (b, rest) = (pixel / plane, pixel % plane);
            let (y, x) = (rest / large_shape.width, rest % large_shape.width);
            let at = ((b * small_shape.height + y / 2) * small_shape.width + x / 2) * c;
            for (d, s) in dst.iter_mut().zip(&small[at..at + c]) {
                *d += s;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4×4 single-channel image 0..16: TF "same" 3×3/2 pads bottom/right only, so the first
    /// window is rows/columns 0..3 (max 10) and the last rows/columns 2..4 (max 15); symmetric
    /// padding 1 shifts every window up-left (first window max 5).
    #[test]
    fn tf_same_and_symmetric_windows_by_hand() {
        let input: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let shape = Nhwc::new(1, 4, 4, 1);
        let workers = Workers::new(2);
        let mut out = vec![0.0; 4];
        let tf = Padding::tf_same(4, 4, 3, 2);
        max_pool(&input, shape, 3, 2, tf, &mut out, &workers).unwrap();
        assert_eq!(out, [10., 11., 14., 15.]);
        max_pool(&input, shape, 3, 2, Padding::symmetric(1), &mut out, &workers).unwrap();
        assert_eq!(out, [5., 7., 13., 15.]);
        // P6: every other pixel.
        max_pool(&input, shape, 1, 2, Padding::VALID, &mut out, &workers).unwrap();
        assert_eq!(out, [0., 2., 8., 10.]);
    }

    #[test]
    fn padding_never_wins_over_negative_values() {
        let input = vec![-3.0f32; 4];
        let mut out = vec![0.0; 1];
        let pad = Padding { top: 0, left: 0, bottom: 1, right: 1 };
        max_pool(&input, Nhwc::new(1, 2, 2, 1), 3, 2, pad, &mut out, &Workers::new(1)).unwrap();
        assert_eq!(out, [-3.0]);
    }

    #[test]
    fn upsample_adds_each_value_to_its_four_pixels() {
        let small = [1.0f32, 10.0, 2.0, 20.0]; // 1×1×2 image, 2 channels, batch 2
        let mut large = vec![0.5f32; 16];
        let s = Nhwc::new(2, 1, 1, 2);
        upsample2_add(&small, s, &mut large, Nhwc::new(2, 2, 2, 2), &Workers::new(2)).unwrap();
        assert_eq!(&large[..8], &[1.5, 10.5, 1.5, 10.5, 1.5, 10.5, 1.5, 10.5]);
        assert_eq!(&large[8..], &[2.5, 20.5, 2.5, 20.5, 2.5, 20.5, 2.5, 20.5]);
        let err =
            upsample2_add(&small, s, &mut large[..8], Nhwc::new(1, 2, 2, 2), &Workers::new(1));
        assert!(err.unwrap_err().to_string().contains("doubled"));
    }
}
