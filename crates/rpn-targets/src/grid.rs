//! A spatial index over an anchor pyramid, so that matching touches only anchors that overlap a box.
//!
//! Anchors of a level form an `H × W × A` grid (the global order level → y → x → anchor). For each
//! column we keep the smallest `x1` and largest `x2` of its anchors, for each row the smallest `y1`
//! and largest `y2`. An anchor that overlaps a box with positive area lies in a column whose
//! extent overlaps the box and in a row whose extent does, so those rows × columns are a superset
//! of the overlapping anchors: exact results, no geometric assumption, and no `G × A` matrix.

use std::ops::Range;

use rpn_anchors::{Anchors, Bbox};

#[derive(Debug, Clone)]
struct LevelIndex {
    start: usize,
    width: usize,
    per_cell: usize,
    col_lo: Vec<f32>,
    col_hi: Vec<f32>,
    row_lo: Vec<f32>,
    row_hi: Vec<f32>,
    /// Extents grow with the index (true for every generated pyramid): ranges by binary search.
    monotonic: bool,
}

/// Per-level row/column extents of an [`Anchors`] pyramid.
#[derive(Debug, Clone)]
pub(crate) struct AnchorGrid {
    levels: Vec<LevelIndex>,
}

/// `lo` must be a non-decreasing sequence with `hi` as well for binary search to be valid.
fn non_decreasing(v: &[f32]) -> bool {
    v.windows(2).all(|w| w[0] <= w[1])
}

impl AnchorGrid {
    pub(crate) fn new(anchors: &Anchors) -> Self {
        let levels = anchors
            .levels()
            .iter()
            .map(|level| {
                let (h, w, a) = (
                    level.shape.height as usize,
                    level.shape.width as usize,
                    level.anchors_per_cell,
                );
                let mut col_lo = vec![f32::INFINITY; w];
                let mut col_hi = vec![f32::NEG_INFINITY; w];
                let mut row_lo = vec![f32::INFINITY; h];
                let mut row_hi = vec![f32::NEG_INFINITY; h];
                let boxes = &anchors.boxes()[level.range()];
                for y in 0..h {
                    for x in 0..w {
                        for b in &boxes[(y * w + x) * a..(y * w + x + 1) * a] {
                            // f32::min/max skip NaN: a NaN anchor has IoU 0 and never needs visiting.
                            col_lo[x] = col_lo[x].min(b.x1);
                            col_hi[x] = col_hi[x].max(b.x2);
                            row_lo[y] = row_lo[y].min(b.y1);
                            row_hi[y] = row_hi[y].max(b.y2);
                        }
                    }
                }
                let monotonic =
                    [&col_lo, &col_hi, &row_lo, &row_hi].iter().all(|v| non_decreasing(v));
                LevelIndex {
                    start: level.start,
                    width: w,
                    per_cell: a,
                    col_lo,
                    col_hi,
                    row_lo,
                    row_hi,
                    monotonic,
                }
            })
            .collect();
        Self { levels }
    }

    /// Calls `f(start..end)` for contiguous runs of anchors (one per grid row and level) holding
    /// every anchor that may overlap `q` with positive area (and possibly a few that do not), in
    /// ascending index order within a level.
    #[inline]
    pub(crate) fn for_each_candidate(&self, q: &Bbox, mut f: impl FnMut(Range<usize>)) {
        for level in &self.levels {
            let cols = level.span(&level.col_lo, &level.col_hi, q.x1, q.x2);
            let rows = level.span(&level.row_lo, &level.row_hi, q.y1, q.y2);
            for y in rows {
                let row_start = level.start + y * level.width * level.per_cell;
                if !cols.is_empty() {
                    f(row_start + cols.start * level.per_cell
                        ..row_start + cols.end * level.per_cell);
                }
            }
        }
    }
}

impl LevelIndex {
    /// Indices `i` with `hi[i] > q_lo && lo[i] < q_hi`, as one range (a superset when not monotonic).
    fn span(&self, lo: &[f32], hi: &[f32], q_lo: f32, q_hi: f32) -> Range<usize> {
        if !self.monotonic {
            // Rare (hand-made anchors): first and last qualifying index bound every qualifying one.
            let ok = |i: &usize| hi[*i] > q_lo && lo[*i] < q_hi;
            let first = (0..lo.len()).find(ok);
            let last = (0..lo.len()).rev().find(ok);
            return match (first, last) {
                (Some(a), Some(b)) => a..b + 1,
                _ => 0..0,
            };
        }
        let start = hi.partition_point(|&v| v <= q_lo);
        let end = lo.partition_point(|&v| v < q_hi);
        start..end.max(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpn_anchors::{AnchorConfig, ImageSize};

    #[test]
    fn candidates_cover_every_overlapping_anchor() {
        let anchors =
            AnchorConfig::matterport_fpn().generate(ImageSize::new(128, 192).unwrap()).unwrap();
        let grid = AnchorGrid::new(&anchors);
        for q in [
            Bbox::new(10.0, 20.0, 60.0, 50.0),
            Bbox::new(-40.0, -40.0, -39.0, -39.0),
            Bbox::new(0.0, 0.0, 192.0, 128.0),
            Bbox::new(500.0, 500.0, 600.0, 600.0),
        ] {
            let mut seen = vec![false; anchors.len()];
            grid.for_each_candidate(&q, |r| r.for_each(|i| seen[i] = true));
            for (i, a) in anchors.boxes().iter().enumerate() {
                if a.intersection_area(&q) > 0.0 {
                    assert!(seen[i], "anchor {i} {a:?} overlaps {q:?} but was not visited");
                }
            }
        }
    }
}
