//! IoU of one box against many, and of many against many, into a caller buffer.
//!
//! Same values as [`Bbox::iou`] (same expression, same operation order), computed with the
//! areas hoisted out of the inner loop. Callers own the output buffer so a matcher can reuse it
//! across images without allocating.

use crate::bbox::iou_from_parts;
use crate::{AnchorError, Bbox};

/// `out[j] = IoU(target, boxes[j])`.
///
/// `out.len()` must equal `boxes.len()`; the error names both lengths otherwise.
///
/// ```
/// # use rpn_anchors::{iou_one_to_many, Bbox};
/// let gt = Bbox::new(0.0, 0.0, 10.0, 10.0);
/// let anchors = [Bbox::new(0.0, 0.0, 10.0, 10.0), Bbox::new(5.0, 0.0, 15.0, 10.0)];
/// let mut out = [0.0; 2];
/// iou_one_to_many(&gt, &anchors, &mut out).unwrap();
/// assert_eq!(out[0], 1.0);
/// ```
pub fn iou_one_to_many(target: &Bbox, boxes: &[Bbox], out: &mut [f32]) -> Result<(), AnchorError> {
    AnchorError::check_len("out", boxes.len(), out.len())?;
    if target.is_empty() {
        out.fill(0.0);
        return Ok(());
    }
    let target_area = target.area();
    for (o, b) in out.iter_mut().zip(boxes) {
        *o = if b.is_empty() {
            0.0
        } else {
            iou_from_parts(target.intersection_area(b), target_area, b.area())
        };
    }
    Ok(())
}

/// `out[i · cols.len() + j] = IoU(rows[i], cols[j])`: a row-major `[rows.len(), cols.len()]` matrix,
/// the layout of torchvision's `box_iou(rows, cols)` and Matterport's `compute_overlaps(rows, cols)`.
///
/// `out.len()` must equal `rows.len() · cols.len()`.
///
/// ```
/// # use rpn_anchors::{iou_matrix, Bbox};
/// let a = [Bbox::new(0.0, 0.0, 2.0, 2.0)];
/// let b = [Bbox::new(0.0, 0.0, 2.0, 2.0), Bbox::new(1.0, 0.0, 3.0, 2.0)];
/// let mut out = vec![0.0; a.len() * b.len()];
/// iou_matrix(&a, &b, &mut out).unwrap();
/// assert_eq!(out, [1.0, 1.0 / 3.0]);
/// ```
pub fn iou_matrix(rows: &[Bbox], cols: &[Bbox], out: &mut [f32]) -> Result<(), AnchorError> {
    let expected = rows.len().saturating_mul(cols.len());
    AnchorError::check_len("out", expected, out.len())?;
    if cols.is_empty() {
        return Ok(());
    }
    for (row, out_row) in rows.iter().zip(out.chunks_exact_mut(cols.len())) {
        iou_one_to_many(row, cols, out_row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_buffer_length_is_an_error_naming_both_lengths() {
        let boxes = [Bbox::new(0.0, 0.0, 1.0, 1.0); 3];
        let mut out = [0.0; 2];
        let err = iou_matrix(&boxes, &boxes, &mut out).unwrap_err();
        assert_eq!(err.to_string(), "`out` has length 2, expected 9");
    }

    #[test]
    fn batched_equals_scalar() {
        let boxes = [
            Bbox::new(0.0, 0.0, 3.0, 5.0),
            Bbox::new(1.5, 1.0, 4.0, 9.0),
            Bbox::new(2.0, 2.0, 2.0, 9.0),
            Bbox::new(-1.0, -3.0, 0.5, 0.25),
        ];
        let mut out = vec![0.0; 16];
        iou_matrix(&boxes, &boxes, &mut out).unwrap();
        for (i, a) in boxes.iter().enumerate() {
            for (j, b) in boxes.iter().enumerate() {
                assert_eq!(out[i * 4 + j].to_bits(), a.iou(b).to_bits(), "({i}, {j})");
            }
        }
    }
}
