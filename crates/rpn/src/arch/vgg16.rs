//! Keras' `VGG16(include_top=False)` body up to `block5_conv3`: seed 002's backbone, ported on
//! its own (`rpn port-keras vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 --arch vgg16`).

use rpn_model::Network;

use super::Architecture;

pub(super) fn architecture() -> Architecture {
    Architecture::backbone(
        "vgg16",
        "Keras VGG16 body up to block5_conv3 (seed 002's backbone)",
        Network::Vgg16,
    )
}
