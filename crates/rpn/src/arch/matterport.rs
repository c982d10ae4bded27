//! Matterport Mask R-CNN's RPN (seeds 003/004): ResNet-50/101-FPN with the shared head over
//! P2–P6, its `config.py` anchors, `mold_image` input and `ProposalLayer` in normalised
//! coordinates.

use rpn_anchors::AnchorConfig;
use rpn_model::{MatterportConfig, Network};
use rpn_proposals::ProposalConfig;

use super::{Architecture, Coordinates, Preprocessing, RpnSpec};

fn matterport(
    name: &'static str,
    summary: &'static str,
    config: MatterportConfig,
    bytes_per_input_pixel: u64,
) -> Architecture {
    let anchors = AnchorConfig::matterport_fpn();
    let anchors_per_location = anchors.uniform_anchors_per_cell().unwrap_or(0);
    Architecture::with_rpn(
        name,
        summary,
        Network::Matterport(MatterportConfig { anchors_per_location, ..config }),
        RpnSpec {
            anchors,
            // IMAGE_MIN_DIM, IMAGE_MAX_DIM of Matterport's `Config`.
            preprocessing: Preprocessing::MatterportSquare { min_dim: 800, max_dim: 1024 },
            coordinates: Coordinates::MatterportNormalized,
            proposals: ProposalConfig::matterport_inference(),
            first_level: 2,
            backbone: None,
            trainable: true,
            // Measured (release, CPU, ResNet-50 at full width, peak RSS of `rpn train`): 1.43 GB
            // at 128² × 2, 3.39 GB at 256² × 2, 5.74 GB at 256² × 4, a slope of 18–20 kB per
            // input pixel over ~0.8 GB of weights, gradients and velocities.
            training_bytes_per_input_pixel: 30_000,
            bytes_per_input_pixel,
        },
    )
}

pub(super) fn resnet50() -> Architecture {
    matterport(
        "matterport-resnet50",
        "Matterport Mask R-CNN RPN, ResNet-50-FPN (P2-P6, 3 anchors)",
        MatterportConfig::resnet50(),
        // Measured: 448 B/px (ResNet-50-FPN + head + proposals at 512² and 1024²).
        700,
    )
}

pub(super) fn resnet101() -> Architecture {
    matterport(
        "matterport-resnet101",
        "Matterport Mask R-CNN RPN, ResNet-101-FPN (mask_rcnn_coco.h5)",
        MatterportConfig::resnet101(),
        // ResNet-101 adds stage-4 blocks at stride 16: the per-pixel peak stays the R50's.
        700,
    )
}
