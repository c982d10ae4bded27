//! The facade's error type: one enum for everything a pipeline can hit, each variant naming what
//! was being read or computed.

use std::path::PathBuf;

/// Errors of training, evaluation, checkpoints and data sets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// candle failed (shapes, devices, backward pass).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Anchor generation rejected the configuration or image size.
    #[error(transparent)]
    Anchors(#[from] rpn_anchors::AnchorError),
    /// Target assignment rejected a box or configuration.
    #[error(transparent)]
    Targets(#[from] rpn_targets::TargetError),
    /// Proposal generation rejected its inputs.
    #[error(transparent)]
    Proposals(#[from] rpn_proposals::ProposalError),
    /// A data set file is missing or malformed.
    #[error("{}: {message}", path.display())]
    Data {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A checkpoint or weights file cannot be read or written.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is out of range; the message names it.
    #[error("{0}")]
    Config(String),
}
