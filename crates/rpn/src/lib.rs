//! The facade over the `rpn` crates: what a user who wants "an RPN" imports.
//!
//! Re-exports the layer crates (`anchors`, `targets`, `proposals`, `loss`, `model`) and adds
//! what needs several of them at once:
//! - [`Architecture`]: the registry of named architectures (seeds 000–002, Matterport's
//!   ResNet-50/101-FPN, VGG16), each with its network, anchors, preprocessing and proposal
//!   preset; `"seed001".parse::<Architecture>()`;
//! - [`Proposer`]: the one way from an image to proposals in original-image pixels, for every
//!   architecture ([`Proposer::propose`], [`Proposer::propose_batch`]; Matterport's molded
//!   tensors through [`Proposer::propose_molded`]), with a memory budget checked up front, and
//!   its proposal recall ([`Proposer::evaluate`] → [`RecallReport`]);
//! - data: [`ShapesSource`] (seed 001's synthetic shapes, from a seed) and [`CocoDirectory`]
//!   (images + COCO-style `annotations.json`), both [`Dataset`]s of fixed-size samples;
//! - [`Trainer`]: seed 001's recipe (Matterport targets, seed 001's losses, Keras' SGD with
//!   momentum, BatchNorm in training mode), with gradient clipping, LR schedules and checkpoints
//!   that resume exactly.
//!
//! ```
//! use rpn::{Proposer, ShapesSource, TrainConfig, Trainer};
//!
//! let mut trainer = Trainer::seed001(TrainConfig { seed: 7, batch_size: 2, ..TrainConfig::default() })?;
//! let losses = trainer.step()?;
//! println!("{:.4} + {:.4}", losses.objectness, losses.box_regression);
//!
//! let proposer: Proposer = trainer.proposer()?;
//! let photo = image::DynamicImage::new_rgb8(320, 240); // any size: resized to the trained 64×64
//! let found = proposer.propose(&photo)?;
//! assert_eq!(found.original.width, 320);
//! assert!(found.proposals.iter().all(|p| p.bbox.x2 <= 320.0 && p.bbox.y2 <= 240.0));
//! let report = proposer.evaluate(&ShapesSource::held_out(7), 4, 4, |_| {})?;
//! assert!((0.0..=1.0).contains(&report.recall_iou0_5_top100));
//! # Ok::<(), rpn::Error>(())
//! ```

mod arch;
mod checkpoint;
mod data;
mod error;
mod eval;
mod matterport;
mod memory;
mod proposer;
mod shapes;
mod torchvision;
mod train;

#[cfg(test)]
mod proptests;

pub use rpn_anchors as anchors;
pub use rpn_loss as loss;
pub use rpn_model as model;
pub use rpn_proposals as proposals;
pub use rpn_targets as targets;

pub use arch::{Architecture, Coordinates, Preprocessing, RpnSpec, UnknownArchitecture};
pub use checkpoint::{
    load_model, read as read_safetensors, read_metadata as read_safetensors_metadata,
    write_atomic as write_safetensors_atomic, SafetensorsContents,
};
pub use data::{
    resize_to_pixels, training_index, CocoDirectory, Dataset, Fit, Sample, ShapesSource,
};
pub use error::Error;
pub use eval::{ar_thresholds, RecallAccumulator, RecallReport, TOP_KS};
pub use matterport::{mold_square, square_resize, MoldedImage, SquareImage, MEAN_PIXEL};
pub use memory::retain_freed_memory;
pub use proposer::{
    memory_budget_from_env, parse_bytes, ImageProposal, ImageProposals, MatterportProposals,
    Molding, Proposer, ProposerOptions, DEFAULT_MEMORY_BUDGET, MEMORY_BUDGET_ENV, VGG_MEAN_BGR,
};
pub use shapes::{Shape, ShapeKind, ShapesDataset, ShapesImage};
pub use torchvision::{
    torchvision_padded, torchvision_resized_size, torchvision_transform, IMAGENET_MEAN,
    IMAGENET_STD,
};
pub use train::{
    Border, CheckpointInfo, GradientClip, Layers, LrSchedule, SgdMomentum, StepLosses, TrainBatch,
    TrainConfig, Trainer, WeightDecay,
};
