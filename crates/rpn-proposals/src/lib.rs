//! RPN proposals over plain slices: pre-NMS top-k, decode, clip, minimum size, greedy NMS and
//! fixed-size outputs, with presets reproducing Matterport, torchvision and detectron2.
//!
//! - [`generate_proposals`] runs the whole stage for one image and returns boxes **with** their
//!   scores and levels ([`Proposals`]); [`ProposalConfig`] has named presets
//!   ([`ProposalConfig::matterport_inference`], [`ProposalConfig::torchvision_test`], …).
//! - [`nms`] and [`batched_nms`] are usable alone: exact greedy NMS (IoU strictly greater than the
//!   threshold suppresses; equal scores by lower index; empty boxes have IoU 0), output-sensitive
//!   (checks candidates against the kept boxes and stops at the cap), allocation-free with
//!   [`nms_into`] and a reused [`NmsScratch`].
//!
//! No tensors and no candle: the crate depends on `rpn-anchors` only.

mod error;
mod layer;
mod nms;
#[cfg(test)]
mod tests;
mod topk;

pub use error::ProposalError;
pub use layer::{
    generate_proposals, generate_proposals_with, Clip, MinSize, NmsScope, NonFinite, Objectness,
    PreNmsTopK, Proposal, ProposalConfig, ProposalScratch, Proposals,
};
pub use nms::{batched_nms, nms, nms_into, NmsScratch};
