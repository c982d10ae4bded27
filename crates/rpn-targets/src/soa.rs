//! Anchors as structure-of-arrays, for an IoU loop the compiler can vectorise.
//!
//! The IoU expression is exactly [`Bbox::iou`]'s (same operations, same order), so `f32` results
//! equal `torchvision.ops.box_iou` bit for bit and `f64` results equal Matterport's
//! `compute_overlaps`. Empty or `NaN` anchors are stored as `(+∞, +∞, −∞, −∞)` with area 1: their
//! intersection is 0 and their IoU exactly 0 without a branch in the loop.

use std::ops::{Add, Div, Mul, Range, Sub};

use rpn_anchors::Bbox;

/// The two precisions anchors are matched in.
pub(crate) trait Real:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    fn is_nan(self) -> bool;
    /// A threshold written in the (f32) config, as this precision should compare against it.
    fn threshold(t: f32) -> Self;
    /// The per-anchor working maximum of this precision inside `w`.
    fn work_max(w: &mut WorkMax) -> &mut Vec<Self>;
}

/// Per-anchor running maximum IoU, in the matching precision, so the update loop stays one width.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct WorkMax {
    f32: Vec<f32>,
    f64: Vec<f64>,
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const INFINITY: Self = f32::INFINITY;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn threshold(t: f32) -> Self {
        t
    }
    fn work_max(w: &mut WorkMax) -> &mut Vec<Self> {
        &mut w.f32
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const INFINITY: Self = f64::INFINITY;
    fn from_f32(v: f32) -> Self {
        f64::from(v)
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    /// The decimal the user wrote (0.7), not the f32 nearest to it (0.699999988…): Python
    /// compares Matterport's float64 IoU with the literal `0.7`.
    fn threshold(t: f32) -> Self {
        t.to_string().parse().unwrap_or(f64::from(t))
    }
    fn work_max(w: &mut WorkMax) -> &mut Vec<Self> {
        &mut w.f64
    }
}

/// `min`/`max` without NaN handling: every value reaching them is a number (see module docs).
#[inline(always)]
fn min<T: Real>(a: T, b: T) -> T {
    if a < b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn max<T: Real>(a: T, b: T) -> T {
    if a > b {
        a
    } else {
        b
    }
}

/// A GT box in the matching precision, with its area.
#[derive(Clone, Copy)]
pub(crate) struct Query<T> {
    x1: T,
    y1: T,
    x2: T,
    y2: T,
    area: T,
}

impl<T: Real> Query<T> {
    /// `b` must be a valid box (finite, positive sides): callers validate GT first.
    pub(crate) fn new(b: &Bbox) -> Self {
        let (x1, y1, x2, y2) =
            (T::from_f32(b.x1), T::from_f32(b.y1), T::from_f32(b.x2), T::from_f32(b.y2));
        Self { x1, y1, x2, y2, area: (x2 - x1) * (y2 - y1) }
    }
}

/// The largest value (0 for none), with 8 independent lanes so the reduction vectorises.
#[inline]
pub(crate) fn lane_max<T: Real>(v: &[T]) -> T {
    let mut lanes = [T::ZERO; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = max(*l, x);
        }
    }
    tail.iter().chain(&lanes).fold(T::ZERO, |a, &b| max(a, b))
}

#[derive(Debug, Clone)]
pub(crate) struct SoaAnchors<T> {
    x1: Vec<T>,
    y1: Vec<T>,
    x2: Vec<T>,
    y2: Vec<T>,
    area: Vec<T>,
}

impl<T: Real> SoaAnchors<T> {
    pub(crate) fn new(corners: impl ExactSizeIterator<Item = [T; 4]>) -> Self {
        let n = corners.len();
        let mut s = Self {
            x1: Vec::with_capacity(n),
            y1: Vec::with_capacity(n),
            x2: Vec::with_capacity(n),
            y2: Vec::with_capacity(n),
            area: Vec::with_capacity(n),
        };
        for [x1, y1, x2, y2] in corners {
            let (w, h) = (x2 - x1, y2 - y1);
            // Written so that NaN sides count as empty, as `Bbox::is_empty` does.
            let empty = !(w > T::ZERO && h > T::ZERO);
            let (inf, ninf) = (T::INFINITY, T::ZERO - T::INFINITY);
            s.x1.push(if empty { inf } else { x1 });
            s.y1.push(if empty { inf } else { y1 });
            s.x2.push(if empty { ninf } else { x2 });
            s.y2.push(if empty { ninf } else { y2 });
            s.area.push(if empty { T::ONE } else { w * h });
        }
        s
    }

    pub(crate) fn len(&self) -> usize {
        self.area.len()
    }

    /// IoU of anchor `i` with `q`.
    #[inline(always)]
    pub(crate) fn iou(&self, i: usize, q: &Query<T>) -> T {
        let iw = max(min(self.x2[i], q.x2) - max(self.x1[i], q.x1), T::ZERO);
        let ih = max(min(self.y2[i], q.y2) - max(self.y1[i], q.y1), T::ZERO);
        let inter = iw * ih;
        let iou = inter / (self.area[i] + q.area - inter);
        // Only an anchor with an infinite side can make ∞/∞; Bbox::iou maps that NaN to 0 too.
        if !iou.is_nan() {
            iou
        } else {
            T::ZERO
        }
    }

    /// `out[j] = IoU(anchor start + j, q)` for the anchors of `range`; returns the largest.
    #[inline]
    pub(crate) fn ious(&self, range: Range<usize>, q: &Query<T>, out: &mut Vec<T>) -> T {
        // Sub-slices of equal length let the compiler drop bounds checks and vectorise.
        let (x1, y1, x2, y2, area) = (
            &self.x1[range.clone()],
            &self.y1[range.clone()],
            &self.x2[range.clone()],
            &self.y2[range.clone()],
            &self.area[range.clone()],
        );
        out.clear();
        out.resize(x1.len(), T::ZERO);
        for j in 0..out.len() {
            let iw = max(min(x2[j], q.x2) - max(x1[j], q.x1), T::ZERO);
            let ih = max(min(y2[j], q.y2) - max(y1[j], q.y1), T::ZERO);
            let inter = iw * ih;
            let iou = inter / (area[j] + q.area - inter);
            out[j] = if !iou.is_nan() { iou } else { T::ZERO };
        }
        lane_max(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_bbox_iou_bit_for_bit_including_degenerate_anchors() {
        let anchors = [
            Bbox::new(0.0, 0.0, 10.0, 10.0),
            Bbox::new(3.3, 1.7, 9.1, 4.2),
            Bbox::new(5.0, 5.0, 5.0, 9.0),
            Bbox::new(f32::NAN, 0.0, 1.0, 1.0),
            Bbox::new(f32::NEG_INFINITY, 0.0, f32::INFINITY, 3.0),
            Bbox::new(8.0, 8.0, 2.0, 2.0),
        ];
        let gt = Bbox::new(2.5, 1.0, 7.75, 6.0);
        let soa = SoaAnchors::<f32>::new(anchors.iter().map(|b| b.to_xyxy()));
        let mut out = Vec::new();
        soa.ious(0..anchors.len(), &Query::new(&gt), &mut out);
        for (a, o) in anchors.iter().zip(&out) {
            assert_eq!(o.to_bits(), a.iou(&gt).to_bits(), "{a:?}");
        }
    }
}
