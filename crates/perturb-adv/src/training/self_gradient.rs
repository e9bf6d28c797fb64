//! `self-gradient` training: the project's reading of Aboutalebi et al. 2020, of which only the
//! abstract is available ("the network taps its own gradient flow during training").
//!
//! Read here as an adversarial perturbation of hidden activations instead of the input: a first
//! pass computes d CE / d a_l at chosen layers l (weights bound as constants; the activations
//! keep their gradients through `retain_grad`), and a second pass adds eps_l sign(d CE / d a_l)
//! to those activations, as a constant, and trains on the cross-entropy it then gives. It is
//! FGSM in feature space. This is an interpretation, not a reproduction: the paper's own
//! algorithm may differ.

use perturb_autograd::{Graph, Reduction, Var};
use perturb_core::ops::StepParams;
use perturb_core::{Backend, DType, Tensor};
use perturb_nn::{Bound, Layer, Model};

use super::MethodConfig;
use super::step::StepLoss;
use crate::grad::LossTargets;
use crate::{Error, Result};

/// The model's forward pass layer by layer (as [`Model::forward`]), calling `hook(i, out)` on
/// the output of layer `i`; the hook returns the value the next layer receives.
pub fn forward_with_hook<B: Backend>(
    g: &Graph<'_, B>,
    model: &Model<B>,
    bound: &Bound,
    x: Var,
    hook: &mut dyn FnMut(usize, Var) -> Result<Var>,
) -> Result<Var> {
    let [c, h, w] = model.input_shape();
    let n = g.shape(x)?.batch();
    let mut x = if g.shape(x)?.dims() == [n, c, h, w] { x } else { g.reshape(x, [n, c, h, w])? };
    let mut params = bound.vars().iter().copied();
    let mut pair = || match (params.next(), params.next()) {
        (Some(w), Some(b)) => Ok((w, b)),
        _ => Err(Error::Mismatch("the bound parameters do not match the model's layers".into())),
    };
    for (i, layer) in model.layers().iter().enumerate() {
        x = match *layer {
            Layer::Conv2d { stride, padding, .. } => {
                let (wv, bv) = pair()?;
                let y = g.conv2d(x, wv, stride, padding)?;
                g.bias_add(y, bv)?
            }
            Layer::Linear { .. } => {
                let (wv, bv) = pair()?;
                let y = g.linear(x, wv)?;
                g.bias_add(y, bv)?
            }
            Layer::MaxPool2d { kernel, stride } => g.maxpool2d(x, kernel, stride)?,
            Layer::Relu => g.relu(x)?,
            Layer::Flatten => g.flatten(x)?,
        };
        x = hook(i, x)?;
    }
    Ok(x)
}

/// The perturbed layers, their eps and the delta buffers (one set per batch size).
pub struct SelfGradient<B: Backend> {
    layers: Vec<usize>,
    eps: f32,
    deltas: Vec<(usize, Vec<Tensor<B>>)>,
}

impl<B: Backend> SelfGradient<B> {
    /// Checks the layer indices against `model` (hidden layers only: not the logits layer);
    /// `None` in the config picks every ReLU.
    pub fn new(model: &Model<B>, cfg: &MethodConfig) -> Result<Self> {
        let n_layers = model.layers().len();
        let layers = match &cfg.sg_layers {
            Some(l) => l.clone(),
            None => model.layers().iter().enumerate().filter(|(_, l)| **l == Layer::Relu).map(|(i, _)| i).collect(),
        };
        if layers.is_empty() {
            return Err(Error::invalid("sg_layers", format!("model {} has no ReLU to perturb", model.name())));
        }
        if let Some(&bad) = layers.iter().find(|&&i| i + 1 >= n_layers) {
            return Err(Error::invalid(
                "sg_layers",
                format!(
                    "layer {bad} is not a hidden layer of {} (layers 0..{}; the last one gives the logits)",
                    model.name(),
                    n_layers.saturating_sub(1)
                ),
            ));
        }
        let mut layers = layers;
        layers.sort_unstable();
        layers.dedup();
        Ok(SelfGradient { layers, eps: cfg.sg_eps, deltas: Vec::new() })
    }

    /// The perturbed layers (indices into the model's layer list).
    pub fn layers(&self) -> &[usize] {
        &self.layers
    }

    /// Pass 1: d CE / d a_l at each chosen layer, then delta_l = eps sign(that) in the layer's
    /// buffer. Returns the deltas in layer order.
    fn deltas(&mut self, b: &B, model: &Model<B>, x0: &Tensor<B>, targets: &LossTargets<B>) -> Result<Vec<Tensor<B>>> {
        let g = Graph::new(b);
        let bound = model.bind(&g, false);
        // The input requires grad only so that the activations do (the weights are constants).
        let xv = g.input(x0, true);
        let mut taps: Vec<Var> = Vec::with_capacity(self.layers.len());
        let layers = self.layers.clone();
        let z = forward_with_hook(&g, model, &bound, xv, &mut |i, v| {
            if layers.contains(&i) {
                g.retain_grad(v)?;
                taps.push(v);
            }
            Ok(v)
        })?;
        let loss = g.softmax_xent(z, &targets.labels, Reduction::Sum)?.loss;
        let grads = g.backward(loss)?;
        let n = x0.shape().batch();
        let have = self.deltas.iter().position(|(m, _)| *m == n);
        let bufs = match have {
            Some(k) => self.deltas[k].1.clone(),
            None => {
                let mut v = Vec::with_capacity(taps.len());
                for &t in &taps {
                    v.push(b.zeros(&g.shape(t)?, DType::F32)?);
                }
                self.deltas.push((n, v.clone()));
                v
            }
        };
        for (&t, delta) in taps.iter().zip(&bufs) {
            b.fill_(delta, 0.0)?;
            if let Some(gt) = grads.get(t) {
                let d = delta.numel() / n.max(1);
                b.sign_step_(delta, gt, &StepParams::new(n, d, self.eps, 0.0, -self.eps, self.eps)?)?;
            }
        }
        Ok(bufs)
    }

    /// The step's loss: cross-entropy (mean) with eps sign(d CE / d a_l) added to each chosen
    /// activation; the weights are bound trainable in `bound` on `g`.
    pub fn loss(
        &mut self,
        b: &B,
        g: &Graph<'_, B>,
        model: &Model<B>,
        bound: &Bound,
        x0: &Tensor<B>,
        targets: &LossTargets<B>,
    ) -> Result<StepLoss> {
        let deltas = self.deltas(b, model, x0, targets)?;
        let xv = g.input(x0, false);
        let mut next = self.layers.iter().zip(&deltas);
        let mut pending = next.next();
        let z = forward_with_hook(g, model, bound, xv, &mut |i, v| match pending {
            Some((&l, delta)) if l == i => {
                pending = next.next();
                Ok(g.add(v, g.constant(delta))?)
            }
            _ => Ok(v),
        })?;
        let loss = g.softmax_xent(z, &targets.labels, Reduction::Mean)?.loss;
        Ok(StepLoss { loss, regulariser: None })
    }
}
