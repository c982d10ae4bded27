//! Model + anchors + proposal layer: images in, ranked pixel proposals out.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rpn_anchors::{AnchorConfig, Anchors, Bbox, ImageSize};
use rpn_model::{Arch, SeedResNetConfig, SeedRpn};
use rpn_proposals::{
    generate_proposals_with, Clip, Objectness, ProposalConfig, ProposalScratch, Proposals,
};

use crate::data::Dataset;
use crate::eval::{RecallAccumulator, RecallReport};
use crate::Error;

/// Backbone and anchors of a trainable seed architecture (seed 000 or 001).
pub fn seed_configs(arch: Arch) -> Result<(SeedResNetConfig, AnchorConfig), Error> {
    match arch {
        Arch::Seed000 => Ok((SeedResNetConfig::seed000(), AnchorConfig::seed000())),
        Arch::Seed001 => Ok((SeedResNetConfig::seed001(), AnchorConfig::seed001())),
        Arch::Seed002 => Err(Error::Config(
            "seed002 is a head on VGG16 features without anchors of its own; \
             training, evaluation and proposals support seed000 and seed001"
                .into(),
        )),
        Arch::MatterportResNet50 | Arch::MatterportResNet101 | Arch::Vgg16 => {
            Err(Error::Config(format!(
                "{} is not a seed RPN (training and evaluation support seed000 and seed001; \
             Matterport runs in MatterportPipeline, VGG16 is seed 002's backbone)",
                arch.name()
            )))
        }
    }
}

/// Matterport's inference proposal layer (top 6000, decode with std (0.1, 0.1, 0.2, 0.2),
/// NMS 0.7, 1000 kept) in **pixels**: clipped to the image, not padded. The seeds train with
/// Matterport's targets on pixel anchors, and Matterport's delta coding is scale-free, so this
/// equals Matterport's normalised layer scaled to pixels.
pub fn seed_proposal_config(image: ImageSize) -> ProposalConfig {
    ProposalConfig {
        clip: Clip::Window(image.as_bbox()),
        pad_to: None,
        ..ProposalConfig::matterport_inference()
    }
}

/// A seed RPN with its anchors for one image size.
#[derive(Debug, Clone)]
pub struct RpnPipeline {
    /// The network.
    pub model: SeedRpn,
    /// Its anchors for [`RpnPipeline::image`], level → y → x → anchor.
    pub anchors: Anchors,
    /// The input size.
    pub image: ImageSize,
    /// The proposal layer; [`seed_proposal_config`] by default.
    pub proposals: ProposalConfig,
    device: Device,
}

impl RpnPipeline {
    /// Wraps a built model for `image`-sized inputs.
    pub fn new(
        arch: Arch,
        model: SeedRpn,
        image: ImageSize,
        device: Device,
    ) -> Result<Self, Error> {
        let (_, anchor_config) = seed_configs(arch)?;
        let anchors = anchor_config.generate(image)?;
        Ok(Self { model, anchors, image, proposals: seed_proposal_config(image), device })
    }

    /// Loads `arch` from a safetensors file written by `rpn port-keras`, `rpn train` or
    /// [`crate::Trainer::save_weights`]; every tensor the model needs must be there with its
    /// shape (extra tensors, e.g. optimizer state in a checkpoint, are ignored).
    pub fn load(
        arch: Arch,
        weights: &Path,
        image: ImageSize,
        device: Device,
    ) -> Result<Self, Error> {
        let (backbone, _) = seed_configs(arch)?;
        let tensors = crate::checkpoint::load_weights(weights, arch, &device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = SeedRpn::new(&backbone, 9, vb)?;
        Self::new(arch, model, image, device)
    }

    /// Proposals for a batch of `image`-sized HWC RGB images (`pixels`: `n · H · W · 3` values),
    /// ranked best first, in pixels.
    pub fn propose(&self, pixels: &[f32], n: usize) -> Result<Vec<Proposals>, Error> {
        let (h, w) = (self.image.height as usize, self.image.width as usize);
        if pixels.len() != n * h * w * 3 {
            return Err(Error::Config(format!(
                "expected {n} images of {h}×{w}×3 = {} values, got {}",
                n * h * w * 3,
                pixels.len()
            )));
        }
        let images =
            Tensor::from_slice(pixels, (n, h, w, 3), &Device::Cpu)?.to_device(&self.device)?;
        let out = self.model.forward_nhwc(&images)?;
        proposals_per_image(&out.logits, &out.deltas, &self.proposals, &self.anchors, self.image)
    }

    /// Recall of the proposals on images `0..n` of `dataset` (in batches of `batch`); `progress`
    /// is called with the number of images done.
    pub fn evaluate(
        &self,
        dataset: &dyn Dataset,
        n: usize,
        batch: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<RecallReport, Error> {
        if dataset.image_size() != self.image {
            return Err(Error::Config(format!(
                "the data set's images are {:?}, the pipeline's {:?}",
                dataset.image_size(),
                self.image
            )));
        }
        let n = dataset.num_images().map_or(n, |len| n.min(len));
        let mut acc = RecallAccumulator::default();
        let mut start = 0;
        while start < n {
            let count = batch.max(1).min(n - start);
            let samples =
                (start..start + count).map(|i| dataset.get(i)).collect::<Result<Vec<_>, _>>()?;
            let pixels: Vec<f32> = samples.iter().flat_map(|s| s.pixels.iter().copied()).collect();
            for (sample, proposals) in samples.iter().zip(self.propose(&pixels, count)?) {
                let boxes: Vec<Bbox> = proposals.items.iter().map(|p| p.bbox).collect();
                acc.add(&boxes, &sample.boxes);
            }
            start += count;
            progress(start);
        }
        Ok(acc.report())
    }
}

/// Runs the proposal layer on each image of Keras-layout head outputs: `logits` `[B, N, 2]`
/// (background, foreground; scored by softmax) and `deltas` `[B, N, 4]`, rows in anchor order.
pub(crate) fn proposals_per_image(
    logits: &Tensor,
    deltas: &Tensor,
    config: &ProposalConfig,
    anchors: &Anchors,
    image: ImageSize,
) -> Result<Vec<Proposals>, Error> {
    let logits = logits.to_device(&Device::Cpu)?.to_vec3::<f32>()?;
    let deltas = deltas.to_device(&Device::Cpu)?.to_vec3::<f32>()?;
    let mut scratch = ProposalScratch::default();
    logits
        .iter()
        .zip(&deltas)
        .map(|(l, d)| {
            let pairs: Vec<[f32; 2]> = l.iter().map(|v| [v[0], v[1]]).collect();
            let deltas: Vec<[f32; 4]> = d.iter().map(|v| [v[0], v[1], v[2], v[3]]).collect();
            Ok(generate_proposals_with(
                config,
                anchors,
                Objectness::SoftmaxPairs(&pairs),
                &deltas,
                image,
                &mut scratch,
            )?)
        })
        .collect()
}
