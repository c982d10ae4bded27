//! `ln` and `exp` for `f32` (Cephes' `logf` and `expf` polynomials, within 2 ulp of the exact
//! result), in the exact operation order `coder_avx2` repeats on 8 lanes: only `+ − × ÷`,
//! comparisons, selects and bit operations, never a fused multiply-add, so the delta coder
//! gives the same bits on every CPU, with or without AVX2.

/// `ln 2` split so that `n · LN2_HI` is exact for the exponents of `f32`.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
pub(crate) const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1.5 · 2²³`: adding and subtracting it rounds an `f32` below 2²² to the nearest integer.
pub(crate) const ROUNDER: f32 = 12_582_912.0;

/// Cephes `logf`: `ln(1 + x) ≈ x − x²/2 + x³·P(x)` on `[√½ − 1, √2 − 1]`, highest power first.
pub(crate) const LN_POLY: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];

/// Cephes `expf`: `e^r ≈ 1 + r + r²·P(r)` on `[−ln2/2, ln2/2]`, highest power first.
pub(crate) const EXP_POLY: [f32; 6] =
    [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// [`LN_POLY`] at `x` (`x2 = x·x`) by Estrin's scheme: four independent pairs, so the
/// dependency chain is 5 operations deep instead of Horner's 16 (the AVX2 path is latency-bound
/// otherwise). `coder_avx2` repeats these operations in this order.
#[inline(always)]
fn ln_poly(x: f32, x2: f32) -> f32 {
    let c = LN_POLY;
    let x4 = x2 * x2;
    let (a, b) = (c[0] * x + c[1], c[2] * x + c[3]);
    let (d, e) = (c[4] * x + c[5], c[6] * x + c[7]);
    ((a * x2 + b) * x4 + (d * x2 + e)) * x + c[8]
}

/// [`EXP_POLY`] at `r` (`r2 = r·r`) by Estrin's scheme, like [`ln_poly`].
#[inline(always)]
fn exp_poly(r: f32, r2: f32) -> f32 {
    let c = EXP_POLY;
    let r4 = r2 * r2;
    (c[0] * r + c[1]) * r4 + ((c[2] * r + c[3]) * r2 + (c[4] * r + c[5]))
}

/// Natural logarithm: NaN for NaN and negative inputs, −∞ for ±0, +∞ for +∞; subnormal inputs
/// are exact too.
#[inline(always)]
pub(crate) fn ln(x: f32) -> f32 {
    // Subnormals: scale into the normal range, take 23 off the exponent.
    let subnormal = x < f32::MIN_POSITIVE;
    let scaled = if subnormal { x * 8_388_608.0 } else { x };
    let bits = scaled.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 126 - if subnormal { 23 } else { 0 };
    // frexp: scaled = m · 2^exponent with m in [0.5, 1).
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let low = m < SQRT_HALF;
    let e = (exponent - i32::from(low)) as f32;
    let x1 = if low { m + m - 1.0 } else { m - 1.0 };
    let z = x1 * x1;
    let p = ln_poly(x1, z);
    let y = p * x1 * z + e * LN2_LO - 0.5 * z;
    let result = x1 + y + e * LN2_HI;
    if x > 0.0 && x < f32::INFINITY {
        result
    } else if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        x
    } else {
        f32::NAN
    }
}

/// `e^x`: NaN for NaN, +∞ above 88.72, 0 below −103.97, subnormal results in between.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Clamped so that the integer arithmetic below stays in range; the ends are fixed up last.
    let t = x.clamp(-104.0, 89.0);
    let n = (t * std::f32::consts::LOG2_E + ROUNDER) - ROUNDER;
    let r = t - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let p = exp_poly(r, z) * z + r + 1.0;
    // 2^n as two normal powers of two, so that results down to the subnormals are exact.
    let n = n as i32;
    let half = n >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let result = p * pow2(half) * pow2(n - half);
    if x > 88.722_84 {
        f32::INFINITY
    } else if x < -103.972_08 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error against the correctly rounded `f64` result, in units of `f32::EPSILON`.
    fn ulps(ours: f32, exact: f64) -> f64 {
        if ours as f64 == exact {
            return 0.0;
        }
        ((ours as f64 - exact) / exact.abs().max(f32::MIN_POSITIVE as f64)).abs()
            / f32::EPSILON as f64
    }

    /// Every 97th `f32` bit pattern (about 44 million values): both functions within 2 ulp of the
    /// exact result wherever it is a normal `f32`.
    #[test]
    fn ln_and_exp_are_within_two_ulp_everywhere() {
        let (mut worst_ln, mut worst_exp) = (0f64, 0f64);
        for bits in (0..u32::MAX).step_by(97) {
            let x = f32::from_bits(bits);
            if x.is_finite() && x > 0.0 {
                worst_ln = worst_ln.max(ulps(ln(x), (x as f64).ln()));
            }
            if x.is_finite() && (-87.3..=88.7).contains(&x) {
                worst_exp = worst_exp.max(ulps(exp(x), (x as f64).exp()));
            }
        }
        assert!(worst_ln <= 2.0, "ln: {worst_ln} ulp");
        assert!(worst_exp <= 2.0, "exp: {worst_exp} ulp");
    }

    #[test]
    fn special_values_follow_libm() {
        for x in [0.0f32, -0.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, 1.0] {
            let (ours, libm) = (ln(x), x.ln());
            assert!(
                ours == libm || (ours.is_nan() && libm.is_nan()),
                "ln({x}) = {ours}, libm {libm}"
            );
        }
        for x in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 100.0, -200.0, 0.0, 88.8, -104.0] {
            let (ours, libm) = (exp(x), x.exp());
            assert!(
                ours == libm || (ours.is_nan() && libm.is_nan()),
                "exp({x}) = {ours}, libm {libm}"
            );
        }
        // Subnormal results keep their value.
        for x in [-90.0f32, -95.5, -100.0, -103.0] {
            let exact = (x as f64).exp();
            assert!((exp(x) as f64 - exact).abs() <= 2.0 * 1.4e-45 + 1e-6 * exact, "exp({x})");
        }
        // The largest inputs with a finite result stay finite.
        assert!(exp(88.72).is_finite() && ulps(exp(88.72), f64::from(88.72f32).exp()) <= 2.0);
    }
}
