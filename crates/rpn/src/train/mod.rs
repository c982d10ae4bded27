//! Training: batches from a [`Dataset`], Matterport-layout targets over the whole anchor pyramid,
//! Matterport's losses, SGD with momentum (Keras' update); seed 001's recipe (BatchNorm in
//! training mode) or Matterport's (frozen BatchNorm, L2 loss, `clipnorm`, layer selection);
//! checkpoints that resume exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

mod config;
mod optimizer;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand_chacha::ChaCha8Rng;
use rand_core::Rng;
use rpn_anchors::{Bbox, BoxCoder, ImageSize};
use rpn_loss::matterport_losses;
use rpn_model::{BatchNormMode, MatterportRpn, Model, SeedRpn};
use rpn_targets::{
    seeded_rng, BorderPolicy, Matcher, MatcherConfig, Sampler, SamplerConfig, TargetBuilder,
};

pub use config::{Border, GradientClip, Layers, LrSchedule, TrainConfig, WeightDecay};
pub use optimizer::SgdMomentum;

use crate::checkpoint;
use crate::data::{stream_rng, streams, training_index, Dataset, Sample, ShapesSource};
use crate::proposer::{check_memory, Proposer, ProposerOptions};
use crate::{Architecture, Error, MEAN_PIXEL};

/// Keras' default initialisation, deterministic: variables are visited in name order (a `VarMap`
/// iterates in hash order); conv kernels `[O, I, kh, kw]` get Glorot-uniform
/// `±√(6 / (fan_in + fan_out))`, conv biases 0; BatchNorm keeps candle's γ = 1, β = 0, μ = 0, σ² = 1.
fn keras_init(varmap: &VarMap, rng: &mut ChaCha8Rng) -> candle_core::Result<()> {
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

/// The network being trained.
#[derive(Debug)]
enum TrainNet {
    /// Seeds 000/001: BatchNorm in training mode (batch statistics, moving averages updated).
    Seed(SeedRpn),
    /// Matterport's ResNet-FPN: BatchNorm frozen (`TRAIN_BN = False`), molded inputs.
    Matterport(MatterportRpn),
}

impl TrainNet {
    /// `rpn_class_logits` and `rpn_bbox` of a batch, gradients tracked.
    fn forward(&self, images: &Tensor) -> Result<(Tensor, Tensor), Error> {
        Ok(match self {
            Self::Seed(m) => {
                let out = m.forward_nhwc_t(images, true)?;
                (out.logits, out.deltas)
            }
            Self::Matterport(m) => {
                let out = m.forward_nhwc(images)?;
                (out.logits, out.deltas)
            }
        })
    }

    fn input(&self) -> Input {
        match self {
            Self::Seed(_) => Input::Unit,
            Self::Matterport(_) => Input::Molded,
        }
    }
}

/// What the network is fed, made from a sample's RGB values in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// The values as they are (the seeds).
    Unit,
    /// Matterport's `mold_image` of the 8-bit image: `round(255·v) − MEAN_PIXEL`.
    Molded,
}

/// One batch, ready for the network: what [`Trainer::step_on`] trains on.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// `[B, H, W, 3]` network inputs: RGB in `[0, 1]` for the seeds, molded (8-bit RGB minus
    /// [`crate::MEAN_PIXEL`]) for Matterport.
    pub images: Tensor,
    /// `[B, A]` `rpn_match` (`i64`: 1 positive, −1 negative, 0 ignored), anchors in the global
    /// order.
    pub rpn_match: Tensor,
    /// `[B, 256, 4]` `rpn_bbox`: Matterport deltas over `RPN_BBOX_STD_DEV` of the positives in
    /// anchor order, zero-padded.
    pub rpn_bbox: Tensor,
}

/// Makes the batch of any step from the data set and the seed alone (so resuming needs no
/// loader state, and the next batch can be made on another thread).
struct Feeder {
    dataset: Box<dyn Dataset>,
    /// Matcher (owning the anchors), sampler and coder, reused by every image of the run.
    targets: TargetBuilder,
    image: ImageSize,
    input: Input,
    config: TrainConfig,
}

impl Feeder {
    /// The batch of step `step`: images `step·B … step·B + B − 1` of the run's order.
    fn batch(&mut self, step: usize) -> Result<TrainBatch, Error> {
        let b = self.config.batch_size;
        let (h, w) = (self.image.height as usize, self.image.width as usize);
        let mut pixels = Vec::with_capacity(b * h * w * 3);
        let (mut matches, mut bbox) = (Vec::new(), Vec::<f32>::new());
        for j in 0..b {
            let k = step * b + j;
            let mut sample =
                self.dataset.get(training_index(self.dataset.as_ref(), self.config.seed, k))?;
            if sample.size != self.image || sample.pixels.len() != h * w * 3 {
                return Err(Error::invalid(
                    "training sample size",
                    format!("{}×{}", sample.size.height, sample.size.width),
                    format!("the data set's {}×{}", self.image.height, self.image.width),
                ));
            }
            if self.config.flip
                && stream_rng(self.config.seed, streams::FLIP | k as u64).next_u32() & 1 == 1
            {
                flip_left_right(&mut sample);
            }
            let mut rng = stream_rng(self.config.seed, streams::ANCHOR_SAMPLING | k as u64);
            let (targets, _) =
                self.targets.matterport(&sample.boxes, &sample.crowd, self.image, &mut rng)?;
            matches.extend(targets.rpn_match.iter().map(|&v| i64::from(v)));
            bbox.extend(targets.rpn_bbox.iter().flatten().copied());
            match self.input {
                Input::Unit => pixels.extend(sample.pixels),
                Input::Molded => pixels.extend(sample.pixels.chunks_exact(3).flat_map(|p| {
                    [0, 1, 2].map(|c| (p[c].clamp(0.0, 1.0) * 255.0).round() - MEAN_PIXEL[c])
                })),
            }
        }
        let a = matches.len() / b;
        // Every image packs the sampler's `batch_size` rows (zero-padded).
        let rows = bbox.len() / (4 * b);
        Ok(TrainBatch {
            images: Tensor::from_vec(pixels, (b, h, w, 3), &Device::Cpu)?,
            rpn_match: Tensor::from_vec(matches, (b, a), &Device::Cpu)?,
            rpn_bbox: Tensor::from_vec(bbox, (b, rows, 4), &Device::Cpu)?,
        })
    }
}

/// Mirrors a sample left–right, boxes with it (`x ↦ W − x`).
fn flip_left_right(sample: &mut Sample) {
    let (h, w) = (sample.size.height as usize, sample.size.width as usize);
    for row in sample.pixels.chunks_exact_mut(w * 3).take(h) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
    let width = sample.size.width as f32;
    for b in sample.boxes.iter_mut().chain(sample.crowd.iter_mut()) {
        *b = Bbox::new(width - b.x2, b.y1, width - b.x1, b.y2);
    }
}

/// The network, its optimiser and the step count.
struct Learner {
    net: TrainNet,
    optimizer: SgdMomentum,
    config: TrainConfig,
    step: usize,
}

impl Learner {
    fn step_on(&mut self, batch: &TrainBatch) -> Result<StepLosses, Error> {
        let (logits, deltas) = self.net.forward(&batch.images)?;
        let losses = matterport_losses(&batch.rpn_match, &logits, &batch.rpn_bbox, &deltas)?;
        let objectness = losses.objectness.to_vec0::<f32>()?;
        let box_regression = losses.box_regression.to_vec0::<f32>()?;
        let lr = self.config.lr * self.config.schedule.factor(self.step);
        let step = self.step + 1;
        let diverged = |what: String| Error::Diverged { what: format!("step {step}: {what}") };
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
}

/// Trains an RPN one batch per [`Trainer::step`]: seeds 000/001 with seed 001's recipe
/// ([`TrainConfig::default`]), Matterport's ResNet-50/101-FPN with its own
/// ([`TrainConfig::matterport`]).
///
/// The next batch is made on a second thread while the network trains on this one; every batch
/// depends only on the seed and the step, so a resumed run sees the same images and anchor
/// samples.
pub struct Trainer {
    /// Every tensor of the network (weights, BatchNorm statistics), trained or not.
    pub varmap: VarMap,
    arch: Architecture,
    image: ImageSize,
    learner: Learner,
    feeder: Feeder,
    prefetched: Option<(usize, TrainBatch)>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("arch", &self.arch.name)
            .field("dataset", &self.feeder.dataset.describe())
            .field("config", &self.learner.config)
            .field("step", &self.learner.step)
            .finish_non_exhaustive()
    }
}

/// Whether `name` is a BatchNorm moving statistic (never a gradient's target).
fn is_moving_statistic(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

impl Trainer {
    /// A fresh `arch` (seed000, seed001, matterport-resnet50/101, or a narrower variant of
    /// those) initialised as Keras does (Glorot-uniform kernels, zero biases, BN γ = 1, β = 0,
    /// μ = 0, σ² = 1) from `config.seed`: the same seed and data give the same losses.
    /// [`Trainer::load_initial_weights`] starts from ported weights instead.
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
                    what: "training supports seed000, seed001 and the Matterport ResNet-FPNs"
                        .into(),
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
        // Shapes only: nothing is allocated before the check.
        let parameters = arch.network.tensor_shapes()?.values().try_fold(0u64, |sum, shape| {
            let n = shape.iter().try_fold(1u64, |p, &d| p.checked_mul(d as u64))?;
            sum.checked_add(n)
        });
        check_memory(
            || {
                format!(
                    "training {} on batches of {} images of {}×{}",
                    arch.name, config.batch_size, image.height, image.width
                )
            },
            // Activations, plus weights, gradients, velocities and a temporary, 4 bytes each.
            rpn.training_bytes(image, config.batch_size)
                .saturating_add(parameters.unwrap_or(u64::MAX).saturating_mul(16)),
            crate::memory_budget_from_env()?,
        )?;
        let device = Device::Cpu;
        let varmap = VarMap::new();
        // Build once to create (and Keras-initialise) every variable, in the varmap.
        let created = arch.network.build(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
        keras_init(&varmap, &mut seeded_rng(config.seed))?;
        let all: BTreeMap<String, Var> = {
            let vars = varmap.data().lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let layer = |name: &str| name.split('.').next().unwrap_or(name).to_owned();
        let net = match created {
            Model::SeedRpn(model) => {
                if config.layers != Layers::All {
                    return Err(Error::Unsupported {
                        arch: arch.name,
                        what: "layer selections follow Matterport's layer names; the seeds train \
                               every layer"
                            .into(),
                    });
                }
                // BatchNorm in training mode writes its moving statistics through the variables.
                TrainNet::Seed(model)
            }
            Model::Matterport(_) => {
                // Frozen layers enter the graph as plain tensors sharing the variables' storage:
                // no gradient is computed for them, and weights loaded later reach the model.
                // Moving statistics stay variables (candle's BatchNorm copies a plain tensor into
                // a variable of its own, which later loads would miss); its inference pass reads
                // them detached, so they get no gradient either.
                let tensors: HashMap<String, Tensor> = all
                    .iter()
                    .map(|(name, var)| {
                        let learns = config.layers.trains(&layer(name));
                        let t = if is_moving_statistic(name) || learns {
                            var.as_tensor().clone()
                        } else {
                            var.as_tensor().detach()
                        };
                        (name.clone(), t)
                    })
                    .collect();
                match arch.network.build(VarBuilder::from_tensors(tensors, DType::F32, &device))? {
                    Model::Matterport(model) => TrainNet::Matterport(model),
                    _ => unreachable!("the same network builds the same model"),
                }
            }
            _ => {
                return Err(Error::Unsupported {
                    arch: arch.name,
                    what: "only the seed and Matterport networks are trainable".into(),
                })
            }
        };
        // Only weights and biases of the selected layers learn; BN moving statistics are updated
        // by the seeds' forward pass and frozen in Matterport's.
        let trainable: Vec<(String, Var)> = all
            .iter()
            .filter(|(k, _)| !is_moving_statistic(k) && config.layers.trains(&layer(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // BatchNorm γ/β: the `.weight`/`.bias` of a layer that has moving statistics.
        let batch_norm_layers: Vec<String> =
            all.keys().filter_map(|k| k.strip_suffix(".running_mean").map(str::to_owned)).collect();
        let optimizer = SgdMomentum::new(trainable, config)?.exempt_from_decay(|name| {
            config.weight_decay_kind == WeightDecay::MatterportL2
                && batch_norm_layers
                    .iter()
                    .any(|bn| name.strip_prefix(bn.as_str()).is_some_and(|r| r.starts_with('.')))
        });
        let matcher_config = MatcherConfig {
            border: match config.border {
                Border::Keep => BorderPolicy::Keep,
                Border::Ignore => BorderPolicy::IgnoreOutside { tolerance: 0.0 },
            },
            ..MatcherConfig::default()
        };
        let targets = TargetBuilder::new(
            Matcher::new(rpn.anchors.generate(image)?, matcher_config)?,
            Sampler::new(SamplerConfig::default())?,
            BoxCoder::matterport(),
        );
        let feeder = Feeder { dataset, targets, image, input: net.input(), config };
        Ok(Self {
            varmap,
            arch: arch.clone(),
            image,
            learner: Learner { net, optimizer, config, step: 0 },
            feeder,
            prefetched: None,
        })
    }

    /// Seed 001 on its synthetic shapes (training stream of `config.seed`).
    pub fn seed001(config: TrainConfig) -> Result<Self, Error> {
        let arch: Architecture = "seed001".parse()?;
        Self::new(&arch, config, Box::new(ShapesSource::train(config.seed)))
    }

    /// Starts from the weights in `path` (`rpn port-keras`, or another run's
    /// `final.safetensors`) instead of the random initialisation: every tensor of the network
    /// must be there with its shape (the error names the first that is not); extra tensors are
    /// ignored. Only before the first step.
    pub fn load_initial_weights(&mut self, path: &Path) -> Result<(), Error> {
        if self.learner.step > 0 {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "initial weights are loaded before the first step; this run is at step {}",
                    self.learner.step
                ),
            });
        }
        let (tensors, _) = checkpoint::read(path, &Device::Cpu)?;
        // `build_from` checks names and shapes and reports the first misfit by name.
        self.arch.network.build_from(tensors.clone(), &Device::Cpu).map_err(|source| {
            Error::Weights {
                path: path.to_path_buf(),
                arch: self.arch.name,
                source: Box::new(source),
            }
        })?;
        let vars = self.varmap.data().lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        for (name, var) in vars.iter() {
            if let Some(t) = tensors.get(name) {
                var.set(&t.to_dtype(DType::F32)?)?;
            }
        }
        Ok(())
    }

    /// The architecture being trained.
    pub fn arch(&self) -> &Architecture {
        &self.arch
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.learner.step
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.learner.config
    }

    /// The data set being trained on.
    pub fn dataset(&self) -> &dyn Dataset {
        self.feeder.dataset.as_ref()
    }

    /// Names of the tensors that learn, in order (the layer selection at work).
    pub fn trained_tensors(&self) -> impl Iterator<Item = &str> {
        self.learner.optimizer.names()
    }

    /// Whether BatchNorm is frozen (Matterport's `TRAIN_BN = False`): its statistics never change.
    pub fn batch_norm_frozen(&self) -> bool {
        matches!(self.learner.net, TrainNet::Matterport(_))
    }

    /// The batch step `step` trains on (what [`Trainer::step`] makes itself).
    pub fn batch(&mut self, step: usize) -> Result<TrainBatch, Error> {
        self.feeder.batch(step)
    }

    /// One SGD step on the next batch; returns its losses (before the update). The batch after
    /// it is made meanwhile on a second thread.
    pub fn step(&mut self) -> Result<StepLosses, Error> {
        let step = self.learner.step;
        let batch = match self.prefetched.take() {
            Some((at, batch)) if at == step => batch,
            _ => self.feeder.batch(step)?,
        };
        let (feeder, learner) = (&mut self.feeder, &mut self.learner);
        let (losses, next) = std::thread::scope(|scope| {
            let next = scope.spawn(move || feeder.batch(step + 1));
            let losses = learner.step_on(&batch);
            (losses, next.join())
        });
        match next {
            Ok(Ok(next)) => self.prefetched = Some((step + 1, next)),
            // Made again (and its error reported) when its step comes.
            Ok(Err(_)) => {}
            Err(panic) => std::panic::resume_unwind(panic),
        }
        losses
    }

    /// One SGD step on `batch` (e.g. targets made elsewhere); counts as the next step for the
    /// learning-rate schedule.
    pub fn step_on(&mut self, batch: &TrainBatch) -> Result<StepLosses, Error> {
        self.learner.step_on(batch)
    }

    /// Replaces the BatchNorm moving statistics by population statistics over `batches` batches
    /// of the run's first training images ([`BatchNormMode::Calibrate`], detectron2's PreciseBN).
    /// Seed 001's recipe keeps Keras' momentum 0.99, whose averages still remember their initial
    /// μ = 0, σ² = 1 after a few hundred steps (0.99³⁰⁰ ≈ 5 %). Call it after the last step: a
    /// checkpoint saved afterwards carries these statistics, not the training run's. Networks
    /// with frozen BatchNorm ([`Trainer::batch_norm_frozen`]) refuse.
    pub fn recompute_bn_statistics(&mut self, batches: usize) -> Result<(), Error> {
        let TrainNet::Seed(model) = &self.learner.net else {
            return Err(Error::Unsupported {
                arch: self.arch.name,
                what: "its BatchNorm is frozen (TRAIN_BN = False): the statistics stay those it \
                       started with"
                    .into(),
            });
        };
        let b = self.learner.config.batch_size;
        let seed = self.learner.config.seed;
        let (h, w) = (self.image.height as usize, self.image.width as usize);
        let dataset = self.feeder.dataset.as_ref();
        for batch in 0..batches {
            let mut pixels = Vec::with_capacity(b * h * w * 3);
            for j in 0..b {
                let index = training_index(dataset, seed, batch * b + j);
                pixels.extend(dataset.get(index)?.pixels);
            }
            let images = Tensor::from_vec(pixels, (b, h, w, 3), &Device::Cpu)?;
            let mode = BatchNormMode::Calibrate { batches_seen: batch };
            model.forward_nhwc_mode(&images, mode)?;
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

    /// Every tensor of the network by name (weights and BN statistics).
    pub fn named_vars(&self) -> Result<BTreeMap<String, Tensor>, Error> {
        let vars = self.varmap.data().lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect())
    }

    /// Writes the model (weights and BN statistics, the names `rpn forward` and
    /// [`Proposer::load`] read, and `rpn port-keras` writes) to `path`, atomically.
    pub fn save_weights(&self, path: &Path) -> Result<(), Error> {
        let metadata = HashMap::from([
            ("arch".to_owned(), self.arch.name.to_owned()),
            ("step".to_owned(), self.learner.step.to_string()),
            // The input size the Proposer uses by default for these weights.
            ("image_size".to_owned(), self.image.height.to_string()),
        ]);
        checkpoint::write_atomic(path, &self.named_vars()?, metadata)
    }

    /// Writes model, optimizer velocities, step and configuration to `path`, atomically:
    /// [`Trainer::resume`] continues from it exactly.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), Error> {
        let mut tensors = self.named_vars()?;
        for (name, _, velocity) in self.learner.optimizer.velocities() {
            tensors.insert(format!("{VELOCITY_PREFIX}{name}"), velocity.clone());
        }
        let config =
            serde_json::to_string(&self.learner.config).map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("cannot serialise the configuration: {e}"),
            })?;
        let metadata = HashMap::from([
            ("format".to_owned(), CHECKPOINT_FORMAT.to_owned()),
            ("arch".to_owned(), self.arch.name.to_owned()),
            ("step".to_owned(), self.learner.step.to_string()),
            ("image_size".to_owned(), self.image.height.to_string()),
            ("config".to_owned(), config),
            ("dataset".to_owned(), self.feeder.dataset.describe()),
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
        let (tensors, _) = checkpoint::read(path, &Device::Cpu)?;
        let mut arch: Architecture = info.arch.parse()?;
        // A narrow Matterport run (`rpn train --width`) resumes at its own widths.
        arch.network = arch.network.fitted_to(&tensors);
        let mut trainer = Self::new(&arch, config, dataset)?;
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
        // A run resumed with more layers (Matterport's stages: heads, then 4+, then all) starts
        // the newly trained tensors at zero velocity, as a fresh Keras optimiser would.
        let layers_changed = config.layers != info.config.layers;
        trainer.learner.optimizer.restore_velocities(|name, var| {
            let key = format!("{VELOCITY_PREFIX}{name}");
            if layers_changed && !tensors.contains_key(&key) {
                return Ok(var.zeros_like()?);
            }
            Ok(tensor(&key, var.dims())?.clone())
        })?;
        trainer.learner.step = info.step;
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
