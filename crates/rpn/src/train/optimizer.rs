//! Keras' SGD with momentum over named variables, with the two recipes' weight decay and
//! gradient clipping ([`WeightDecay`], [`GradientClip`]).

use candle_core::{DType, Tensor, Var};

use super::config::{GradientClip, TrainConfig, WeightDecay};
use crate::Error;

/// Keras' `SGD(momentum=…)` over named trainable variables (BN moving statistics get no
/// gradient and are not in it; neither are frozen layers).
#[derive(Debug)]
pub struct SgdMomentum {
    vars: Vec<Slot>,
    config: TrainConfig,
}

#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    velocity: Tensor,
    /// Whether the weight decay applies (all but BatchNorm γ/β under
    /// [`WeightDecay::MatterportL2`]).
    decays: bool,
}

impl SgdMomentum {
    /// Velocities start at zero, as Keras'. Every variable decays; see
    /// [`SgdMomentum::exempt_from_decay`].
    pub fn new(vars: Vec<(String, Var)>, config: TrainConfig) -> candle_core::Result<Self> {
        let vars = vars
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot { name, velocity: var.zeros_like()?, var: var.clone(), decays: true })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { vars, config })
    }

    /// Exempts the variables `exempt` names from the weight decay (BatchNorm γ/β, which
    /// Matterport's `compile` leaves out of its L2 loss).
    pub fn exempt_from_decay(mut self, exempt: impl Fn(&str) -> bool) -> Self {
        for slot in &mut self.vars {
            slot.decays = !exempt(&slot.name);
        }
        self
    }

    /// Names of the variables it updates, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|s| s.name.as_str())
    }

    /// The velocity of each variable, by name.
    pub(crate) fn velocities(&self) -> impl Iterator<Item = (&str, &Var, &Tensor)> {
        self.vars.iter().map(|s| (s.name.as_str(), &s.var, &s.velocity))
    }

    /// Replaces the velocity of each variable by what `velocity(name, var)` returns.
    pub(crate) fn restore_velocities(
        &mut self,
        mut velocity: impl FnMut(&str, &Var) -> Result<Tensor, Error>,
    ) -> Result<(), Error> {
        for slot in &mut self.vars {
            slot.velocity = velocity(&slot.name, &slot.var)?;
        }
        Ok(())
    }

    /// One update with learning rate `lr` from the gradients of `loss`; returns the gradients'
    /// global L2 norm before clipping (with Matterport's L2 term, which is part of its loss).
    ///
    /// A gradient with a non-finite norm (the run diverged) is [`Error::Diverged`] and changes
    /// nothing: the weights and velocities stay those of the last good step.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<f64, Error> {
        let grads = loss.backward()?;
        let config = self.config;
        // Detached: a velocity that kept its gradient's graph would keep every past step alive.
        let mut grads: Vec<Option<Tensor>> =
            self.vars.iter().map(|s| grads.get(&s.var).map(Tensor::detach)).collect();
        if config.weight_decay_kind == WeightDecay::MatterportL2 && config.weight_decay > 0.0 {
            for (slot, g) in self.vars.iter().zip(&mut grads) {
                if let Some(g) = g.as_mut().filter(|_| slot.decays) {
                    // d/dw (wd · Σw² / n) = 2·wd·w / n.
                    let factor = 2.0 * config.weight_decay / slot.var.elem_count() as f64;
                    *g = (&*g + (slot.var.as_tensor().detach() * factor)?)?;
                }
            }
        }
        let squares: Vec<f64> = grads
            .iter()
            .map(|g| match g {
                Some(g) => g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>(),
                None => Ok(0.0),
            })
            .collect::<candle_core::Result<_>>()?;
        let norm = squares.iter().sum::<f64>().sqrt();
        if !norm.is_finite() {
            return Err(Error::Diverged { what: format!("the gradients' norm is {norm}") });
        }
        for ((slot, g), square) in self.vars.iter_mut().zip(grads).zip(squares) {
            let Some(mut g) = g else { continue };
            let scale = match (config.clip_grad_norm, config.clip_kind) {
                (Some(max), GradientClip::GlobalNorm) if norm > max => max / (norm + 1e-6),
                // `tf.clip_by_norm`: t · c / max(‖t‖, c).
                (Some(max), GradientClip::PerTensor) => {
                    let own = square.sqrt();
                    if own > max {
                        max / own
                    } else {
                        1.0
                    }
                }
                _ => 1.0,
            };
            if scale != 1.0 {
                g = (g * scale)?;
            }
            if config.weight_decay_kind == WeightDecay::Gradient
                && config.weight_decay > 0.0
                && slot.decays
            {
                g = (g + (slot.var.as_tensor().detach() * config.weight_decay)?)?;
            }
            slot.velocity = ((&slot.velocity * config.momentum)? - (g * lr)?)?.detach();
            slot.var.set(&(slot.var.as_tensor().detach() + &slot.velocity)?)?;
        }
        Ok(norm)
    }
}
