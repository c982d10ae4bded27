//! Named architectures: what the CLI and the Keras port build by name.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result};
use candle_nn::{VarBuilder, VarMap};

use crate::{
    MatterportConfig, MatterportRpn, Seed002Head, SeedResNet, SeedResNetConfig, SeedRpn,
    SeedRpnHead, Vgg16,
};

/// The architectures of the seed notebooks and Matterport's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Seed 000: ResNet `[3, 6, 4]` + RPN head, 9 anchors, stride 8.
    Seed000,
    /// Seed 001: ResNet `[2]` + RPN head, 9 anchors, stride 2.
    Seed001,
    /// Seed 002: the RPN head on 512-channel (VGG16) features, 9 anchors.
    Seed002,
    /// Matterport Mask R-CNN's RPN on ResNet-50-FPN (seeds 003/004), 3 anchors per level.
    MatterportResNet50,
    /// Matterport Mask R-CNN's RPN on ResNet-101-FPN (`mask_rcnn_coco.h5`).
    MatterportResNet101,
    /// Keras' `VGG16(include_top=False)` body up to `block5_conv3`: seed 002's backbone.
    Vgg16,
}

impl Arch {
    /// Every architecture, for help texts and errors.
    pub const ALL: [Arch; 6] = [
        Arch::Seed000,
        Arch::Seed001,
        Arch::Seed002,
        Arch::MatterportResNet50,
        Arch::MatterportResNet101,
        Arch::Vgg16,
    ];

    /// The CLI name (`seed000`, …).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Seed000 => "seed000",
            Arch::Seed001 => "seed001",
            Arch::Seed002 => "seed002",
            Arch::MatterportResNet50 => "matterport-resnet50",
            Arch::MatterportResNet101 => "matterport-resnet101",
            Arch::Vgg16 => "vgg16",
        }
    }

    /// Parses a CLI name; the error lists the valid ones.
    pub fn parse(name: &str) -> std::result::Result<Arch, String> {
        Arch::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| {
            let names: Vec<_> = Arch::ALL.iter().map(|a| a.name()).collect();
            format!("unknown architecture `{name}` (expected one of: {})", names.join(", "))
        })
    }

    /// Where the Keras weights go: conv and BN paths in Keras creation order, and whether Keras
    /// names the layers meaningfully (then a file's layer names are the paths).
    pub fn keras_layout(self) -> KerasLayout {
        match self {
            Arch::Seed000 | Arch::Seed001 => {
                let config = if self == Arch::Seed000 {
                    SeedResNetConfig::seed000()
                } else {
                    SeedResNetConfig::seed001()
                };
                let (convs, bns) = SeedResNet::keras_creation_order(&config);
                let mut convs: Vec<String> =
                    convs.into_iter().map(|c| format!("backbone.{c}")).collect();
                convs.extend(
                    SeedRpnHead::keras_creation_order().into_iter().map(|c| format!("rpn.{c}")),
                );
                KerasLayout {
                    convs,
                    bns: bns.into_iter().map(|b| format!("backbone.{b}")).collect(),
                    named: false,
                }
            }
            Arch::Seed002 => KerasLayout {
                convs: Seed002Head::keras_creation_order(),
                bns: Vec::new(),
                named: true,
            },
            Arch::MatterportResNet50 | Arch::MatterportResNet101 => {
                let config = self.matterport_config().unwrap_or_else(MatterportConfig::resnet50);
                let (convs, bns) = MatterportRpn::keras_layer_names(&config);
                KerasLayout { convs, bns, named: true }
            }
            Arch::Vgg16 => {
                KerasLayout { convs: Vgg16::keras_creation_order(), bns: Vec::new(), named: true }
            }
        }
    }

    /// Builds the model on `vb` (the CLI then runs it); `Model` says which outputs it has.
    pub fn build(self, vb: VarBuilder) -> Result<Model> {
        Ok(match self {
            Arch::Seed000 => Model::SeedRpn(SeedRpn::new(&SeedResNetConfig::seed000(), 9, vb)?),
            Arch::Seed001 => Model::SeedRpn(SeedRpn::new(&SeedResNetConfig::seed001(), 9, vb)?),
            Arch::Seed002 => Model::Seed002(Seed002Head::new(512, 9, vb)?),
            Arch::MatterportResNet50 | Arch::MatterportResNet101 => {
                let config = self.matterport_config().unwrap_or_else(MatterportConfig::resnet50);
                Model::Matterport(MatterportRpn::new(&config, vb)?)
            }
            Arch::Vgg16 => Model::Vgg16(Vgg16::new(vb)?),
        })
    }

    /// Matterport's configuration for the Matterport architectures, `None` for the seeds.
    pub fn matterport_config(self) -> Option<MatterportConfig> {
        match self {
            Arch::MatterportResNet50 => Some(MatterportConfig::resnet50()),
            Arch::MatterportResNet101 => Some(MatterportConfig::resnet101()),
            Arch::Seed000 | Arch::Seed001 | Arch::Seed002 | Arch::Vgg16 => None,
        }
    }

    /// Path → shape of every tensor the model needs (what a ported file must contain).
    pub fn tensor_shapes(self) -> Result<BTreeMap<String, Vec<usize>>> {
        let varmap = VarMap::new();
        self.build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
        let vars = varmap.data().lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(vars.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect())
    }
}

/// A built architecture.
#[derive(Debug, Clone)]
pub enum Model {
    /// Seeds 000/001: images in, `rpn_class_logits`, `rpn_class`, `rpn_bbox` out.
    SeedRpn(SeedRpn),
    /// Seed 002: 512-channel features in, `classification`, `location` out.
    Seed002(Seed002Head),
    /// Matterport: molded images in, `rpn_class_logits`, `rpn_class`, `rpn_bbox`, P2–P6 out.
    Matterport(MatterportRpn),
    /// VGG16: images in (Keras `preprocess_input`, caffe mode), `block5_conv3` features out.
    Vgg16(Vgg16),
}

/// See [`Arch::keras_layout`]. Also used for models built by hand (e.g. VGG16 + seed 002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerasLayout {
    /// Conv paths (each with `.weight` OIHW and `.bias`), in Keras creation order.
    pub convs: Vec<String>,
    /// BatchNorm paths (`.weight`, `.bias`, `.running_mean`, `.running_var`), in creation order.
    pub bns: Vec<String>,
    /// Keras layer names equal the paths (seed 002's `3x3`, `location`, `classification`).
    pub named: bool,
}

impl KerasLayout {
    /// The layout of [`Vgg16`] (Keras names `block1_conv1` …).
    pub fn vgg16() -> Self {
        KerasLayout { convs: Vgg16::keras_creation_order(), bns: Vec::new(), named: true }
    }
}
