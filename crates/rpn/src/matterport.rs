//! Matterport's input pipeline (`square` resize + centred zero pad + `MEAN_PIXEL`) and the mapping
//! of boxes back to the original image.

use rpn_anchors::{Bbox, ImageSize};

use crate::Error;

/// Matterport's `MEAN_PIXEL` (RGB), subtracted by `mold_image`.
pub const MEAN_PIXEL: [f32; 3] = [123.7, 116.8, 103.9];

/// A molded image and how to map boxes back to the original.
#[derive(Debug, Clone, PartialEq)]
pub struct MoldedImage {
    /// `H · W · 3` values, HWC: resized, zero-padded, minus [`MEAN_PIXEL`] (the padding is
    /// `−MEAN_PIXEL`, as in Matterport, which pads before molding).
    pub pixels: Vec<f32>,
    /// The molded size (`max_dim × max_dim`).
    pub size: ImageSize,
    /// The image inside the molded one, molded pixels (`window` of Matterport's `image_meta`).
    pub window: Bbox,
    /// Resize factor applied to the original.
    pub scale: f32,
    /// The original image's size.
    pub original: ImageSize,
}

impl MoldedImage {
    /// A box in molded pixels → original-image pixels (undo the pad and the scale; clipped).
    pub fn to_original(&self, b: &Bbox) -> Bbox {
        let (left, top) = (self.window.x1, self.window.y1);
        Bbox::new(
            (b.x1 - left) / self.scale,
            (b.y1 - top) / self.scale,
            (b.x2 - left) / self.scale,
            (b.y2 - top) / self.scale,
        )
        .clip_to(self.original)
    }
}

/// Matterport's `resize_image(mode="square", min_dim, max_dim)` + `mold_image`:
/// `scale = max(1, min_dim / min(h, w))` (never down-scales for `min_dim`), capped so that
/// `round(max(h, w) · scale) ≤ max_dim`; bilinear resize to `(round(h·s), round(w·s))`; centred
/// zero pad to `max_dim²` (`top = (max_dim − h) // 2`); subtract [`MEAN_PIXEL`].
///
/// The resize is the `image` crate's bilinear filter, not skimage's: pixel values differ slightly
/// from Matterport's (not the geometry). For bit-level parity, mold in Python and pass the array
/// (`rpn propose --input molded.npy`).
pub fn mold_square(
    img: &image::DynamicImage,
    min_dim: u32,
    max_dim: u32,
) -> Result<MoldedImage, Error> {
    let (w0, h0) = (img.width(), img.height());
    if w0 == 0 || h0 == 0 || max_dim == 0 {
        return Err(Error::invalid(
            "image to mold",
            format!("{w0}×{h0} (width × height) into {max_dim}²"),
            "both sides and IMAGE_MAX_DIM must be > 0",
        ));
    }
    let mut scale = (min_dim as f64 / h0.min(w0) as f64).max(1.0);
    if (h0.max(w0) as f64 * scale).round() > max_dim as f64 {
        scale = max_dim as f64 / h0.max(w0) as f64;
    }
    let (h, w) = ((h0 as f64 * scale).round() as u32, (w0 as f64 * scale).round() as u32);
    let rgb = img.to_rgb8();
    let resized = if (w, h) == (w0, h0) {
        rgb
    } else {
        image::imageops::resize(&rgb, w, h, image::imageops::FilterType::Triangle)
    };
    let (top, left) = ((max_dim - h) / 2, (max_dim - w) / 2);
    let side = max_dim as usize;
    let mut pixels: Vec<f32> = (0..side * side).flat_map(|_| MEAN_PIXEL.map(|m| -m)).collect();
    for (x, y, p) in resized.enumerate_pixels() {
        let at = (((y + top) as usize) * side + (x + left) as usize) * 3;
        for c in 0..3 {
            pixels[at + c] = p.0[c] as f32 - MEAN_PIXEL[c];
        }
    }
    let size = ImageSize { height: max_dim, width: max_dim };
    Ok(MoldedImage {
        pixels,
        size,
        window: Bbox::new(left as f32, top as f32, (left + w) as f32, (top + h) as f32),
        scale: scale as f32,
        original: ImageSize { height: h0, width: w0 },
    })
}
