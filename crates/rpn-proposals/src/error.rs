//! The one error type of this crate.

/// Everything that can go wrong while generating proposals; messages name the bad value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalError {
    /// A configuration value is out of its domain.
    #[error("proposal config: `{field}` {requirement}, got {value}")]
    InvalidConfig {
        /// Name of the field.
        field: &'static str,
        /// What it must satisfy.
        requirement: &'static str,
        /// The value passed, formatted.
        value: String,
    },
    /// Two inputs that must have one entry per anchor (or per box) do not.
    #[error("`{buffer}` has length {actual}, expected {expected}")]
    LengthMismatch {
        /// Argument name.
        buffer: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// A non-finite score or decoded box under [`crate::NonFinite::Error`].
    #[error("anchor {anchor} has a non-finite {what}: {value} (training has likely diverged; NonFinite::Drop skips such anchors)")]
    NonFinite {
        /// Anchor index.
        anchor: usize,
        /// `"objectness"` or `"decoded box"`.
        what: &'static str,
        /// The offending value, formatted.
        value: String,
    },
    /// More anchors than a `u32` index can name.
    #[error("{count} anchors is more than 2^32 − 1")]
    TooManyAnchors {
        /// Number of anchors passed.
        count: usize,
    },
}

impl ProposalError {
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
