//! Box math for region proposal networks: no tensors, no candle, no allocation in hot paths.
//!
//! - [`Bbox`]: a `Copy` box in continuous pixel coordinates (`width = x2 − x1`, no +1), with
//!   explicit conversions to Matterport's `(y1, x1, y2, x2)` and normalised layouts.
//! - [`iou_one_to_many`], [`iou_matrix`]: IoU into caller buffers; empty boxes give 0, never `NaN`.
//! - [`BoxCoder`]: deltas in Matterport's `(dy, dx, log dh, log dw) / std` or torchvision's
//!   `(dx, dy, dw, dh) · weights` layout; the layout is part of the coder, never guessed.
//! - [`AnchorConfig`]: anchor pyramids in the global order level → y → x → anchor, with named
//!   presets for Matterport, torchvision, detectron2 and the seed notebooks.
//!
//! ```
//! use rpn_anchors::{AnchorConfig, BoxCoder, ImageSize};
//!
//! let image = ImageSize::new(1024, 1024)?;
//! let anchors = AnchorConfig::matterport_fpn().generate(image)?;
//! let coder = BoxCoder::matterport();
//! let gt = rpn_anchors::Bbox::new(100.0, 120.0, 180.0, 260.0);
//! let deltas = coder.encode(&anchors.boxes()[10_000], &gt);
//! let back = coder.decode(&anchors.boxes()[10_000], deltas);
//! assert!((back.y2 - gt.y2).abs() < 1e-3);
//! # Ok::<(), rpn_anchors::AnchorError>(())
//! ```
//!
//! Every conversion, delta formula and anchor rule reproduces a named peer; the parity tests in
//! the workspace's `tests` package compare against fixtures produced by torchvision and
//! Matterport's own code.

mod bbox;
mod coder;
#[cfg(target_arch = "x86_64")]
mod coder_avx2;
mod error;
mod fastmath;
mod generator;
mod iou;
#[cfg(test)]
mod proptests;

pub use bbox::{Bbox, ImageSize, NormalizedBox};
pub use coder::{BoxCoder, DeltaLayout, DEFAULT_SCALE_CLAMP, MATTERPORT_RPN_STD_DEV};
pub use error::AnchorError;
pub use generator::{
    AnchorConfig, AnchorLevel, Anchors, CellOrder, FeatureShape, PyramidLevel, RatioConvention,
    StrideRule,
};
pub use iou::{iou_matrix, iou_one_to_many};
