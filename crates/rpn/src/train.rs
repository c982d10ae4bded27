//! Seed 001's training recipe: shapes batches, Matterport targets, seed 001's losses, SGD with
//! momentum (Keras' update), BatchNorm in training mode.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand_chacha::ChaCha8Rng;
use rpn_anchors::{AnchorConfig, Anchors, BoxCoder, ImageSize};
use rpn_loss::matterport_losses;
use rpn_model::{SeedResNetConfig, SeedRpn};
use rpn_targets::{
    matterport_targets_into, seeded_rng, Matcher, MatcherConfig, MatterportTargets, Sampler,
    SamplerConfig,
};

use crate::ShapesDataset;

/// Hyper-parameters; `Default` is seed 001's (`SGD(lr=0.0005, momentum=0.9)`, batches of 20).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum of Keras' SGD: `v ← m·v − lr·g`, `w ← w + v`.
    pub momentum: f64,
    /// L2 weight decay added to the gradient (`g + wd·w`); 0 in the seed.
    pub weight_decay: f64,
    /// Images per step.
    pub batch_size: usize,
    /// Seed of the weights' initialisation, the data and the anchor sampling.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { lr: 5e-4, momentum: 0.9, weight_decay: 0.0, batch_size: 20, seed: 0 }
    }
}

/// Keras' `SGD(momentum=…)` over every trainable variable (BN moving statistics get no gradient
/// and are skipped).
#[derive(Debug)]
pub struct SgdMomentum {
    vars: Vec<(Var, Tensor)>,
    config: TrainConfig,
}

impl SgdMomentum {
    /// Velocities start at zero, as Keras'.
    pub fn new(vars: Vec<Var>, config: TrainConfig) -> Result<Self> {
        let vars =
            vars.into_iter().map(|v| Ok((v.clone(), v.zeros_like()?))).collect::<Result<_>>()?;
        Ok(Self { vars, config })
    }

    /// One update from the gradients of `loss`.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        for (var, velocity) in &mut self.vars {
            let Some(g) = grads.get(var) else { continue };
            // Detached: a velocity that kept its gradient's graph would keep every past step alive.
            let g = g.detach();
            let g = if self.config.weight_decay > 0.0 {
                (g + (var.as_tensor().detach() * self.config.weight_decay)?)?
            } else {
                g
            };
            *velocity = ((&*velocity * self.config.momentum)? - (g * self.config.lr)?)?.detach();
            var.set(&(var.as_tensor().detach() + &*velocity)?)?;
        }
        Ok(())
    }
}

/// Keras' default initialisation, deterministic: variables are visited in name order (a `VarMap`
/// iterates in hash order); conv kernels `[O, I, kh, kw]` get Glorot-uniform
/// `±√(6 / (fan_in + fan_out))`, conv biases 0; BatchNorm keeps candle's γ = 1, β = 0, μ = 0, σ² = 1.
fn keras_init(varmap: &VarMap, rng: &mut ChaCha8Rng) -> Result<()> {
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
        } else if let Some(conv) = name
            .strip_suffix(".bias")
            .filter(|p| vars.get(&format!("{p}.weight")).is_some_and(|w| w.rank() == 4))
        {
            let _ = conv;
            var.set(&var.zeros_like()?)?;
        }
    }
    Ok(())
}

/// Loss parts of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    /// `rpn_class_loss`.
    pub objectness: f32,
    /// `rpn_bbox_loss`.
    pub box_regression: f32,
}

impl StepLosses {
    /// Their sum, what the optimiser minimises.
    pub fn total(&self) -> f32 {
        self.objectness + self.box_regression
    }
}

/// Trains seed 001 on shapes, one batch per [`Trainer::step`].
pub struct Trainer {
    /// The variables (weights and BN statistics), e.g. to save them.
    pub varmap: VarMap,
    /// The model being trained.
    pub model: SeedRpn,
    anchors: Anchors,
    image: ImageSize,
    data: ShapesDataset,
    optimizer: SgdMomentum,
    rng: ChaCha8Rng,
    config: TrainConfig,
    targets: MatterportTargets,
}

impl Trainer {
    /// A fresh seed 001 initialised as Keras does (Glorot-uniform kernels, zero biases, BN γ = 1,
    /// β = 0), from `config.seed`: the same seed gives the same weights and losses.
    pub fn seed001(config: TrainConfig) -> Result<Self> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = SeedRpn::new(&SeedResNetConfig::seed001(), 9, vb)?;
        let mut rng = seeded_rng(config.seed);
        keras_init(&varmap, &mut rng)?;
        let data = ShapesDataset::default();
        let image = ImageSize { height: data.side as u32, width: data.side as u32 };
        let anchors = AnchorConfig::seed001()
            .generate(image)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        // Only weights and biases learn; the BN moving statistics are updated by the forward pass.
        let trainable = {
            let vars = varmap.data().lock().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            vars.iter()
                .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let optimizer = SgdMomentum::new(trainable, config)?;
        Ok(Self {
            varmap,
            model,
            anchors,
            image,
            data,
            optimizer,
            rng,
            config,
            targets: MatterportTargets::default(),
        })
    }

    /// One SGD step on a fresh batch; returns its losses (before the update).
    pub fn step(&mut self) -> Result<StepLosses> {
        let b = self.config.batch_size;
        let err = |e: rpn_targets::TargetError| candle_core::Error::Msg(e.to_string());
        let matcher = Matcher::new(&self.anchors, MatcherConfig::default()).map_err(err)?;
        let mut sampler = Sampler::new(SamplerConfig::default()).map_err(err)?;
        let rows = sampler.config().batch_size;
        let (mut pixels, mut matches, mut bbox) = (Vec::new(), Vec::new(), Vec::<f32>::new());
        for _ in 0..b {
            let sample = self.data.sample(&mut self.rng);
            let mut m = matcher.match_anchors(&sample.boxes, &[], self.image).map_err(err)?;
            sampler.sample(&mut m.labels, &mut self.rng);
            matterport_targets_into(
                &self.anchors.boxes,
                &sample.boxes,
                &m.labels,
                &BoxCoder::matterport(),
                rows,
                &mut self.targets,
            )
            .map_err(err)?;
            pixels.extend(sample.pixels);
            matches.extend(self.targets.rpn_match.iter().map(|&v| v as f32));
            bbox.extend(self.targets.rpn_bbox.iter().flatten().copied());
        }
        let side = self.data.side;
        let a = self.anchors.len();
        let images = Tensor::from_vec(pixels, (b, side, side, 3), &Device::Cpu)?;
        let rpn_match = Tensor::from_vec(matches, (b, a), &Device::Cpu)?;
        let target_bbox = Tensor::from_vec(bbox, (b, rows, 4), &Device::Cpu)?;
        let out = self.model.forward_nhwc_t(&images, true)?;
        let losses = matterport_losses(&rpn_match, &out.logits, &target_bbox, &out.deltas)?;
        let step = StepLosses {
            objectness: losses.objectness.to_vec0::<f32>()?,
            box_regression: losses.box_regression.to_vec0::<f32>()?,
        };
        self.optimizer.backward_step(&losses.total()?)?;
        Ok(step)
    }
}
