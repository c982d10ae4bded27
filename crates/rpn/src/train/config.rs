//! What a training run is configured with: hyper-parameters, the learning-rate schedule, and the
//! parts of a recipe that differ between the seeds (Keras SGD) and Matterport (`MaskRCNN.compile`
//! and `MaskRCNN.train`).

use crate::Error;

/// How the learning rate changes with the step (a factor on [`TrainConfig::lr`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LrSchedule {
    /// Always `lr` (seed 001).
    Constant,
    /// `lr · gamma^(step / every)` (Keras `ExponentialDecay(staircase=True)`, torch `StepLR`).
    Step {
        /// Steps between decays.
        every: usize,
        /// Factor per decay.
        gamma: f64,
    },
    /// Half a cosine from `lr` at step 0 to `lr · floor` at `total_steps` (torch
    /// `CosineAnnealingLR` with `eta_min = lr · floor`), constant afterwards.
    Cosine {
        /// Length of the decay.
        total_steps: usize,
        /// Final share of `lr`.
        floor: f64,
    },
}

impl LrSchedule {
    /// Rejects schedules that cannot train: a step schedule must decay every ≥ 1 steps by a
    /// finite factor > 0; a cosine floor is a share of `lr` in `[0, 1]` over ≥ 1 steps.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            Self::Constant => Ok(()),
            Self::Step { every, .. } if every == 0 => {
                Err(Error::invalid("step schedule interval", every, "at least 1 step"))
            }
            Self::Step { gamma, .. } if !(gamma > 0.0 && gamma.is_finite()) => {
                Err(Error::invalid("step schedule factor", gamma, "a finite number > 0"))
            }
            Self::Cosine { total_steps, .. } if total_steps == 0 => {
                Err(Error::invalid("cosine schedule length", total_steps, "at least 1 step"))
            }
            Self::Cosine { floor, .. } if !(0.0..=1.0).contains(&floor) => Err(Error::invalid(
                "cosine schedule floor",
                floor,
                "a share of the learning rate in [0, 1]",
            )),
            _ => Ok(()),
        }
    }

    /// The factor at `step` (0-based).
    pub fn factor(&self, step: usize) -> f64 {
        match *self {
            Self::Constant => 1.0,
            Self::Step { every, gamma } => gamma.powi((step / every.max(1)) as i32),
            Self::Cosine { total_steps, floor } => {
                let t = (step as f64 / total_steps.max(1) as f64).min(1.0);
                floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Hyper-parameters; `Default` is seed 001's (`SGD(lr=0.0005, momentum=0.9)`, batches of 20).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum of Keras' SGD: `v ← m·v − lr·g`, `w ← w + v`.
    pub momentum: f64,
    /// L2 weight decay added to the gradient (`g + wd·w`); 0 in the seed.
    pub weight_decay: f64,
    /// Images per step.
    pub batch_size: usize,
    /// Seed of the initial weights, the order of the images and the anchor sampling.
    pub seed: u64,
    /// Rescale the gradients when their global L2 norm exceeds this (torch
    /// `clip_grad_norm_`); `None` in the seed.
    pub clip_grad_norm: Option<f64>,
    /// Learning-rate schedule; constant in the seed.
    pub schedule: LrSchedule,
    /// How `weight_decay` enters the gradient.
    #[serde(default)]
    pub weight_decay_kind: WeightDecay,
    /// How `clip_grad_norm` clips.
    #[serde(default)]
    pub clip_kind: GradientClip,
    /// Which layers learn (Matterport's `model.train(layers=…)`); the others keep their weights
    /// bit for bit and get no gradient and no optimiser state.
    #[serde(default)]
    pub layers: Layers,
    /// Anchors that cross the image border (seed 004 ignores them; Matterport keeps them).
    #[serde(default)]
    pub border: Border,
    /// Flip every other image left–right, drawn per image from the seed (Matterport's
    /// `load_image_gt(augment=True)`).
    #[serde(default)]
    pub flip: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 5e-4,
            momentum: 0.9,
            weight_decay: 0.0,
            batch_size: 20,
            seed: 0,
            clip_grad_norm: None,
            schedule: LrSchedule::Constant,
            weight_decay_kind: WeightDecay::Gradient,
            clip_kind: GradientClip::GlobalNorm,
            layers: Layers::All,
            border: Border::Keep,
            flip: false,
        }
    }
}

impl TrainConfig {
    /// Matterport's recipe (`config.py` and `MaskRCNN.compile`): SGD with `LEARNING_RATE` 0.001,
    /// `LEARNING_MOMENTUM` 0.9, `WEIGHT_DECAY` 1e-4 as an L2 loss over every trained tensor but
    /// BatchNorm γ/β ([`WeightDecay::MatterportL2`]), `GRADIENT_CLIP_NORM` 5.0 as Keras'
    /// `clipnorm` ([`GradientClip::PerTensor`]), `IMAGES_PER_GPU` 2, every layer trained, border
    /// anchors kept, no augmentation. BatchNorm stays frozen (`TRAIN_BN = False`): that is the
    /// network's, not the optimiser's.
    ///
    /// ```
    /// let recipe = rpn::TrainConfig::matterport();
    /// assert_eq!((recipe.lr, recipe.batch_size, recipe.clip_grad_norm), (1e-3, 2, Some(5.0)));
    /// ```
    pub fn matterport() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 1e-4,
            batch_size: 2,
            clip_grad_norm: Some(5.0),
            weight_decay_kind: WeightDecay::MatterportL2,
            clip_kind: GradientClip::PerTensor,
            ..Self::default()
        }
    }

    /// Rejects values that cannot train (names the field and value).
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid("learning rate", self.lr, "a finite number > 0"));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::invalid("momentum", self.momentum, "0 ≤ m < 1"));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::invalid("weight decay", self.weight_decay, "a finite number ≥ 0"));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size", 0, "at least 1"));
        }
        if let Some(c) = self.clip_grad_norm.filter(|c| !(*c > 0.0 && c.is_finite())) {
            return Err(Error::invalid("gradient clipping norm", c, "a finite number > 0"));
        }
        self.schedule.validate()
    }
}

/// How the weight decay enters the gradient of a trained tensor `w` of `n` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WeightDecay {
    /// `g + wd·w`, added after clipping, on every trained tensor (torch `SGD(weight_decay=…)`;
    /// the seed recipes use 0).
    #[default]
    Gradient,
    /// Matterport's `compile`: `wd · Σw² / n` joins the loss for every trained tensor whose name
    /// has neither `gamma` nor `beta` (conv kernels *and* biases; not BatchNorm γ/β), so the
    /// gradient gains `2·wd·w / n` before clipping.
    MatterportL2,
}

/// How `clip_grad_norm` bounds the gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GradientClip {
    /// torch `clip_grad_norm_`: every gradient times `max / (‖all‖ + 1e-6)` when the global norm
    /// exceeds `max`.
    #[default]
    GlobalNorm,
    /// Keras' `clipnorm` (tf-keras 2.x, what Matterport's `compile` passes): each tensor's
    /// gradient separately, `g · max / max(‖g‖, max)` (`tf.clip_by_norm`). Keras 2.0.8, which
    /// Matterport was written against, clipped by the global norm instead.
    PerTensor,
}

/// Matterport's layer selection (`MaskRCNN.train(layers=…)`): a layer learns when its Keras name
/// fully matches the regex of the selection. For an RPN-only model `heads` is `rpn_*` + `fpn_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Layers {
    /// `".*"`.
    #[default]
    All,
    /// `(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)`.
    Heads,
    /// ResNet stage 3 and up, and the heads: `(res3.*)|(bn3.*)|…|(fpn\_.*)`.
    From3,
    /// Stage 4 and up, and the heads.
    From4,
    /// Stage 5 and the heads.
    From5,
}

impl Layers {
    /// Every selection with its CLI name.
    pub const ALL: [(&'static str, Layers); 5] = [
        ("heads", Layers::Heads),
        ("3+", Layers::From3),
        ("4+", Layers::From4),
        ("5+", Layers::From5),
        ("all", Layers::All),
    ];

    /// Whether the Keras layer `layer` learns: `re.fullmatch` of Matterport's regex, each of
    /// whose alternatives is a literal prefix followed by `.*`.
    ///
    /// ```
    /// use rpn::Layers;
    /// assert!(Layers::Heads.trains("fpn_p2") && Layers::Heads.trains("rpn_conv_shared"));
    /// assert!(!Layers::Heads.trains("res5c_branch2c"));
    /// assert!(Layers::From4.trains("bn4a_branch1") && !Layers::From4.trains("res3d_branch2a"));
    /// assert!(!Layers::From3.trains("conv1") && Layers::All.trains("bn_conv1"));
    /// ```
    pub fn trains(self, layer: &str) -> bool {
        const HEADS: [&str; 3] = ["mrcnn_", "rpn_", "fpn_"];
        let first_stage = match self {
            Self::All => return true,
            Self::Heads => return HEADS.iter().any(|p| layer.starts_with(p)),
            Self::From3 => 3,
            Self::From4 => 4,
            Self::From5 => 5,
        };
        HEADS.iter().any(|p| layer.starts_with(p))
            || (first_stage..=5).any(|stage| {
                layer.starts_with(&format!("res{stage}"))
                    || layer.starts_with(&format!("bn{stage}"))
            })
    }

    /// The CLI name (`heads`, `3+`, …).
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, l)| *l == self).map_or("all", |(n, _)| n)
    }
}

impl std::str::FromStr for Layers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, l)| *l).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
            format!("unknown layer selection `{s}` (expected one of {})", names.join(", "))
        })
    }
}

/// What the targets do with anchors that cross the image border.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Border {
    /// Every anchor is matched (Matterport's `build_rpn_targets`, torchvision, detectron2).
    #[default]
    Keep,
    /// Anchors reaching outside the image are ignored: neither positive nor negative, and never
    /// forced (seed 004, py-faster-rcnn's `_allowed_border = 0`).
    Ignore,
}
