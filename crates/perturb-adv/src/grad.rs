//! d loss / d input, with the weights bound as constants so that no weight-gradient kernel
//! (`conv2d_bwd_weight`, `linear_bwd_weight`, `bias_grad`) runs, and the margin arithmetic the
//! attacks share.
//!
//! The Carlini–Wagner margin max_{j != y} z_j - z_y is built from two fused cross-entropies:
//! with j* = argmax_j (z_j - BIG * [j = y]) (an index, no gradient),
//! xent(z, y) - xent(z, j*) = (lse(z) - z_y) - (lse(z) - z_j*) = z_j* - z_y exactly, and its
//! gradient is onehot(j*) - onehot(y). The one-hot mask of y is built on the host and uploaded
//! once per batch ([`LossTargets::new`]); j* is found on the device, so a step needs no sync.

use perturb_autograd::{Graph, Reduction};
use perturb_core::ops::{EltParams, RowParams};
use perturb_core::{Backend, Shape, Tensor};
use perturb_nn::Model;

use crate::config::Loss;
use crate::{Error, Result};

/// Larger than any logit gap a trained model produces; masks the label out of the argmax.
const MASK_BIG: f32 = 1.0e6;

/// The classes a batch's loss is taken against, on the device.
pub struct LossTargets<B: Backend> {
    /// u32 `[n]`: the true labels (untargeted) or the targets (targeted).
    pub labels: Tensor<B>,
    /// f32 [n, classes]: one-hot of `labels`, only for the margin loss.
    pub onehot: Option<Tensor<B>>,
    classes: usize,
}

impl<B: Backend> LossTargets<B> {
    /// Uploads `labels` (and their one-hot mask when `loss` is the margin).
    pub fn new(b: &B, labels: &[u32], classes: usize, loss: Loss) -> Result<Self> {
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::Mismatch(format!("label {bad} out of range for a model with {classes} classes")));
        }
        let n = labels.len();
        let onehot = match loss {
            Loss::Xent => None,
            Loss::CwMargin => {
                let mut m = vec![0f32; n * classes];
                for (i, &l) in labels.iter().enumerate() {
                    m[i * classes + l as usize] = 1.0;
                }
                Some(b.upload_f32(&m, &Shape::from([n, classes]))?)
            }
        };
        Ok(LossTargets { labels: b.upload_u32(labels, &Shape::from([n]))?, onehot, classes })
    }
}

/// The summed loss's per-example values `[n]` and d (sum of losses) / d x (shape of x), with
/// the weights as constants (no weight-gradient kernel runs).
pub fn loss_and_grad<B: Backend>(
    b: &B,
    model: &Model<B>,
    x: &Tensor<B>,
    targets: &LossTargets<B>,
    loss: Loss,
) -> Result<(Tensor<B>, Tensor<B>)> {
    let (per_example, grad, _) = loss_grad_logits(b, model, x, targets, loss)?;
    Ok((per_example, grad))
}

/// [`loss_and_grad`] with the logits [n, classes] of the same forward pass as a third value.
pub fn loss_grad_logits<B: Backend>(
    b: &B,
    model: &Model<B>,
    x: &Tensor<B>,
    targets: &LossTargets<B>,
    loss: Loss,
) -> Result<(Tensor<B>, Tensor<B>, Tensor<B>)> {
    let g = Graph::new(b);
    let bound = model.bind(&g, false);
    let xv = g.input(x, true);
    let z = model.forward(&g, &bound, xv)?;
    let (per_example, total) = match loss {
        Loss::Xent => {
            let xe = g.softmax_xent(z, &targets.labels, Reduction::Sum)?;
            (xe.per_example, xe.loss)
        }
        Loss::CwMargin => {
            let onehot = targets
                .onehot
                .as_ref()
                .ok_or_else(|| Error::Mismatch("the margin loss needs LossTargets built for Loss::CwMargin".into()))?;
            let zt = g.value(z)?;
            let n = zt.dims()[0];
            let masked = b.axpby(&zt, onehot, &EltParams::new(zt.numel(), 1.0, -MASK_BIG)?)?;
            let runner_up = b.argmax_rows(&masked, &RowParams::new(n, targets.classes)?)?;
            let to_label = g.softmax_xent(z, &targets.labels, Reduction::Sum)?;
            let to_runner_up = g.softmax_xent(z, &runner_up, Reduction::Sum)?;
            (g.sub(to_label.per_example, to_runner_up.per_example)?, g.sub(to_label.loss, to_runner_up.loss)?)
        }
    };
    let grads = g.backward(total)?;
    Ok((g.value(per_example)?, grads.wrt(xv)?.clone(), g.value(z)?))
}

/// d (sum of losses) / d x only (see [`loss_and_grad`]).
pub fn input_grad<B: Backend>(
    b: &B,
    model: &Model<B>,
    x: &Tensor<B>,
    targets: &LossTargets<B>,
    loss: Loss,
) -> Result<Tensor<B>> {
    Ok(loss_and_grad(b, model, x, targets, loss)?.1)
}

/// One forward and one input-only backward for a loss of the logits computed on the host:
/// `loss(i, z_i, dz_i)` gets example i's logits row and writes d loss_i / d z_i into `dz_i`
/// (zeroed), returning loss_i. Returns the logits [n, classes] and the per-example losses on
/// the host, and d (sum of losses) / d x on the device (the weights are constants, so no
/// weight-gradient kernel runs). Used by the losses whose gradient is not a fused backend op
/// (DLR, targeted DLR, FAB's logit differences); the host work is n * classes values a step.
pub fn logits_loss_grad<B: Backend, F>(
    b: &B,
    model: &Model<B>,
    x: &Tensor<B>,
    mut loss: F,
) -> Result<(Vec<f32>, Vec<f32>, Tensor<B>)>
where
    F: FnMut(usize, &[f32], &mut [f32]) -> f32,
{
    let g = Graph::new(b);
    let bound = model.bind(&g, false);
    let xv = g.input(x, true);
    let z = model.forward(&g, &bound, xv)?;
    let zt = g.value(z)?;
    let logits = b.download_f32(&zt)?;
    let k = model.classes();
    let mut seed = vec![0f32; logits.len()];
    let mut per_example = Vec::with_capacity(logits.len() / k.max(1));
    for (i, (row, d)) in logits.chunks_exact(k).zip(seed.chunks_exact_mut(k)).enumerate() {
        per_example.push(loss(i, row, d));
    }
    let seed = b.upload_f32(&seed, zt.shape())?;
    let grads = g.backward_with_seed(z, &seed)?;
    Ok((logits, per_example, grads.wrt(xv)?.clone()))
}

/// The margin of one row of logits towards `goal`: untargeted, max_{j != y} z_j - z_y
/// (> 0: misclassified); targeted, z_t - max_{j != t} z_j (> 0: classified as t).
pub fn margin(logits: &[f32], goal: u32, targeted: bool) -> f32 {
    let g = goal as usize;
    let other = logits.iter().enumerate().filter(|&(j, _)| j != g).map(|(_, &v)| v).fold(f32::NEG_INFINITY, f32::max);
    let own = logits.get(g).copied().unwrap_or(f32::NAN);
    if targeted { own - other } else { other - own }
}

/// The first index of the row's maximum (the backends' argmax rule); NaN never wins.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] || (row[best].is_nan() && !v.is_nan()) {
            best = j;
        }
    }
    best as u32
}

/// Whether a prediction reaches the attack's goal (misclassified, or the target hit).
pub fn reached(pred: u32, goal: u32, targeted: bool) -> bool {
    if targeted { pred == goal } else { pred != goal }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins() {
        let z = [1.0, 3.0, 2.0];
        assert_eq!(margin(&z, 1, false), -1.0);
        assert_eq!(margin(&z, 0, false), 2.0);
        assert_eq!(margin(&z, 1, true), 1.0);
        assert_eq!(argmax(&[0.0, 2.0, 2.0]), 1);
        assert!(reached(2, 1, false) && !reached(1, 1, false) && reached(1, 1, true));
    }
}
