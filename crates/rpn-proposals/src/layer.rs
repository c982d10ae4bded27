//! The proposal stage: objectness + deltas + anchors → scored boxes.
//!
//! Steps, in this order, each set in [`ProposalConfig`]:
//! 1. drop anchors with a non-finite objectness (or fail, [`NonFinite`]);
//! 2. pre-NMS top-k **before** decoding, globally (Matterport) or per level (torchvision,
//!    detectron2): decoding only the survivors gives the same boxes as decoding everything;
//! 3. decode with the [`BoxCoder`]; drop (or fail on) non-finite boxes (detectron2's check);
//! 4. clip to the image or a window; 5. minimum size; 6. score threshold;
//! 7. greedy NMS across levels (Matterport) or per level (torchvision, detectron2), stopping at
//!    `post_nms_top_k`; 8. optional zero padding to a fixed count (Matterport's `proposal_count`).
//!
//! Unlike torchvision's `RegionProposalNetwork`, scores and levels are returned with the boxes.

use std::borrow::Cow;

use rpn_anchors::{Anchors, Bbox, BoxCoder, ImageSize};

use crate::nms::{begin, ordered_bits, visit_candidates, NmsScratch};
use crate::topk::top_k_into;
use crate::ProposalError;

/// Objectness of every anchor, in anchor order, in the form the head produced it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Objectness<'a> {
    /// One logit per anchor (torchvision, detectron2, mmdet): ranked by logit, score `sigmoid`.
    Logits(&'a [f32]),
    /// One probability per anchor (seed 002's sigmoid output, or Matterport's `rpn_class[…, 1]`).
    Probabilities(&'a [f32]),
    /// Matterport's `(background, foreground)` logits per anchor: score = softmax foreground.
    SoftmaxPairs(&'a [[f32; 2]]),
}

impl Objectness<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Logits(v) | Self::Probabilities(v) => v.len(),
            Self::SoftmaxPairs(v) => v.len(),
        }
    }

    /// The value candidates are ranked by (logit or probability).
    fn ranking(&self) -> Cow<'_, [f32]> {
        match *self {
            Self::Logits(v) | Self::Probabilities(v) => Cow::Borrowed(v),
            Self::SoftmaxPairs(v) => {
                Cow::Owned(v.iter().map(|&[bg, fg]| softmax_foreground(bg, fg)).collect())
            }
        }
    }

    /// The probability reported for anchor `i` whose ranking value is `rank`.
    fn score(&self, rank: f32) -> f32 {
        match self {
            Self::Logits(_) => 1.0 / (1.0 + (-rank).exp()),
            Self::Probabilities(_) | Self::SoftmaxPairs(_) => rank,
        }
    }
}

/// `softmax([bg, fg])[1]` as Keras computes it: `exp(x − max) / Σ exp(x − max)`.
fn softmax_foreground(bg: f32, fg: f32) -> f32 {
    let m = bg.max(fg);
    let (ebg, efg) = ((bg - m).exp(), (fg - m).exp());
    efg / (ebg + efg)
}

/// How many candidates survive to decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreNmsTopK {
    /// The best `k` over all levels together (Matterport's `PRE_NMS_LIMIT` 6000).
    Global(usize),
    /// The best `k` of each level (torchvision 2000 train / 1000 test, detectron2 FPN likewise).
    PerLevel(usize),
}

/// Where decoded boxes are clipped.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Clip {
    /// No clipping.
    None,
    /// To `[0, width] × [0, height]` of the image passed to [`generate_proposals`] (torchvision,
    /// detectron2: the real, unpadded image).
    Image,
    /// To a window in the anchors' coordinates, e.g. Matterport's `[0, 0, 1, 1]` of the padded
    /// image in normalised coordinates.
    Window(Bbox),
}

/// Minimum box size after clipping.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum MinSize {
    /// Keep every box (Matterport: "this reduces detection accuracy for small objects").
    None,
    /// `width ≥ s` and `height ≥ s` (torchvision `remove_small_boxes`, 1e-3).
    AtLeast(f32),
    /// `width > s` and `height > s` (detectron2 `nonempty`, 0).
    GreaterThan(f32),
}

/// What a non-finite objectness or decoded box does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NonFinite {
    /// Skip the anchor (detectron2 at inference).
    Drop,
    /// Return [`ProposalError::NonFinite`] naming the anchor (detectron2 in training).
    Error,
}

/// Whether boxes of different pyramid levels suppress each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NmsScope {
    /// One NMS over all levels (Matterport).
    AcrossLevels,
    /// Independent NMS per level (torchvision and detectron2 `batched_nms` by level).
    PerLevel,
}

/// The proposal stage's settings. Start from a preset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProposalConfig {
    /// Candidates kept before decoding.
    pub pre_nms_top_k: PreNmsTopK,
    /// How deltas are read.
    pub coder: BoxCoder,
    /// Non-finite objectness or boxes.
    pub non_finite: NonFinite,
    /// Clipping.
    pub clip: Clip,
    /// Minimum size.
    pub min_size: MinSize,
    /// Drop proposals whose score (probability) is below this (torchvision `score_thresh`, `>=` keeps).
    pub score_threshold: Option<f32>,
    /// NMS IoU threshold: a box is suppressed by IoU strictly greater than this.
    pub nms_iou: f32,
    /// NMS across or per level.
    pub nms_scope: NmsScope,
    /// Proposals kept per image after NMS.
    pub post_nms_top_k: usize,
    /// Zero-pad the output to this many rows (Matterport's fixed `proposal_count`).
    pub pad_to: Option<usize>,
}

impl ProposalConfig {
    /// Matterport `ProposalLayer` in training: global top 6000, decode with std
    /// (0.1, 0.1, 0.2, 0.2), clip to `[0, 1]`, NMS 0.7 across levels, 2000, zero-padded
    /// (`PRE_NMS_LIMIT`, `POST_NMS_ROIS_TRAINING`). Anchors must be in Matterport's normalised
    /// coordinates
    /// ([`rpn_anchors::AnchorConfig::generate_matterport_normalized`]).
    pub fn matterport_training() -> Self {
        Self {
            pre_nms_top_k: PreNmsTopK::Global(6000),
            coder: BoxCoder::matterport(),
            non_finite: NonFinite::Drop,
            clip: Clip::Window(Bbox::new(0.0, 0.0, 1.0, 1.0)),
            min_size: MinSize::None,
            score_threshold: None,
            nms_iou: 0.7,
            nms_scope: NmsScope::AcrossLevels,
            post_nms_top_k: 2000,
            pad_to: Some(2000),
        }
    }

    /// Matterport at inference: as training with 1000 proposals (`POST_NMS_ROIS_INFERENCE`).
    pub fn matterport_inference() -> Self {
        Self { post_nms_top_k: 1000, pad_to: Some(1000), ..Self::matterport_training() }
    }

    /// torchvision `RegionProposalNetwork` in training (`rpn_pre_nms_top_n_train` 2000 per level,
    /// `rpn_post_nms_top_n_train` 2000, NMS 0.7 per level, `min_size` 1e-3, `score_thresh` 0.0),
    /// pixel anchors, weights (1, 1, 1, 1) with the ln(1000/16) clamp, clip to the image.
    pub fn torchvision_train() -> Self {
        Self {
            pre_nms_top_k: PreNmsTopK::PerLevel(2000),
            coder: BoxCoder::torchvision_rpn(),
            non_finite: NonFinite::Drop,
            clip: Clip::Image,
            min_size: MinSize::AtLeast(1e-3),
            score_threshold: Some(0.0),
            nms_iou: 0.7,
            nms_scope: NmsScope::PerLevel,
            post_nms_top_k: 2000,
            pad_to: None,
        }
    }

    /// torchvision at test time: 1000 per level before NMS, 1000 after.
    pub fn torchvision_test() -> Self {
        Self {
            pre_nms_top_k: PreNmsTopK::PerLevel(1000),
            post_nms_top_k: 1000,
            ..Self::torchvision_train()
        }
    }

    /// detectron2 `find_top_rpn_proposals` with `Base-RCNN-FPN` at test time: 1000 per level,
    /// 1000 after per-level NMS 0.7, `MIN_SIZE` 0 (strict `>`), non-finite boxes dropped.
    pub fn detectron2_test() -> Self {
        Self {
            pre_nms_top_k: PreNmsTopK::PerLevel(1000),
            min_size: MinSize::GreaterThan(0.0),
            score_threshold: None,
            post_nms_top_k: 1000,
            ..Self::torchvision_train()
        }
    }

    /// detectron2 in training: 2000 per level, 1000 after NMS, and a non-finite box is an error
    /// ("Predicted boxes or scores contain Inf/NaN. Training has diverged.").
    pub fn detectron2_train() -> Self {
        Self {
            pre_nms_top_k: PreNmsTopK::PerLevel(2000),
            non_finite: NonFinite::Error,
            ..Self::detectron2_test()
        }
    }

    /// Checks the fields, naming the first bad one.
    pub fn validate(&self) -> Result<(), ProposalError> {
        if !(self.nms_iou >= 0.0) {
            return Err(ProposalError::config("nms_iou", "must be a number ≥ 0", self.nms_iou));
        }
        match self.min_size {
            MinSize::AtLeast(s) | MinSize::GreaterThan(s) if s.is_nan() => {
                return Err(ProposalError::config("min_size", "must not be NaN", s));
            }
            _ => {}
        }
        if let Some(t) = self.score_threshold.filter(|t| t.is_nan()) {
            return Err(ProposalError::config("score_threshold", "must not be NaN", t));
        }
        if let Some(p) = self.pad_to.filter(|&p| p < self.post_nms_top_k) {
            return Err(ProposalError::config("pad_to", "must be ≥ post_nms_top_k", p));
        }
        self.coder
            .validate()
            .map_err(|e| ProposalError::config("coder", "must be valid", e.to_string()))
    }
}

/// One proposal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    /// The decoded, clipped box, in the anchors' coordinates.
    pub bbox: Bbox,
    /// Objectness probability.
    pub score: f32,
    /// Pyramid level of the anchor it came from.
    pub level: usize,
    /// Index of that anchor.
    pub anchor: usize,
}

/// Proposals of one image, by decreasing score.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Proposals {
    /// The proposals, best first.
    pub items: Vec<Proposal>,
    /// Rows of the padded form ([`ProposalConfig::pad_to`], else `items.len()`).
    pub padded_len: usize,
}

impl Proposals {
    /// Boxes zero-padded to `padded_len` rows (Matterport's `rpn_rois` layout when the anchors
    /// are normalised: convert with `to_yxyx`).
    pub fn padded_boxes(&self) -> Vec<Bbox> {
        let mut v: Vec<Bbox> = self.items.iter().map(|p| p.bbox).collect();
        v.resize(self.padded_len.max(v.len()), Bbox::default());
        v
    }

    /// Scores zero-padded to `padded_len`.
    pub fn padded_scores(&self) -> Vec<f32> {
        let mut v: Vec<f32> = self.items.iter().map(|p| p.score).collect();
        v.resize(self.padded_len.max(v.len()), 0.0);
        v
    }
}

/// Reusable buffers for [`generate_proposals_with`]: one per thread avoids allocation per image.
#[derive(Debug, Clone, Default)]
pub struct ProposalScratch {
    keys: Vec<u64>,
    top: Vec<u32>,
    /// The top-k anchors and deltas gathered, and their decoded boxes (one `decode_slice`).
    top_anchors: Vec<Bbox>,
    top_deltas: Vec<[f32; 4]>,
    decoded: Vec<Bbox>,
    candidates: Vec<Bbox>,
    candidate_anchor: Vec<u32>,
    candidate_rank: Vec<f32>,
    candidate_level: Vec<u32>,
    visit: Vec<(u64, u32)>,
    keep: Vec<usize>,
    nms: NmsScratch,
}

/// Runs the proposal stage for one image. `deltas[i]` is in `config.coder`'s layout; `image` is
/// used by [`Clip::Image`].
///
/// ```
/// use rpn_anchors::{AnchorConfig, ImageSize};
/// use rpn_proposals::{generate_proposals, Objectness, ProposalConfig};
///
/// let image = ImageSize::new(64, 64)?;
/// let anchors = AnchorConfig::seed001().generate(image)?;
/// let logits: Vec<f32> = (0..anchors.len()).map(|i| (i % 97) as f32 / 10.0 - 5.0).collect();
/// let deltas = vec![[0.0; 4]; anchors.len()];
/// let config = ProposalConfig { post_nms_top_k: 100, ..ProposalConfig::torchvision_test() };
/// let proposals = generate_proposals(&config, &anchors, Objectness::Logits(&logits), &deltas, image)?;
/// assert!(proposals.items.len() <= 100);
/// assert!(proposals.items.windows(2).all(|w| w[0].score >= w[1].score));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn generate_proposals(
    config: &ProposalConfig,
    anchors: &Anchors,
    objectness: Objectness<'_>,
    deltas: &[[f32; 4]],
    image: ImageSize,
) -> Result<Proposals, ProposalError> {
    generate_proposals_with(
        config,
        anchors,
        objectness,
        deltas,
        image,
        &mut ProposalScratch::default(),
    )
}

/// [`generate_proposals`] with caller-owned scratch buffers.
pub fn generate_proposals_with(
    config: &ProposalConfig,
    anchors: &Anchors,
    objectness: Objectness<'_>,
    deltas: &[[f32; 4]],
    image: ImageSize,
    s: &mut ProposalScratch,
) -> Result<Proposals, ProposalError> {
    config.validate()?;
    let n = anchors.len();
    ProposalError::check_len("objectness", n, objectness.len())?;
    ProposalError::check_len("deltas", n, deltas.len())?;
    if u32::try_from(n).is_err() {
        return Err(ProposalError::TooManyAnchors { count: n });
    }
    let rank = objectness.ranking();
    if config.non_finite == NonFinite::Error {
        if let Some(i) = rank.iter().position(|v| !v.is_finite()) {
            return Err(ProposalError::NonFinite {
                anchor: i,
                what: "objectness",
                value: rank[i].to_string(),
            });
        }
    }

    // 1–2. Top-k of the finite scores, best first (per level: level by level).
    s.top.clear();
    let finite = |r: &[f32], i: usize| r[i].is_finite();
    match config.pre_nms_top_k {
        PreNmsTopK::Global(k) => {
            top_k_into(&rank, |i| finite(&rank, i), 0, k, &mut s.keys, &mut s.top)
        }
        PreNmsTopK::PerLevel(k) => {
            for level in anchors.levels() {
                let r = &rank[level.range()];
                top_k_into(r, |i| finite(r, i), level.start as u32, k, &mut s.keys, &mut s.top);
            }
        }
    }

    // 3–6. Decode, check, clip, size and score filters.
    let window = match config.clip {
        Clip::None => None,
        Clip::Image => Some(image.as_bbox()),
        Clip::Window(w) => Some(w),
    };
    for v in [&mut s.candidate_anchor, &mut s.candidate_level] {
        v.clear();
    }
    s.candidates.clear();
    s.candidate_rank.clear();
    // Gathered so that the coder decodes them as one slice (8 boxes per step with AVX2).
    s.top_anchors.clear();
    s.top_anchors.extend(s.top.iter().map(|&a| anchors.boxes()[a as usize]));
    s.top_deltas.clear();
    s.top_deltas.extend(s.top.iter().map(|&a| deltas[a as usize]));
    s.decoded.clear();
    s.decoded.resize(s.top.len(), Bbox::default());
    // The three lengths are equal by construction; the coder checks them anyway.
    config.coder.decode_slice(&s.top_anchors, &s.top_deltas, &mut s.decoded).map_err(|_| {
        ProposalError::LengthMismatch {
            buffer: "decoded boxes",
            expected: s.top.len(),
            actual: s.decoded.len(),
        }
    })?;
    for (&a, &decoded) in s.top.iter().zip(&s.decoded) {
        let i = a as usize;
        if !(decoded.x1.is_finite()
            && decoded.y1.is_finite()
            && decoded.x2.is_finite()
            && decoded.y2.is_finite())
        {
            match config.non_finite {
                NonFinite::Drop => continue,
                NonFinite::Error => {
                    let value = format!("{decoded:?} from deltas {:?}", deltas[i]);
                    return Err(ProposalError::NonFinite { anchor: i, what: "decoded box", value });
                }
            }
        }
        let b = window.map_or(decoded, |w| decoded.clip_to_window(&w));
        let big_enough = match config.min_size {
            MinSize::None => true,
            MinSize::AtLeast(m) => b.width() >= m && b.height() >= m,
            MinSize::GreaterThan(m) => b.width() > m && b.height() > m,
        };
        if !big_enough || config.score_threshold.is_some_and(|t| objectness.score(rank[i]) < t) {
            continue;
        }
        s.candidates.push(b);
        s.candidate_anchor.push(a);
        s.candidate_rank.push(rank[i]);
        s.candidate_level.push(anchors.level_of(i).unwrap_or(0) as u32);
    }

    // 7. NMS in decreasing rank (ties: lower anchor index), stopping at post_nms_top_k.
    let groups = match config.nms_scope {
        NmsScope::AcrossLevels => None,
        NmsScope::PerLevel => Some(s.candidate_level.as_slice()),
    };
    begin(&mut s.nms, &mut s.keep, groups);
    let (iou, cap) = (config.nms_iou, config.post_nms_top_k);
    if let PreNmsTopK::Global(_) = config.pre_nms_top_k {
        // One top-k list is already in visiting order, and filtering kept that order.
        visit_candidates(
            &s.candidates,
            0..s.candidates.len(),
            groups,
            iou,
            cap,
            &mut s.nms,
            &mut s.keep,
        );
    } else {
        // Per-level lists: merge by (rank desc, anchor asc). Keys are distinct (they hold the
        // anchor index), so an unstable sort is deterministic.
        s.visit.clear();
        s.visit.extend(
            s.candidate_rank.iter().zip(&s.candidate_anchor).enumerate().map(|(c, (&r, &a))| {
                ((u64::from(!ordered_bits(r)) << 32) | u64::from(a), c as u32)
            }),
        );
        s.visit.sort_unstable_by_key(|&(key, _)| key);
        let visit = s.visit.iter().map(|&(_, c)| c as usize);
        visit_candidates(&s.candidates, visit, groups, iou, cap, &mut s.nms, &mut s.keep);
    }

    // 8. Output, best first; padding is applied by `Proposals::padded_*`.
    let items = s
        .keep
        .iter()
        .map(|&c| {
            let anchor = s.candidate_anchor[c] as usize;
            Proposal {
                bbox: s.candidates[c],
                score: objectness.score(s.candidate_rank[c]),
                level: s.candidate_level[c] as usize,
                anchor,
            }
        })
        .collect::<Vec<_>>();
    let padded_len = config.pad_to.unwrap_or(items.len());
    Ok(Proposals { items, padded_len })
}
