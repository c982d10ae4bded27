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

/// Matterport's `resize_image(mode="square", min_dim, max_dim)`, before molding: the 8-bit
/// image resized and centred in a zero-padded `max_dim × max_dim` square.
#[derive(Debug, Clone, PartialEq)]
pub struct SquareImage {
    /// `max_dim²` RGB pixels; the padding is 0.
    pub rgb: image::RgbImage,
    /// The image inside the square, pixels.
    pub window: Bbox,
    /// Resize factor applied to the original.
    pub scale: f32,
    /// The original image's size.
    pub original: ImageSize,
}

impl SquareImage {
    /// A box of the original image → the square (scaled, shifted by the padding).
    pub fn from_original(&self, b: &Bbox) -> Bbox {
        let (left, top) = (self.window.x1, self.window.y1);
        Bbox::new(
            b.x1 * self.scale + left,
            b.y1 * self.scale + top,
            b.x2 * self.scale + left,
            b.y2 * self.scale + top,
        )
    }
}

/// Matterport's `resize_image(mode="square", min_dim, max_dim)`:
/// `scale = max(1, min_dim / min(h, w))` (never down-scales for `min_dim`), capped so that
/// `round(max(h, w) · scale) ≤ max_dim`; bilinear resize to `(round(h·s), round(w·s))`; centred
/// zero pad to `max_dim²` (`top = (max_dim − h) // 2`).
///
/// The resize is the `image` crate's bilinear filter, not skimage's: pixel values differ slightly
/// from Matterport's (not the geometry).
pub fn square_resize(
    img: &image::DynamicImage,
    min_dim: u32,
    max_dim: u32,
) -> Result<SquareImage, Error> {
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
    let mut square = image::RgbImage::new(max_dim, max_dim);
    image::imageops::replace(&mut square, &resized, i64::from(left), i64::from(top));
    Ok(SquareImage {
        rgb: square,
        window: Bbox::new(left as f32, top as f32, (left + w) as f32, (top + h) as f32),
        scale: scale as f32,
        original: ImageSize { height: h0, width: w0 },
    })
}

/// Matterport's `resize_image(mode="square", min_dim, max_dim)` ([`square_resize`]) +
/// `mold_image` (subtract [`MEAN_PIXEL`]; the padding becomes `−MEAN_PIXEL`, as in Matterport,
/// which pads before molding).
///
/// For bit-level parity with Matterport's skimage resize, mold in Python and pass the array
/// (`rpn propose --input molded.npy`).
pub fn mold_square(
    img: &image::DynamicImage,
    min_dim: u32,
    max_dim: u32,
) -> Result<MoldedImage, Error> {
    let square = square_resize(img, min_dim, max_dim)?;
    let pixels = square
        .rgb
        .pixels()
        .flat_map(|p| [0, 1, 2].map(|c| p.0[c] as f32 - MEAN_PIXEL[c]))
        .collect();
    Ok(MoldedImage {
        pixels,
        size: ImageSize { height: max_dim, width: max_dim },
        window: square.window,
        scale: square.scale,
        original: square.original,
    })
}
