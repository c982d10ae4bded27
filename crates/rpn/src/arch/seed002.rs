//! Seed 002: the notebook's RPN head on Keras' VGG16 `block5_conv3` features.
//!
//! The notebook stops at the head; what turns it into proposals is our documented choice, the
//! Faster R-CNN paper's: [`AnchorConfig::seed002`] (128/256/512 × 0.5/1/2 at stride 16),
//! `(dx, dy, dw, dh)` deltas without weights, the head's sigmoid as objectness, and the paper's
//! input bound (longer side ≤ 1024 here, never upscaled).

use rpn_anchors::{AnchorConfig, BoxCoder, ImageSize};
use rpn_model::Network;
use rpn_proposals::{Clip, ProposalConfig};

use super::{Architecture, Coordinates, Preprocessing, RpnSpec};

pub(super) fn architecture() -> Architecture {
    let anchors = AnchorConfig::seed002();
    let anchors_per_cell = anchors.uniform_anchors_per_cell().unwrap_or(0);
    Architecture::with_rpn(
        "seed002",
        "seed 002: RPN head on VGG16 block5_conv3 features (give the VGG16 weights too)",
        Network::Seed002Head { in_channels: 512, anchors_per_cell },
        RpnSpec {
            anchors,
            preprocessing: Preprocessing::VggCaffe { max_side: 1024, multiple: 16 },
            coordinates: Coordinates::Pixels,
            proposals: ProposalConfig {
                coder: BoxCoder::torchvision_rpn(),
                clip: Clip::Window(ImageSize { height: 1, width: 1 }.as_bbox()),
                pad_to: None,
                ..ProposalConfig::matterport_inference()
            },
            first_level: 0,
            backbone: Some("vgg16"),
            trainable: false,
            training_bytes_per_input_pixel: 0,
            // Measured: 803 B/px (VGG16 + head at 512×384 and 1024×768).
            bytes_per_input_pixel: 1_200,
        },
    )
}
