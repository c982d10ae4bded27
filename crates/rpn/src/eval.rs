//! Proposal recall: the measure of an RPN on its own (before any second stage).
//!
//! For each ground-truth box, the best IoU among the top `k` proposals of its image; recall at
//! IoU `t` is the share of GT boxes whose best IoU is ≥ `t`; average recall (AR@k) is the mean of
//! the recalls at `t = 0.50, 0.55, …, 0.95` (COCO's proposal AR, Hosang et al. 2016). Crowd boxes
//! are not counted.

use rpn_anchors::{iou_one_to_many, Bbox};

/// The `k`s reported.
pub const TOP_KS: [usize; 3] = [10, 100, 1000];

/// IoU thresholds of AR: 0.50 to 0.95 in steps of 0.05.
pub fn ar_thresholds() -> impl Iterator<Item = f32> {
    (0..10).map(|i| 0.5 + 0.05 * i as f32)
}

/// Collects best IoUs image by image.
#[derive(Debug, Clone, Default)]
pub struct RecallAccumulator {
    /// `best[j][g]`: best IoU of GT `g` (over all images) among the top `TOP_KS[j]` proposals.
    best: [Vec<f32>; 3],
    images: usize,
}

impl RecallAccumulator {
    /// Adds one image: `proposals` ranked best first, its GT boxes.
    pub fn add(&mut self, proposals: &[Bbox], gt: &[Bbox]) {
        self.images += 1;
        let mut best = vec![0f32; gt.len()];
        let mut ious = Vec::new();
        let mut seen = 0;
        for (j, &k) in TOP_KS.iter().enumerate() {
            // Extend the running maximum with proposals `seen..k` only.
            let upto = k.min(proposals.len());
            for (g, gt_box) in gt.iter().enumerate() {
                if upto > seen {
                    ious.clear();
                    ious.resize(upto - seen, 0.0);
                    // `ious` has one slot per proposal, the only error case.
                    let _ = iou_one_to_many(gt_box, &proposals[seen..upto], &mut ious);
                    best[g] = ious.iter().copied().fold(best[g], f32::max);
                }
            }
            seen = seen.max(upto);
            self.best[j].extend_from_slice(&best);
        }
    }

    /// The numbers so far.
    pub fn report(&self) -> RecallReport {
        let gt = self.best[0].len();
        let recall = |j: usize, t: f32| {
            if gt == 0 {
                0.0
            } else {
                self.best[j].iter().filter(|&&v| v >= t).count() as f64 / gt as f64
            }
        };
        let ar = |j: usize| ar_thresholds().map(|t| recall(j, t)).sum::<f64>() / 10.0;
        RecallReport {
            images: self.images,
            gt_boxes: gt,
            recall_iou0_5_top10: recall(0, 0.5),
            recall_iou0_5_top100: recall(1, 0.5),
            recall_iou0_5_top1000: recall(2, 0.5),
            recall_iou0_7_top10: recall(0, 0.7),
            recall_iou0_7_top100: recall(1, 0.7),
            recall_iou0_7_top1000: recall(2, 0.7),
            ar_top10: ar(0),
            ar_top100: ar(1),
            ar_top1000: ar(2),
        }
    }
}

/// Recall numbers; serialised with the key names scripts read (`recall_iou0.5_top100`, …).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecallReport {
    /// Images evaluated.
    pub images: usize,
    /// Non-crowd GT boxes in them.
    pub gt_boxes: usize,
    /// Recall at IoU 0.5 of the top 10 proposals.
    #[serde(rename = "recall_iou0.5_top10")]
    pub recall_iou0_5_top10: f64,
    /// Recall at IoU 0.5 of the top 100 proposals.
    #[serde(rename = "recall_iou0.5_top100")]
    pub recall_iou0_5_top100: f64,
    /// Recall at IoU 0.5 of the top 1000 proposals.
    #[serde(rename = "recall_iou0.5_top1000")]
    pub recall_iou0_5_top1000: f64,
    /// Recall at IoU 0.7 of the top 10 proposals.
    #[serde(rename = "recall_iou0.7_top10")]
    pub recall_iou0_7_top10: f64,
    /// Recall at IoU 0.7 of the top 100 proposals.
    #[serde(rename = "recall_iou0.7_top100")]
    pub recall_iou0_7_top100: f64,
    /// Recall at IoU 0.7 of the top 1000 proposals.
    #[serde(rename = "recall_iou0.7_top1000")]
    pub recall_iou0_7_top1000: f64,
    /// AR@10 (IoU 0.5:0.95).
    pub ar_top10: f64,
    /// AR@100 (IoU 0.5:0.95).
    pub ar_top100: f64,
    /// AR@1000 (IoU 0.5:0.95).
    pub ar_top1000: f64,
}

impl std::fmt::Display for RecallReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} images, {} GT boxes", self.images, self.gt_boxes)?;
        writeln!(f, "            top 10   top 100  top 1000")?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, v: [f64; 3]| {
            writeln!(f, "{name:<10} {:>7.3}  {:>7.3}  {:>7.3}", v[0], v[1], v[2])
        };
        row(
            f,
            "recall@0.5",
            [self.recall_iou0_5_top10, self.recall_iou0_5_top100, self.recall_iou0_5_top1000],
        )?;
        row(
            f,
            "recall@0.7",
            [self.recall_iou0_7_top10, self.recall_iou0_7_top100, self.recall_iou0_7_top1000],
        )?;
        write!(
            f,
            "AR         {:>7.3}  {:>7.3}  {:>7.3}",
            self.ar_top10, self.ar_top100, self.ar_top1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x1: f32, y1: f32, x2: f32, y2: f32) -> Bbox {
        Bbox::new(x1, y1, x2, y2)
    }

    #[test]
    fn recall_counts_each_gt_once_per_top_k() {
        let mut acc = RecallAccumulator::default();
        let gt = [b(0., 0., 10., 10.), b(20., 20., 30., 30.)];
        // Proposal 0 matches GT 0 exactly; GT 1 is only found at rank 50 with IoU 0.64.
        let mut proposals = vec![b(0., 0., 10., 10.)];
        proposals.extend((1..50).map(|_| b(100., 100., 101., 101.)));
        proposals.push(b(20., 20., 28., 28.));
        acc.add(&proposals, &gt);
        let r = acc.report();
        assert_eq!((r.images, r.gt_boxes), (1, 2));
        assert_eq!(r.recall_iou0_5_top10, 0.5);
        assert_eq!(r.recall_iou0_5_top100, 1.0);
        assert_eq!(r.recall_iou0_7_top100, 0.5);
        assert_eq!(r.recall_iou0_5_top1000, 1.0);
        // GT 0 counts at all ten thresholds, GT 1 at 0.50, 0.55, 0.60 (IoU 0.64).
        assert!((r.ar_top100 - (10.0 + 3.0) / 20.0).abs() < 1e-12);
        assert!((r.ar_top10 - 10.0 / 20.0).abs() < 1e-12);
    }

    #[test]
    fn images_without_proposals_or_gt() {
        let mut acc = RecallAccumulator::default();
        acc.add(&[], &[b(0., 0., 4., 4.)]);
        acc.add(&[b(0., 0., 4., 4.)], &[]);
        let r = acc.report();
        assert_eq!((r.images, r.gt_boxes), (2, 1));
        assert_eq!(r.ar_top1000, 0.0);
        assert_eq!(RecallAccumulator::default().report().recall_iou0_5_top100, 0.0);
    }

    #[test]
    fn json_keys_are_the_documented_ones() -> Result<(), serde_json::Error> {
        let json = serde_json::to_value(RecallAccumulator::default().report())?;
        for key in [
            "recall_iou0.5_top100",
            "recall_iou0.7_top100",
            "ar_top100",
            "ar_top1000",
            "images",
            "gt_boxes",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        Ok(())
    }
}
