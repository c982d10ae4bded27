//! torchvision's Faster/Mask R-CNN RPN (`fasterrcnn_resnet50_fpn`, `maskrcnn_resnet50_fpn`,
//! `fasterrcnn_resnet50_fpn_v2`): ResNet-50-FPN with `RPNHead` over P2–P6, `AnchorGenerator`
//! ((32,), …, (512,)) × (0.5, 1, 2), `GeneralizedRCNNTransform` (800 / 1333, ImageNet
//! normalisation, padding to 32) and the RPN's test-time `filter_proposals` (1000 per level →
//! NMS 0.7 per level → 1000).

use rpn_anchors::AnchorConfig;
use rpn_model::{Network, TorchvisionConfig, TORCHVISION_SIZE_DIVISIBLE};
use rpn_proposals::ProposalConfig;

use super::{Architecture, Coordinates, Preprocessing, RpnSpec};

fn torchvision(
    name: &'static str,
    summary: &'static str,
    config: TorchvisionConfig,
) -> Architecture {
    let anchors = AnchorConfig::torchvision_fpn();
    let anchors_per_location = anchors.uniform_anchors_per_cell().unwrap_or(0);
    Architecture::with_rpn(
        name,
        summary,
        Network::Torchvision(TorchvisionConfig { anchors_per_location, ..config }),
        RpnSpec {
            anchors,
            preprocessing: Preprocessing::TorchvisionTransform {
                min_size: 800,
                max_size: 1333,
                size_divisible: TORCHVISION_SIZE_DIVISIBLE as u32,
            },
            coordinates: Coordinates::Pixels,
            proposals: ProposalConfig::torchvision_test(),
            first_level: 2,
            backbone: None,
            trainable: false,
            training_bytes_per_input_pixel: 0,
            // Measured: 475 B/px (peak RSS of `rpn propose`, v1, 768×512 vs 1536×1024 input;
            // Matterport's R50-FPN: 448), with Matterport's margin.
            bytes_per_input_pixel: 700,
        },
    )
}

pub(super) fn resnet50_fpn() -> Architecture {
    torchvision(
        "torchvision-resnet50-fpn",
        "torchvision Faster/Mask R-CNN RPN, ResNet-50-FPN v1 (weights from `rpn port-torch`)",
        TorchvisionConfig::resnet50_fpn(),
    )
}

pub(super) fn resnet50_fpn_v2() -> Architecture {
    torchvision(
        "torchvision-resnet50-fpn-v2",
        "torchvision Faster R-CNN v2 RPN: BatchNorm in the FPN, two-conv head",
        TorchvisionConfig::resnet50_fpn_v2(),
    )
}
