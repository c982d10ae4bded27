//! Anchor labelling: which anchors are positive (and for which GT box), negative or ignored.
//!
//! The default rules are Matterport's `build_rpn_targets` and torchvision's
//! `Matcher(0.7, 0.3, allow_low_quality_matches=True)`, which agree:
//!
//! 1. `max_iou(anchor) < 0.3` → negative (exclusive upper bound), unless a crowd box covers it;
//! 2. every anchor whose IoU with a GT equals that GT's best IoU over all anchors (ties
//!    included, even if the best is tiny) → positive ("forced" or "low-quality" match);
//! 3. `max_iou(anchor) ≥ 0.7` → positive (inclusive lower bound);
//! 4. everything else is ignored. A positive regresses to its own argmax GT (lowest index on
//!    ties), which need not be the GT that forced it (matterport/Mask_RCNN#2014).
//!
//! Options no single peer offers together: a tie tolerance, a minimum IoU for forced matches
//! (mmdet's `min_pos_iou`), regressing a forced positive to the GT that forced it, crowd boxes as
//! Matterport treats them or as ignore regions, and ignoring anchors that cross the image border
//! (seed 004, py-faster-rcnn). Images without GT boxes are fine: every anchor is negative.
//!
//! Nothing here allocates a `G × A` IoU matrix: a spatial index visits, for each GT, only the
//! anchors that overlap it, and per-anchor state is `O(A)`.

use std::sync::Arc;

use rpn_anchors::{Anchors, Bbox, ImageSize};

use crate::grid::AnchorGrid;
use crate::soa::{Query, Real, SoaAnchors, WorkMax};
use crate::TargetError;

/// The label of one anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AnchorMatch {
    /// Foreground; regresses towards GT box `gt`.
    Positive {
        /// Index into the GT slice passed to the matcher.
        gt: u32,
    },
    /// Background.
    Negative,
    /// Neither: between the thresholds, covered by a crowd/ignore box, outside the border, or
    /// not drawn by the sampler. No loss is computed for it.
    Ignored,
}

impl AnchorMatch {
    /// Matterport's `rpn_match` value: 1 positive, −1 negative, 0 neutral.
    pub const fn to_matterport(self) -> i32 {
        match self {
            Self::Positive { .. } => 1,
            Self::Negative => -1,
            Self::Ignored => 0,
        }
    }

    /// torchvision's label: 1.0 positive, 0.0 negative, −1.0 ignored.
    pub const fn to_torchvision(self) -> f32 {
        match self {
            Self::Positive { .. } => 1.0,
            Self::Negative => 0.0,
            Self::Ignored => -1.0,
        }
    }

    /// True for [`AnchorMatch::Positive`].
    pub const fn is_positive(self) -> bool {
        matches!(self, Self::Positive { .. })
    }
}

/// Which GT box a forced (low-quality) positive regresses to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ForcedTarget {
    /// The anchor's own argmax GT, as Matterport, torchvision and detectron2 do.
    #[default]
    OwnArgmax,
    /// The GT that forced it (mmdet); if several did, the one it overlaps most, lowest index on ties.
    ForcingGt,
}

/// How crowd boxes (`iscrowd` annotations) act on anchors.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum CrowdPolicy {
    /// Matterport: an anchor whose IoU with some crowd box is ≥ `min_iou` (0.001) is never a
    /// negative; it can still be a positive through the non-crowd GT.
    NeverNegative {
        /// Matterport uses 0.001.
        min_iou: f32,
    },
    /// Ignore regions (mmdet's `ignore_iof_thr`, with intersection over the *anchor's* area): an
    /// anchor covered at least `min_coverage` by a region is ignored, even if it would be positive.
    IgnoreCovered {
        /// Fraction of the anchor's area inside the region, in `(0, 1]`.
        min_coverage: f32,
    },
}

/// What to do with anchors that cross the image border.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum BorderPolicy {
    /// Use every anchor (Matterport, torchvision, detectron2 default).
    #[default]
    Keep,
    /// Seed 004 / py-faster-rcnn: anchors reaching more than `tolerance` pixels outside the image
    /// are left out of matching altogether (they cannot be forced positives) and labelled ignored.
    IgnoreOutside {
        /// Pixels an anchor may stick out (py-faster-rcnn's `_allowed_border`, 0).
        tolerance: f32,
    },
}

/// Thresholds and options of the [`Matcher`]. `Default` is Matterport's / torchvision's rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatcherConfig {
    /// `max_iou ≥ positive_iou` → positive. 0.7.
    pub positive_iou: f32,
    /// `max_iou < negative_iou` → negative. 0.3. Must be ≤ `positive_iou`.
    pub negative_iou: f32,
    /// Force the best anchors of each GT positive (Matterport, torchvision, Faster R-CNN paper).
    pub force_best_anchors: bool,
    /// Anchors within `tie_epsilon` of a GT's best IoU are forced too (detectron2#3750 asks for
    /// 1e-5). 0 reproduces the peers' exact `==`.
    pub tie_epsilon: f32,
    /// A GT whose best IoU is below this forces nothing (mmdet's `min_pos_iou`, 0.3 there).
    ///
    /// 0 (the peers' default) lets a GT that overlaps no anchor force **every** anchor positive,
    /// since all tie at IoU 0; set it to a small positive value (e.g. `f32::MIN_POSITIVE`) to
    /// prevent that.
    pub min_forced_iou: f32,
    /// Target of forced positives.
    pub forced_target: ForcedTarget,
    /// How crowd boxes act.
    pub crowd: CrowdPolicy,
    /// Border handling.
    pub border: BorderPolicy,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        Self {
            positive_iou: 0.7,
            negative_iou: 0.3,
            force_best_anchors: true,
            tie_epsilon: 0.0,
            min_forced_iou: 0.0,
            forced_target: ForcedTarget::OwnArgmax,
            crowd: CrowdPolicy::NeverNegative { min_iou: 0.001 },
            border: BorderPolicy::Keep,
        }
    }
}

impl MatcherConfig {
    /// Checks thresholds, naming the first bad field.
    pub fn validate(&self) -> Result<(), TargetError> {
        let unit = |field, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(TargetError::config(field, "must lie in [0, 1]", v))
            }
        };
        unit("positive_iou", self.positive_iou)?;
        unit("negative_iou", self.negative_iou)?;
        if self.negative_iou > self.positive_iou {
            return Err(TargetError::config(
                "negative_iou",
                "must be ≤ positive_iou",
                self.negative_iou,
            ));
        }
        if !(self.tie_epsilon >= 0.0 && self.tie_epsilon.is_finite()) {
            return Err(TargetError::config(
                "tie_epsilon",
                "must be a finite number ≥ 0",
                self.tie_epsilon,
            ));
        }
        if self.min_forced_iou.is_nan() {
            return Err(TargetError::config(
                "min_forced_iou",
                "must not be NaN",
                self.min_forced_iou,
            ));
        }
        match self.crowd {
            CrowdPolicy::NeverNegative { min_iou } if !(min_iou > 0.0 && min_iou <= 1.0) => {
                return Err(TargetError::config("crowd.min_iou", "must lie in (0, 1]", min_iou));
            }
            CrowdPolicy::IgnoreCovered { min_coverage }
                if !(min_coverage > 0.0 && min_coverage <= 1.0) =>
            {
                return Err(TargetError::config(
                    "crowd.min_coverage",
                    "must lie in (0, 1]",
                    min_coverage,
                ));
            }
            _ => {}
        }
        if let BorderPolicy::IgnoreOutside { tolerance } = self.border {
            if !(tolerance >= 0.0) {
                return Err(TargetError::config("border.tolerance", "must be ≥ 0", tolerance));
            }
        }
        Ok(())
    }
}

/// The result of matching one image: a label and the best IoU per anchor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matches {
    /// One label per anchor, in anchor order.
    pub labels: Vec<AnchorMatch>,
    /// Per anchor, its largest IoU with any GT box (0 with none), in the matching precision:
    /// `f32` values (widened exactly) by default, `f64` with [`Matcher::with_f64_anchors`].
    pub max_iou: Vec<f64>,
    /// Per anchor, the GT with that IoU (lowest index on ties; 0 when `max_iou` is 0, as
    /// numpy/torch `argmax` give).
    pub argmax_gt: Vec<u32>,
    /// Running per-anchor maximum in the matching precision (copied to `max_iou` at the end).
    work_max: WorkMax,
    /// Anchors left out by [`BorderPolicy::IgnoreOutside`] (empty when the policy is `Keep`).
    excluded: Vec<bool>,
    /// IoU of each forced positive with the GT that forced it ([`ForcedTarget::ForcingGt`] only).
    forced_iou: Vec<f64>,
    /// Per GT: best IoU and the anchors within `tie_epsilon` of it, found in the one IoU pass.
    ties: Vec<(f64, Vec<(u32, f64)>)>,
    /// Per anchor: may not be negative (crowd, Matterport rule) / ignored (ignore regions).
    no_negative: Vec<bool>,
    ignored: Vec<bool>,
}

impl Matches {
    /// Number of positive anchors.
    pub fn num_positive(&self) -> usize {
        self.labels.iter().filter(|m| m.is_positive()).count()
    }

    /// Number of negative anchors.
    pub fn num_negative(&self) -> usize {
        self.labels.iter().filter(|m| **m == AnchorMatch::Negative).count()
    }

    /// Matterport's `rpn_match`: 1 / −1 / 0 per anchor.
    pub fn to_matterport(&self) -> Vec<i32> {
        self.labels.iter().map(|m| m.to_matterport()).collect()
    }

    /// torchvision's labels: 1.0 / 0.0 / −1.0 per anchor.
    pub fn to_torchvision(&self) -> Vec<f32> {
        self.labels.iter().map(|m| m.to_torchvision()).collect()
    }
}

/// Labels anchors of one pyramid against the GT boxes of an image.
///
/// Build it once per anchor set (it indexes the anchors' geometry), then call
/// [`Matcher::match_anchors`] per image.
///
/// ```
/// use rpn_anchors::{AnchorConfig, Bbox, ImageSize};
/// use rpn_targets::{AnchorMatch, Matcher, MatcherConfig};
///
/// let image = ImageSize::new(64, 64)?;
/// let anchors = AnchorConfig::seed001().generate(image)?;
/// let matcher = Matcher::new(anchors.clone(), MatcherConfig::default())?;
/// let gt = [Bbox::new(10.0, 12.0, 30.0, 28.0)];
/// let m = matcher.match_anchors(&gt, &[], image)?;
/// assert!(m.num_positive() >= 1);
/// // An image without objects: every anchor is a negative.
/// let empty = matcher.match_anchors(&[], &[], image)?;
/// assert!(empty.labels.iter().all(|l| *l == AnchorMatch::Negative));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Matcher {
    anchors: Arc<Anchors>,
    precision: Precision,
    grid: AnchorGrid,
    config: MatcherConfig,
}

/// The anchors in the precision IoU is computed in.
#[derive(Debug, Clone)]
enum Precision {
    /// torchvision: `f32` IoU of the `f32` anchors.
    F32(SoaAnchors<f32>),
    /// Matterport: `f64` IoU of its `f64` anchors.
    F64(SoaAnchors<f64>),
}

/// Validates user boxes, naming the first bad one.
pub(crate) fn validate_boxes(kind: &'static str, boxes: &[Bbox]) -> Result<(), TargetError> {
    match boxes.iter().position(|b| !b.is_valid()) {
        Some(index) => Err(TargetError::InvalidBox { kind, index, bbox: boxes[index] }),
        None if u32::try_from(boxes.len()).is_err() => {
            Err(TargetError::TooManyBoxes { count: boxes.len() })
        }
        None => Ok(()),
    }
}

/// Resizes `v` to `n` copies of `value`, reusing its allocation.
fn reset<T: Clone>(v: &mut Vec<T>, n: usize, value: T) {
    v.clear();
    v.resize(n, value);
}

impl Matcher {
    /// A matcher for `anchors` with `config` (validated here), computing IoU in `f32` like
    /// torchvision. The matcher owns (a share of) its anchors, so one matcher serves a whole
    /// training run: pass an `Anchors` or an `Arc<Anchors>` shared with other users.
    pub fn new(
        anchors: impl Into<Arc<Anchors>>,
        config: MatcherConfig,
    ) -> Result<Self, TargetError> {
        config.validate()?;
        let anchors = anchors.into();
        let soa = SoaAnchors::new(anchors.boxes().iter().map(|b| b.to_xyxy()));
        let grid = AnchorGrid::new(&anchors);
        Ok(Self { anchors, precision: Precision::F32(soa), grid, config })
    }

    /// Matches in Matterport's precision: `f64` IoU on the anchors' `f64` corners (from
    /// [`rpn_anchors::AnchorConfig::generate_f64`]), with thresholds taken as the decimals written.
    ///
    /// Needed for labels identical to `build_rpn_targets`: whether two anchors *tie* for a GT's
    /// best IoU depends on the precision (e.g. a 3×3 GT inside a square and a 2:1 anchor of equal
    /// area: equal in `f32`, not in `f64`). `corners` must hold one entry per anchor.
    pub fn with_f64_anchors(mut self, corners: Vec<[f64; 4]>) -> Result<Self, TargetError> {
        TargetError::check_len("corners", self.anchors.len(), corners.len())?;
        self.precision = Precision::F64(SoaAnchors::new(corners.into_iter()));
        Ok(self)
    }

    /// The configuration in use.
    pub fn config(&self) -> &MatcherConfig {
        &self.config
    }

    /// The anchors being matched.
    pub fn anchors(&self) -> &Arc<Anchors> {
        &self.anchors
    }

    /// Labels every anchor for one image. `gt`: object boxes (pixels); `crowd`: crowd boxes or
    /// ignore regions, handled by [`MatcherConfig::crowd`]; `image`: the image the anchors cover
    /// (used by [`BorderPolicy::IgnoreOutside`]).
    pub fn match_anchors(
        &self,
        gt: &[Bbox],
        crowd: &[Bbox],
        image: ImageSize,
    ) -> Result<Matches, TargetError> {
        let mut out = Matches::default();
        self.match_anchors_into(gt, crowd, image, &mut out)?;
        Ok(out)
    }

    /// [`Matcher::match_anchors`] into reusable buffers (no allocation once they are large enough).
    pub fn match_anchors_into(
        &self,
        gt: &[Bbox],
        crowd: &[Bbox],
        image: ImageSize,
        out: &mut Matches,
    ) -> Result<(), TargetError> {
        validate_boxes("GT", gt)?;
        validate_boxes("crowd", crowd)?;
        match &self.precision {
            Precision::F32(soa) => self.run(soa, gt, crowd, image, out),
            Precision::F64(soa) => self.run(soa, gt, crowd, image, out),
        }
        Ok(())
    }

    /// Calls `f(range)` for contiguous ranges of anchors that may overlap `q`. The query grows by
    /// 0.01 px because the grid indexes the `f32` anchors while `f64` corners can reach ~1e-4 px
    /// further; extra candidates only cost time, missing ones would change results.
    #[inline]
    fn candidates(&self, q: &Bbox, f: impl FnMut(std::ops::Range<usize>)) {
        let m = match self.precision {
            Precision::F32(_) => 0.0,
            Precision::F64(_) => 1e-2,
        };
        self.grid.for_each_candidate(&Bbox::new(q.x1 - m, q.y1 - m, q.x2 + m, q.y2 + m), f);
    }

    fn run<T: Real>(
        &self,
        soa: &SoaAnchors<T>,
        gt: &[Bbox],
        crowd: &[Bbox],
        image: ImageSize,
        out: &mut Matches,
    ) {
        let c = &self.config;
        let boxes = self.anchors.boxes();
        let n = boxes.len();
        let mut work_max = std::mem::take(T::work_max(&mut out.work_max));
        reset(&mut work_max, n, T::ZERO);
        reset(&mut out.argmax_gt, n, 0);
        let border = match c.border {
            BorderPolicy::IgnoreOutside { tolerance } => Some(tolerance),
            BorderPolicy::Keep => None,
        };
        reset(&mut out.excluded, if border.is_some() { n } else { 0 }, false);
        if let Some(tolerance) = border {
            let (w, h) = (image.width as f32 + tolerance, image.height as f32 + tolerance);
            for (e, b) in out.excluded.iter_mut().zip(boxes) {
                // Written so that NaN anchors count as outside.
                *e = !(b.x1 >= -tolerance && b.y1 >= -tolerance && b.x2 <= w && b.y2 <= h);
            }
        }

        // The one IoU pass, per GT over the anchors that overlap it: per-anchor max/argmax, per-GT
        // best and the anchors tying with it (only IoU > 0 is kept: a best of 0 forces everything).
        let eps = f64::from(c.tie_epsilon);
        let mut ious: Vec<T> = Vec::new();
        out.ties.resize_with(gt.len(), Default::default);
        for (g, q) in gt.iter().enumerate() {
            let query = Query::new(q);
            let (best, ties) = &mut out.ties[g];
            *best = 0.0;
            ties.clear();
            let (max_iou, argmax, excluded) = (&mut work_max, &mut out.argmax_gt, &out.excluded);
            self.candidates(q, |range| {
                let start = range.start;
                let range_best = soa.ious(range, &query, &mut ious).to_f64();
                if !excluded.is_empty() {
                    // An excluded anchor counts as IoU 0: it updates nothing and never ties.
                    for (j, iou) in ious.iter_mut().enumerate() {
                        if excluded[start + j] {
                            *iou = T::ZERO;
                        }
                    }
                }
                // Branch-free so that it vectorises. Strictly greater: on ties the lower GT index
                // (visited first) keeps the anchor, as argmax does.
                let (max_iou, argmax) = (
                    &mut max_iou[start..start + ious.len()],
                    &mut argmax[start..start + ious.len()],
                );
                for ((m, a), &iou) in max_iou.iter_mut().zip(argmax.iter_mut()).zip(&ious) {
                    let better = iou > *m;
                    *m = if better { iou } else { *m };
                    *a = if better { g as u32 } else { *a };
                }
                if range_best > 0.0 && range_best >= *best - eps {
                    if range_best > *best {
                        *best = range_best;
                        ties.retain(|&(_, t)| t >= range_best - eps);
                    }
                    // `best` is final for this range now: one fixed floor, a predictable branch.
                    let floor = *best - eps;
                    for (j, iou) in ious.iter().enumerate() {
                        let iou = iou.to_f64();
                        if iou >= floor {
                            ties.push(((start + j) as u32, iou));
                        }
                    }
                }
            });
        }

        out.max_iou.clear();
        out.max_iou.extend(work_max.iter().map(|v| v.to_f64()));
        *T::work_max(&mut out.work_max) = work_max;

        // Crowd boxes: anchors that may not be negative, or regions whose anchors are ignored.
        let (no_negative, ignored) = (&mut out.no_negative, &mut out.ignored);
        reset(no_negative, 0, false);
        reset(ignored, 0, false);
        if !crowd.is_empty() {
            match c.crowd {
                CrowdPolicy::NeverNegative { min_iou } => {
                    let min_iou = T::threshold(min_iou);
                    no_negative.resize(n, false);
                    for q in crowd {
                        let query = Query::new(q);
                        self.candidates(q, |range| {
                            range.for_each(|i| no_negative[i] |= soa.iou(i, &query) >= min_iou)
                        });
                    }
                }
                CrowdPolicy::IgnoreCovered { min_coverage } => {
                    ignored.resize(n, false);
                    for q in crowd {
                        self.candidates(q, |range| {
                            for i in range {
                                let a = &boxes[i];
                                // Written so that empty or NaN anchors are not covered.
                                ignored[i] |= a.intersection_area(q) >= min_coverage * a.area()
                                    && !a.is_empty();
                            }
                        });
                    }
                }
            }
        }

        // Threshold labels in one pass; forced positives override them (Matterport's order gives
        // the same result: negatives, then forced, then ≥ positive_iou).
        let (negative_iou, positive_iou) =
            (T::threshold(c.negative_iou).to_f64(), T::threshold(c.positive_iou).to_f64());
        out.labels.clear();
        out.labels.extend((0..n).map(|i| {
            let m = out.max_iou[i];
            if out.excluded.get(i).copied().unwrap_or(false) {
                AnchorMatch::Ignored
            } else if m >= positive_iou {
                AnchorMatch::Positive { gt: out.argmax_gt[i] }
            } else if m < negative_iou && !out.no_negative.get(i).copied().unwrap_or(false) {
                AnchorMatch::Negative
            } else {
                AnchorMatch::Ignored
            }
        }));
        if c.force_best_anchors {
            self.force_best(soa, gt, out);
        }
        for (label, &ignored) in out.labels.iter_mut().zip(&out.ignored) {
            if ignored {
                *label = AnchorMatch::Ignored;
            }
        }
    }

    /// Every anchor whose IoU with GT `g` reaches `best[g] − tie_epsilon` becomes positive.
    fn force_best<T: Real>(&self, soa: &SoaAnchors<T>, gt: &[Bbox], out: &mut Matches) {
        let c = &self.config;
        let min_forced = T::threshold(c.min_forced_iou).to_f64();
        let eps = f64::from(c.tie_epsilon);
        let forcing_gt = c.forced_target == ForcedTarget::ForcingGt;
        reset(&mut out.forced_iou, if forcing_gt { self.anchors.len() } else { 0 }, -1.0);
        let mut ties = std::mem::take(&mut out.ties);
        for (g, (q, (best, tied))) in gt.iter().zip(&mut ties).enumerate() {
            if *best < min_forced {
                continue;
            }
            let mut force = |i: usize, iou: f64| {
                if out.excluded.get(i).copied().unwrap_or(false) {
                    return;
                }
                let target = if !forcing_gt {
                    out.argmax_gt[i]
                } else if iou > out.forced_iou[i] {
                    // The forcing GT this anchor overlaps most (earlier GT on ties) wins.
                    out.forced_iou[i] = iou;
                    g as u32
                } else {
                    return;
                };
                out.labels[i] = AnchorMatch::Positive { gt: target };
            };
            if *best - eps <= 0.0 {
                // Every anchor ties with a best IoU of (about) zero: the peers force them all.
                let query = Query::new(q);
                for i in 0..soa.len() {
                    force(i, soa.iou(i, &query).to_f64());
                }
            } else {
                let floor = *best - eps;
                tied.iter()
                    .filter(|(_, iou)| *iou >= floor)
                    .for_each(|&(i, iou)| force(i as usize, iou));
            }
        }
        out.ties = ties;
    }
}
