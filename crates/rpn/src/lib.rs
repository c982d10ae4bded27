//! The facade over the `rpn` crates: what a user who wants "an RPN" imports.
//!
//! Re-exports the layer crates (`anchors`, `targets`, `proposals`, `loss`, `model`) and adds
//! what needs several of them at once:
//! - [`ShapesDataset`]: seed 001's synthetic shapes images with their boxes, from a seed;
//! - [`Trainer`]: seed 001's recipe (Matterport targets, seed 001's losses, Keras' SGD with
//!   momentum, BatchNorm in training mode).
//!
//! ```no_run
//! use rpn::{TrainConfig, Trainer};
//!
//! let mut trainer = Trainer::seed001(TrainConfig { seed: 7, ..TrainConfig::default() })?;
//! for step in 0..10 {
//!     let losses = trainer.step()?;
//!     println!("step {step}: {:.4} + {:.4}", losses.objectness, losses.box_regression);
//! }
//! # Ok::<(), candle_core::Error>(())
//! ```

mod shapes;
mod train;

pub use rpn_anchors as anchors;
pub use rpn_loss as loss;
pub use rpn_model as model;
pub use rpn_proposals as proposals;
pub use rpn_targets as targets;
pub use shapes::{Shape, ShapeKind, ShapesDataset, ShapesImage};
pub use train::{SgdMomentum, StepLosses, TrainConfig, Trainer};
