//! The one error type of this crate.

/// Everything that can go wrong in `rpn-anchors`.
///
/// Every variant names the offending field or buffer and carries the value, so a message such as
/// ``anchor config: `levels[2].stride` must be a finite number > 0, got -8`` says what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// A configuration value is out of its domain (non-positive stride, empty size list, NaN ratio…).
    #[error("anchor config: `{field}` {requirement}, got {value}")]
    InvalidConfig {
        /// Path of the field inside the config, e.g. `levels[2].stride`.
        field: String,
        /// What the field must satisfy, e.g. "must be a finite number > 0".
        requirement: &'static str,
        /// The value that was passed, formatted.
        value: String,
    },
    /// An image size with a zero side.
    #[error("image size must have both sides > 0, got {height}x{width} (height x width)")]
    EmptyImage {
        /// Height in pixels.
        height: u32,
        /// Width in pixels.
        width: u32,
    },
    /// The number of feature-map shapes passed does not match the number of pyramid levels.
    #[error("expected one feature shape per pyramid level ({levels}), got {shapes}")]
    FeatureShapeCount {
        /// Levels in the config.
        levels: usize,
        /// Shapes passed.
        shapes: usize,
    },
    /// Two slices that must have matching lengths do not.
    #[error("`{buffer}` has length {actual}, expected {expected}")]
    LengthMismatch {
        /// Name of the argument whose length is wrong.
        buffer: &'static str,
        /// Length it must have.
        expected: usize,
        /// Length it has.
        actual: usize,
    },
}

impl AnchorError {
    pub(crate) fn config(
        field: impl Into<String>,
        requirement: &'static str,
        value: impl std::fmt::Debug,
    ) -> Self {
        Self::InvalidConfig { field: field.into(), requirement, value: format!("{value:?}") }
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
