//! RPN training targets: which anchors are foreground, which background, and where the
//! foreground ones should move. CPU only, over slices, no candle: it runs in data loaders.
//!
//! 1. [`Matcher`]: labels anchors against an image's GT boxes (IoU ≥ 0.7 positive, < 0.3
//!    negative, each GT's best anchors forced positive), the rule of Matterport's
//!    `build_rpn_targets` and torchvision's `Matcher(0.7, 0.3, allow_low_quality_matches=True)`,
//!    plus options the peers lack (tie tolerance, minimum forced IoU, crowd/ignore regions,
//!    border policy, images without GT). Memory is `O(A + G)`, never a `G × A` matrix.
//! 2. [`Sampler`]: at most 256 anchors, at most half positive, with an RNG *you* pass
//!    ([`seeded_rng`]): the same seed gives the same sample everywhere.
//! 3. [`matterport_targets`] / [`torchvision_targets`]: deltas of the positives from an
//!    [`rpn_anchors::BoxCoder`], in Matterport's packed `rpn_bbox [256, 4]` or torchvision's
//!    per-anchor layout.
//!
//! [`TargetBuilder`] runs all three per image. Match states are an enum ([`AnchorMatch`]), with
//! conversions to Matterport's `{1, −1, 0}` and torchvision's `{1.0, 0.0, −1.0}`.

mod error;
mod grid;
mod matcher;
mod sampler;
mod soa;
mod targets;
#[cfg(test)]
mod tests;

pub use error::TargetError;
pub use matcher::{
    AnchorMatch, BorderPolicy, CrowdPolicy, ForcedTarget, Matcher, MatcherConfig, Matches,
};
pub use sampler::{seeded_rng, SampleCounts, Sampler, SamplerConfig};
pub use targets::{
    matterport_targets, matterport_targets_into, torchvision_targets, torchvision_targets_into,
    MatterportTargets, TargetBuilder, TorchvisionTargets,
};
