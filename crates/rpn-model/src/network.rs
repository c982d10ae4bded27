//! The networks this crate builds, as configuration values: what the facade's architecture
//! registry names and wires to anchors and proposals.
//!
//! [`Network`] knows everything that is about the network alone: how to build it, its Keras
//! layout, the shape of every tensor it needs (without allocating one), and the stride its inputs
//! must be divisible by. Names, anchors, preprocessing and proposal settings are the registry's
//! (`rpn::Architecture`), because they need the box-math crates this crate never sees.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::{
    MatterportConfig, MatterportRpn, Seed002Head, SeedResNet, SeedResNetConfig, SeedRpn,
    SeedRpnHead, TorchvisionConfig, TorchvisionRpn, Vgg16, MATTERPORT_SIDE_MULTIPLE,
    TORCHVISION_SIZE_DIVISIBLE,
};

/// A network and its configuration.
///
/// ```
/// use rpn_model::{Network, SeedResNetConfig};
///
/// let seed001 = Network::SeedRpn { backbone: SeedResNetConfig::seed001(), anchors_per_cell: 9 };
/// let shapes = seed001.tensor_shapes()?; // no weights are allocated
/// assert_eq!(shapes["rpn.bbox.weight"], [36, 256, 1, 1]);
/// assert_eq!(seed001.parameter_count()?, 754_486); // Keras' count
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Network {
    /// Seeds 000/001: [`SeedResNet`] + [`SeedRpnHead`], images in.
    SeedRpn {
        /// The backbone.
        backbone: SeedResNetConfig,
        /// Anchors per feature-map cell (the head's `k`).
        anchors_per_cell: usize,
    },
    /// Seed 002: [`Seed002Head`] on `in_channels`-channel features.
    Seed002Head {
        /// Channels of the features (512 for VGG16's `block5_conv3`).
        in_channels: usize,
        /// Anchors per feature-map cell.
        anchors_per_cell: usize,
    },
    /// Matterport's ResNet-FPN + shared RPN head, molded images in.
    Matterport(MatterportConfig),
    /// Keras' VGG16 body up to `block5_conv3`, images in, features out.
    Vgg16,
    /// torchvision's ResNet-FPN + `RPNHead` (state-dict names), normalised padded NCHW batches in.
    Torchvision(TorchvisionConfig),
}

/// A built [`Network`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Model {
    /// Seeds 000/001: images in, `rpn_class_logits`, `rpn_class`, `rpn_bbox` out.
    SeedRpn(SeedRpn),
    /// Seed 002: 512-channel features in, `classification`, `location` out.
    Seed002(Seed002Head),
    /// Matterport: molded images in, `rpn_class_logits`, `rpn_class`, `rpn_bbox`, P2–P6 out.
    Matterport(MatterportRpn),
    /// VGG16: images in (Keras `preprocess_input`, caffe mode), `block5_conv3` features out.
    Vgg16(Vgg16),
    /// torchvision: `GeneralizedRCNNTransform` batches in, objectness and deltas out.
    Torchvision(TorchvisionRpn),
}

/// Where the Keras weights of a network go (see [`Network::keras_layout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerasLayout {
    /// Conv paths (each with `.weight` OIHW and `.bias`), in Keras creation order.
    pub convs: Vec<String>,
    /// BatchNorm paths (`.weight`, `.bias`, `.running_mean`, `.running_var`), in creation order.
    pub bns: Vec<String>,
    /// Keras layer names equal the paths (seed 002's `3x3`, `location`, `classification`).
    pub named: bool,
}

impl Network {
    /// Builds the network on `vb`.
    pub fn build(&self, vb: VarBuilder) -> Result<Model> {
        Ok(match self {
            Self::SeedRpn { backbone, anchors_per_cell } => {
                Model::SeedRpn(SeedRpn::new(backbone, *anchors_per_cell, vb)?)
            }
            Self::Seed002Head { in_channels, anchors_per_cell } => {
                Model::Seed002(Seed002Head::new(*in_channels, *anchors_per_cell, vb)?)
            }
            Self::Matterport(config) => Model::Matterport(MatterportRpn::new(config, vb)?),
            Self::Vgg16 => Model::Vgg16(Vgg16::new(vb)?),
            Self::Torchvision(config) => Model::Torchvision(TorchvisionRpn::new(config, vb)?),
        })
    }

    /// Where the Keras weights go: conv and BN paths in Keras creation order, and whether Keras
    /// names the layers meaningfully (then a file's layer names are the paths).
    pub fn keras_layout(&self) -> KerasLayout {
        match self {
            Self::SeedRpn { backbone, .. } => {
                let (convs, bns) = SeedResNet::keras_creation_order(backbone);
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
            Self::Seed002Head { .. } => KerasLayout {
                convs: Seed002Head::keras_creation_order(),
                bns: Vec::new(),
                named: true,
            },
            Self::Matterport(config) => {
                let (convs, bns) = MatterportRpn::keras_layer_names(config);
                KerasLayout { convs, bns, named: true }
            }
            Self::Vgg16 => {
                KerasLayout { convs: Vgg16::keras_creation_order(), bns: Vec::new(), named: true }
            }
            // Not a Keras network: its weights come from PyTorch state dicts, by name.
            Self::Torchvision(_) => KerasLayout { convs: Vec::new(), bns: Vec::new(), named: true },
        }
    }

    /// Path → shape of every tensor the network needs (what a weights file must contain).
    ///
    /// Shape-only: the network is built on a backend that records each request and hands back a
    /// zero-stride view of one zero, so no weight is allocated or initialised.
    pub fn tensor_shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        let recorder = ShapeRecorder::default();
        let shapes = Arc::clone(&recorder.shapes);
        self.build(VarBuilder::from_backend(Box::new(recorder), DType::F32, Device::Cpu))?;
        let shapes = shapes.lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(shapes.clone())
    }

    /// Number of values in all tensors (trainable and BatchNorm statistics), as Keras counts.
    pub fn parameter_count(&self) -> Result<usize> {
        Ok(self.tensor_shapes()?.values().map(|s| s.iter().product::<usize>()).sum())
    }

    /// The same network at the widths `tensors` have, where the architecture allows narrower
    /// variants with the same layer names: Matterport's stem width (`conv1`), pyramid channels
    /// (`fpn_c5p5`) and head channels (`rpn_conv_shared`), as `rpn train --width` writes them.
    /// Anything else, or a tensor missing, leaves it unchanged (building then names the misfit).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use candle_core::{DType, Device, Tensor};
    /// use rpn_model::{MatterportConfig, Network};
    ///
    /// let zeros = |d: &[usize]| Tensor::zeros(d, DType::F32, &Device::Cpu).unwrap();
    /// let tensors = HashMap::from([
    ///     ("conv1.weight".to_owned(), zeros(&[8, 3, 7, 7])),
    ///     ("fpn_c5p5.weight".to_owned(), zeros(&[32, 256, 1, 1])),
    ///     ("rpn_conv_shared.weight".to_owned(), zeros(&[64, 32, 3, 3])),
    /// ]);
    /// let Network::Matterport(c) = Network::Matterport(MatterportConfig::resnet50()).fitted_to(&tensors)
    /// else { unreachable!() };
    /// assert_eq!((c.width, c.pyramid_channels, c.rpn_channels), (8, 32, 64));
    /// ```
    pub fn fitted_to(&self, tensors: &std::collections::HashMap<String, Tensor>) -> Self {
        let Self::Matterport(config) = self else { return self.clone() };
        let out_channels = |name: &str| tensors.get(name).and_then(|t| t.dims().first().copied());
        match (
            out_channels("conv1.weight"),
            out_channels("fpn_c5p5.weight"),
            out_channels("rpn_conv_shared.weight"),
        ) {
            (Some(width), Some(pyramid_channels), Some(rpn_channels)) => {
                Self::Matterport(MatterportConfig {
                    width,
                    pyramid_channels,
                    rpn_channels,
                    ..*config
                })
            }
            _ => self.clone(),
        }
    }

    /// The network's total stride: input sides must be multiples of it (1 for seed 002's head,
    /// whose input is already a feature map).
    pub fn stride(&self) -> usize {
        match self {
            Self::SeedRpn { backbone, .. } => 1 << backbone.blocks.len(),
            Self::Seed002Head { .. } => 1,
            Self::Matterport(_) => MATTERPORT_SIDE_MULTIPLE,
            Self::Vgg16 => 16,
            Self::Torchvision(_) => TORCHVISION_SIZE_DIVISIBLE,
        }
    }

    /// Builds the network from `tensors` (e.g. a safetensors file), checking that every tensor it
    /// needs is there with its shape; extra tensors (a checkpoint's optimiser state) are ignored.
    /// The first problem found is returned as a typed [`WeightsError`].
    pub fn build_from(
        &self,
        tensors: std::collections::HashMap<String, Tensor>,
        device: &Device,
    ) -> std::result::Result<Model, WeightsError> {
        let report = Arc::new(Mutex::new(None));
        let backend = CheckedTensors { tensors, report: Arc::clone(&report) };
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        self.build(vb).map_err(|source| {
            let recorded = report.lock().ok().and_then(|mut p| p.take());
            recorded.unwrap_or(WeightsError::Candle(source))
        })
    }
}

/// Why weights do not fit a [`Network`] ([`Network::build_from`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// A tensor the network needs is not there.
    #[error("no tensor `{tensor}` {expected:?}")]
    Missing {
        /// The tensor's path.
        tensor: String,
        /// The shape the network needs.
        expected: Vec<usize>,
    },
    /// A tensor has another shape than the network needs.
    #[error("tensor `{tensor}` has shape {found:?}, the network needs {expected:?}")]
    Shape {
        /// The tensor's path.
        tensor: String,
        /// The shape the network needs.
        expected: Vec<usize>,
        /// The shape in the weights.
        found: Vec<usize>,
    },
    /// candle failed otherwise (dtype conversion, device copy).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Records the shape of every tensor a network asks for; hands back a broadcast zero.
#[derive(Default)]
struct ShapeRecorder {
    shapes: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
}

impl SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.shapes
            .lock()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .insert(name.to_owned(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("the shape recorder cannot tell the shape of `{name}`")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Named tensors handed to a network, checked by name and shape as it asks for them; the first
/// problem goes to `report`, where [`Network::build_from`] picks it up as a typed error.
struct CheckedTensors {
    tensors: std::collections::HashMap<String, Tensor>,
    report: Arc<Mutex<Option<WeightsError>>>,
}

impl CheckedTensors {
    fn fail(&self, problem: WeightsError) -> candle_core::Error {
        let message = problem.to_string();
        if let Ok(mut slot) = self.report.lock() {
            slot.get_or_insert(problem);
        }
        candle_core::Error::Msg(message)
    }
}

impl SimpleBackend for CheckedTensors {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let Some(tensor) = self.tensors.get(name) else {
            return Err(self.fail(WeightsError::Missing {
                tensor: name.to_owned(),
                expected: s.dims().to_vec(),
            }));
        };
        if tensor.dims() != s.dims() {
            return Err(self.fail(WeightsError::Shape {
                tensor: name.to_owned(),
                expected: s.dims().to_vec(),
                found: tensor.dims().to_vec(),
            }));
        }
        tensor.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => {
                Err(self.fail(WeightsError::Missing { tensor: name.to_owned(), expected: vec![] }))
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
