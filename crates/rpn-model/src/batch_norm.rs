//! BatchNorm in training mode as one fused CPU op with an analytic backward pass.
//!
//! candle_nn's training-mode BatchNorm is a chain of ~10 tensor ops; its backward pass on
//! seed 001's `[20, 256, 32, 32]` maps takes ~300 ms per layer on 2 cores, longer than the
//! convolution's GEMMs. The fused op makes one pass for the statistics and one for the output;
//! the backward pass is the textbook formula
//! `dx = γ·σ⁻¹/n · (n·dy − Σdy − x̂·Σ(dy·x̂))`, `dγ = Σ(dy·x̂)`, `dβ = Σdy`
//! (sums per channel over batch and pixels, `n` values each), again two passes.
//! Inference and other devices use candle_nn's `BatchNorm` unchanged.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, ModuleT, Result, Shape, Tensor, Var};
use candle_nn::BatchNorm;

/// Per-channel mean and biased variance of an NCHW buffer, in f64.
fn channel_moments(x: &[f32], batch: usize, channels: usize, plane: usize) -> Vec<(f64, f64)> {
    let n = (batch * plane) as f64;
    (0..channels)
        .map(|c| {
            let (mut sum, mut sum_sq) = (0f64, 0f64);
            for b in 0..batch {
                let p = &x[(b * channels + c) * plane..][..plane];
                // f32 partial sums per plane keep the loop vectorisable; f64 across planes.
                sum += p.iter().sum::<f32>() as f64;
                sum_sq += p.iter().map(|v| v * v).sum::<f32>() as f64;
            }
            let mean = sum / n;
            (mean, (sum_sq / n - mean * mean).max(0.0))
        })
        .collect()
}

fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("batch norm: {what} must be f32")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("batch norm: {what} must be contiguous"),
    }
}

fn nchw(layout: &Layout) -> Result<(usize, usize, usize)> {
    let (b, c, h, w) = layout.shape().dims4()?;
    Ok((b, c, h * w))
}

/// `x → [2, C]`: per-channel mean and biased variance (no gradient: they only feed the moving
/// averages).
struct Moments;

impl candle_core::CustomOp1 for Moments {
    fn name(&self) -> &'static str {
        "batch-norm-moments"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(storage, layout, "x")?;
        let (batch, channels, plane) = nchw(layout)?;
        let moments = channel_moments(x, batch, channels, plane);
        let values = moments.iter().map(|m| m.0).chain(moments.iter().map(|m| m.1));
        Ok((CpuStorage::F32(values.map(|v| v as f32).collect()), Shape::from((2, channels))))
    }
}

/// `(x, γ, β) → γ·(x − μ)/√(σ² + ε) + β` with the batch's statistics.
struct TrainForward {
    eps: f64,
}

impl CustomOp3 for TrainForward {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (slice(s1, l1, "x")?, slice(s2, l2, "γ")?, slice(s3, l3, "β")?);
        let (batch, channels, plane) = nchw(l1)?;
        let moments = channel_moments(x, batch, channels, plane);
        let mut y = vec![0f32; x.len()];
        for b in 0..batch {
            for (c, &(mean, var)) in moments.iter().enumerate() {
                let scale = gamma[c] as f64 / (var + self.eps).sqrt();
                let (scale, shift) = (scale as f32, (beta[c] as f64 - mean * scale) as f32);
                let at = (b * channels + c) * plane;
                for (out, v) in y[at..at + plane].iter_mut().zip(&x[at..at + plane]) {
                    *out = v * scale + shift;
                }
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let channels = gamma.dim(0)?;
        let packed = x.apply_op3_no_bwd(
            &dy.contiguous()?,
            &gamma.contiguous()?,
            &TrainBackward { eps: self.eps },
        )?;
        unpack_gradients(&packed, x, channels)
    }
}

/// A backward op's one output `[dx (flattened) | dγ | dβ]` → the three gradients.
pub(crate) fn unpack_gradients(
    packed: &Tensor,
    x: &Tensor,
    channels: usize,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let numel = x.elem_count();
    let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
    let dgamma = packed.narrow(0, numel, channels)?;
    let dbeta = packed.narrow(0, numel + channels, channels)?;
    Ok((Some(dx), Some(dgamma), Some(dbeta)))
}

/// `(x, dy, γ)` → `[dx (flattened), dγ, dβ]` in one buffer (a custom op has one output).
struct TrainBackward {
    eps: f64,
}

impl CustomOp3 for TrainBackward {
    fn name(&self) -> &'static str {
        "batch-norm-train-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy, gamma) = (slice(s1, l1, "x")?, slice(s2, l2, "dy")?, slice(s3, l3, "γ")?);
        let (batch, channels, plane) = nchw(l1)?;
        let n = (batch * plane) as f64;
        let moments = channel_moments(x, batch, channels, plane);
        let mut out = vec![0f32; x.len() + 2 * channels];
        for (c, &(mean, var)) in moments.iter().enumerate() {
            let inv_std = 1.0 / (var + self.eps).sqrt();
            let (mut sum_dy, mut sum_dy_xhat) = (0f64, 0f64);
            for b in 0..batch {
                let at = (b * channels + c) * plane;
                let (xs, ds) = (&x[at..at + plane], &dy[at..at + plane]);
                sum_dy += ds.iter().sum::<f32>() as f64;
                sum_dy_xhat += xs.iter().zip(ds).map(|(&v, &d)| (v - mean as f32) * d).sum::<f32>()
                    as f64
                    * inv_std;
            }
            // dx = γσ⁻¹ · (dy − Σdy/n − x̂ · Σ(dy·x̂)/n), with x̂ = (x − μ)σ⁻¹.
            let k = (gamma[c] as f64 * inv_std) as f32;
            let (mean_dy, proj) = ((sum_dy / n) as f32, (sum_dy_xhat / n * inv_std) as f32);
            for b in 0..batch {
                let at = (b * channels + c) * plane;
                let (xs, ds) = (&x[at..at + plane], &dy[at..at + plane]);
                for ((o, &v), &d) in out[at..at + plane].iter_mut().zip(xs).zip(ds) {
                    *o = k * (d - mean_dy - (v - mean as f32) * proj);
                }
            }
            out[x.len() + c] = sum_dy_xhat as f32;
            out[x.len() + channels + c] = sum_dy as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * channels)))
    }
}

/// How BatchNorm layers run in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchNormMode {
    /// Normalise with the moving statistics (inference; Keras' `training=False`).
    Inference,
    /// Normalise with the batch's statistics and update the moving ones with Keras' momentum
    /// (training).
    Train,
    /// Normalise with the batch's statistics and make the moving statistics the equal-weight mean
    /// of this and the `batches_seen` previous calibration batches: run it over a few hundred
    /// training images with `batches_seen = 0, 1, 2, …` to replace the moving averages by
    /// population statistics (detectron2's `PreciseBN` hook; Wu & Johnson, "Rethinking 'Batch'
    /// in BatchNorm", 2021). Keras' momentum 0.99 needs ~500 steps to forget its initial μ = 0,
    /// σ² = 1; short runs evaluate much better after this. No gradient flows.
    Calibrate {
        /// Calibration batches already folded into the moving statistics.
        batches_seen: usize,
    },
}

/// A `candle_nn::BatchNorm` whose CPU `f32` training pass is the fused op above; it updates the
/// moving statistics as candle_nn does (`momentum` is the new batch's share; the variance that
/// enters the moving average is the unbiased one, as in Keras' fused batch norm).
#[derive(Debug, Clone)]
pub(crate) struct Bn(pub(crate) BatchNorm);

impl Bn {
    fn fused_train(&self, x: &Tensor) -> Result<Tensor> {
        let Some((gamma, beta)) = self.0.weight_and_bias() else {
            return self.0.forward_t(x, true);
        };
        let x = x.contiguous()?;
        let (batch, _, h, w) = x.dims4()?;
        let y = x.apply_op3(gamma, beta, TrainForward { eps: self.0.eps() })?;

        // `[2, C]`: the batch's mean and biased variance, for the moving averages.
        let moments = x.apply_op1_no_bwd(&Moments)?;
        self.update_moving_averages(moments.get(0)?, moments.get(1)?, batch * h * w)?;
        Ok(y)
    }

    /// Moves the running statistics towards the batch's as candle_nn does (`momentum` is the new
    /// batch's share), from its mean and biased variance over `count` values; the variance that
    /// enters the average is the unbiased one, as in Keras' fused batch norm.
    fn update_moving_averages(&self, mean: Tensor, variance: Tensor, count: usize) -> Result<()> {
        let n = count as f64;
        let momentum = self.0.momentum();
        let update = |running: &Tensor, batch_value: Tensor| -> Result<()> {
            let next = ((running * (1.0 - momentum))? + (batch_value * momentum)?)?;
            Var::from_tensor(running)?.set(&next)
        };
        update(self.0.running_mean(), mean)?;
        update(self.0.running_var(), (variance * (n / (n - 1.0).max(1.0)))?)
    }

    /// Batch statistics on NHWC activations through the CPU kernels (ReLU fused if `relu`):
    /// [`BatchNormMode::Train`] updates the moving statistics as [`ModuleT::forward_t`] does,
    /// [`BatchNormMode::Calibrate`] folds them in as [`Bn::forward_mode`] does (no gradient
    /// flows then). Inference mode is the CPU plan's job, not this one's.
    pub(crate) fn batch_stats_nhwc(
        &self,
        x: &Tensor,
        relu: bool,
        mode: BatchNormMode,
    ) -> Result<Tensor> {
        let channels = x.dim(3)?;
        let (gamma, beta) = match self.0.weight_and_bias() {
            Some((g, b)) => (g.clone(), b.clone()),
            None => (
                Tensor::ones(channels, DType::F32, x.device())?,
                Tensor::zeros(channels, DType::F32, x.device())?,
            ),
        };
        let calibrating = matches!(mode, BatchNormMode::Calibrate { .. });
        let (x, gamma, beta) = if calibrating {
            (x.detach(), gamma.detach(), beta.detach())
        } else {
            (x.clone(), gamma, beta)
        };
        let (y, moments) = crate::train_ops::batch_norm(&x, &gamma, &beta, self.0.eps(), relu)?;
        let to_tensor = |values: &[f64]| {
            let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            Tensor::from_vec(values, channels, x.device())
        };
        let (mean, variance) = (to_tensor(&moments.mean)?, to_tensor(&moments.variance)?);
        match mode {
            BatchNormMode::Train => self.update_moving_averages(mean, variance, moments.count)?,
            BatchNormMode::Calibrate { batches_seen } => {
                self.fold_calibration_batch(mean, variance, moments.count, batches_seen)?
            }
            BatchNormMode::Inference => {
                candle_core::bail!("batch statistics asked for in inference mode")
            }
        }
        Ok(y)
    }
}

impl Bn {
    /// The forward pass in `mode`.
    pub(crate) fn forward_mode(&self, x: &Tensor, mode: BatchNormMode) -> Result<Tensor> {
        match mode {
            BatchNormMode::Inference => self.forward_t(x, false),
            BatchNormMode::Train => self.forward_t(x, true),
            BatchNormMode::Calibrate { batches_seen } => self.calibrate(x, batches_seen),
        }
    }

    /// Makes the moving statistics the equal-weight mean of this batch's (mean and biased
    /// variance over `count` values; the unbiased variance enters) and the `batches_seen`
    /// calibration batches before it.
    fn fold_calibration_batch(
        &self,
        mean: Tensor,
        variance: Tensor,
        count: usize,
        batches_seen: usize,
    ) -> Result<()> {
        let n = count as f64;
        let share = 1.0 / (batches_seen as f64 + 1.0);
        let fold = |running: &Tensor, batch_value: Tensor| -> Result<()> {
            let next = (running + ((batch_value - running)? * share)?)?;
            Var::from_tensor(running)?.set(&next)
        };
        fold(self.0.running_mean(), mean)?;
        fold(self.0.running_var(), (variance * (n / (n - 1.0).max(1.0)))?)
    }

    /// Tensor ops on any device: calibration is a few forward passes, not a hot loop.
    fn calibrate(&self, x: &Tensor, batches_seen: usize) -> Result<Tensor> {
        let x = x.detach();
        let (batch, channels, h, w) = x.dims4()?;
        let flat = x.transpose(0, 1)?.reshape((channels, batch * h * w))?;
        let mean = flat.mean_keepdim(1)?;
        let var = flat.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?;
        self.fold_calibration_batch(
            mean.flatten_all()?,
            var.flatten_all()?,
            batch * h * w,
            batches_seen,
        )?;
        let shape = (1, channels, 1, 1);
        let inv_std = (var.reshape(shape)? + self.0.eps())?.sqrt()?.recip()?;
        let y = x.broadcast_sub(&mean.reshape(shape)?)?.broadcast_mul(&inv_std)?;
        match self.0.weight_and_bias() {
            Some((gamma, beta)) => y
                .broadcast_mul(&gamma.detach().reshape(shape)?)?
                .broadcast_add(&beta.detach().reshape(shape)?),
            None => Ok(y),
        }
    }
}

impl ModuleT for Bn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train && x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4 {
            self.fused_train(x)
        } else {
            self.0.forward_t(x, train)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{BatchNormConfig, VarBuilder, VarMap};

    fn bn_pair(channels: usize) -> Result<(BatchNorm, BatchNorm, Var, Var)> {
        let dev = Device::Cpu;
        let gamma = Var::randn(1f32, 0.3, channels, &dev)?;
        let beta = Var::randn(0f32, 0.3, channels, &dev)?;
        let make = || -> Result<BatchNorm> {
            BatchNorm::new_with_momentum(
                channels,
                Tensor::randn(0f32, 0.1, channels, &dev)?.zeros_like()?,
                Tensor::ones(channels, DType::F32, &dev)?,
                gamma.as_tensor().clone(),
                beta.as_tensor().clone(),
                1e-3,
                0.01,
            )
        };
        Ok((make()?, make()?, gamma, beta))
    }

    /// Output, the three gradients and the moving statistics against candle_nn's BatchNorm.
    #[test]
    fn fused_training_pass_matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let channels = 5;
        let (reference, fused, gamma, beta) = bn_pair(channels)?;
        let fused = Bn(fused);
        let x = Var::randn(0.5f32, 2.0, (3, channels, 4, 6), &dev)?;
        let probe = Tensor::randn(0f32, 1.0, x.shape(), &dev)?;
        let run = |m: &dyn ModuleT| -> Result<Vec<Tensor>> {
            let y = m.forward_t(&x, true)?;
            let grads = (&y * &probe)?.sum_all()?.backward()?;
            let grad = |v: &Var| {
                grads.get(v).cloned().ok_or_else(|| candle_core::Error::Msg("no grad".into()))
            };
            Ok(vec![y, grad(&x)?, grad(&gamma)?, grad(&beta)?])
        };
        let expected = run(&reference)?;
        let actual = run(&fused)?;
        for (name, (e, a)) in ["y", "dx", "dγ", "dβ"].iter().zip(expected.iter().zip(&actual)) {
            let diff = (e - a)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{name}: {diff}");
        }
        for (e, a) in [
            (reference.running_mean(), fused.0.running_mean()),
            (reference.running_var(), fused.0.running_var()),
        ] {
            let diff = (e - a)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "moving statistics differ by {diff}");
        }
        Ok(())
    }

    /// Calibration: batch-statistics output, moving statistics = the mean over calibration
    /// batches (so the second batch's statistics count as much as the first's).
    #[test]
    fn calibration_averages_batches_with_equal_weight() -> Result<()> {
        let dev = Device::Cpu;
        let (reference, calibrated, _, _) = bn_pair(3)?;
        let calibrated = Bn(calibrated);
        let x1 = Tensor::randn(1f32, 2.0, (4, 3, 5, 5), &dev)?;
        let x2 = Tensor::randn(-3f32, 0.5, (4, 3, 5, 5), &dev)?;
        let y1 = calibrated.forward_mode(&x1, BatchNormMode::Calibrate { batches_seen: 0 })?;
        let expected = reference.forward_t(&x1, true)?;
        assert!((y1 - expected)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
        calibrated.forward_mode(&x2, BatchNormMode::Calibrate { batches_seen: 1 })?;
        let both = Tensor::cat(&[&x1, &x2], 0)?.transpose(0, 1)?.flatten_from(1)?;
        let per_batch_means = (x1.transpose(0, 1)?.flatten_from(1)?.mean(1)?
            + x2.transpose(0, 1)?.flatten_from(1)?.mean(1)?)?
        .affine(0.5, 0.0)?;
        let diff = (calibrated.0.running_mean() - &per_batch_means)?.abs()?.max_all()?;
        assert!(diff.to_scalar::<f32>()? < 1e-5, "running mean is the mean of batch means");
        // Equal batch sizes: the mean of batch means is the mean over both batches.
        let overall = both.mean(1)?;
        assert!(
            (calibrated.0.running_mean() - overall)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4
        );
        Ok(())
    }

    /// Inference goes through candle_nn with the moving statistics (here μ = 0, σ² = 1).
    #[test]
    fn inference_uses_the_moving_statistics() -> Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = BatchNormConfig { eps: 1e-3, ..Default::default() };
        let bn = Bn(candle_nn::batch_norm(2, cfg, vb)?);
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu)?.reshape((1, 2, 2, 1))?;
        let y = bn.forward_t(&x, false)?;
        let expected = (&x / (1.0f64 + 1e-3).sqrt())?;
        assert!((y - expected)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
        Ok(())
    }
}
