//! The balanced anchor sampler: at most `batch_size` anchors, at most `positive_fraction` of them
//! positive, drawn uniformly with a caller-supplied RNG.
//!
//! Counts follow every peer: `#pos = min(#positives, ⌊batch · fraction⌋)`,
//! `#neg = min(#negatives, batch − #pos)`. Anchors not drawn become [`AnchorMatch::Ignored`].
//!
//! The peers draw from global generators (`np.random`, `torch.randperm`), so their samples are not
//! reproducible across devices or runs (pytorch/vision#1058, detectron2#4937). Here the RNG is an
//! argument: the same seed gives the same sample on every machine. The bounded integers are
//! derived from raw `u64` draws with our own code (Lemire's method), so the sample does not change
//! when a `rand` release changes its `gen_range`.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::{AnchorMatch, TargetError};

/// A portable, value-stable generator for [`Sampler::sample`]: ChaCha8 seeded from `seed`.
pub fn seeded_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// How many anchors to keep per image and the positive share. `Default`: 256 and 0.5.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Anchors per image (Matterport `RPN_TRAIN_ANCHORS_PER_IMAGE`, torchvision
    /// `batch_size_per_image`).
    pub batch_size: usize,
    /// Largest share of positives, in `[0, 1]`.
    pub positive_fraction: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self { batch_size: 256, positive_fraction: 0.5 }
    }
}

/// How many anchors the sampler kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleCounts {
    /// Positives kept.
    pub positive: usize,
    /// Negatives kept.
    pub negative: usize,
}

/// Draws the balanced sample; keeps its small rank buffer between calls.
///
/// ```
/// use rpn_targets::{seeded_rng, AnchorMatch, Sampler, SamplerConfig};
///
/// let mut labels = vec![AnchorMatch::Negative; 1000];
/// labels[..300].fill(AnchorMatch::Positive { gt: 0 });
/// let mut sampler = Sampler::new(SamplerConfig::default())?;
/// let counts = sampler.sample(&mut labels, &mut seeded_rng(7));
/// assert_eq!((counts.positive, counts.negative), (128, 128));
/// # Ok::<(), rpn_targets::TargetError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    scratch: Vec<u32>,
}

impl Sampler {
    /// A sampler with `config` (validated here).
    pub fn new(config: SamplerConfig) -> Result<Self, TargetError> {
        if !(0.0..=1.0).contains(&config.positive_fraction) {
            return Err(TargetError::config(
                "positive_fraction",
                "must lie in [0, 1]",
                config.positive_fraction,
            ));
        }
        if u32::try_from(config.batch_size).is_err() {
            return Err(TargetError::config("batch_size", "must fit in u32", config.batch_size));
        }
        Ok(Self { config, scratch: Vec::new() })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Most positives a sample may hold: `⌊batch_size · positive_fraction⌋`.
    pub fn max_positive(&self) -> usize {
        (self.config.batch_size as f64 * f64::from(self.config.positive_fraction)) as usize
    }

    /// Keeps a balanced random subset of `labels` and turns the rest of the positives and
    /// negatives into [`AnchorMatch::Ignored`]. Draws positives first, then negatives.
    pub fn sample<R: Rng + ?Sized>(
        &mut self,
        labels: &mut [AnchorMatch],
        rng: &mut R,
    ) -> SampleCounts {
        let positive = self.keep_random(labels, |m| m.is_positive(), self.max_positive(), rng);
        let negative = self.keep_random(
            labels,
            |m| *m == AnchorMatch::Negative,
            self.config.batch_size - positive,
            rng,
        );
        SampleCounts { positive, negative }
    }

    /// Keeps `min(k, #matching)` uniformly chosen anchors among those matching `class`; returns the count.
    fn keep_random<R: Rng + ?Sized>(
        &mut self,
        labels: &mut [AnchorMatch],
        class: impl Fn(&AnchorMatch) -> bool,
        k: usize,
        rng: &mut R,
    ) -> usize {
        let n = labels.iter().filter(|m| class(m)).count();
        if n <= k {
            return n;
        }
        // Floyd's algorithm: k distinct ranks in 0..n, uniformly, in O(k) draws and without an
        // n-sized index array (there are ~255,000 negatives per image at 1024²).
        let chosen = &mut self.scratch;
        chosen.clear();
        for j in (n - k)..n {
            let t = uniform_below(rng, j as u64 + 1) as u32;
            let pick = if chosen.binary_search(&t).is_ok() { j as u32 } else { t };
            if let Err(at) = chosen.binary_search(&pick) {
                chosen.insert(at, pick);
            }
        }
        // Keep the anchors whose rank among their class was chosen; ignore the others.
        let mut next = chosen.iter().copied().peekable();
        for (rank, m) in labels.iter_mut().filter(|m| class(m)).enumerate() {
            if next.peek() == Some(&(rank as u32)) {
                next.next();
            } else {
                *m = AnchorMatch::Ignored;
            }
        }
        k
    }
}

/// A uniform integer in `0..n` (`n > 0`) from raw `u64` draws: Lemire's multiply-and-reject,
/// exact (no modulo bias) and independent of any `rand` version.
fn uniform_below<R: Rng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_below_is_roughly_uniform_and_in_range() {
        let mut rng = seeded_rng(1);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[uniform_below(&mut rng, 7) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn same_seed_same_sample_and_known_first_draws() {
        let mut a = vec![AnchorMatch::Negative; 5000];
        a[..400].fill(AnchorMatch::Positive { gt: 1 });
        let mut b = a.clone();
        let mut s = Sampler::new(SamplerConfig::default()).unwrap();
        s.sample(&mut a, &mut seeded_rng(42));
        s.sample(&mut b, &mut seeded_rng(42));
        assert_eq!(a, b);
        let mut c = vec![AnchorMatch::Negative; 5000];
        c[..400].fill(AnchorMatch::Positive { gt: 1 });
        s.sample(&mut c, &mut seeded_rng(43));
        assert_ne!(a, c, "a different seed should draw a different sample");
    }

    #[test]
    fn bad_fraction_is_an_error() {
        let err =
            Sampler::new(SamplerConfig { batch_size: 256, positive_fraction: 1.5 }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "target config: `positive_fraction` must lie in [0, 1], got 1.5"
        );
    }
}
