//! The architecture registry: one descriptor per architecture, in one place.
//!
//! An [`Architecture`] says everything the rest of the workspace needs to run a network as an
//! RPN: the network and its configuration (`rpn-model`), the anchors (anchors per cell are
//! derived from them, never written down twice), the preprocessing and default input size, the
//! proposal layer's default preset, the coordinates it runs in, and the memory an input costs.
//! The CLI, the [`crate::Proposer`], the [`crate::Trainer`] and the Keras port all start from it.
//!
//! Adding an architecture is one new module in this folder with a `fn architecture() ->
//! Architecture` and one line in [`REGISTRY`] (docs/ARCHITECTURE.md walks through it).
//!
//! ```
//! use rpn::Architecture;
//!
//! let arch: Architecture = "matterport-resnet50".parse()?;
//! let rpn = arch.rpn().expect("an RPN, not a backbone");
//! assert_eq!(rpn.anchors.uniform_anchors_per_cell(), Some(3));
//! assert!("resnet50".parse::<Architecture>().unwrap_err().to_string().contains("seed001"));
//! # Ok::<(), rpn::UnknownArchitecture>(())
//! ```

mod matterport;
mod seed;
mod seed002;
mod torchvision;
mod vgg16;

use std::str::FromStr;

use rpn_anchors::{AnchorConfig, ImageSize};
use rpn_model::Network;
use rpn_proposals::ProposalConfig;

/// Every architecture, one registration line each, in the order help texts list them.
const REGISTRY: &[fn() -> Architecture] = &[
    seed::seed000,
    seed::seed001,
    seed002::architecture,
    matterport::resnet50,
    matterport::resnet101,
    torchvision::resnet50_fpn,
    torchvision::resnet50_fpn_v2,
    vgg16::architecture,
];

/// A named network and how to run it (see the module docs).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Architecture {
    /// The CLI name (`seed001`, `matterport-resnet50`, …).
    pub name: &'static str,
    /// One line for help texts.
    pub summary: &'static str,
    /// The network and its configuration.
    pub network: Network,
    /// How it runs as an RPN; `None` for a backbone only (VGG16, seed 002's body).
    rpn: Option<RpnSpec>,
}

/// How an architecture turns images into proposals.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RpnSpec {
    /// The anchor pyramid the head was trained with (level → y → x → anchor).
    pub anchors: AnchorConfig,
    /// How an image becomes the network's input.
    pub preprocessing: Preprocessing,
    /// Where the proposal layer runs and what its boxes are.
    pub coordinates: Coordinates,
    /// The default proposal layer (the delta coder is part of it).
    pub proposals: ProposalConfig,
    /// Pyramid level number of the first anchor level (2 for P2–P6; 0 for single-level heads),
    /// added to a proposal's level index in outputs.
    pub first_level: usize,
    /// A backbone architecture whose weights come in a second file (seed 002's `vgg16`).
    pub backbone: Option<&'static str>,
    /// Whether [`crate::Trainer`] can train it.
    pub trainable: bool,
    /// Peak memory of one training step per input pixel (activations kept for the backward
    /// pass, gradients, im2col columns), measured like `bytes_per_input_pixel` with a margin;
    /// 0 where it does not train.
    pub training_bytes_per_input_pixel: u64,
    /// Peak memory of one forward pass per input pixel (activations: the slope of the peak RSS
    /// of `rpn propose` between two input sizes on CPU, times about 1.5): what the memory budget
    /// is checked against before anything is allocated. Weights and the decoded image come on
    /// top (a few hundred MB at most).
    pub bytes_per_input_pixel: u64,
}

/// Where the proposal layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Coordinates {
    /// Pixels of the network input.
    Pixels,
    /// Matterport's normalised `(y1, x1, y2, x2)` in-graph coordinates, as its `ProposalLayer`.
    MatterportNormalized,
}

/// How an image becomes the network's input (before the memory check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preprocessing {
    /// RGB in `[0, 1]`, resized (bilinear) to `side × side`: the seeds were trained on square
    /// images of one size, and a model runs best at that size. A checkpoint written by `rpn
    /// train` records its size, which then replaces `default_side`.
    ResizeUnit {
        /// The size the architecture's seed recipe trains at.
        default_side: u32,
    },
    /// Keras' VGG16 `preprocess_input` (caffe: BGR minus the ImageNet means, 0–255) at the
    /// image's own aspect ratio: scaled down (never up) so that the longer side is at most
    /// `max_side`, then each side rounded down to a multiple of `multiple` (the stride).
    VggCaffe {
        /// Longest side fed to the network by default.
        max_side: u32,
        /// Sides are multiples of this.
        multiple: u32,
    },
    /// Matterport's `resize_image(mode="square")` + `mold_image`: scale so the shorter side is
    /// at least `min_dim` and the longer at most `max_dim`, centre in a `max_dim²` square,
    /// subtract `MEAN_PIXEL`.
    MatterportSquare {
        /// `IMAGE_MIN_DIM`.
        min_dim: u32,
        /// `IMAGE_MAX_DIM` (a multiple of 64).
        max_dim: u32,
    },
    /// torchvision's `GeneralizedRCNNTransform`: RGB in `[0, 1]` normalised with the ImageNet
    /// mean and std, resized (bilinear) so the shorter side is `min_size` unless the longer
    /// would exceed `max_size`, zero-padded to multiples of `size_divisible` (a batch to its
    /// largest image). See [`crate::torchvision_transform`].
    TorchvisionTransform {
        /// `min_size` (800).
        min_size: u32,
        /// `max_size` (1333).
        max_size: u32,
        /// `size_divisible` (32).
        size_divisible: u32,
    },
}

impl Preprocessing {
    /// `(min_size, max_size)` of [`Preprocessing::TorchvisionTransform`]; `requested` replaces
    /// `min_size` and scales `max_size` with it (800 / 1333 keeps its ratio).
    pub fn torchvision_sizes(&self, requested: Option<u32>) -> Option<(u32, u32)> {
        let Self::TorchvisionTransform { min_size, max_size, .. } = *self else { return None };
        Some(match requested {
            None => (min_size, max_size),
            Some(side) => {
                let ratio = f64::from(max_size) / f64::from(min_size.max(1));
                (side, (f64::from(side) * ratio).round() as u32)
            }
        })
    }

    /// The network input size for an image of `original` size when the user asked for
    /// `requested` (the side for [`Preprocessing::ResizeUnit`], the longest side for
    /// [`Preprocessing::VggCaffe`], `IMAGE_MAX_DIM` for [`Preprocessing::MatterportSquare`]).
    pub fn input_size(&self, original: ImageSize, requested: Option<u32>) -> ImageSize {
        match *self {
            Self::ResizeUnit { default_side } => {
                let side = requested.unwrap_or(default_side);
                ImageSize { height: side, width: side }
            }
            Self::VggCaffe { max_side, multiple } => {
                let max_side = requested.unwrap_or(max_side);
                let longest = original.height.max(original.width);
                let scale = (f64::from(max_side) / f64::from(longest)).min(1.0);
                let side = |s: u32| {
                    let scaled = (f64::from(s) * scale).round() as u32;
                    (scaled / multiple).max(1) * multiple
                };
                ImageSize { height: side(original.height), width: side(original.width) }
            }
            Self::MatterportSquare { max_dim, .. } => {
                let side = requested.unwrap_or(max_dim);
                ImageSize { height: side, width: side }
            }
            Self::TorchvisionTransform { size_divisible, .. } => {
                let (min_size, max_size) = self.torchvision_sizes(requested).unwrap_or_default();
                crate::torchvision_padded(
                    crate::torchvision_resized_size(original, min_size, max_size),
                    size_divisible,
                )
            }
        }
    }
}

impl Architecture {
    /// Every registered architecture, in help-text order.
    pub fn all() -> Vec<Architecture> {
        REGISTRY.iter().map(|make| make()).collect()
    }

    /// The registered names.
    pub fn names() -> Vec<&'static str> {
        Self::all().into_iter().map(|a| a.name).collect()
    }

    /// A backbone-only architecture (no anchors, no proposals).
    pub fn backbone(name: &'static str, summary: &'static str, network: Network) -> Self {
        Self { name, summary, network, rpn: None }
    }

    /// An RPN architecture.
    pub fn with_rpn(
        name: &'static str,
        summary: &'static str,
        network: Network,
        rpn: RpnSpec,
    ) -> Self {
        Self { name, summary, network, rpn: Some(rpn) }
    }

    /// How it runs as an RPN; `None` for a backbone.
    pub fn rpn(&self) -> Option<&RpnSpec> {
        self.rpn.as_ref()
    }
}

impl RpnSpec {
    /// The anchors per cell of a head shared by every level, derived from the anchors.
    pub fn anchors_per_cell(&self) -> usize {
        self.anchors.uniform_anchors_per_cell().unwrap_or(0)
    }

    /// Estimated peak bytes of one forward pass over `images` inputs of `input` size.
    pub fn forward_bytes(&self, input: ImageSize, images: usize) -> u64 {
        let pixels = u64::from(input.height) * u64::from(input.width);
        pixels.saturating_mul(self.bytes_per_input_pixel).saturating_mul(images as u64)
    }

    /// Estimated peak bytes of one training step on a batch of `images` inputs of `input` size.
    pub fn training_bytes(&self, input: ImageSize, images: usize) -> u64 {
        let pixels = u64::from(input.height) * u64::from(input.width);
        pixels.saturating_mul(self.training_bytes_per_input_pixel).saturating_mul(images as u64)
    }
}

/// A name that is not in the registry; the message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture `{name}` (expected one of: {})", valid.join(", "))]
pub struct UnknownArchitecture {
    /// What was asked for.
    pub name: String,
    /// The registered names.
    pub valid: Vec<&'static str>,
}

impl FromStr for Architecture {
    type Err = UnknownArchitecture;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        REGISTRY
            .iter()
            .map(|make| make())
            .find(|a| a.name == name)
            .ok_or_else(|| UnknownArchitecture { name: name.to_owned(), valid: Self::names() })
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let names = Architecture::names();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate names in {names:?}");
        for name in names {
            assert_eq!(name.parse::<Architecture>().map(|a| a.name), Ok(name));
        }
        let err = "seed003".parse::<Architecture>().unwrap_err();
        assert_eq!(err.valid, Architecture::names());
    }

    /// The network's head and the anchors agree: same `k`, and the network's stride is the
    /// coarsest anchor level's (so anchor rows and head rows line up for any valid input).
    #[test]
    fn heads_and_anchors_agree() {
        for arch in Architecture::all() {
            let Some(rpn) = arch.rpn() else { continue };
            let k = rpn.anchors_per_cell();
            assert!(k > 0, "{}: levels disagree on anchors per cell", arch.name);
            let coarsest = rpn.anchors.levels.iter().map(|l| l.stride).max().unwrap_or(0);
            match &arch.network {
                Network::SeedRpn { anchors_per_cell, .. }
                | Network::Seed002Head { anchors_per_cell, .. } => {
                    assert_eq!(*anchors_per_cell, k, "{}", arch.name)
                }
                Network::Matterport(config) => {
                    assert_eq!(config.anchors_per_location, k, "{}", arch.name)
                }
                Network::Torchvision(config) => {
                    assert_eq!(config.anchors_per_location, k, "{}", arch.name)
                }
                other => panic!("{}: unexpected network {other:?}", arch.name),
            }
            match rpn.preprocessing {
                Preprocessing::VggCaffe { .. } => {}
                // torchvision pads to 32 and its P6 grid is `ceil(P5 / 2)`: anchor strides are
                // `image // grid` (torchvision's rule), so the rows line up without stride 64.
                Preprocessing::TorchvisionTransform { size_divisible, .. } => {
                    assert_eq!(arch.network.stride(), size_divisible as usize, "{}", arch.name);
                    assert_eq!(rpn.anchors.stride_rule, rpn_anchors::StrideRule::ImageOverGrid);
                }
                _ => assert_eq!(arch.network.stride(), coarsest as usize, "{}", arch.name),
            }
            if let Some(backbone) = rpn.backbone {
                let b: Architecture = backbone.parse().expect("registered backbone");
                assert_eq!(b.network.stride(), coarsest as usize, "{}", arch.name);
            }
        }
    }

    #[test]
    fn vgg_input_keeps_the_aspect_ratio_and_never_upscales() {
        let p = Preprocessing::VggCaffe { max_side: 1024, multiple: 16 };
        let photo = ImageSize { height: 3000, width: 4000 };
        assert_eq!(p.input_size(photo, None), ImageSize { height: 768, width: 1024 });
        let small = ImageSize { height: 100, width: 200 };
        assert_eq!(p.input_size(small, None), ImageSize { height: 96, width: 192 });
        let tiny = ImageSize { height: 3, width: 5 };
        assert_eq!(p.input_size(tiny, None), ImageSize { height: 16, width: 16 });
    }
}
