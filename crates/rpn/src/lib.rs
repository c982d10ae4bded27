//! The facade over the `rpn` crates: what a user who wants "an RPN" imports.
//!
//! Re-exports the layer crates (`anchors`, `targets`, `proposals`, `loss`, `model`) and adds
//! what needs several of them at once:
//! - data: [`ShapesSource`] (seed 001's synthetic shapes, from a seed) and [`CocoDirectory`]
//!   (images + COCO-style `annotations.json`), both [`Dataset`]s of fixed-size samples;
//! - [`Trainer`]: seed 001's recipe (Matterport targets, seed 001's losses, Keras' SGD with
//!   momentum, BatchNorm in training mode), with gradient clipping, LR schedules and checkpoints
//!   that resume exactly;
//! - [`RpnPipeline`]: model + anchors + proposal layer, and its proposal recall
//!   ([`RecallReport`]: recall@0.5/0.7 of the top 10/100/1000, AR@100/1000);
//! - [`MatterportPipeline`]: Matterport Mask R-CNN's RPN (ResNet-50/101-FPN) with its input
//!   pipeline ([`mold_square`]), anchors and `ProposalLayer`.
//!
//! ```no_run
//! use rpn::{ShapesSource, TrainConfig, Trainer};
//!
//! let mut trainer = Trainer::seed001(TrainConfig { seed: 7, ..TrainConfig::default() })?;
//! for step in 0..10 {
//!     let losses = trainer.step()?;
//!     println!("step {step}: {:.4} + {:.4}", losses.objectness, losses.box_regression);
//! }
//! let report = trainer.pipeline()?.evaluate(&ShapesSource::held_out(7), 200, 20, |_| {})?;
//! println!("recall@0.5 of the top 100: {:.3}", report.recall_iou0_5_top100);
//! # Ok::<(), rpn::Error>(())
//! ```

mod checkpoint;
mod data;
mod error;
mod eval;
mod matterport;
mod pipeline;
mod seed002;
mod shapes;
mod train;

pub use rpn_anchors as anchors;
pub use rpn_loss as loss;
pub use rpn_model as model;
pub use rpn_proposals as proposals;
pub use rpn_targets as targets;

pub use checkpoint::{
    load_weights, read as read_safetensors, write_atomic as write_safetensors_atomic,
    SafetensorsContents,
};
pub use data::{resize_to_pixels, training_index, CocoDirectory, Dataset, Sample, ShapesSource};
pub use error::Error;
pub use eval::{ar_thresholds, RecallAccumulator, RecallReport, TOP_KS};
pub use matterport::{mold_square, MatterportPipeline, MatterportRun, MoldedImage, MEAN_PIXEL};
pub use pipeline::{seed_configs, seed_proposal_config, RpnPipeline};
pub use seed002::{Seed002Pipeline, VGG_MEAN_BGR};
pub use shapes::{Shape, ShapeKind, ShapesDataset, ShapesImage};
pub use train::{LrSchedule, SgdMomentum, StepLosses, TrainConfig, Trainer};
