//! The machine's measured FMA peak, the denominator of "% of peak" in the bench tables.

// Calling `#[target_feature]` functions is `unsafe`; each call below is behind the run-time
// check that the CPU has the features the function was compiled for.
#![allow(unsafe_code)]

use std::time::Instant;

/// Independent accumulator chains: more than FMA latency × pipes (4 × 2 on Zen), so the loop
/// is bound by throughput, not latency.
const CHAINS: usize = 12;

/// `f32` FMA throughput of `threads` threads running at once, in GFLOP/s (an FMA counts as
/// two), with the widest vectors the CPU has: AVX-512 where present, else AVX2 + FMA, else
/// scalar `mul_add`. The best of three ~0.15 s runs (clocks ramp up; neighbours on a VM come
/// and go).
pub fn fma_peak_gflops(threads: usize) -> f64 {
    let threads = threads.max(1);
    let iterations = 40_000_000 / CHAINS;
    let run = || {
        let start = Instant::now();
        let flops: f64 = std::thread::scope(|scope| {
            let handles: Vec<_> =
                (0..threads).map(|t| scope.spawn(move || fma_loop(iterations, t as f32))).collect();
            handles.into_iter().map(|h| h.join().map_or(0.0, |(flops, _)| flops)).sum()
        });
        flops / start.elapsed().as_secs_f64() / 1e9
    };
    (0..3).map(|_| run()).fold(0.0, f64::max)
}

/// Runs `iterations` rounds of `CHAINS` vector FMAs; returns (flops, a checksum that keeps the
/// work alive).
fn fma_loop(iterations: usize, seed: f32) -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected on this CPU just above.
            let sum = unsafe { x86::fma512(iterations, seed) };
            return ((iterations * CHAINS * 16 * 2) as f64, sum);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were detected on this CPU just above.
            let sum = unsafe { x86::fma256(iterations, seed) };
            return ((iterations * CHAINS * 8 * 2) as f64, sum);
        }
    }
    let mut acc = [seed; CHAINS];
    for _ in 0..iterations {
        for a in &mut acc {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    ((iterations * CHAINS * 2) as f64, acc.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    /// Twelve named accumulators (not an array, which the compiler may keep in memory).
    macro_rules! fma_chains {
        ($fma:ident, $splat:ident, $iterations:expr, $seed:expr) => {{
            let (a, b) = ($splat(0.999_999), $splat(1e-7));
            let [mut r0, mut r1, mut r2, mut r3, mut r4, mut r5] = [$splat($seed); 6];
            let [mut r6, mut r7, mut r8, mut r9, mut r10, mut r11] = [$splat($seed); 6];
            for _ in 0..$iterations {
                r0 = $fma(r0, a, b);
                r1 = $fma(r1, a, b);
                r2 = $fma(r2, a, b);
                r3 = $fma(r3, a, b);
                r4 = $fma(r4, a, b);
                r5 = $fma(r5, a, b);
                r6 = $fma(r6, a, b);
                r7 = $fma(r7, a, b);
                r8 = $fma(r8, a, b);
                r9 = $fma(r9, a, b);
                r10 = $fma(r10, a, b);
                r11 = $fma(r11, a, b);
            }
            [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11]
        }};
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma256(iterations: usize, seed: f32) -> f32 {
        let acc = fma_chains!(_mm256_fmadd_ps, _mm256_set1_ps, iterations, seed);
        debug_assert_eq!(acc.len(), CHAINS);
        let mut lanes = [0f32; 8];
        let mut sum = 0.0;
        for r in acc {
            // SAFETY (of the store): `lanes` holds exactly 8 `f32`.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), r) };
            sum += lanes.iter().sum::<f32>();
        }
        sum
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn fma512(iterations: usize, seed: f32) -> f32 {
        let acc = fma_chains!(_mm512_fmadd_ps, _mm512_set1_ps, iterations, seed);
        acc.iter().map(|r| _mm512_reduce_add_ps(*r)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop really runs the FMAs: its checksum is what scalar `mul_add` gives, chain by chain.
    #[test]
    fn the_vector_loop_computes_the_scalar_recurrence() {
        let (flops, sum) = fma_loop(100, 0.5);
        let mut v = 0.5f32;
        for _ in 0..100 {
            v = v.mul_add(0.999_999, 1e-7);
        }
        let lanes = flops / 200.0; // chains × lanes
        assert!((f64::from(sum) - lanes * f64::from(v)).abs() < 1e-3 * lanes, "{sum} vs {v}");
        assert!(fma_peak_gflops(1) > 0.0);
    }
}
