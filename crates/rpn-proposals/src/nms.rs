//! Greedy non-maximum suppression, exact and fast.
//!
//! Semantics (torchvision's `nms` and TensorFlow's `non_max_suppression` agree on them):
//! visit boxes by decreasing score; keep a box unless a box kept before it overlaps it with
//! IoU **strictly greater** than the threshold. Equal scores are visited in increasing index
//! order (a stable sort with `f32::total_cmp`), so the keep list is the same on every machine.
//! IoU is [`Bbox::iou`]'s expression in `f32`; an empty box (width or height ≤ 0, or `NaN`) has
//! IoU 0 with everything, so it is kept and suppresses nothing (TF's rule; torchvision reaches the
//! same result through `NaN > t` being false). `NaN` scores are visited last.
//!
//! The kernel checks each candidate against the boxes kept so far, in fixed-size chunks of
//! structure-of-arrays columns (TensorFlow's formulation, vectorised), and stops as soon as
//! `max_keep` boxes are kept: the cost is output-sensitive, not `O(N²)` like torchvision's
//! suppress-forward loop.

use rpn_anchors::Bbox;

use crate::ProposalError;

/// Kept boxes of one group as columns; empty boxes are stored so that their IoU is exactly 0.
#[derive(Debug, Clone, Default)]
struct KeptColumns {
    x1: Vec<f32>,
    y1: Vec<f32>,
    x2: Vec<f32>,
    y2: Vec<f32>,
    area: Vec<f32>,
}

/// Boxes checked per step of the inner loop; the early exit happens at this granularity.
const CHUNK: usize = 64;

impl KeptColumns {
    fn clear(&mut self) {
        for v in [&mut self.x1, &mut self.y1, &mut self.x2, &mut self.y2, &mut self.area] {
            v.clear();
        }
    }

    fn push(&mut self, b: &Bbox) {
        if b.is_empty() {
            // (+∞, +∞, −∞, −∞) with area 1: intersection 0 with any box, so IoU exactly 0.
            self.x1.push(f32::INFINITY);
            self.y1.push(f32::INFINITY);
            self.x2.push(f32::NEG_INFINITY);
            self.y2.push(f32::NEG_INFINITY);
            self.area.push(1.0);
        } else {
            self.x1.push(b.x1);
            self.y1.push(b.y1);
            self.x2.push(b.x2);
            self.y2.push(b.y2);
            self.area.push(b.area());
        }
    }

    /// True if some kept box overlaps `c` (a non-empty box) with IoU > `t`. Oldest chunks first:
    /// in clustered sets the suppressor is usually an object's best box, kept early (TF scans
    /// newest first; oldest first measured 27 % faster on 12,000 clustered boxes, equal on sparse).
    ///
    /// A division per pair would bound the loop, so each chunk is first screened with
    /// `inter > t·(1 − 1e-5)·union`, which every pair with `fl(inter / union) > t` passes (the
    /// margin exceeds the rounding of both sides by two orders of magnitude); only a chunk with a
    /// candidate pair is re-checked with the exact expression, so decisions equal the division's.
    #[inline]
    fn suppresses(&self, c: &Bbox, t: f32) -> bool {
        let area = c.area();
        let screen = t * (1.0 - 1e-5);
        let n = self.area.len();
        let mut start = 0;
        while start < n {
            let end = (start + CHUNK).min(n);
            let (x1, y1, x2, y2, a) = (
                &self.x1[start..end],
                &self.y1[start..end],
                &self.x2[start..end],
                &self.y2[start..end],
                &self.area[start..end],
            );
            let overlap = |j: usize| {
                let w = (if x2[j] < c.x2 { x2[j] } else { c.x2 })
                    - (if x1[j] > c.x1 { x1[j] } else { c.x1 });
                let h = (if y2[j] < c.y2 { y2[j] } else { c.y2 })
                    - (if y1[j] > c.y1 { y1[j] } else { c.y1 });
                let inter = (if w > 0.0 { w } else { 0.0 }) * (if h > 0.0 { h } else { 0.0 });
                (inter, a[j] + area - inter)
            };
            let mut maybe = false;
            for j in 0..a.len() {
                let (inter, union) = overlap(j);
                maybe |= inter > screen * union;
            }
            // Bbox::iou's expression; NaN (∞/∞ from an infinite box) compares false, as 0 would.
            if maybe
                && (0..a.len()).any(|j| {
                    let (inter, union) = overlap(j);
                    inter / union > t
                })
            {
                return true;
            }
            start = end;
        }
        false
    }
}

/// Reusable NMS state: per-group kept columns and the visiting order. Keep one per thread to run
/// NMS repeatedly without allocating.
#[derive(Debug, Clone, Default)]
pub struct NmsScratch {
    order: Vec<u64>,
    groups: Vec<KeptColumns>,
}

/// `u32` whose unsigned order is `f32::total_cmp`'s order.
#[inline]
pub(crate) fn ordered_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Sort key: ascending key = NaN last, then decreasing score, then increasing index.
#[inline]
fn visit_key(score: f32, index: usize) -> u64 {
    let rank = if score.is_nan() { u32::MAX } else { !ordered_bits(score) };
    (u64::from(rank) << 32) | index as u64
}

fn check_threshold(iou_threshold: f32) -> Result<(), ProposalError> {
    if iou_threshold.is_nan() || iou_threshold < 0.0 {
        return Err(ProposalError::config("iou_threshold", "must be a number ≥ 0", iou_threshold));
    }
    Ok(())
}

/// Greedy NMS: indices of the kept boxes in visiting order (decreasing score, ties by index), at
/// most `max_keep` of them. Boxes with IoU `> iou_threshold` with a kept box are dropped.
///
/// ```
/// use rpn_anchors::Bbox;
/// use rpn_proposals::nms;
///
/// let boxes = [Bbox::new(0.0, 0.0, 10.0, 10.0), Bbox::new(1.0, 0.0, 11.0, 10.0), Bbox::new(20.0, 0.0, 30.0, 10.0)];
/// let scores = [0.8, 0.9, 0.7];
/// assert_eq!(nms(&boxes, &scores, 0.5, usize::MAX)?, [1, 2]);
/// # Ok::<(), rpn_proposals::ProposalError>(())
/// ```
pub fn nms(
    boxes: &[Bbox],
    scores: &[f32],
    iou_threshold: f32,
    max_keep: usize,
) -> Result<Vec<usize>, ProposalError> {
    let mut keep = Vec::new();
    nms_into(boxes, scores, None, iou_threshold, max_keep, &mut NmsScratch::default(), &mut keep)?;
    Ok(keep)
}

/// Per-group NMS (torchvision's `batched_nms`, detectron2's per-level NMS): boxes only suppress
/// boxes of the same group. The result is the union of the groups' keep lists in decreasing
/// score order (ties by index), cut at `max_keep` — computed in one pass, without torchvision's
/// coordinate-offset trick (whose offsets need non-negative, bounded coordinates).
pub fn batched_nms(
    boxes: &[Bbox],
    scores: &[f32],
    groups: &[u32],
    iou_threshold: f32,
    max_keep: usize,
) -> Result<Vec<usize>, ProposalError> {
    let mut keep = Vec::new();
    nms_into(
        boxes,
        scores,
        Some(groups),
        iou_threshold,
        max_keep,
        &mut NmsScratch::default(),
        &mut keep,
    )?;
    Ok(keep)
}

/// [`nms`] / [`batched_nms`] (with `groups`) into caller buffers.
pub fn nms_into(
    boxes: &[Bbox],
    scores: &[f32],
    groups: Option<&[u32]>,
    iou_threshold: f32,
    max_keep: usize,
    scratch: &mut NmsScratch,
    keep: &mut Vec<usize>,
) -> Result<(), ProposalError> {
    check_threshold(iou_threshold)?;
    ProposalError::check_len("scores", boxes.len(), scores.len())?;
    if let Some(g) = groups {
        ProposalError::check_len("groups", boxes.len(), g.len())?;
    }
    scratch.order.clear();
    scratch.order.extend(scores.iter().enumerate().map(|(i, &s)| visit_key(s, i)));
    let mut order = std::mem::take(&mut scratch.order);
    begin(scratch, keep, groups);
    // Sort lazily: with a cap, NMS usually stops after a few times `max_keep` candidates, so sort
    // the best 2·max_keep first and the rest only if needed. Keys are distinct (they contain the
    // index), so unstable selection and sorting are deterministic.
    let (n, mut done) = (order.len(), 0);
    while done < n && keep.len() < max_keep {
        let end =
            if done == 0 { max_keep.saturating_mul(2).max(256) } else { done.saturating_mul(2) }
                .min(n);
        if end < n {
            order[done..].select_nth_unstable(end - done - 1);
        }
        order[done..end].sort_unstable();
        let visit = order[done..end].iter().map(|&k| (k & 0xFFFF_FFFF) as usize);
        visit_candidates(boxes, visit, groups, iou_threshold, max_keep, scratch, keep);
        done = end;
    }
    scratch.order = order;
    Ok(())
}

/// Resets the kept columns for a new run.
pub(crate) fn begin(scratch: &mut NmsScratch, keep: &mut Vec<usize>, groups: Option<&[u32]>) {
    keep.clear();
    let n_groups = groups.map_or(1, |g| g.iter().max().map_or(0, |&m| m as usize + 1));
    scratch.groups.resize_with(n_groups.max(scratch.groups.len()), KeptColumns::default);
    scratch.groups.iter_mut().for_each(KeptColumns::clear);
}

/// The greedy loop over candidates in visiting order, continuing the run started by [`begin`].
pub(crate) fn visit_candidates(
    boxes: &[Bbox],
    visit: impl Iterator<Item = usize>,
    groups: Option<&[u32]>,
    iou_threshold: f32,
    max_keep: usize,
    scratch: &mut NmsScratch,
    keep: &mut Vec<usize>,
) {
    if keep.len() >= max_keep {
        return;
    }
    for i in visit {
        let g = groups.map_or(0, |g| g[i] as usize);
        let kept = &mut scratch.groups[g];
        let b = &boxes[i];
        if !b.is_empty() && kept.suppresses(b, iou_threshold) {
            continue;
        }
        kept.push(b);
        keep.push(i);
        // Later candidates rank below every kept box: once `max_keep` are kept, none can enter.
        if keep.len() == max_keep {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_visit_lower_index_first_and_nan_scores_last() {
        let b = Bbox::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(nms(&[b, b, b], &[0.5, 0.5, 0.5], 0.5, 10).unwrap(), [0]);
        assert_eq!(nms(&[b, b], &[f32::NAN, 0.1], 0.5, 10).unwrap(), [1]);
    }

    #[test]
    fn empty_boxes_are_kept_and_suppress_nothing() {
        let line = Bbox::new(5.0, 0.0, 5.0, 10.0);
        let b = Bbox::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(nms(&[line, line, b], &[0.9, 0.8, 0.7], 0.0, 10).unwrap(), [0, 1, 2]);
        assert_eq!(nms(&[], &[], 0.5, 10).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn threshold_is_strict_and_validated() {
        // IoU exactly 1/3: kept at t = 1/3 (not >), suppressed just below.
        let a = Bbox::new(0.0, 0.0, 2.0, 1.0);
        let c = Bbox::new(1.0, 0.0, 3.0, 1.0);
        assert_eq!(a.iou(&c), 1.0 / 3.0);
        assert_eq!(nms(&[a, c], &[1.0, 0.5], 1.0 / 3.0, 10).unwrap(), [0, 1]);
        assert_eq!(nms(&[a, c], &[1.0, 0.5], 0.33, 10).unwrap(), [0]);
        let err = nms(&[a], &[1.0], f32::NAN, 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "proposal config: `iou_threshold` must be a number ≥ 0, got NaN"
        );
    }

    #[test]
    fn groups_do_not_suppress_each_other() {
        let b = Bbox::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(batched_nms(&[b, b, b], &[0.9, 0.8, 0.7], &[0, 1, 0], 0.5, 10).unwrap(), [0, 1]);
        assert_eq!(batched_nms(&[b, b, b], &[0.9, 0.8, 0.7], &[0, 1, 0], 0.5, 1).unwrap(), [0]);
    }
}
