//! The delta coder on 8 boxes at a time with AVX2, chosen at run time by
//! [`BoxCoder::encode_slice`] / [`BoxCoder::decode_slice`].
//!
//! Boxes are `[x1, y1, x2, y2]` rows; four 256-bit loads hold 8 of them, and an in-register
//! 4 × 4 transpose per 128-bit half turns them into four registers of `x1`, `y1`, `x2`, `y2`
//! (lane order `b0 b2 b4 b6 | b1 b3 b5 b7`; the same transpose turns results back into rows).
//! Every operation then repeats, lane by lane and in the same order, what the scalar
//! [`BoxCoder::encode`] / [`BoxCoder::decode`] and [`fastmath`] compute, so both paths give the
//! same bits (the tests compare them on every value class, NaN and ∞ included).

// Intrinsics are `unsafe` to call only for their pointer loads and stores; every pointer below
// comes from a `chunks_exact(8)` chunk of 8 rows of 4 `f32`, read or written as 32 `f32`.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use crate::fastmath::{EXP_POLY, LN2_HI, LN2_LO, LN_POLY, ROUNDER, SQRT_HALF};
use crate::{Bbox, BoxCoder};

const CHUNK: usize = 8;

/// Four registers of one coordinate each (see the module docs for the lane order).
type Lanes = [__m256; 4];

/// Loads 8 rows of 4 `f32` and transposes them into [`Lanes`].
#[inline]
#[target_feature(enable = "avx2")]
fn load_rows(rows: &[[f32; 4]]) -> Lanes {
    debug_assert_eq!(rows.len(), CHUNK);
    let p = rows.as_ptr().cast::<f32>();
    // SAFETY: `rows` holds 8 rows of 4 `f32`: 32 contiguous values, read in 4 × 8.
    let [r0, r1, r2, r3] = [0, 8, 16, 24].map(|offset| unsafe { _mm256_loadu_ps(p.add(offset)) });
    transpose([r0, r1, r2, r3])
}

/// Transposes [`Lanes`] back into rows and stores 8 of them.
#[inline]
#[target_feature(enable = "avx2")]
fn store_rows(lanes: Lanes, rows: &mut [[f32; 4]]) {
    debug_assert_eq!(rows.len(), CHUNK);
    let p = rows.as_mut_ptr().cast::<f32>();
    for (offset, r) in [0, 8, 16, 24].into_iter().zip(transpose(lanes)) {
        // SAFETY: `rows` holds 8 rows of 4 `f32`: 32 contiguous values, written in 4 × 8.
        unsafe { _mm256_storeu_ps(p.add(offset), r) };
    }
}

/// The 4 × 4 transpose of each 128-bit half; it is its own inverse.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose([r0, r1, r2, r3]: Lanes) -> Lanes {
    let t0 = _mm256_unpacklo_ps(r0, r1);
    let t1 = _mm256_unpackhi_ps(r0, r1);
    let t2 = _mm256_unpacklo_ps(r2, r3);
    let t3 = _mm256_unpackhi_ps(r2, r3);
    [
        _mm256_shuffle_ps::<0x44>(t0, t2),
        _mm256_shuffle_ps::<0xEE>(t0, t2),
        _mm256_shuffle_ps::<0x44>(t1, t3),
        _mm256_shuffle_ps::<0xEE>(t1, t3),
    ]
}

#[inline]
#[target_feature(enable = "avx2")]
fn splat(v: f32) -> __m256 {
    _mm256_set1_ps(v)
}

/// `if mask { a } else { b }` lane by lane.
#[inline]
#[target_feature(enable = "avx2")]
fn select(mask: __m256, a: __m256, b: __m256) -> __m256 {
    _mm256_blendv_ps(b, a, mask)
}

/// `a·x + b`, unfused (as the scalar code).
#[inline]
#[target_feature(enable = "avx2")]
fn mul_add(a: __m256, x: __m256, b: __m256) -> __m256 {
    _mm256_add_ps(_mm256_mul_ps(a, x), b)
}

/// `fastmath::ln_poly`: Estrin's scheme, the same operations in the same order.
#[inline]
#[target_feature(enable = "avx2")]
fn ln_poly(x: __m256, x2: __m256) -> __m256 {
    let c = |k: usize| splat(LN_POLY[k]);
    let x4 = _mm256_mul_ps(x2, x2);
    let (a, b) = (mul_add(c(0), x, c(1)), mul_add(c(2), x, c(3)));
    let (d, e) = (mul_add(c(4), x, c(5)), mul_add(c(6), x, c(7)));
    let high = _mm256_mul_ps(mul_add(a, x2, b), x4);
    mul_add(_mm256_add_ps(high, mul_add(d, x2, e)), x, c(8))
}

/// `fastmath::exp_poly`.
#[inline]
#[target_feature(enable = "avx2")]
fn exp_poly(r: __m256, r2: __m256) -> __m256 {
    let c = |k: usize| splat(EXP_POLY[k]);
    let r4 = _mm256_mul_ps(r2, r2);
    _mm256_add_ps(
        _mm256_mul_ps(mul_add(c(0), r, c(1)), r4),
        mul_add(mul_add(c(2), r, c(3)), r2, mul_add(c(4), r, c(5))),
    )
}

/// Whether every lane satisfies `mask`.
#[inline]
#[target_feature(enable = "avx2")]
fn all(mask: __m256) -> bool {
    _mm256_movemask_ps(mask) == 0xff
}

/// [`crate::fastmath::ln`] on 8 lanes. Almost every call sees only normal, positive, finite
/// values (box sides): those skip the subnormal scaling and the special-value selects, which
/// would pick exactly the same values, so both branches give the same bits.
#[inline]
#[target_feature(enable = "avx2")]
fn ln(x: __m256) -> __m256 {
    let normal = _mm256_and_ps(
        _mm256_cmp_ps::<_CMP_GE_OQ>(x, splat(f32::MIN_POSITIVE)),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, splat(f32::INFINITY)),
    );
    if all(normal) {
        let bits = _mm256_castps_si256(x);
        let biased = _mm256_and_si256(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(0xff));
        ln_reduced(bits, _mm256_sub_epi32(biased, _mm256_set1_epi32(126)))
    } else {
        ln_any(x)
    }
}

/// The logarithm from a value's bits and its unbiased exponent (+1), for normal inputs.
#[inline]
#[target_feature(enable = "avx2")]
fn ln_reduced(bits: __m256i, exponent: __m256i) -> __m256 {
    let m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
        _mm256_set1_epi32(0x3f00_0000),
    ));
    let low = _mm256_cmp_ps::<_CMP_LT_OQ>(m, splat(SQRT_HALF));
    // `exponent − 1` where `low`: the mask is −1 there.
    let e = _mm256_cvtepi32_ps(_mm256_add_epi32(exponent, _mm256_castps_si256(low)));
    let one = splat(1.0);
    let x1 = select(low, _mm256_sub_ps(_mm256_add_ps(m, m), one), _mm256_sub_ps(m, one));
    let z = _mm256_mul_ps(x1, x1);
    let p = ln_poly(x1, z);
    let y = _mm256_sub_ps(
        _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, x1), z), _mm256_mul_ps(e, splat(LN2_LO))),
        _mm256_mul_ps(splat(0.5), z),
    );
    _mm256_add_ps(_mm256_add_ps(x1, y), _mm256_mul_ps(e, splat(LN2_HI)))
}

/// [`ln`] for any lanes: subnormals scaled first, zeros, infinities and NaN by their rules.
#[inline]
#[target_feature(enable = "avx2")]
fn ln_any(x: __m256) -> __m256 {
    let subnormal = _mm256_cmp_ps::<_CMP_LT_OQ>(x, splat(f32::MIN_POSITIVE));
    let scaled = select(subnormal, _mm256_mul_ps(x, splat(8_388_608.0)), x);
    let bits = _mm256_castps_si256(scaled);
    let biased = _mm256_and_si256(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(0xff));
    let exponent = _mm256_sub_epi32(
        _mm256_sub_epi32(biased, _mm256_set1_epi32(126)),
        _mm256_and_si256(_mm256_castps_si256(subnormal), _mm256_set1_epi32(23)),
    );
    let result = ln_reduced(bits, exponent);
    let infinity = splat(f32::INFINITY);
    let finite_positive = _mm256_and_ps(
        _mm256_cmp_ps::<_CMP_GT_OQ>(x, splat(0.0)),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, infinity),
    );
    let special = select(
        _mm256_cmp_ps::<_CMP_EQ_OQ>(x, splat(0.0)),
        splat(f32::NEG_INFINITY),
        select(_mm256_cmp_ps::<_CMP_EQ_OQ>(x, infinity), infinity, splat(f32::NAN)),
    );
    select(finite_positive, result, special)
}

/// [`crate::fastmath::exp`] on 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn exp(x: __m256) -> __m256 {
    // Inside (−103.97, 88.72) (NaN fails both tests) the clamps and the final selects keep
    // `result`: skip them, the same bits.
    let inside = _mm256_and_ps(
        _mm256_cmp_ps::<_CMP_GE_OQ>(x, splat(-103.972_08)),
        _mm256_cmp_ps::<_CMP_LE_OQ>(x, splat(88.722_84)),
    );
    if all(inside) {
        return exp_core(x);
    }
    let t = select(
        _mm256_cmp_ps::<_CMP_GT_OQ>(x, splat(89.0)),
        splat(89.0),
        select(_mm256_cmp_ps::<_CMP_LT_OQ>(x, splat(-104.0)), splat(-104.0), x),
    );
    let result = exp_core(t);
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
    select(
        _mm256_cmp_ps::<_CMP_GT_OQ>(x, splat(88.722_84)),
        splat(f32::INFINITY),
        select(
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, splat(-103.972_08)),
            splat(0.0),
            select(nan, x, result),
        ),
    )
}

/// `e^t` for `t` in [−104, 89] (the range [`exp`] clamps to).
#[inline]
#[target_feature(enable = "avx2")]
fn exp_core(t: __m256) -> __m256 {
    let rounder = splat(ROUNDER);
    let n = _mm256_sub_ps(
        _mm256_add_ps(_mm256_mul_ps(t, splat(std::f32::consts::LOG2_E)), rounder),
        rounder,
    );
    let r = _mm256_sub_ps(
        _mm256_sub_ps(t, _mm256_mul_ps(n, splat(LN2_HI))),
        _mm256_mul_ps(n, splat(LN2_LO)),
    );
    let z = _mm256_mul_ps(r, r);
    let p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(exp_poly(r, z), z), r), splat(1.0));
    let n = _mm256_cvttps_epi32(n);
    let half = _mm256_srai_epi32::<1>(n);
    let pow2 = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(k, _mm256_set1_epi32(127))))
    };
    _mm256_mul_ps(_mm256_mul_ps(p, pow2(half)), pow2(_mm256_sub_epi32(n, half)))
}

/// Widths, heights and centres of boxes in [`Lanes`].
struct Geometry {
    w: __m256,
    h: __m256,
    cx: __m256,
    cy: __m256,
}

#[inline]
#[target_feature(enable = "avx2")]
fn geometry([x1, y1, x2, y2]: Lanes) -> Geometry {
    let (w, h) = (_mm256_sub_ps(x2, x1), _mm256_sub_ps(y2, y1));
    let half = splat(0.5);
    Geometry {
        w,
        h,
        cx: _mm256_add_ps(x1, _mm256_mul_ps(half, w)),
        cy: _mm256_add_ps(y1, _mm256_mul_ps(half, h)),
    }
}

/// [`BoxCoder::encode`] on 8 boxes.
#[inline]
#[target_feature(enable = "avx2")]
fn encode8(coder: BoxCoder, anchors: Lanes, targets: Lanes) -> Lanes {
    let (a, g) = (geometry(anchors), geometry(targets));
    let (div, mul) = (_mm256_div_ps, _mm256_mul_ps);
    match coder {
        BoxCoder::Matterport { std_dev: [sy, sx, sh, sw] } => [
            div(div(_mm256_sub_ps(g.cy, a.cy), a.h), splat(sy)),
            div(div(_mm256_sub_ps(g.cx, a.cx), a.w), splat(sx)),
            div(ln(div(g.h, a.h)), splat(sh)),
            div(ln(div(g.w, a.w)), splat(sw)),
        ],
        BoxCoder::XyWh { weights: [wx, wy, ww, wh], .. } => [
            div(mul(splat(wx), _mm256_sub_ps(g.cx, a.cx)), a.w),
            div(mul(splat(wy), _mm256_sub_ps(g.cy, a.cy)), a.h),
            mul(splat(ww), ln(div(g.w, a.w))),
            mul(splat(wh), ln(div(g.h, a.h))),
        ],
    }
}

/// [`BoxCoder::decode`] on 8 boxes.
#[inline]
#[target_feature(enable = "avx2")]
fn decode8(coder: BoxCoder, anchors: Lanes, [d0, d1, d2, d3]: Lanes) -> Lanes {
    let a = geometry(anchors);
    let (add, sub, mul, div) = (_mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_div_ps);
    let half = splat(0.5);
    match coder {
        BoxCoder::Matterport { std_dev: [sy, sx, sh, sw] } => {
            let cy = add(a.cy, mul(mul(d0, splat(sy)), a.h));
            let cx = add(a.cx, mul(mul(d1, splat(sx)), a.w));
            let h = mul(a.h, exp(mul(d2, splat(sh))));
            let w = mul(a.w, exp(mul(d3, splat(sw))));
            let y1 = sub(cy, mul(half, h));
            let x1 = sub(cx, mul(half, w));
            [x1, y1, add(x1, w), add(y1, h)]
        }
        BoxCoder::XyWh { weights: [wx, wy, ww, wh], scale_clamp } => {
            let clamp = |v: __m256| {
                let hi = splat(scale_clamp);
                select(_mm256_cmp_ps::<_CMP_GT_OQ>(v, hi), hi, v)
            };
            let cx = add(mul(div(d0, splat(wx)), a.w), a.cx);
            let cy = add(mul(div(d1, splat(wy)), a.h), a.cy);
            let half_w = mul(half, mul(exp(clamp(div(d2, splat(ww)))), a.w));
            let half_h = mul(half, mul(exp(clamp(div(d3, splat(wh)))), a.h));
            [sub(cx, half_w), sub(cy, half_h), add(cx, half_w), add(cy, half_h)]
        }
    }
}

/// Boxes as rows of `[x1, y1, x2, y2]`.
fn rows(boxes: &[Bbox]) -> &[[f32; 4]] {
    // SAFETY: `Bbox` is `repr(C)` with four `f32` fields, the layout of `[f32; 4]` (same size and
    // alignment); the slice keeps its length and lifetime.
    unsafe { std::slice::from_raw_parts(boxes.as_ptr().cast::<[f32; 4]>(), boxes.len()) }
}

/// Boxes as mutable rows of `[x1, y1, x2, y2]`.
fn rows_mut(boxes: &mut [Bbox]) -> &mut [[f32; 4]] {
    // SAFETY: as in `rows`; every bit pattern of `[f32; 4]` is a valid `Bbox`.
    unsafe { std::slice::from_raw_parts_mut(boxes.as_mut_ptr().cast::<[f32; 4]>(), boxes.len()) }
}

/// `out[i] = coder.encode(anchors[i], targets[i])` (equal lengths, checked by the caller).
#[target_feature(enable = "avx2")]
pub(crate) fn encode_slice(
    coder: BoxCoder,
    anchors: &[Bbox],
    targets: &[Bbox],
    out: &mut [[f32; 4]],
) {
    let whole = anchors.len() / CHUNK * CHUNK;
    let (a_rows, t_rows) = (rows(&anchors[..whole]), rows(&targets[..whole]));
    for ((a, t), o) in a_rows
        .chunks_exact(CHUNK)
        .zip(t_rows.chunks_exact(CHUNK))
        .zip(out[..whole].chunks_exact_mut(CHUNK))
    {
        store_rows(encode8(coder, load_rows(a), load_rows(t)), o);
    }
    for ((a, t), o) in anchors[whole..].iter().zip(&targets[whole..]).zip(&mut out[whole..]) {
        *o = coder.encode(a, t);
    }
}

/// `out[i] = coder.decode(anchors[i], deltas[i])` (equal lengths, checked by the caller).
#[target_feature(enable = "avx2")]
pub(crate) fn decode_slice(
    coder: BoxCoder,
    anchors: &[Bbox],
    deltas: &[[f32; 4]],
    out: &mut [Bbox],
) {
    let whole = anchors.len() / CHUNK * CHUNK;
    let a_rows = rows(&anchors[..whole]);
    let out_rows = rows_mut(&mut out[..whole]);
    for ((a, d), o) in a_rows
        .chunks_exact(CHUNK)
        .zip(deltas[..whole].chunks_exact(CHUNK))
        .zip(out_rows.chunks_exact_mut(CHUNK))
    {
        store_rows(decode8(coder, load_rows(a), load_rows(d)), o);
    }
    for ((a, d), o) in anchors[whole..].iter().zip(&deltas[whole..]).zip(&mut out[whole..]) {
        *o = coder.decode(a, *d);
    }
}
