//! Seeds 000 and 001: the notebooks' bottleneck ResNets with their RPN head, trained on the
//! synthetic shapes at 64×64 (our documented anchor sizes 8/16/32: the notebooks' `config.py` is
//! not part of the seeds).

use rpn_anchors::{AnchorConfig, ImageSize};
use rpn_model::{Network, SeedResNetConfig};
use rpn_proposals::{Clip, ProposalConfig};

use super::{Architecture, Coordinates, Preprocessing, RpnSpec};

/// The size the seed recipe trains at (`ShapesDataset`'s default side).
const TRAINED_SIDE: u32 = 64;

fn seed(
    name: &'static str,
    summary: &'static str,
    backbone: SeedResNetConfig,
    anchors: AnchorConfig,
    bytes_per_input_pixel: u64,
) -> Architecture {
    let anchors_per_cell = anchors.uniform_anchors_per_cell().unwrap_or(0);
    Architecture::with_rpn(
        name,
        summary,
        Network::SeedRpn { backbone, anchors_per_cell },
        RpnSpec {
            anchors,
            preprocessing: Preprocessing::ResizeUnit { default_side: TRAINED_SIDE },
            coordinates: Coordinates::Pixels,
            // Matterport's inference layer (top 6000, NMS 0.7, 1000) in pixels, clipped to the
            // image (set per input) and not padded: the seeds train with Matterport's targets,
            // and its delta coding is scale-free.
            proposals: ProposalConfig {
                clip: Clip::Window(ImageSize { height: 1, width: 1 }.as_bbox()),
                pad_to: None,
                ..ProposalConfig::matterport_inference()
            },
            first_level: 0,
            backbone: None,
            trainable: true,
            // Training keeps every activation for the backward pass: seed 001, batches of 20
            // at 64² and 128², measured 19.6 kB per input pixel against 1.9 kB for inference;
            // 8 × the forward estimate keeps a margin and still admits batches of 20 at 128²
            // under the default 8 GiB budget (6.3 GB measured).
            training_bytes_per_input_pixel: 8 * bytes_per_input_pixel,
            bytes_per_input_pixel,
        },
    )
}

/// Seed 000: ResNet `[3, 6, 4]` (stride 8, 1024 channels) + RPN head, 9 anchors per cell.
pub(super) fn seed000() -> Architecture {
    seed(
        "seed000",
        "seed 000: ResNet [3, 6, 4] + RPN head, stride 8, 9 anchors",
        SeedResNetConfig::seed000(),
        AnchorConfig::seed000(),
        // Measured: 1,861 B/px (peak RSS of `rpn propose` at 256² and 512², release, CPU).
        2_800,
    )
}

/// Seed 001: ResNet `[2]` (stride 2, 256 channels) + RPN head, 9 anchors per cell.
pub(super) fn seed001() -> Architecture {
    seed(
        "seed001",
        "seed 001: ResNet [2] + RPN head, stride 2, 9 anchors",
        SeedResNetConfig::seed001(),
        AnchorConfig::seed001(),
        // Measured: 1,902 B/px between 256² and 512², 1,640 between 512² and 1024².
        2_800,
    )
}
