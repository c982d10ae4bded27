//! The one error type of this crate.

use rpn_anchors::Bbox;

/// Everything that can go wrong while building RPN targets. Messages name the offending box,
/// field or count and its value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// A ground-truth (or crowd / ignore) box with a non-finite coordinate or a non-positive side.
    #[error(
        "{kind} box {index} is invalid: x1={} y1={} x2={} y2={} (needs finite coordinates, x2 > x1 and y2 > y1)",
        bbox.x1, bbox.y1, bbox.x2, bbox.y2
    )]
    InvalidBox {
        /// `"GT"` or `"crowd"`.
        kind: &'static str,
        /// Index of the box in the slice that was passed.
        index: usize,
        /// The box as passed.
        bbox: Bbox,
    },
    /// A configuration value is out of its domain.
    #[error("target config: `{field}` {requirement}, got {value}")]
    InvalidConfig {
        /// Name of the field.
        field: &'static str,
        /// What it must satisfy.
        requirement: &'static str,
        /// The value that was passed, formatted.
        value: String,
    },
    /// More positive anchors than rows in Matterport's fixed-size `rpn_bbox` (sample first).
    #[error("{positives} positive anchors do not fit in {rows} rpn_bbox rows; sample the anchors first (at most {rows} · positive_fraction positives)")]
    TooManyPositives {
        /// Positives in the match.
        positives: usize,
        /// Rows available.
        rows: usize,
    },
    /// A slice whose length must equal the number of anchors does not.
    #[error("`{buffer}` has length {actual}, expected {expected} (one per anchor)")]
    LengthMismatch {
        /// Argument name.
        buffer: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// More ground-truth boxes than a `u32` index can name.
    #[error("{count} GT boxes is more than 2^32 − 1")]
    TooManyBoxes {
        /// Number of boxes passed.
        count: usize,
    },
}

impl TargetError {
    pub(crate) fn config(
        field: &'static str,
        requirement: &'static str,
        value: impl std::fmt::Debug,
    ) -> Self {
        Self::InvalidConfig { field, requirement, value: format!("{value:?}") }
    }

    pub(crate) fn check_len(
        buffer: &'static str,
        expected: usize,
        actual: usize,
    ) -> Result<(), Self> {
        if expected == actual {
            Ok(())
        } else {
            Err(Self::LengthMismatch { buffer, expected, actual })
        }
    }
}
