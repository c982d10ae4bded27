//! The box type and the image size it lives in.
//!
//! Coordinates are continuous pixels: `(x1, y1)` is the top-left corner, `(x2, y2)` the
//! bottom-right corner, and `width = x2 − x1` (no "+1": a box from pixel column 10 up to, not
//! including, column 20 is `x1 = 10, x2 = 20`, width 10). This is the convention of torchvision,
//! detectron2, mmdet 2+ and of Matterport's *pixel* boxes; Matterport's in-graph *normalised*
//! boxes are reached only through [`Bbox::to_matterport_normalized`] and
//! [`Bbox::from_matterport_normalized`].

use crate::AnchorError;

/// Size of an image (or of a padded batch), in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ImageSize {
    /// Number of rows.
    pub height: u32,
    /// Number of columns.
    pub width: u32,
}

impl ImageSize {
    /// An image of `height × width` pixels; both sides must be non-zero.
    ///
    /// ```
    /// # use rpn_anchors::{ImageSize, AnchorError};
    /// assert!(ImageSize::new(1024, 1024).is_ok());
    /// assert_eq!(
    ///     ImageSize::new(0, 64).unwrap_err().to_string(),
    ///     "image size must have both sides > 0, got 0x64 (height x width)"
    /// );
    /// ```
    pub fn new(height: u32, width: u32) -> Result<Self, AnchorError> {
        if height == 0 || width == 0 {
            return Err(AnchorError::EmptyImage { height, width });
        }
        Ok(Self { height, width })
    }

    /// The whole image as a box: `(0, 0, width, height)`.
    pub fn as_bbox(self) -> Bbox {
        Bbox::new(0.0, 0.0, self.width as f32, self.height as f32)
    }
}

/// An axis-aligned box in continuous pixel coordinates, `x1 ≤ x2`, `y1 ≤ y2` for a proper box.
///
/// The fields are public and mean exactly what they say; layouts other than `(x1, y1, x2, y2)`
/// are explicit conversions ([`Bbox::from_yxyx`], [`Bbox::to_matterport_normalized`], …), never a
/// reinterpretation of a `[f32; 4]`.
///
/// ```
/// # use rpn_anchors::Bbox;
/// let a = Bbox::new(0.0, 0.0, 10.0, 10.0);
/// let b = Bbox::new(5.0, 0.0, 15.0, 10.0);
/// assert_eq!(a.width(), 10.0); // x2 − x1, no +1
/// assert_eq!(a.intersection_area(&b), 50.0);
/// assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
// `repr(C)`: laid out as `[f32; 4]`, which the AVX2 delta coder loads 8 boxes at a time.
#[repr(C)]
pub struct Bbox {
    /// Left edge, pixels.
    pub x1: f32,
    /// Top edge, pixels.
    pub y1: f32,
    /// Right edge, pixels (exclusive in pixel-index terms).
    pub x2: f32,
    /// Bottom edge, pixels (exclusive in pixel-index terms).
    pub y2: f32,
}

impl Bbox {
    /// A box from its corners `(x1, y1)` and `(x2, y2)`.
    pub const fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }

    /// A box from its centre and size: `x1 = cx − w/2`, `x2 = cx + w/2`.
    pub fn from_center_size(cx: f32, cy: f32, width: f32, height: f32) -> Self {
        let (hw, hh) = (0.5 * width, 0.5 * height);
        Self::new(cx - hw, cy - hh, cx + hw, cy + hh)
    }

    /// From torchvision/detectron2 order `[x1, y1, x2, y2]`.
    pub const fn from_xyxy([x1, y1, x2, y2]: [f32; 4]) -> Self {
        Self::new(x1, y1, x2, y2)
    }

    /// To torchvision/detectron2 order `[x1, y1, x2, y2]`.
    pub const fn to_xyxy(self) -> [f32; 4] {
        [self.x1, self.y1, self.x2, self.y2]
    }

    /// From Matterport's pixel order `[y1, x1, y2, x2]` (same coordinates, axes swapped).
    pub const fn from_yxyx([y1, x1, y2, x2]: [f32; 4]) -> Self {
        Self::new(x1, y1, x2, y2)
    }

    /// To Matterport's pixel order `[y1, x1, y2, x2]`.
    pub const fn to_yxyx(self) -> [f32; 4] {
        [self.y1, self.x1, self.y2, self.x2]
    }

    /// To Matterport's normalised in-graph form, `[y1, x1, y2, x2]`:
    /// `(b − [0, 0, 1, 1]) / [h − 1, w − 1, h − 1, w − 1]` (`mrcnn.utils.norm_boxes`).
    ///
    /// The `−1` is Matterport's: in pixels `y2`/`x2` lie outside the box, normalised they lie
    /// inside (matterport/Mask_RCNN#455). Computed in `f64` and rounded once, as numpy does.
    /// An image side of 1 pixel divides by zero and yields non-finite values, as in Matterport.
    ///
    /// ```
    /// # use rpn_anchors::{Bbox, ImageSize};
    /// let image = ImageSize::new(1024, 1024).unwrap();
    /// let n = Bbox::new(-16.0, -16.0, 16.0, 16.0).to_matterport_normalized(image);
    /// assert!((n[0] - -0.015640).abs() < 1e-6 && (n[2] - 0.014663).abs() < 1e-6);
    /// let back = Bbox::from_matterport_normalized(n, image);
    /// assert!((back.x2 - 16.0).abs() < 1e-4);
    /// ```
    pub fn to_matterport_normalized(self, image: ImageSize) -> [f32; 4] {
        let (sh, sw) = (f64::from(image.height) - 1.0, f64::from(image.width) - 1.0);
        [
            (f64::from(self.y1) / sh) as f32,
            (f64::from(self.x1) / sw) as f32,
            ((f64::from(self.y2) - 1.0) / sh) as f32,
            ((f64::from(self.x2) - 1.0) / sw) as f32,
        ]
    }

    /// The exact inverse of [`Bbox::to_matterport_normalized`]: `b · [h − 1, w − 1, h − 1, w − 1] + [0, 0, 1, 1]`.
    ///
    /// Matterport's `denorm_boxes` additionally rounds to integer pixels; this does not, so that
    /// proposals keep their sub-pixel position. Round the fields yourself for Matterport's ints.
    pub fn from_matterport_normalized([y1, x1, y2, x2]: [f32; 4], image: ImageSize) -> Self {
        let (sh, sw) = (f64::from(image.height) - 1.0, f64::from(image.width) - 1.0);
        Self::new(
            (f64::from(x1) * sw) as f32,
            (f64::from(y1) * sh) as f32,
            (f64::from(x2) * sw + 1.0) as f32,
            (f64::from(y2) * sh + 1.0) as f32,
        )
    }

    /// `x2 − x1`; negative for an inverted box.
    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }

    /// `y2 − y1`; negative for an inverted box.
    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }

    /// `width · height`, unclamped (as torchvision's `box_area`): an inverted box can have a
    /// positive area, which is why IoU checks the sides, not the area (see [`Bbox::iou`]).
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Centre `(cx, cy)`, computed as `x1 + 0.5·w` like every peer's coder.
    pub fn center(&self) -> (f32, f32) {
        (self.x1 + 0.5 * self.width(), self.y1 + 0.5 * self.height())
    }

    /// True when every coordinate is finite and the box has positive width and height.
    /// This is the condition GT boxes must meet (torchvision asserts it too).
    pub fn is_valid(&self) -> bool {
        let finite = self.x1.is_finite()
            && self.y1.is_finite()
            && self.x2.is_finite()
            && self.y2.is_finite();
        finite && self.x2 > self.x1 && self.y2 > self.y1
    }

    /// True when the box is empty for IoU purposes: width ≤ 0, height ≤ 0 or a NaN side.
    pub fn is_empty(&self) -> bool {
        // Written as a negation so that NaN sides count as empty.
        !(self.width() > 0.0 && self.height() > 0.0)
    }

    /// The overlap of two boxes, or `None` when they do not overlap with positive area.
    pub fn intersect(&self, other: &Bbox) -> Option<Bbox> {
        let b = Bbox::new(
            self.x1.max(other.x1),
            self.y1.max(other.y1),
            self.x2.min(other.x2),
            self.y2.min(other.y2),
        );
        (!b.is_empty()).then_some(b)
    }

    /// Area of the overlap, `max(0, min(x2) − max(x1)) · max(0, min(y2) − max(y1))`, torchvision's
    /// formula (so results are bit-identical to `box_iou`'s intersection).
    pub fn intersection_area(&self, other: &Bbox) -> f32 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        w * h
    }

    /// Intersection over union, in `[0, 1]`.
    ///
    /// `inter / (area_a + area_b − inter)` in `f32`, the exact expression of torchvision's
    /// `box_iou` and Matterport's `compute_iou`, so finite proper boxes give the peers' values bit
    /// for bit. Where they differ we follow TensorFlow's NMS: if either box is empty (width ≤ 0 or
    /// height ≤ 0) the IoU is `0` — never `NaN` (torchvision gives `NaN` for two empty boxes).
    ///
    /// Non-finite coordinates: a box with a `NaN` coordinate is empty, so its IoU is `0`. A box
    /// with an infinite side against a finite box gives `0` (finite intersection over infinite
    /// union); two boxes with infinite sides give `0` as well (the `NaN` of `∞/∞` is mapped to 0).
    pub fn iou(&self, other: &Bbox) -> f32 {
        if self.is_empty() || other.is_empty() {
            return 0.0;
        }
        iou_from_parts(self.intersection_area(other), self.area(), other.area())
    }

    /// Clamps the corners into the image: `x ∈ [0, width]`, `y ∈ [0, height]`
    /// (torchvision's `clip_boxes_to_image`). `NaN` coordinates stay `NaN`.
    pub fn clip_to(&self, image: ImageSize) -> Bbox {
        self.clip_to_window(&image.as_bbox())
    }

    /// Clamps the corners into `window` (Matterport's `clip_boxes_graph` with a window).
    /// `NaN` coordinates stay `NaN`, so callers can still see and drop them.
    pub fn clip_to_window(&self, window: &Bbox) -> Bbox {
        Bbox::new(
            clamp_keep_nan(self.x1, window.x1, window.x2),
            clamp_keep_nan(self.y1, window.y1, window.y2),
            clamp_keep_nan(self.x2, window.x1, window.x2),
            clamp_keep_nan(self.y2, window.y1, window.y2),
        )
    }
}

/// `inter / (area_a + area_b − inter)` with the non-finite result mapped to 0.
///
/// Shared by [`Bbox::iou`] and the batched kernels so every path computes the same expression in
/// the same order (addition first, like torchvision), which is what makes results bit-identical.
#[inline(always)]
pub(crate) fn iou_from_parts(inter: f32, area_a: f32, area_b: f32) -> f32 {
    let iou = inter / (area_a + area_b - inter);
    if iou.is_nan() {
        0.0
    } else {
        iou
    }
}

/// `min(max(v, lo), hi)` that keeps `NaN` (`f32::clamp` would too, but panics when `lo > hi`,
/// which a malformed window must not cause).
#[inline]
fn clamp_keep_nan(v: f32, lo: f32, hi: f32) -> f32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_nan_boxes_have_zero_iou() {
        let good = Bbox::new(0.0, 0.0, 4.0, 4.0);
        let line = Bbox::new(1.0, 1.0, 1.0, 3.0);
        let nan = Bbox::new(f32::NAN, 0.0, 4.0, 4.0);
        let inverted = Bbox::new(4.0, 4.0, 0.0, 0.0);
        assert_eq!(good.iou(&line), 0.0);
        assert_eq!(line.iou(&line), 0.0);
        assert_eq!(good.iou(&nan), 0.0);
        assert_eq!(nan.iou(&nan), 0.0);
        // Positive (unclamped) area, but inverted sides: empty.
        assert!(inverted.area() > 0.0);
        assert_eq!(inverted.iou(&inverted), 0.0);
        assert_eq!(good.iou(&good), 1.0);
    }

    #[test]
    fn infinite_boxes_give_zero_not_nan() {
        let inf = Bbox::new(f32::NEG_INFINITY, 0.0, f32::INFINITY, 1.0);
        let unit = Bbox::new(0.0, 0.0, 1.0, 1.0);
        assert_eq!(inf.iou(&unit), 0.0);
        assert_eq!(inf.iou(&inf), 0.0);
    }

    #[test]
    fn clip_keeps_nan_and_clamps() {
        let image = ImageSize::new(10, 20).unwrap();
        let b = Bbox::new(-5.0, f32::NAN, 25.0, 7.0).clip_to(image);
        assert_eq!((b.x1, b.x2, b.y2), (0.0, 20.0, 7.0));
        assert!(b.y1.is_nan());
    }

    #[test]
    fn layouts_swap_axes() {
        let b = Bbox::new(1.0, 2.0, 3.0, 4.0);
        assert_eq!(b.to_yxyx(), [2.0, 1.0, 4.0, 3.0]);
        assert_eq!(Bbox::from_yxyx(b.to_yxyx()), b);
        assert_eq!(Bbox::from_xyxy(b.to_xyxy()), b);
    }
}

/// A box in Matterport's normalised in-graph coordinates: `(y1, x1, y2, x2)` in `[0, 1]` for a
/// box inside the image, `(b − [0, 0, 1, 1]) / (h − 1, w − 1)` of its pixel box. Matterport's
/// `rpn_rois` rows are this type; it is kept apart from [`Bbox`] (pixels) so that the two units
/// never mix silently.
///
/// ```
/// # use rpn_anchors::{Bbox, ImageSize, NormalizedBox};
/// let image = ImageSize::new(1024, 1024)?;
/// let pixels = Bbox::new(100.0, 50.0, 300.0, 250.0);
/// let n = NormalizedBox::from_pixels(pixels, image);
/// assert!((n.y1 - 50.0 / 1023.0).abs() < 1e-7);
/// let back = n.to_pixels(image);
/// assert!((back.x2 - 300.0).abs() < 1e-4 && (back.y1 - 50.0).abs() < 1e-4);
/// # Ok::<(), rpn_anchors::AnchorError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NormalizedBox {
    /// Top, normalised.
    pub y1: f32,
    /// Left, normalised.
    pub x1: f32,
    /// Bottom, normalised (inside the box: the pixel `y2 − 1`).
    pub y2: f32,
    /// Right, normalised (inside the box: the pixel `x2 − 1`).
    pub x2: f32,
}

impl NormalizedBox {
    /// From Matterport's row order `[y1, x1, y2, x2]`.
    pub const fn from_yxyx([y1, x1, y2, x2]: [f32; 4]) -> Self {
        Self { y1, x1, y2, x2 }
    }

    /// Matterport's row order `[y1, x1, y2, x2]`.
    pub const fn to_yxyx(self) -> [f32; 4] {
        [self.y1, self.x1, self.y2, self.x2]
    }

    /// The pixel box of an `image`-sized input ([`Bbox::from_matterport_normalized`]).
    pub fn to_pixels(self, image: ImageSize) -> Bbox {
        Bbox::from_matterport_normalized(self.to_yxyx(), image)
    }

    /// The normalised form of a pixel box ([`Bbox::to_matterport_normalized`]).
    pub fn from_pixels(b: Bbox, image: ImageSize) -> Self {
        Self::from_yxyx(b.to_matterport_normalized(image))
    }
}
