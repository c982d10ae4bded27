//! Box coders: the regression target of an anchor towards a box ("deltas"), and back.
//!
//! The peers disagree on the order and scaling of the four numbers, so the layout lives in the
//! coder, and a `[f32; 4]` delta means nothing without the [`BoxCoder`] that produced it:
//!
//! | coder | delta order | scaling | clamp before `exp` |
//! |---|---|---|---|
//! | [`BoxCoder::Matterport`] | `(dy, dx, log dh, log dw)` | divided by `std_dev` (0.1, 0.1, 0.2, 0.2) | none |
//! | [`BoxCoder::XyWh`] (torchvision, detectron2) | `(dx, dy, dw, dh)` | multiplied by `weights` | `dw, dh ≤ scale_clamp` = ln(1000/16) |
//!
//! With `w = x2 − x1`, `cx = x1 + 0.5·w` (anchor `a`, target `g`):
//! `dx = (g.cx − a.cx) / a.w`, `dw = ln(g.w / a.w)`, and likewise for y/h.

use crate::{fastmath, AnchorError, Bbox};

/// `ln(1000 / 16)`: torchvision's `bbox_xform_clip` and detectron2's `_DEFAULT_SCALE_CLAMP`,
/// "transform a 16 px box into a 1000 px box" at most.
pub const DEFAULT_SCALE_CLAMP: f32 = 4.135_166_6;

/// Matterport's `RPN_BBOX_STD_DEV`.
pub const MATTERPORT_RPN_STD_DEV: [f32; 4] = [0.1, 0.1, 0.2, 0.2];

/// Order of the four numbers of a delta, for code that must reorder or document them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum DeltaLayout {
    /// `(dy, dx, log dh, log dw)`: Matterport Mask R-CNN.
    DyDxDhDw,
    /// `(dx, dy, dw, dh)`: torchvision, detectron2, mmdet.
    DxDyDwDh,
}

/// Encodes boxes as deltas relative to anchors and decodes them back.
///
/// | coder | delta order | scaling | clamp before `exp` |
/// |---|---|---|---|
/// | [`BoxCoder::Matterport`] | `(dy, dx, log dh, log dw)` | divided by `std_dev` (0.1, 0.1, 0.2, 0.2) | none |
/// | [`BoxCoder::XyWh`] (torchvision, detectron2) | `(dx, dy, dw, dh)` | multiplied by `weights` | `dw, dh ≤ scale_clamp` = ln(1000/16) |
///
/// With `w = x2 − x1`, `cx = x1 + 0.5·w` (anchor `a`, target `g`):
/// `dx = (g.cx − a.cx) / a.w`, `dw = ln(g.w / a.w)`, and likewise for y/h.
///
/// ```
/// # use rpn_anchors::{Bbox, BoxCoder};
/// let anchor = Bbox::new(0.0, 0.0, 32.0, 32.0);
/// let gt = Bbox::new(4.0, 2.0, 40.0, 30.0);
/// for coder in [BoxCoder::matterport(), BoxCoder::torchvision_rpn()] {
///     let d = coder.encode(&anchor, &gt);
///     let back = coder.decode(&anchor, d);
///     assert!((back.x2 - gt.x2).abs() < 1e-4 && (back.y1 - gt.y1).abs() < 1e-4);
/// }
/// // Matterport puts y first and divides by its std: dy = (16 − 16)/32/0.1 = 0, dx = (22 − 16)/32/0.1.
/// let d = BoxCoder::matterport().encode(&anchor, &gt);
/// assert!((d[1] - 1.875).abs() < 1e-6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum BoxCoder {
    /// Matterport: `(dy, dx, log dh, log dw) / std_dev`, no clamp (its `apply_box_deltas_graph`).
    /// Decoding multiplies by `std_dev` first, then `y2 = y1 + h` as Matterport does.
    Matterport {
        /// Per-component divisor, in delta order `(dy, dx, dh, dw)`.
        std_dev: [f32; 4],
    },
    /// torchvision `BoxCoder` / detectron2 `Box2BoxTransform`: `(dx, dy, dw, dh) · weights`;
    /// decoding divides by the weights and clamps `dw, dh` from above at `scale_clamp`.
    XyWh {
        /// Per-component multiplier `(wx, wy, ww, wh)`: (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for R-CNN heads.
        weights: [f32; 4],
        /// Upper clamp on `dw/ww` and `dh/wh` before `exp`.
        scale_clamp: f32,
    },
}

impl BoxCoder {
    /// Matterport's RPN coder, `std_dev = (0.1, 0.1, 0.2, 0.2)`.
    pub const fn matterport() -> Self {
        Self::Matterport { std_dev: MATTERPORT_RPN_STD_DEV }
    }

    /// torchvision/detectron2 RPN coder: weights `(1, 1, 1, 1)`, clamp `ln(1000/16)`.
    pub const fn torchvision_rpn() -> Self {
        Self::XyWh { weights: [1.0; 4], scale_clamp: DEFAULT_SCALE_CLAMP }
    }

    /// torchvision/detectron2 second-stage coder: weights `(10, 10, 5, 5)`, clamp `ln(1000/16)`.
    pub const fn torchvision_roi_heads() -> Self {
        Self::XyWh { weights: [10.0, 10.0, 5.0, 5.0], scale_clamp: DEFAULT_SCALE_CLAMP }
    }

    /// The order of the four numbers this coder reads and writes.
    pub const fn layout(&self) -> DeltaLayout {
        match self {
            Self::Matterport { .. } => DeltaLayout::DyDxDhDw,
            Self::XyWh { .. } => DeltaLayout::DxDyDwDh,
        }
    }

    /// Checks that scales are finite and positive, naming the bad component.
    pub fn validate(&self) -> Result<(), AnchorError> {
        let (name, values) = match self {
            Self::Matterport { std_dev } => ("std_dev", std_dev),
            Self::XyWh { weights, scale_clamp } => {
                if scale_clamp.is_nan() {
                    return Err(AnchorError::config("scale_clamp", "must not be NaN", scale_clamp));
                }
                ("weights", weights)
            }
        };
        for (i, v) in values.iter().enumerate() {
            if !(v.is_finite() && *v > 0.0) {
                return Err(AnchorError::config(
                    format!("{name}[{i}]"),
                    "must be a finite number > 0",
                    v,
                ));
            }
        }
        Ok(())
    }

    /// The delta that moves `anchor` onto `target`, in this coder's layout.
    ///
    /// An empty anchor or target gives non-finite deltas (division by zero, `ln 0`), as in every
    /// peer; `rpn-targets` validates GT boxes before encoding. The logarithm is the crate's own
    /// (Cephes' polynomial, within 2 ulp of the exact result), which the AVX2 path of
    /// [`BoxCoder::encode_slice`] computes bit for bit.
    #[inline]
    pub fn encode(&self, anchor: &Bbox, target: &Bbox) -> [f32; 4] {
        let (aw, ah) = (anchor.width(), anchor.height());
        let (acx, acy) = (anchor.x1 + 0.5 * aw, anchor.y1 + 0.5 * ah);
        let (gw, gh) = (target.width(), target.height());
        let (gcx, gcy) = (target.x1 + 0.5 * gw, target.y1 + 0.5 * gh);
        match *self {
            Self::Matterport { std_dev: [sy, sx, sh, sw] } => [
                (gcy - acy) / ah / sy,
                (gcx - acx) / aw / sx,
                fastmath::ln(gh / ah) / sh,
                fastmath::ln(gw / aw) / sw,
            ],
            // torchvision `encode_boxes`: weight times the plain delta, weight first.
            Self::XyWh { weights: [wx, wy, ww, wh], .. } => [
                wx * (gcx - acx) / aw,
                wy * (gcy - acy) / ah,
                ww * fastmath::ln(gw / aw),
                wh * fastmath::ln(gh / ah),
            ],
        }
    }

    /// The box obtained by applying `delta` (this coder's layout) to `anchor`.
    ///
    /// `NaN` deltas give `NaN` boxes (never silently clamped away); huge `dw`/`dh` overflow to
    /// infinite sides with [`BoxCoder::Matterport`], which has no clamp. The exponential is the
    /// crate's own (within 2 ulp), shared bit for bit with [`BoxCoder::decode_slice`].
    #[inline]
    pub fn decode(&self, anchor: &Bbox, delta: [f32; 4]) -> Bbox {
        let (aw, ah) = (anchor.width(), anchor.height());
        let (acx, acy) = (anchor.x1 + 0.5 * aw, anchor.y1 + 0.5 * ah);
        match *self {
            // `apply_box_deltas_graph`: centre += d·size, size *= exp(d), y1 = cy − 0.5h, y2 = y1 + h.
            Self::Matterport { std_dev: [sy, sx, sh, sw] } => {
                let (dy, dx, dh, dw) = (delta[0] * sy, delta[1] * sx, delta[2] * sh, delta[3] * sw);
                let cy = acy + dy * ah;
                let cx = acx + dx * aw;
                let h = ah * fastmath::exp(dh);
                let w = aw * fastmath::exp(dw);
                let y1 = cy - 0.5 * h;
                let x1 = cx - 0.5 * w;
                Bbox::new(x1, y1, x1 + w, y1 + h)
            }
            // torchvision `decode_single`: x1 = cx − 0.5·w, x2 = cx + 0.5·w.
            Self::XyWh { weights: [wx, wy, ww, wh], scale_clamp } => {
                let dx = delta[0] / wx;
                let dy = delta[1] / wy;
                let dw = clamp_above_keep_nan(delta[2] / ww, scale_clamp);
                let dh = clamp_above_keep_nan(delta[3] / wh, scale_clamp);
                let cx = dx * aw + acx;
                let cy = dy * ah + acy;
                let half_w = 0.5 * (fastmath::exp(dw) * aw);
                let half_h = 0.5 * (fastmath::exp(dh) * ah);
                Bbox::new(cx - half_w, cy - half_h, cx + half_w, cy + half_h)
            }
        }
    }

    /// `out[i] = encode(anchors[i], targets[i])`; all three slices must have the same length.
    ///
    /// With AVX2 (detected at run time) 8 boxes at a time, logarithms included, with exactly
    /// [`BoxCoder::encode`]'s bits; elsewhere box by box.
    pub fn encode_slice(
        &self,
        anchors: &[Bbox],
        targets: &[Bbox],
        out: &mut [[f32; 4]],
    ) -> Result<(), AnchorError> {
        AnchorError::check_len("targets", anchors.len(), targets.len())?;
        AnchorError::check_len("out", anchors.len(), out.len())?;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above; the function needs nothing else.
            #[allow(unsafe_code)]
            unsafe {
                crate::coder_avx2::encode_slice(*self, anchors, targets, out)
            };
            return Ok(());
        }
        let coder = *self;
        for ((o, a), t) in out.iter_mut().zip(anchors).zip(targets) {
            *o = coder.encode(a, t);
        }
        Ok(())
    }

    /// `out[i] = decode(anchors[i], deltas[i])`; all three slices must have the same length.
    ///
    /// With AVX2 8 boxes at a time like [`BoxCoder::encode_slice`], with [`BoxCoder::decode`]'s
    /// bits.
    pub fn decode_slice(
        &self,
        anchors: &[Bbox],
        deltas: &[[f32; 4]],
        out: &mut [Bbox],
    ) -> Result<(), AnchorError> {
        AnchorError::check_len("deltas", anchors.len(), deltas.len())?;
        AnchorError::check_len("out", anchors.len(), out.len())?;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above; the function needs nothing else.
            #[allow(unsafe_code)]
            unsafe {
                crate::coder_avx2::decode_slice(*self, anchors, deltas, out)
            };
            return Ok(());
        }
        let coder = *self;
        for ((o, a), d) in out.iter_mut().zip(anchors).zip(deltas) {
            *o = coder.decode(a, *d);
        }
        Ok(())
    }
}

/// `min(v, hi)` that keeps `NaN` (`torch.clamp(max=…)` keeps it; `f32::min` would return `hi`).
#[inline(always)]
fn clamp_above_keep_nan(v: f32, hi: f32) -> f32 {
    if v > hi {
        hi
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_limits_growth_but_keeps_nan() {
        let coder = BoxCoder::torchvision_rpn();
        let anchor = Bbox::new(0.0, 0.0, 16.0, 16.0);
        let big = coder.decode(&anchor, [0.0, 0.0, 50.0, 50.0]);
        assert!((big.width() - 1000.0).abs() < 1e-2, "{big:?}");
        let nan = coder.decode(&anchor, [0.0, 0.0, f32::NAN, 0.0]);
        assert!(nan.x1.is_nan() && nan.x2.is_nan());
    }

    #[test]
    fn matterport_has_no_clamp_and_overflows_like_its_graph() {
        // exp(500 · 0.2) overflows f32: x1 = cx − ∞ = −∞ and, because Matterport writes
        // x2 = x1 + w, x2 = −∞ + ∞ = NaN. The same happens in its TF graph.
        let b =
            BoxCoder::matterport().decode(&Bbox::new(0.0, 0.0, 16.0, 16.0), [0.0, 0.0, 0.0, 500.0]);
        assert_eq!(b.x1, f32::NEG_INFINITY);
        assert!(b.x2.is_nan());
        assert_eq!((b.y1, b.y2), (0.0, 16.0));
    }

    #[test]
    fn validate_names_the_component() {
        let err = BoxCoder::Matterport { std_dev: [0.1, 0.0, 0.2, 0.2] }.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "anchor config: `std_dev[1]` must be a finite number > 0, got 0.0"
        );
        assert!(BoxCoder::torchvision_roi_heads().validate().is_ok());
    }

    /// The slice functions (AVX2 where the CPU has it, with partial last chunks) compute exactly
    /// the single-box functions' bits, NaN and ∞ included, and stay within 1e-6 of libm.
    #[test]
    fn slices_equal_single_boxes_bit_for_bit() {
        let mut state = 0x9e37_79b9_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as f32 / (1u32 << 24) as f32
        };
        let n = 8 * 37 + 5;
        let mut boxes: Vec<Bbox> = (0..2 * n)
            .map(|_| {
                let (x, y) = (next() * 500.0 - 100.0, next() * 500.0 - 100.0);
                Bbox::new(x, y, x + next() * 300.0, y + next() * 300.0)
            })
            .collect();
        // Empty, inverted, NaN and subnormal-sized boxes.
        boxes[1] = Bbox::new(5.0, 5.0, 5.0, 9.0);
        boxes[n + 2] = Bbox::new(5.0, 5.0, 1.0, 9.0);
        boxes[n + 10] = Bbox::new(f32::NAN, 0.0, 1.0, 1.0);
        boxes[n + 11] = Bbox::new(0.0, 0.0, 1e-39, 1.0);
        let (anchors, targets) = boxes.split_at(n);
        let mut deltas: Vec<[f32; 4]> = (0..n)
            .map(|_| {
                [next() * 8.0 - 4.0, next() * 8.0 - 4.0, next() * 12.0 - 6.0, next() * 12.0 - 6.0]
            })
            .collect();
        deltas[3] = [f32::NAN, 0.0, 500.0, -500.0];
        deltas[9] = [0.0, f32::INFINITY, f32::NAN, 90.0];
        deltas[12] = [0.0, 0.0, -95.0, f32::NEG_INFINITY];
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for coder in
            [BoxCoder::matterport(), BoxCoder::torchvision_rpn(), BoxCoder::torchvision_roi_heads()]
        {
            let mut encoded = vec![[0f32; 4]; n];
            coder.encode_slice(anchors, targets, &mut encoded).unwrap();
            for i in 0..n {
                let single = coder.encode(&anchors[i], &targets[i]);
                for k in 0..4 {
                    assert!(same(encoded[i][k], single[k]), "{coder:?} encode {i}.{k}");
                }
            }
            let mut decoded = vec![Bbox::default(); n];
            coder.decode_slice(anchors, &deltas, &mut decoded).unwrap();
            for i in 0..n {
                let single = coder.decode(&anchors[i], deltas[i]).to_xyxy();
                for (k, v) in decoded[i].to_xyxy().into_iter().enumerate() {
                    assert!(same(v, single[k]), "{coder:?} decode {i}.{k}: {v} vs {}", single[k]);
                }
            }
        }
        // Against libm's logarithm and exponential: within 1e-6 of the value's scale.
        let coder = BoxCoder::torchvision_rpn();
        for i in (0..n).filter(|&i| i != 1 && i != 2 && i != 10 && i != 11) {
            let (a, t) = (&anchors[i], &targets[i]);
            let d = coder.encode(a, t);
            let libm = [(t.width() / a.width()).ln(), (t.height() / a.height()).ln()];
            assert!((d[2] - libm[0]).abs() <= 1e-6 * libm[0].abs().max(1.0), "{d:?} {libm:?}");
            assert!((d[3] - libm[1]).abs() <= 1e-6 * libm[1].abs().max(1.0), "{d:?} {libm:?}");
        }
    }

    #[test]
    fn slice_lengths_are_checked() {
        let a = [Bbox::new(0.0, 0.0, 1.0, 1.0); 2];
        let mut out = [[0.0; 4]; 1];
        let err = BoxCoder::matterport().encode_slice(&a, &a, &mut out).unwrap_err();
        assert_eq!(err.to_string(), "`out` has length 1, expected 2");
    }
}
