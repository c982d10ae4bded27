//! Seed 002 on images: Keras' VGG16 body + the notebook's RPN head + a proposal layer.
//!
//! The notebook defines the head only (`3x3`, `location`, `classification` on 512-channel
//! features). What turns it into proposals is our documented choice, the Faster R-CNN paper's:
//! [`AnchorConfig::seed002`] (128/256/512 × 0.5/1/2 at stride 16) and `(dx, dy, dw, dh)` deltas
//! without weights ([`BoxCoder::torchvision_rpn`]); objectness is the head's sigmoid. Images go
//! through Keras' `vgg16.preprocess_input` (caffe mode: BGR, minus the ImageNet means, 0–255).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use rpn_anchors::{AnchorConfig, BoxCoder, ImageSize};
use rpn_model::{Arch, Seed002Head, Vgg16};
use rpn_proposals::{generate_proposals, Clip, Objectness, ProposalConfig, Proposals};

use crate::checkpoint::load_weights;
use crate::Error;

/// Keras `preprocess_input` (caffe): BGR means subtracted from 0–255 values.
pub const VGG_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

/// VGG16 + seed 002's head, with anchors built per input size.
#[derive(Debug, Clone)]
pub struct Seed002Pipeline {
    /// `block1_conv1` … `block5_conv3`.
    pub backbone: Vgg16,
    /// `3x3`, `location`, `classification`.
    pub head: Seed002Head,
    /// The proposal layer: Matterport's inference settings (top 6000, NMS 0.7, 1000) with the
    /// paper's delta coding, clipped to each image.
    pub proposals: ProposalConfig,
    device: Device,
}

impl Seed002Pipeline {
    /// Loads the head (`rpn port-keras --arch seed002`) and the VGG16 body
    /// (`rpn port-keras vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 --arch vgg16`).
    pub fn load(head: &Path, backbone: &Path, device: Device) -> Result<Self, Error> {
        let head_tensors = load_weights(head, Arch::Seed002, &device)?;
        let vgg_tensors = load_weights(backbone, Arch::Vgg16, &device)?;
        Ok(Self {
            backbone: Vgg16::new(VarBuilder::from_tensors(vgg_tensors, DType::F32, &device))?,
            head: Seed002Head::new(
                512,
                9,
                VarBuilder::from_tensors(head_tensors, DType::F32, &device),
            )?,
            proposals: ProposalConfig {
                coder: BoxCoder::torchvision_rpn(),
                pad_to: None,
                ..ProposalConfig::matterport_inference()
            },
            device,
        })
    }

    /// Proposals (ranked, pixels of `size`) for one HWC RGB image in `[0, 1]` of `size`, whose
    /// sides are multiples of 16.
    pub fn propose(&self, pixels: &[f32], size: ImageSize) -> Result<Proposals, Error> {
        let (h, w) = (size.height as usize, size.width as usize);
        if h % 16 != 0 || w % 16 != 0 || pixels.len() != h * w * 3 {
            return Err(Error::Config(format!(
                "seed 002 needs an H×W×3 image with sides divisible by 16, got {h}×{w} and {} values",
                pixels.len()
            )));
        }
        let caffe: Vec<f32> = pixels
            .chunks_exact(3)
            .flat_map(|p| {
                [
                    p[2] * 255.0 - VGG_MEAN_BGR[0],
                    p[1] * 255.0 - VGG_MEAN_BGR[1],
                    p[0] * 255.0 - VGG_MEAN_BGR[2],
                ]
            })
            .collect();
        let x = Tensor::from_vec(caffe, (1, h, w, 3), &Device::Cpu)?.to_device(&self.device)?;
        let features = self.backbone.forward(&rpn_model::nhwc_to_nchw(&x)?)?;
        let nhwc = features.permute((0, 2, 3, 1))?.contiguous()?;
        let out = self.head.forward_nhwc(&nhwc)?;
        // `[1, H, W, k]` and `[1, H, W, 4k]`: row `(y·W + x)·k + a`, as the anchors.
        let scores = out.classification.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        let deltas: Vec<[f32; 4]> = out
            .location
            .flatten_all()?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?
            .chunks_exact(4)
            .map(|d| [d[0], d[1], d[2], d[3]])
            .collect();
        let anchors = AnchorConfig::seed002().generate(size)?;
        let config = ProposalConfig { clip: Clip::Window(size.as_bbox()), ..self.proposals };
        Ok(generate_proposals(
            &config,
            &anchors,
            Objectness::Probabilities(&scores),
            &deltas,
            size,
        )?)
    }
}
