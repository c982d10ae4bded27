//! torchvision's `GeneralizedRCNNTransform` for inference: normalise with the ImageNet mean and
//! standard deviation, resize so the shorter side is `min_size` unless the longer would exceed
//! `max_size` (bilinear, `F.interpolate(…, scale_factor, recompute_scale_factor=True,
//! align_corners=False)`), and pad batches with zeros to a multiple of 32. Boxes map back with
//! `resize_boxes` (a ratio per axis, as `f32`).
//!
//! The arithmetic follows PyTorch's CPU kernel: the output size is `floor(side · scale)` with the
//! scale in `f64`; the source coordinate of output pixel `i` is
//! `max((in / out) · (i + ½) − ½, 0)` in `f32`; the two taps along x are blended first, then
//! the two rows, so values agree with torchvision to rounding.

use rpn_anchors::ImageSize;

use crate::Error;

/// ImageNet mean (RGB) of `GeneralizedRCNNTransform`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The size `GeneralizedRCNNTransform.resize` gives an image of `original` size:
/// `scale = min(min_size / min(h, w), max_size / max(h, w))`, sides `floor(side · scale)`.
pub fn torchvision_resized_size(original: ImageSize, min_size: u32, max_size: u32) -> ImageSize {
    let (h, w) = (f64::from(original.height), f64::from(original.width));
    let scale = (f64::from(min_size) / h.min(w)).min(f64::from(max_size) / h.max(w));
    let side = |s: f64| ((s * scale).floor() as u32).max(1);
    ImageSize { height: side(h), width: side(w) }
}

/// `side` rounded up to a multiple of `divisible` (`batch_images`).
pub fn torchvision_padded(size: ImageSize, divisible: u32) -> ImageSize {
    let up = |s: u32| s.div_ceil(divisible.max(1)) * divisible.max(1);
    ImageSize { height: up(size.height), width: up(size.width) }
}

/// One image through the transform: `H · W · 3` values (HWC) at the resized size, and that size.
pub fn torchvision_transform(
    img: &image::DynamicImage,
    min_size: u32,
    max_size: u32,
) -> Result<(Vec<f32>, ImageSize), Error> {
    let original = ImageSize::new(img.height(), img.width())?;
    // `to_tensor`: 8-bit channels / 255 (float images are taken as they are, in [0, 1]).
    let unit: Vec<f32> = match img {
        image::DynamicImage::ImageRgb32F(f) => f.as_raw().clone(),
        other => other.to_rgb8().as_raw().iter().map(|&v| f32::from(v) / 255.0).collect(),
    };
    let normalized: Vec<f32> = unit
        .chunks_exact(3)
        .flat_map(|p| {
            std::array::from_fn::<f32, 3, _>(|c| (p[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
        })
        .collect();
    let resized = torchvision_resized_size(original, min_size, max_size);
    Ok((bilinear_hwc(&normalized, original, resized), resized))
}

/// Source taps and weights of PyTorch's `upsample_bilinear2d` (align_corners = false) along
/// one axis of `input` → `output` samples.
fn taps(input: u32, output: u32) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| {
            let real = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (real as usize).min(input as usize - 1);
            let i1 = if i0 + 1 < input as usize { i0 + 1 } else { i0 };
            let l1 = (real - i0 as f32).min(1.0);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of an HWC RGB buffer, PyTorch's arithmetic (see the module docs).
fn bilinear_hwc(src: &[f32], from: ImageSize, to: ImageSize) -> Vec<f32> {
    if from == to {
        return src.to_vec();
    }
    let (ys, xs) = (taps(from.height, to.height), taps(from.width, to.width));
    let w = from.width as usize;
    let mut out = Vec::with_capacity(to.height as usize * to.width as usize * 3);
    for &(y0, y1, wy0, wy1) in &ys {
        for &(x0, x1, wx0, wx1) in &xs {
            for c in 0..3 {
                let at = |y: usize, x: usize| src[(y * w + x) * 3 + c];
                let top = at(y0, x0) * wx0 + at(y0, x1) * wx1;
                let bottom = at(y1, x0) * wx0 + at(y1, x1) * wx1;
                out.push(top * wy0 + bottom * wy1);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_torchvisions_rule() {
        let s = |h, w| ImageSize { height: h, width: w };
        // 480×640 → 800×1066 (shorter side 800); 500×2000 → 333×1333 (longer side capped).
        assert_eq!(torchvision_resized_size(s(480, 640), 800, 1333), s(800, 1066));
        assert_eq!(torchvision_resized_size(s(500, 2000), 800, 1333), s(333, 1333));
        assert_eq!(torchvision_padded(s(800, 1066), 32), s(800, 1088));
    }

    #[test]
    fn identity_and_constant_images_survive_the_resize() {
        let from = ImageSize { height: 3, width: 5 };
        let src: Vec<f32> = (0..45).map(|v| v as f32).collect();
        assert_eq!(bilinear_hwc(&src, from, from), src);
        let flat = vec![0.25f32; 45];
        let up = bilinear_hwc(&flat, from, ImageSize { height: 7, width: 11 });
        assert!(up.iter().all(|&v| v == 0.25));
    }
}
