//! The facade's error type: one enum for everything a pipeline can hit. Each variant names what
//! was being read or checked and keeps the lower crate's error as its `source`, so a caller can
//! match on the kind and a CLI can print the whole chain.

use std::path::PathBuf;

/// Errors of loading, proposing, training, evaluation, checkpoints and data sets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// No architecture of that name.
    #[error(transparent)]
    UnknownArchitecture(#[from] crate::UnknownArchitecture),
    /// An input file is not a regular file or cannot be read.
    #[error(transparent)]
    Input(#[from] rpn_io::InputError),
    /// An output file could not be written (the old one, if any, is untouched).
    #[error(transparent)]
    Output(#[from] rpn_io::OutputError),
    /// A file could not be read or written.
    #[error("{}: {operation}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`cannot read`, `cannot write`).
        operation: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A weights file does not fit the architecture (missing tensor, wrong shape).
    #[error("{}: not {arch} weights", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// The architecture it was loaded for.
        arch: &'static str,
        /// Which tensor and both shapes.
        source: Box<rpn_model::WeightsError>,
    },
    /// A data set file is missing or malformed.
    #[error("{}: {message}", path.display())]
    Data {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A checkpoint or weights file is malformed (not safetensors, bad metadata).
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An image could not be decoded or converted.
    #[error("{}: cannot decode the image", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: Box<image::ImageError>,
    },
    /// The architecture cannot do what was asked (train seed 002, propose with VGG16 alone, …).
    #[error("{arch}: {what}")]
    Unsupported {
        /// The architecture.
        arch: &'static str,
        /// What it cannot do, and what to use instead.
        what: String,
    },
    /// A value is out of its range; names the value, what it got and what it needs.
    #[error("{name} {value} is out of range: {requirement}")]
    InvalidValue {
        /// What the value is (`learning rate`, `input side`, …).
        name: &'static str,
        /// The value given, formatted.
        value: String,
        /// What it must satisfy.
        requirement: String,
    },
    /// Training produced a non-finite loss or gradient; the weights are those of the last good
    /// step and nothing was saved from the failed one.
    #[error(
        "training diverged: {what}; nothing from this step was saved (lower the learning rate, \
         or clip the gradients' norm)"
    )]
    Diverged {
        /// Which step and value.
        what: String,
    },
    /// Running this input would need more memory than the budget: refused before allocating.
    #[error(
        "{what} would need about {needed} MiB, over the memory budget of {budget} MiB \
         (use a smaller input size, or raise the budget with {env}=BYTES)",
        needed = needed_bytes >> 20,
        budget = budget_bytes >> 20,
        env = crate::MEMORY_BUDGET_ENV
    )]
    OverMemoryBudget {
        /// The work refused (`seed001 on a 4000×3000 input, batch 1`).
        what: String,
        /// The estimate.
        needed_bytes: u64,
        /// The budget.
        budget_bytes: u64,
    },
}

impl Error {
    /// An [`Error::InvalidValue`].
    pub fn invalid(
        name: &'static str,
        value: impl std::fmt::Display,
        requirement: impl Into<String>,
    ) -> Self {
        Self::InvalidValue { name, value: value.to_string(), requirement: requirement.into() }
    }

    /// An [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, operation: &'static str, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), operation, source }
    }
}
