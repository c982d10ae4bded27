//! Regression targets in the two layouts losses expect, and the one-call pipeline.

use rand_core::Rng;
use rpn_anchors::{Bbox, BoxCoder, ImageSize};

use crate::matcher::validate_boxes;
use crate::{AnchorMatch, Matcher, Matches, SampleCounts, Sampler, TargetError};

/// Matterport / seed 001 layout, what `build_rpn_targets` returns and `rpn_bbox_loss` reads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatterportTargets {
    /// `[A]`: 1 positive, −1 negative, 0 neutral.
    pub rpn_match: Vec<i32>,
    /// `[rows, 4]`: deltas of the positives **in ascending anchor order**, in the coder's layout
    /// (`(dy, dx, log dh, log dw) / std` for [`BoxCoder::matterport`]), then zero rows.
    pub rpn_bbox: Vec<[f32; 4]>,
}

/// torchvision layout, what `RegionProposalNetwork.assign_targets_to_anchors` + `encode` give.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TorchvisionTargets {
    /// `[A]`: 1.0 positive, 0.0 negative, −1.0 ignored.
    pub labels: Vec<f32>,
    /// `[A]`: the GT box each positive anchor is matched to; an all-zero box for the others,
    /// which no loss reads (torchvision puts GT 0 there via `clamp(min=0)`).
    pub matched_gt_boxes: Vec<Bbox>,
    /// `[A, 4]`: deltas of positives in the coder's layout; zero for every other anchor
    /// (torchvision encodes them all and discards them).
    pub deltas: Vec<[f32; 4]>,
    /// Anchors written as positives last time, so reusing the buffers costs `O(#positives)`.
    written: Vec<u32>,
}

fn check_inputs(anchors: &[Bbox], gt: &[Bbox], labels: &[AnchorMatch]) -> Result<(), TargetError> {
    validate_boxes("GT", gt)?;
    TargetError::check_len("labels", anchors.len(), labels.len())?;
    if let Some(bad) = labels.iter().find_map(|m| match m {
        AnchorMatch::Positive { gt: g } if *g as usize >= gt.len() => Some(*g),
        _ => None,
    }) {
        return Err(TargetError::config("labels", "name a GT index past the GT slice", bad));
    }
    Ok(())
}

/// Packs Matterport's targets: `rpn_match` for all anchors, `rows` delta rows for the positives.
/// Fails if there are more positives than `rows` (Matterport would index out of bounds).
pub fn matterport_targets(
    anchors: &[Bbox],
    gt: &[Bbox],
    labels: &[AnchorMatch],
    coder: &BoxCoder,
    rows: usize,
) -> Result<MatterportTargets, TargetError> {
    let mut out = MatterportTargets::default();
    matterport_targets_into(anchors, gt, labels, coder, rows, &mut out)?;
    Ok(out)
}

/// [`matterport_targets`] into reusable buffers.
pub fn matterport_targets_into(
    anchors: &[Bbox],
    gt: &[Bbox],
    labels: &[AnchorMatch],
    coder: &BoxCoder,
    rows: usize,
    out: &mut MatterportTargets,
) -> Result<(), TargetError> {
    check_inputs(anchors, gt, labels)?;
    let positives = labels.iter().filter(|m| m.is_positive()).count();
    if positives > rows {
        return Err(TargetError::TooManyPositives { positives, rows });
    }
    out.rpn_bbox.clear();
    for (anchor, label) in anchors.iter().zip(labels) {
        if let AnchorMatch::Positive { gt: g } = label {
            out.rpn_bbox.push(coder.encode(anchor, &gt[*g as usize]));
        }
    }
    out.rpn_bbox.resize(rows, [0.0; 4]);
    out.rpn_match.clear();
    out.rpn_match.extend(labels.iter().map(|m| m.to_matterport()));
    Ok(())
}

/// torchvision's per-anchor labels, matched boxes and (positive) deltas.
pub fn torchvision_targets(
    anchors: &[Bbox],
    gt: &[Bbox],
    labels: &[AnchorMatch],
    coder: &BoxCoder,
) -> Result<TorchvisionTargets, TargetError> {
    let mut out = TorchvisionTargets::default();
    torchvision_targets_into(anchors, gt, labels, coder, &mut out)?;
    Ok(out)
}

/// [`torchvision_targets`] into reusable buffers.
pub fn torchvision_targets_into(
    anchors: &[Bbox],
    gt: &[Bbox],
    labels: &[AnchorMatch],
    coder: &BoxCoder,
    out: &mut TorchvisionTargets,
) -> Result<(), TargetError> {
    check_inputs(anchors, gt, labels)?;
    out.labels.clear();
    out.labels.extend(labels.iter().map(|m| m.to_torchvision()));
    if out.deltas.len() != anchors.len() || out.matched_gt_boxes.len() != anchors.len() {
        reset_zero(&mut out.deltas, anchors.len());
        reset_zero(&mut out.matched_gt_boxes, anchors.len());
    } else {
        // Same anchor count as last time: only last image's positives are non-zero.
        for &i in &out.written {
            out.deltas[i as usize] = [0.0; 4];
            out.matched_gt_boxes[i as usize] = Bbox::default();
        }
    }
    out.written.clear();
    for (i, (anchor, label)) in anchors.iter().zip(labels).enumerate() {
        if let AnchorMatch::Positive { gt: g } = label {
            let b = gt[*g as usize];
            out.matched_gt_boxes[i] = b;
            out.deltas[i] = coder.encode(anchor, &b);
            out.written.push(i as u32);
        }
    }
    Ok(())
}

fn reset_zero<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    v.clear();
    v.resize(n, T::default());
}

/// Match → sample → encode for one image in one call, reusing buffers across images: what a data
/// loader runs per training image.
///
/// ```
/// use rpn_anchors::{AnchorConfig, Bbox, BoxCoder, ImageSize};
/// use rpn_targets::{seeded_rng, Matcher, MatcherConfig, Sampler, SamplerConfig, TargetBuilder};
///
/// let image = ImageSize::new(1024, 1024)?;
/// let anchors = AnchorConfig::matterport_fpn().generate(image)?;
/// let mut builder = TargetBuilder::new(
///     Matcher::new(anchors.clone(), MatcherConfig::default())?,
///     Sampler::new(SamplerConfig::default())?,
///     BoxCoder::matterport(),
/// );
/// let gt = [Bbox::new(100.0, 120.0, 300.0, 260.0), Bbox::new(600.0, 500.0, 700.0, 720.0)];
/// let mut rng = seeded_rng(0);
/// let (targets, counts) = builder.matterport(&gt, &[], image, &mut rng)?;
/// assert_eq!(targets.rpn_match.len(), 261_888);
/// assert_eq!(targets.rpn_bbox.len(), 256);
/// assert!(counts.positive >= 2 && counts.positive + counts.negative == 256);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TargetBuilder {
    matcher: Matcher,
    sampler: Sampler,
    coder: BoxCoder,
    matches: Matches,
    matterport: MatterportTargets,
    torchvision: TorchvisionTargets,
}

impl TargetBuilder {
    /// Wires a matcher, a sampler and a coder.
    pub fn new(matcher: Matcher, sampler: Sampler, coder: BoxCoder) -> Self {
        Self {
            matcher,
            sampler,
            coder,
            matches: Matches::default(),
            matterport: MatterportTargets::default(),
            torchvision: TorchvisionTargets::default(),
        }
    }

    /// The match of the last image, after sampling.
    pub fn last_matches(&self) -> &Matches {
        &self.matches
    }

    fn match_and_sample<R: Rng + ?Sized>(
        &mut self,
        gt: &[Bbox],
        crowd: &[Bbox],
        image: ImageSize,
        rng: &mut R,
    ) -> Result<SampleCounts, TargetError> {
        self.matcher.match_anchors_into(gt, crowd, image, &mut self.matches)?;
        Ok(self.sampler.sample(&mut self.matches.labels, rng))
    }

    /// Matterport layout with `rpn_bbox` of `sampler.batch_size` rows. The targets borrow the
    /// builder's buffers, reused by the next image: copy them out if you keep them.
    pub fn matterport<R: Rng + ?Sized>(
        &mut self,
        gt: &[Bbox],
        crowd: &[Bbox],
        image: ImageSize,
        rng: &mut R,
    ) -> Result<(&MatterportTargets, SampleCounts), TargetError> {
        let counts = self.match_and_sample(gt, crowd, image, rng)?;
        let rows = self.sampler.config().batch_size;
        let anchors = self.matcher.anchors().boxes();
        matterport_targets_into(
            anchors,
            gt,
            &self.matches.labels,
            &self.coder,
            rows,
            &mut self.matterport,
        )?;
        Ok((&self.matterport, counts))
    }

    /// torchvision layout, in the builder's reused buffers like [`TargetBuilder::matterport`].
    pub fn torchvision<R: Rng + ?Sized>(
        &mut self,
        gt: &[Bbox],
        crowd: &[Bbox],
        image: ImageSize,
        rng: &mut R,
    ) -> Result<(&TorchvisionTargets, SampleCounts), TargetError> {
        let counts = self.match_and_sample(gt, crowd, image, rng)?;
        let anchors = self.matcher.anchors().boxes();
        torchvision_targets_into(
            anchors,
            gt,
            &self.matches.labels,
            &self.coder,
            &mut self.torchvision,
        )?;
        Ok((&self.torchvision, counts))
    }
}
