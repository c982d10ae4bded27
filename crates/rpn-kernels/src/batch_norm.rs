//! Training-mode BatchNorm on NHWC, optionally fused with the ReLU that follows it.
//!
//! An NHWC buffer is a `[rows, C]` matrix, so per-channel statistics are column sums: each pass
//! walks rows and updates `C` accumulators side by side (vectorised across channels). Sums are
//! taken in `f32` over fixed chunks of rows and in `f64` across chunks, chunks in order, so the
//! result does not depend on the thread count. The variance is two-pass (`Σ(x − μ)²`), as
//! accurate as TensorFlow's, not `E[x²] − μ²`.
//!
//! Backward, with `g = dy` masked by `y > 0` when the ReLU is fused and `x̂ = (x − μ)/σ`:
//! `dx = γ/σ · (g − mean(g) − x̂ · mean(g·x̂))`, `dγ = Σ g·x̂`, `dβ = Σ g`.

use crate::{KernelError, Workers};

/// Rows per partial sum and per block of work.
const CHUNK_ROWS: usize = 256;

/// The batch's per-channel statistics, as the forward pass computed them.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMoments {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Biased variance (divided by the number of values) per channel.
    pub variance: Vec<f64>,
    /// Values per channel (rows of the `[rows, C]` matrix).
    pub count: usize,
}

/// The rows of an NHWC buffer of `channels` channels, or why it is not one.
fn rows_of(what: &'static str, data: &[f32], channels: usize) -> Result<usize, KernelError> {
    if channels == 0 || !data.len().is_multiple_of(channels) {
        return Err(KernelError::Invalid {
            what: "batch norm",
            detail: format!(
                "{what} has {} values, not a multiple of {channels} channels",
                data.len()
            ),
        });
    }
    Ok(data.len() / channels)
}

fn check_len(what: &'static str, data: &[f32], expected: usize) -> Result<(), KernelError> {
    if data.len() != expected {
        return Err(KernelError::Invalid {
            what: "batch norm",
            detail: format!("{what} has {} values, expected {expected}", data.len()),
        });
    }
    Ok(())
}

/// `Σ_rows f(row)` per channel: f32 within chunks of [`CHUNK_ROWS`] rows (in parallel), f64
/// across chunks in order. `f(first_row, rows_of_chunk, acc)` adds one chunk into `acc`
/// (`[width]`, zeroed).
fn chunked_sums<F>(rows: usize, width: usize, workers: &Workers, f: F) -> Vec<f64>
where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    let chunks = rows.div_ceil(CHUNK_ROWS);
    let mut partials = vec![0f32; chunks * width];
    workers.for_each_block(&mut partials, width, 1, |chunk, acc, _| {
        let first = chunk * CHUNK_ROWS;
        f(first, CHUNK_ROWS.min(rows - first), acc);
    });
    let mut total = vec![0f64; width];
    for partial in partials.chunks_exact(width) {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += f64::from(*p);
        }
    }
    total
}

/// The training forward pass: normalises `x` (`[rows, C]`, NHWC) with its own per-channel
/// statistics, scales by `gamma`, shifts by `beta`, applies ReLU if `relu`, into `y`; returns
/// the statistics (for the moving averages and the backward pass).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train(
    x: &[f32],
    channels: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
    y: &mut [f32],
    workers: &Workers,
) -> Result<BatchMoments, KernelError> {
    let rows = rows_of("input", x, channels)?;
    check_len("γ", gamma, channels)?;
    check_len("β", beta, channels)?;
    check_len("output", y, x.len())?;
    let c = channels;
    let n = rows.max(1) as f64;
    let sums = chunked_sums(rows, c, workers, |first, count, acc| {
        for row in x[first * c..(first + count) * c].chunks_exact(c) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    });
    let mean: Vec<f64> = sums.iter().map(|s| s / n).collect();
    let mean_f32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let squares = chunked_sums(rows, c, workers, |first, count, acc| {
        for row in x[first * c..(first + count) * c].chunks_exact(c) {
            for ((a, v), m) in acc.iter_mut().zip(row).zip(&mean_f32) {
                let d = v - m;
                *a += d * d;
            }
        }
    });
    let variance: Vec<f64> = squares.iter().map(|s| s / n).collect();
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|ch| {
            let scale = f64::from(gamma[ch]) / (variance[ch] + eps).sqrt();
            (scale as f32, (f64::from(beta[ch]) - mean[ch] * scale) as f32)
        })
        .unzip();
    workers.for_each_block(y, c, CHUNK_ROWS, |first, block, _| {
        let source = &x[first * c..first * c + block.len()];
        for (out_row, row) in block.chunks_exact_mut(c).zip(source.chunks_exact(c)) {
            for (((o, v), s), t) in out_row.iter_mut().zip(row).zip(&scale).zip(&shift) {
                let value = v * s + t;
                *o = if relu { value.max(0.0) } else { value };
            }
        }
    });
    Ok(BatchMoments { mean, variance, count: rows })
}

/// The training backward pass of [`batch_norm_train`]: from its input `x`, output `y` (for the
/// ReLU's mask), the output gradient `dy` and the forward pass's `moments`, writes `dx` and
/// returns `(dγ, dβ)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    gamma: &[f32],
    moments: &BatchMoments,
    eps: f64,
    relu: bool,
    dx: &mut [f32],
    workers: &Workers,
) -> Result<(Vec<f32>, Vec<f32>), KernelError> {
    let c = gamma.len();
    let rows = rows_of("input", x, c)?;
    for (what, data) in [("output", y), ("output gradient", dy)] {
        check_len(what, data, x.len())?;
    }
    check_len("input gradient", dx, x.len())?;
    if moments.mean.len() != c || moments.variance.len() != c || moments.count != rows {
        return Err(KernelError::Invalid {
            what: "batch norm",
            detail: format!(
                "statistics of {} channels over {} rows for an input of {c} channels, {rows} rows",
                moments.mean.len(),
                moments.count
            ),
        });
    }
    let mean: Vec<f32> = moments.mean.iter().map(|&m| m as f32).collect();
    // The ReLU's gradient mask: `dy` where the output is positive (all of it without a ReLU).
    let masked = |y: f32, dy: f32| if relu && y <= 0.0 { 0.0 } else { dy };
    // [Σg | Σg·(x − μ)] per channel; zipped row slices so that the loops vectorise.
    let sums = chunked_sums(rows, 2 * c, workers, |first, count, acc| {
        let (sum_g, sum_gx) = acc.split_at_mut(c);
        let range = first * c..(first + count) * c;
        let rows = x[range.clone()]
            .chunks_exact(c)
            .zip(y[range.clone()].chunks_exact(c))
            .zip(dy[range].chunks_exact(c));
        for ((x_row, y_row), dy_row) in rows {
            let channels = sum_g.iter_mut().zip(sum_gx.iter_mut()).zip(&mean);
            for ((((sg, sgx), m), (&xv, &yv)), &d) in
                channels.zip(x_row.iter().zip(y_row)).zip(dy_row)
            {
                let g = masked(yv, d);
                *sg += g;
                *sgx += g * (xv - m);
            }
        }
    });
    let n = rows.max(1) as f64;
    let inv_std: Vec<f64> = moments.variance.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut d_gamma = vec![0f32; c];
    let mut d_beta = vec![0f32; c];
    let (mut k, mut mean_g, mut proj) = (vec![0f32; c], vec![0f32; c], vec![0f32; c]);
    for ch in 0..c {
        let (sum_g, sum_gx) = (sums[ch], sums[c + ch]);
        d_beta[ch] = sum_g as f32;
        d_gamma[ch] = (sum_gx * inv_std[ch]) as f32;
        k[ch] = (f64::from(gamma[ch]) * inv_std[ch]) as f32;
        mean_g[ch] = (sum_g / n) as f32;
        // mean(g·x̂)·x̂ = (x − μ) · Σg(x − μ)/(n σ²).
        proj[ch] = (sum_gx / n * inv_std[ch] * inv_std[ch]) as f32;
    }
    let per_channel: Vec<[f32; 4]> =
        (0..c).map(|ch| [k[ch], mean_g[ch], mean[ch], proj[ch]]).collect();
    workers.for_each_block(dx, c, CHUNK_ROWS, |first, block, _| {
        let range = first * c..first * c + block.len();
        let rows = block
            .chunks_exact_mut(c)
            .zip(x[range.clone()].chunks_exact(c))
            .zip(y[range.clone()].chunks_exact(c))
            .zip(dy[range].chunks_exact(c));
        for (((out_row, x_row), y_row), dy_row) in rows {
            let values = out_row.iter_mut().zip(x_row).zip(y_row).zip(dy_row);
            for ((((o, &xv), &yv), &d), &[k, mean_g, m, proj]) in values.zip(&per_channel) {
                *o = k * (masked(yv, d) - mean_g - (xv - m) * proj);
            }
        }
    });
    Ok((d_gamma, d_beta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64, offset: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0 + offset
            })
            .collect()
    }

    /// The definitions in f64: forward output and the three gradients of `Σ y·probe`.
    fn reference(
        x: &[f32],
        c: usize,
        gamma: &[f32],
        beta: &[f32],
        probe: &[f32],
        eps: f64,
        relu: bool,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let rows = x.len() / c;
        let n = rows as f64;
        let mut y = vec![0f64; x.len()];
        let (mut dx, mut dg, mut db) = (vec![0f64; x.len()], vec![0f64; c], vec![0f64; c]);
        for ch in 0..c {
            let col: Vec<f64> = (0..rows).map(|r| f64::from(x[r * c + ch])).collect();
            let mean = col.iter().sum::<f64>() / n;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + eps).sqrt();
            let xhat: Vec<f64> = col.iter().map(|v| (v - mean) * inv).collect();
            let mut g = vec![0f64; rows];
            for r in 0..rows {
                let pre = xhat[r] * f64::from(gamma[ch]) + f64::from(beta[ch]);
                y[r * c + ch] = if relu { pre.max(0.0) } else { pre };
                g[r] = if relu && pre <= 0.0 { 0.0 } else { f64::from(probe[r * c + ch]) };
            }
            let sum_g: f64 = g.iter().sum();
            let sum_gx: f64 = g.iter().zip(&xhat).map(|(a, b)| a * b).sum();
            db[ch] = sum_g;
            dg[ch] = sum_gx;
            for r in 0..rows {
                dx[r * c + ch] =
                    f64::from(gamma[ch]) * inv * (g[r] - sum_g / n - xhat[r] * sum_gx / n);
            }
        }
        (y, dx, dg, db)
    }

    fn assert_close(name: &str, actual: &[f32], expected: &[f64], tolerance: f64) {
        let scale = expected.iter().fold(1f64, |m, v| m.max(v.abs()));
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!((f64::from(*a) - e).abs() <= tolerance * scale, "{name}[{i}]: {a} vs {e}");
        }
    }

    #[test]
    fn forward_and_backward_match_the_definitions() {
        // 600 rows: two full chunks and a short one; an offset mean tests the two-pass variance.
        let (c, rows, eps) = (5, 600, 1e-3);
        let x = values(rows * c, 1, 30.0);
        let (gamma, beta) = (values(c, 2, 1.0), values(c, 3, 0.0));
        let probe = values(rows * c, 4, 0.0);
        for relu in [false, true] {
            let (ey, edx, edg, edb) = reference(&x, c, &gamma, &beta, &probe, eps, relu);
            let mut results = Vec::new();
            for threads in [1, 3] {
                let workers = Workers::new(threads);
                let mut y = vec![0f32; x.len()];
                let moments =
                    batch_norm_train(&x, c, &gamma, &beta, eps, relu, &mut y, &workers).unwrap();
                assert_close("y", &y, &ey, 1e-5);
                let mut dx = vec![0f32; x.len()];
                let (dg, db) = batch_norm_train_backward(
                    &x, &y, &probe, &gamma, &moments, eps, relu, &mut dx, &workers,
                )
                .unwrap();
                assert_close("dx", &dx, &edx, 1e-4);
                assert_close("dγ", &dg, &edg, 1e-5);
                assert_close("dβ", &db, &edb, 1e-5);
                results.push((y, dx, dg, db));
            }
            assert_eq!(results[0], results[1], "1 and 3 threads give the same bits");
        }
    }

    #[test]
    fn mismatched_lengths_are_errors_naming_the_values() {
        let workers = Workers::new(1);
        let mut y = vec![0f32; 6];
        let err =
            batch_norm_train(&[0.0; 6], 4, &[1.0; 4], &[0.0; 4], 1e-3, false, &mut y, &workers)
                .unwrap_err();
        assert!(err.to_string().contains("6 values, not a multiple of 4"), "{err}");
        let err =
            batch_norm_train(&[0.0; 6], 3, &[1.0; 2], &[0.0; 3], 1e-3, false, &mut y, &workers)
                .unwrap_err();
        assert!(err.to_string().contains("γ has 2 values, expected 3"), "{err}");
    }
}
