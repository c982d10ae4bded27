//! Matterport's `PyramidROIAlign`: the hand-off from the RPN to a second stage.
//!
//! Each box (normalised `(y1, x1, y2, x2)`, as `rpn_rois`) is assigned to a pyramid level by the
//! FPN paper's equation 1 in Matterport's normalised form,
//! `level = clamp(4 + round(log2(√(h·w) / (224 / √(H·W)))), 2, 5)` (TF's `round`: half to even),
//! and cropped from that level with TF's `crop_and_resize` (bilinear, one sample per output
//! cell, sample grid spanning the box corners, 0 outside the map). The output keeps the input
//! box order.

use candle_core::{Device, Result, Tensor};

/// TF `crop_and_resize` on one NHWC map `[H, W, C]` (row-major `data`) for one normalised box,
/// appending `ch · cw · C` values to `out`. All arithmetic in `f32`, as TF's CPU kernel.
fn crop_one(
    data: &[f32],
    (h, w, c): (usize, usize, usize),
    [y1, x1, y2, x2]: [f32; 4],
    (ch, cw): (usize, usize),
    out: &mut Vec<f32>,
) {
    let (hm1, wm1) = ((h - 1) as f32, (w - 1) as f32);
    let height_scale = if ch > 1 { (y2 - y1) * hm1 / (ch - 1) as f32 } else { 0.0 };
    let width_scale = if cw > 1 { (x2 - x1) * wm1 / (cw - 1) as f32 } else { 0.0 };
    for y in 0..ch {
        let in_y = if ch > 1 { y1 * hm1 + y as f32 * height_scale } else { 0.5 * (y1 + y2) * hm1 };
        if !(0.0..=hm1).contains(&in_y) {
            out.extend(std::iter::repeat_n(0.0, cw * c));
            continue;
        }
        let (top, bottom) = (in_y.floor() as usize, in_y.ceil() as usize);
        let y_lerp = in_y - top as f32;
        for x in 0..cw {
            let in_x =
                if cw > 1 { x1 * wm1 + x as f32 * width_scale } else { 0.5 * (x1 + x2) * wm1 };
            if !(0.0..=wm1).contains(&in_x) {
                out.extend(std::iter::repeat_n(0.0, c));
                continue;
            }
            let (left, right) = (in_x.floor() as usize, in_x.ceil() as usize);
            let x_lerp = in_x - left as f32;
            let at = |yy: usize, xx: usize, k: usize| data[(yy * w + xx) * c + k];
            for k in 0..c {
                let top_v = at(top, left, k) + (at(top, right, k) - at(top, left, k)) * x_lerp;
                let bottom_v =
                    at(bottom, left, k) + (at(bottom, right, k) - at(bottom, left, k)) * x_lerp;
                out.push(top_v + (bottom_v - top_v) * y_lerp);
            }
        }
    }
}

/// `tf.image.crop_and_resize(images, boxes, box_indices, crop)` with method `bilinear` and
/// extrapolation value 0: `images` NHWC `[B, H, W, C]`, `boxes` normalised `(y1, x1, y2, x2)`
/// (flipped boxes flip the crop), `box_indices[i]` the image of box `i`. Returns
/// `[N, crop_h, crop_w, C]` on the images' device (computed on the CPU).
pub fn crop_and_resize(
    images: &Tensor,
    boxes: &[[f32; 4]],
    box_indices: &[usize],
    crop: (usize, usize),
) -> Result<Tensor> {
    let (b, h, w, c) = images.dims4()?;
    if boxes.len() != box_indices.len() {
        candle_core::bail!("{} boxes but {} box indices", boxes.len(), box_indices.len())
    }
    if let Some(&bad) = box_indices.iter().find(|&&i| i >= b) {
        candle_core::bail!("box index {bad} out of range for a batch of {b}")
    }
    if crop.0 == 0 || crop.1 == 0 || h == 0 || w == 0 {
        candle_core::bail!("crop {crop:?} of {h}×{w} maps must be non-empty")
    }
    let data = images.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(boxes.len() * crop.0 * crop.1 * c);
    for (bx, &i) in boxes.iter().zip(box_indices) {
        crop_one(&data[i * h * w * c..(i + 1) * h * w * c], (h, w, c), *bx, crop, &mut out);
    }
    Tensor::from_vec(out, (boxes.len(), crop.0, crop.1, c), images.device())
}

/// The pyramid level (2–5) of a normalised `(y1, x1, y2, x2)` box in an `image_area`-pixel
/// image, as Matterport computes it in `f32` (a degenerate box goes to P2).
pub fn roi_level([y1, x1, y2, x2]: [f32; 4], image_area: f32) -> usize {
    let (h, w) = (y2 - y1, x2 - x1);
    let ratio = (h * w).sqrt() / (224.0 / image_area.sqrt());
    let level = ratio.ln() / 2f32.ln();
    if !level.is_finite() {
        // TF casts −inf / NaN to i32::MIN, which the clamp turns into level 2.
        return 2;
    }
    (4 + level.round_ties_even() as i64).clamp(2, 5) as usize
}

/// Matterport's `PyramidROIAlign(pool)`: `pyramid` is P2…P5 as NCHW `[B, C, H_l, W_l]`,
/// `boxes[b]` the normalised boxes of image `b` (each image the same count `N`, zero-padded as
/// `rpn_rois`), `image` the molded size. Returns Keras' layout `[B, N, pool_h, pool_w, C]`.
pub fn pyramid_roi_align(
    pyramid: &[Tensor],
    boxes: &[Vec<[f32; 4]>],
    image: (usize, usize),
    pool: (usize, usize),
) -> Result<Tensor> {
    if pyramid.len() != 4 {
        candle_core::bail!("PyramidROIAlign takes P2…P5 (4 maps), got {}", pyramid.len())
    }
    let n = boxes.first().map_or(0, Vec::len);
    if boxes.iter().any(|b| b.len() != n) {
        candle_core::bail!("every image needs the same number of boxes (pad with zeros)")
    }
    let levels: Vec<Tensor> =
        pyramid.iter().map(|p| p.permute((0, 2, 3, 1))?.contiguous()).collect::<Result<_>>()?;
    let c = levels[0].dim(3)?;
    let area = (image.0 * image.1) as f32;
    let mut pooled = Vec::with_capacity(boxes.len() * n * pool.0 * pool.1 * c);
    // Each level's NHWC values on the CPU with its `(H, W, C)`.
    let mut cpu = Vec::with_capacity(levels.len());
    for l in &levels {
        let (_, h, w, c) = l.dims4()?;
        cpu.push((l.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?, (h, w, c)));
    }
    for (b, image_boxes) in boxes.iter().enumerate() {
        for bx in image_boxes {
            let (data, (h, w, c)) = &cpu[roi_level(*bx, area) - 2];
            let plane = h * w * c;
            crop_one(&data[b * plane..(b + 1) * plane], (*h, *w, *c), *bx, pool, &mut pooled);
        }
    }
    Tensor::from_vec(pooled, (boxes.len(), n, pool.0, pool.1, c), pyramid[0].device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_equation_one() {
        // 224 px in a 1024² image: log2(224/1024 · 1024/224) = 0 → P4.
        let s = 224.0 / 1023.0;
        assert_eq!(roi_level([0.0, 0.0, s, s], 1024.0 * 1024.0), 4);
        assert_eq!(roi_level([0.0, 0.0, 1.0, 1.0], 1024.0 * 1024.0), 5);
        assert_eq!(roi_level([0.3, 0.3, 0.3, 0.3], 1024.0 * 1024.0), 2, "empty box");
        assert_eq!(roi_level([0.5, 0.5, 0.4, 0.6], 1024.0 * 1024.0), 2, "flipped box (NaN)");
        // A quarter of 224 px: two levels down, then clamped to P2.
        assert_eq!(roi_level([0.0, 0.0, s / 4.0, s / 4.0], 1024.0 * 1024.0), 2);
        assert_eq!(roi_level([0.0, 0.0, s / 2.0, s / 2.0], 1024.0 * 1024.0), 3);
    }

    #[test]
    fn one_sample_crops_take_the_box_centre() -> Result<()> {
        // A 3×3 map holding 0…8: the centre of the whole image is value 4.
        let img = Tensor::arange(0f32, 9.0, &Device::Cpu)?.reshape((1, 3, 3, 1))?;
        let out = crop_and_resize(&img, &[[0.0, 0.0, 1.0, 1.0]], &[0], (1, 1))?;
        assert_eq!(out.flatten_all()?.to_vec1::<f32>()?, [4.0]);
        let out = crop_and_resize(&img, &[[0.0, 0.0, 1.0, 1.0]], &[0], (3, 3))?;
        assert_eq!(
            out.flatten_all()?.to_vec1::<f32>()?,
            (0..9).map(|v| v as f32).collect::<Vec<_>>()
        );
        assert!(crop_and_resize(&img, &[[0.0; 4]], &[1], (2, 2)).is_err(), "bad box index");
        Ok(())
    }
}
