//! Top-k selection over hundreds of thousands of scores without sorting them all.
//!
//! Order: decreasing score, equal scores by increasing index — what `tf.nn.top_k` guarantees and
//! a stable descending sort gives. For `k` much smaller than the input (6000 of 261,888), every
//! 16th score estimates a threshold a little below the k-th score; one pass collects the scores
//! above it and only those are selected and sorted. If the estimate was too high (fewer than `k`
//! collected), a histogram of the keys' top bits finds the bucket of the k-th score exactly.

use crate::nms::ordered_bits;

const BUCKET_BITS: u32 = 12;

/// Sort key: ascending key = decreasing score, then increasing index. Scores must not be NaN.
#[inline]
fn key(score: f32, index: u32) -> u64 {
    (u64::from(!ordered_bits(score)) << 32) | u64::from(index)
}

/// Appends to `out` the indices (into `scores`, offset by `base`) of the `k` best entries among
/// those with `keep[i]`, best first. `scratch` is reused between calls.
pub(crate) fn top_k_into(
    scores: &[f32],
    keep: impl Fn(usize) -> bool,
    base: u32,
    k: usize,
    scratch: &mut Vec<u64>,
    out: &mut Vec<u32>,
) {
    scratch.clear();
    if k == 0 {
        return;
    }
    if scores.len() >= 16 * k && sampled_threshold_into(scores, &keep, base, k, scratch) {
        finish(scratch, k, out);
        return;
    }
    scratch.clear();
    let bucket = |s: f32| (!ordered_bits(s) >> (32 - BUCKET_BITS)) as usize;
    let mut histogram = [0u32; 1 << BUCKET_BITS];
    let mut total = 0usize;
    for (i, &s) in scores.iter().enumerate() {
        if keep(i) {
            histogram[bucket(s)] += 1;
            total += 1;
        }
    }
    // The bucket at which the running count (best buckets first) reaches k.
    let mut limit = histogram.len() - 1;
    if total > k {
        let mut running = 0usize;
        for (b, &count) in histogram.iter().enumerate() {
            running += count as usize;
            if running >= k {
                limit = b;
                break;
            }
        }
    }
    for (i, &s) in scores.iter().enumerate() {
        if keep(i) && bucket(s) <= limit {
            scratch.push(key(s, base + i as u32));
        }
    }
    finish(scratch, k, out);
}

/// Collects the keys at or above a threshold estimated from every 16th score; false if fewer than
/// `k` were collected (the caller then falls back to the exact histogram).
fn sampled_threshold_into(
    scores: &[f32],
    keep: &impl Fn(usize) -> bool,
    base: u32,
    k: usize,
    scratch: &mut Vec<u64>,
) -> bool {
    const STRIDE: usize = 16;
    let mut sample: Vec<u32> = (0..scores.len())
        .step_by(STRIDE)
        .filter(|&i| keep(i))
        .map(|i| !ordered_bits(scores[i]))
        .collect();
    // Aim at 1.25·k: the sample's quantile is noisy, and a few extra candidates are cheap.
    let position = (k + k / 4) / STRIDE + 1;
    if position >= sample.len() {
        return false;
    }
    let threshold = *sample.select_nth_unstable(position).1;
    for (i, &s) in scores.iter().enumerate() {
        if !ordered_bits(s) <= threshold && keep(i) {
            scratch.push(key(s, base + i as u32));
        }
    }
    scratch.len() >= k
}

/// The best `k` of `scratch`, sorted, appended to `out` as indices.
fn finish(scratch: &mut Vec<u64>, k: usize, out: &mut Vec<u32>) {
    // Keys are distinct (they contain the index): unstable selection and sort are deterministic.
    if scratch.len() > k {
        scratch.select_nth_unstable(k - 1);
        scratch.truncate(k);
    }
    scratch.sort_unstable();
    out.extend(scratch.iter().map(|&kv| (kv & 0xFFFF_FFFF) as u32));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_a_stable_descending_sort() {
        let scores: Vec<f32> = (0..5000u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 20) % 300) as f32 * 0.01 - 1.0)
            .collect();
        for k in [0, 1, 7, 100, 299, 1000, 4999, 5000, 6000] {
            let mut expected: Vec<u32> = (0..scores.len() as u32).collect();
            expected.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
            expected.truncate(k);
            let mut out = Vec::new();
            top_k_into(&scores, |_| true, 0, k, &mut Vec::new(), &mut out);
            assert_eq!(out, expected, "k = {k}");
            // A threshold estimate that collects too few (all scores equal in the sample's
            // stride) must fall back and still be exact.
            let skewed: Vec<f32> =
                (0..5000).map(|i| if i % 16 == 0 { 1.0 } else { (i % 7) as f32 }).collect();
            let mut expected: Vec<u32> = (0..5000u32).collect();
            expected.sort_by(|&a, &b| skewed[b as usize].total_cmp(&skewed[a as usize]));
            expected.truncate(k);
            let mut out = Vec::new();
            top_k_into(&skewed, |_| true, 0, k, &mut Vec::new(), &mut out);
            assert_eq!(out, expected, "skewed, k = {k}");
        }
    }
}
