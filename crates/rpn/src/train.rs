//! Seed 001's training recipe: batches from a [`Dataset`], Matterport targets, seed 001's losses,
//! SGD with momentum (Keras' update), BatchNorm in training mode; checkpoints that resume exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand_chacha::ChaCha8Rng;
use rpn_anchors::{BoxCoder, ImageSize};
use rpn_loss::matterport_losses;
use rpn_model::{BatchNormMode, Model, SeedRpn};
use rpn_targets::{seeded_rng, Matcher, MatcherConfig, Sampler, SamplerConfig, TargetBuilder};

use crate::checkpoint;
use crate::data::{stream_rng, streams, training_index, Dataset, ShapesSource};
use crate::proposer::{check_memory, Proposer, ProposerOptions};
use crate::{Architecture, Error};

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
        }
    }
}

impl TrainConfig {
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

/// Keras' `SGD(momentum=…)` over named trainable variables (BN moving statistics get no
/// gradient and are not in it).
#[derive(Debug)]
pub struct SgdMomentum {
    vars: Vec<(String, Var, Tensor)>,
    config: TrainConfig,
}

impl SgdMomentum {
    /// Velocities start at zero, as Keras'.
    pub fn new(vars: Vec<(String, Var)>, config: TrainConfig) -> candle_core::Result<Self> {
        let vars = vars
            .into_iter()
            .map(|(n, v)| Ok((n, v.clone(), v.zeros_like()?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { vars, config })
    }

    /// One update with learning rate `lr` from the gradients of `loss`; returns the gradients'
    /// global L2 norm before clipping.
    ///
    /// A gradient with a non-finite norm (the run diverged) is [`Error::Diverged`] and changes
    /// nothing: the weights and velocities stay those of the last good step.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<f64, Error> {
        let grads = loss.backward()?;
        // Detached: a velocity that kept its gradient's graph would keep every past step alive.
        let grads: Vec<Option<Tensor>> =
            self.vars.iter().map(|(_, v, _)| grads.get(v).map(Tensor::detach)).collect();
        let mut sum_sq = 0f64;
        for g in grads.iter().flatten() {
            sum_sq += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
        let norm = sum_sq.sqrt();
        if !norm.is_finite() {
            return Err(Error::Diverged { what: format!("the gradients' norm is {norm}") });
        }
        let clip = match self.config.clip_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        for ((_, var, velocity), g) in self.vars.iter_mut().zip(grads) {
            let Some(mut g) = g else { continue };
            if clip != 1.0 {
                g = (g * clip)?;
            }
            if self.config.weight_decay > 0.0 {
                g = (g + (var.as_tensor().detach() * self.config.weight_decay)?)?;
            }
            *velocity = ((&*velocity * self.config.momentum)? - (g * lr)?)?.detach();
            var.set(&(var.as_tensor().detach() + &*velocity)?)?;
        }
        Ok(norm)
    }
}

/// Keras' default initialisation, deterministic: variables are visited in name order (a `VarMap`
/// iterates in hash order); conv kernels `[O, I, kh, kw]` get Glorot-uniform
/// `±√(6 / (fan_in + fan_out))`, conv biases 0; BatchNorm keeps candle's γ = 1, β = 0, μ = 0, σ² = 1.
fn keras_init(varmap: &VarMap, rng: &mut ChaCha8Rng) -> candle_core::Result<()> {
    use rand_core::Rng;
    let vars = varmap.data().lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        if let [o, i, kh, kw] = *var.dims() {
            let limit = (6.0 / ((kh * kw * i + kh * kw * o) as f64)).sqrt() as f32;
            let n = o * i * kh * kw;
            let values: Vec<f32> = (0..n)
                .map(|_| ((rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * limit)
                .collect();
            var.set(&Tensor::from_vec(values, (o, i, kh, kw), var.device())?)?;
        } else if name
            .strip_suffix(".bias")
            .is_some_and(|p| vars.get(&format!("{p}.weight")).is_some_and(|w| w.rank() == 4))
        {
            var.set(&var.zeros_like()?)?;
        }
    }
    Ok(())
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    /// `rpn_class_loss`.
    pub objectness: f32,
    /// `rpn_bbox_loss`.
    pub box_regression: f32,
    /// Global L2 norm of the gradients (before clipping).
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
}

impl StepLosses {
    /// Their sum, what the optimiser minimises.
    pub fn total(&self) -> f32 {
        self.objectness + self.box_regression
    }
}

const CHECKPOINT_FORMAT: &str = "rpn-checkpoint-1";
const VELOCITY_PREFIX: &str = "optimizer.velocity.";

/// Training keeps every activation for the backward pass: a step needs about this many times
/// the memory of a forward pass. Measured on seed 001, batches of 20 at 64² and 128²: 19.6 kB
/// per input pixel against 1.9 kB for inference; 8 × 2,800 B/px keeps a 1.14× margin and
/// still admits batches of 20 at 128² under the default 8 GiB budget (6.3 GB measured).
const TRAINING_MEMORY_FACTOR: u64 = 8;

/// Trains a seed RPN (000 or 001) one batch per [`Trainer::step`].
pub struct Trainer {
    /// The variables (weights and BN statistics).
    pub varmap: VarMap,
    /// The model being trained.
    pub model: SeedRpn,
    arch: Architecture,
    image: ImageSize,
    dataset: Box<dyn Dataset>,
    optimizer: SgdMomentum,
    config: TrainConfig,
    step: usize,
    /// Matcher (owning the anchors), sampler and coder, reused by every image of the run.
    targets: TargetBuilder,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("arch", &self.arch.name)
            .field("dataset", &self.dataset.describe())
            .field("config", &self.config)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A fresh `arch` (seed000 or seed001) initialised as Keras does (Glorot-uniform kernels, zero
    /// biases, BN γ = 1, β = 0) from `config.seed`: the same seed and data give the same losses.
    pub fn new(
        arch: &Architecture,
        config: TrainConfig,
        dataset: Box<dyn Dataset>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let rpn = match arch.rpn() {
            Some(rpn) if rpn.trainable => rpn,
            _ => {
                return Err(Error::Unsupported {
                    arch: arch.name,
                    what: "training supports seed000 and seed001 for now".into(),
                })
            }
        };
        let image = dataset.image_size();
        let stride = arch.network.stride() as u32;
        if image.height < stride
            || image.width < stride
            || !image.height.is_multiple_of(stride)
            || !image.width.is_multiple_of(stride)
        {
            return Err(Error::invalid(
                "training image size",
                format!("{}×{}", image.height, image.width),
                format!("sides that are positive multiples of {}'s stride {stride}", arch.name),
            ));
        }
        check_memory(
            || {
                format!(
                    "training {} on batches of {} images of {}×{}",
                    arch.name, config.batch_size, image.height, image.width
                )
            },
            rpn.forward_bytes(image, config.batch_size).saturating_mul(TRAINING_MEMORY_FACTOR),
            crate::memory_budget_from_env()?,
        )?;
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let Model::SeedRpn(model) = arch.network.build(vb)? else {
            return Err(Error::Unsupported {
                arch: arch.name,
                what: "only the seed networks are trainable".into(),
            });
        };
        keras_init(&varmap, &mut seeded_rng(config.seed))?;
        let anchors = rpn.anchors.generate(image)?;
        let targets = TargetBuilder::new(
            Matcher::new(anchors, MatcherConfig::default())?,
            Sampler::new(SamplerConfig::default())?,
            BoxCoder::matterport(),
        );
        // Only weights and biases learn; the BN moving statistics are updated by the forward pass.
        let trainable = {
            let vars = varmap.data().lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let mut named: Vec<(String, Var)> = vars
                .iter()
                .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named
        };
        let optimizer = SgdMomentum::new(trainable, config)?;
        Ok(Self {
            varmap,
            model,
            arch: arch.clone(),
            image,
            dataset,
            optimizer,
            config,
            step: 0,
            targets,
        })
    }

    /// Seed 001 on its synthetic shapes (training stream of `config.seed`).
    pub fn seed001(config: TrainConfig) -> Result<Self, Error> {
        let arch: Architecture = "seed001".parse()?;
        Self::new(&arch, config, Box::new(ShapesSource::train(config.seed)))
    }

    /// The architecture being trained.
    pub fn arch(&self) -> &Architecture {
        &self.arch
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The data set being trained on.
    pub fn dataset(&self) -> &dyn Dataset {
        self.dataset.as_ref()
    }

    /// One SGD step on the next batch; returns its losses (before the update).
    pub fn step(&mut self) -> Result<StepLosses, Error> {
        let b = self.config.batch_size;
        let (mut pixels, mut matches, mut bbox) = (Vec::new(), Vec::new(), Vec::<f32>::new());
        for j in 0..b {
            let k = self.step * b + j;
            let sample =
                self.dataset.get(training_index(self.dataset.as_ref(), self.config.seed, k))?;
            let mut rng = stream_rng(self.config.seed, streams::ANCHOR_SAMPLING | k as u64);
            let (targets, _) =
                self.targets.matterport(&sample.boxes, &sample.crowd, self.image, &mut rng)?;
            pixels.extend(sample.pixels);
            matches.extend(targets.rpn_match.iter().map(|&v| i64::from(v)));
            bbox.extend(targets.rpn_bbox.iter().flatten().copied());
        }
        let (h, w) = (self.image.height as usize, self.image.width as usize);
        let a = matches.len() / b;
        let images = Tensor::from_vec(pixels, (b, h, w, 3), &Device::Cpu)?;
        let rpn_match = Tensor::from_vec(matches, (b, a), &Device::Cpu)?;
        // Every image packs the sampler's `batch_size` rows (zero-padded).
        let rows = bbox.len() / (4 * b);
        let target_bbox = Tensor::from_vec(bbox, (b, rows, 4), &Device::Cpu)?;
        let out = self.model.forward_nhwc_t(&images, true)?;
        let losses = matterport_losses(&rpn_match, &out.logits, &target_bbox, &out.deltas)?;
        let objectness = losses.objectness.to_vec0::<f32>()?;
        let box_regression = losses.box_regression.to_vec0::<f32>()?;
        let lr = self.config.lr * self.config.schedule.factor(self.step);
        let diverged =
            |what: String| Error::Diverged { what: format!("step {}: {what}", self.step + 1) };
        if !(objectness.is_finite() && box_regression.is_finite()) {
            return Err(diverged(format!(
                "the loss is not finite (objectness {objectness}, box {box_regression}) at \
                 learning rate {lr}"
            )));
        }
        let grad_norm = match self.optimizer.backward_step(&losses.total()?, lr) {
            Err(Error::Diverged { what }) => return Err(diverged(what)),
            other => other?,
        };
        self.step += 1;
        Ok(StepLosses { objectness, box_regression, grad_norm, lr })
    }

    /// Replaces the BatchNorm moving statistics by population statistics over `batches` batches
    /// of the run's first training images ([`BatchNormMode::Calibrate`], detectron2's PreciseBN).
    /// Seed 001's recipe keeps Keras' momentum 0.99, whose averages still remember their initial
    /// μ = 0, σ² = 1 after a few hundred steps (0.99³⁰⁰ ≈ 5 %). Call it after the last step: a
    /// checkpoint saved afterwards carries these statistics, not the training run's.
    pub fn recompute_bn_statistics(&mut self, batches: usize) -> Result<(), Error> {
        let b = self.config.batch_size;
        let (h, w) = (self.image.height as usize, self.image.width as usize);
        for batch in 0..batches {
            let mut pixels = Vec::with_capacity(b * h * w * 3);
            for j in 0..b {
                let index = training_index(self.dataset.as_ref(), self.config.seed, batch * b + j);
                pixels.extend(self.dataset.get(index)?.pixels);
            }
            let images = Tensor::from_vec(pixels, (b, h, w, 3), &Device::Cpu)?;
            let mode = BatchNormMode::Calibrate { batches_seen: batch };
            self.model.forward_nhwc_mode(&images, mode)?;
        }
        Ok(())
    }

    /// The trained model as a [`Proposer`] (BN with its moving statistics) at the training
    /// image size, on a frozen copy of the weights: later training steps do not change it, and
    /// no gradients are tracked.
    pub fn proposer(&self) -> Result<Proposer, Error> {
        // `copy`: a detached tensor still shares the variable's storage, which `Var::set` writes.
        let frozen = self
            .named_vars()?
            .into_iter()
            .map(|(k, t)| Ok((k, t.detach().copy()?)))
            .collect::<Result<HashMap<String, Tensor>, candle_core::Error>>()?;
        let model =
            self.arch.network.build(VarBuilder::from_tensors(frozen, DType::F32, &Device::Cpu))?;
        let options = ProposerOptions { input_side: Some(self.image.height), ..Default::default() };
        Proposer::from_model(&self.arch, model, Some(self.image.height), options)
    }

    fn named_vars(&self) -> Result<BTreeMap<String, Tensor>, Error> {
        let vars = self.varmap.data().lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect())
    }

    /// Writes the model (weights and BN statistics, the names `rpn forward` and
    /// [`Proposer::load`] read) to `path`, atomically.
    pub fn save_weights(&self, path: &Path) -> Result<(), Error> {
        let metadata = HashMap::from([
            ("arch".to_owned(), self.arch.name.to_owned()),
            ("step".to_owned(), self.step.to_string()),
            // The input size the Proposer uses by default for these weights.
            ("image_size".to_owned(), self.image.height.to_string()),
        ]);
        checkpoint::write_atomic(path, &self.named_vars()?, metadata)
    }

    /// Writes model, optimizer velocities, step and configuration to `path`, atomically:
    /// [`Trainer::resume`] continues from it exactly.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), Error> {
        let mut tensors = self.named_vars()?;
        for (name, _, velocity) in &self.optimizer.vars {
            tensors.insert(format!("{VELOCITY_PREFIX}{name}"), velocity.clone());
        }
        let config = serde_json::to_string(&self.config).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("cannot serialise the configuration: {e}"),
        })?;
        let metadata = HashMap::from([
            ("format".to_owned(), CHECKPOINT_FORMAT.to_owned()),
            ("arch".to_owned(), self.arch.name.to_owned()),
            ("step".to_owned(), self.step.to_string()),
            ("image_size".to_owned(), self.image.height.to_string()),
            ("config".to_owned(), config),
            ("dataset".to_owned(), self.dataset.describe()),
        ]);
        checkpoint::write_atomic(path, &tensors, metadata)
    }

    /// Continues the run saved at `path` exactly: model, velocities, step and configuration
    /// come from the file, and `dataset` must be the run's (same description and image size),
    /// or the losses would not continue. [`Trainer::resume_with`] continues with changes.
    pub fn resume(path: &Path, dataset: Box<dyn Dataset>) -> Result<Self, Error> {
        let info = CheckpointInfo::read(path)?;
        let image = dataset.image_size();
        let here = (dataset.describe(), image.height);
        if here != (info.dataset.clone(), info.image_size) {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "the run was trained on {} at {}² and this one would train on {} at {}²; \
                     resuming on other data does not continue the run (use the same data, or \
                     resume with an explicit override)",
                    info.dataset, info.image_size, here.0, here.1
                ),
            });
        }
        let config = info.config;
        Self::restore(path, &info, config, dataset)
    }

    /// Continues the run saved at `path` with another configuration and/or data set: model,
    /// velocities and step come from the file, `config` and `dataset` from the caller (a
    /// learning-rate change for the rest of a run, fine-tuning on new data).
    pub fn resume_with(
        path: &Path,
        dataset: Box<dyn Dataset>,
        config: TrainConfig,
    ) -> Result<Self, Error> {
        let info = CheckpointInfo::read(path)?;
        Self::restore(path, &info, config, dataset)
    }

    fn restore(
        path: &Path,
        info: &CheckpointInfo,
        config: TrainConfig,
        dataset: Box<dyn Dataset>,
    ) -> Result<Self, Error> {
        let err = |message: String| Error::Checkpoint { path: path.to_path_buf(), message };
        let arch: Architecture = info.arch.parse()?;
        let mut trainer = Self::new(&arch, config, dataset)?;
        let (tensors, _) = checkpoint::read(path, &Device::Cpu)?;
        let tensor = |name: &str, dims: &[usize]| {
            let t = tensors.get(name).ok_or_else(|| err(format!("missing tensor `{name}`")))?;
            if t.dims() != dims {
                return Err(err(format!(
                    "tensor `{name}` has shape {:?}; {} needs {dims:?}",
                    t.dims(),
                    arch.name
                )));
            }
            Ok(t)
        };
        {
            let vars =
                trainer.varmap.data().lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            for (name, var) in vars.iter() {
                var.set(tensor(name, var.dims())?)?;
            }
        }
        for (name, var, velocity) in &mut trainer.optimizer.vars {
            *velocity = tensor(&format!("{VELOCITY_PREFIX}{name}"), var.dims())?.clone();
        }
        trainer.step = info.step;
        Ok(trainer)
    }
}

/// What an `rpn train` checkpoint says about its run, read from its header without loading
/// the tensors: what a resume compares its flags with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// Architecture name.
    pub arch: String,
    /// Steps done.
    pub step: usize,
    /// The run's hyper-parameters.
    pub config: TrainConfig,
    /// Side of the square training images.
    pub image_size: u32,
    /// [`Dataset::describe`] of the run's data.
    pub dataset: String,
}

impl CheckpointInfo {
    /// Reads the metadata of the checkpoint at `path`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let metadata = checkpoint::read_metadata(path)?;
        let err = |message: String| Error::Checkpoint { path: path.to_path_buf(), message };
        let field = |key: &str| {
            metadata.get(key).ok_or_else(|| {
                err(format!("not an `rpn train` checkpoint (no `{key}` in its metadata)"))
            })
        };
        if field("format")? != CHECKPOINT_FORMAT {
            return Err(err(format!("unknown checkpoint format `{}`", field("format")?)));
        }
        let number = |key: &str| -> Result<u64, Error> {
            let text = field(key)?;
            text.parse().map_err(|_| err(format!("bad `{key}` in its metadata: `{text}`")))
        };
        let config: TrainConfig = serde_json::from_str(field("config")?)
            .map_err(|e| err(format!("bad configuration in its metadata: {e}")))?;
        Ok(Self {
            arch: field("arch")?.clone(),
            step: usize::try_from(number("step")?).map_err(|_| err("step too large".into()))?,
            config,
            image_size: u32::try_from(number("image_size")?)
                .map_err(|_| err("image size too large".into()))?,
            dataset: field("dataset")?.clone(),
        })
    }
}
