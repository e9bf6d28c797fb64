//! Differential training (Nar, Ocal, Sastry and Ramchandran 2019, "Cross-entropy loss and
//! low-rank features have responsibility for adversarial examples") for a two-class task.
//!
//! The network's scalar output is f(x) = z_1(x) - z_0(x), the difference of the two logits of a
//! two-class model (an affine function of the last hidden layer, like a one-output head, so the
//! attacks and the evaluation of perturb-adv apply unchanged). With x_i the points of class 1
//! and y_j those of class 0 in a batch, the loss is the mean over every pair (i, j) of
//!
//! ```text
//! log(1 + exp(-(f(x_i) - f(y_j))))
//! ```
//!
//! (the paper's sum over pairs divided by the number of pairs; the scale folds into the
//! learning rate). The loss depends on differences of f only, so the bias of f does not learn:
//! [`set_differential_bias`] sets it afterwards from the training scores, at the middle of the
//! gap between the classes when they are separated (the largest margin along f), otherwise at
//! the threshold with the fewest training errors.
//!
//! On the tape, with m points of class 1 and k of class 0: f = z · [-1, 1]ᵀ (a linear op with a
//! constant weight); the m x k matrix of differences is fx · 1ᵀ - 1 · fyᵀ (two rank-1 linear
//! ops, so no broadcast kernel is needed); and log(1 + exp(-d)) is the fused cross-entropy of
//! the logits [d, 0] against class 0.

use perturb_autograd::{Graph, Reduction, Var};
use perturb_core::{Backend, Shape, Tensor};
use perturb_data::Dataset;
use perturb_nn::{Bound, Model};
use serde::Serialize;

use crate::{Error, Result};

/// The constant tensors of the pair loss for m points of class 1 and k of class 0.
struct PairConsts<B: Backend> {
    m: usize,
    k: usize,
    /// [1, 2] = [-1, 1]: f = z_1 - z_0.
    diff: Tensor<B>,
    /// [k, 1] ones and [m, 1] ones.
    ones_k: Tensor<B>,
    ones_m: Tensor<B>,
    /// [2, 1] = [1, 0]: d -> [d, 0].
    to_logits: Tensor<B>,
    /// u32 [m k] zeros.
    zeros: Tensor<B>,
}

/// The scalar scores f(x) = z_1(x) - z_0(x) [n, 1] of a two-class model's logits z [n, 2].
fn scores<B: Backend>(g: &Graph<'_, B>, z: Var, diff: &Tensor<B>) -> Result<Var> {
    Ok(g.linear(z, g.constant(diff))?)
}

/// The pair loss on `g`: mean over pairs of log(1 + exp(-(f(x_pos,i) - f(x_neg,j)))), for
/// x_pos [m, c, h, w] of class 1 and x_neg [k, c, h, w] of class 0 through `model` (two
/// outputs) with its parameters in `bound`.
pub fn differential_loss<B: Backend>(
    b: &B,
    g: &Graph<'_, B>,
    model: &Model<B>,
    bound: &Bound,
    x_pos: &Tensor<B>,
    x_neg: &Tensor<B>,
) -> Result<Var> {
    let c = consts(b, x_pos.shape().batch(), x_neg.shape().batch(), model)?;
    pair_loss(g, model, bound, x_pos, x_neg, &c)
}

fn consts<B: Backend>(b: &B, m: usize, k: usize, model: &Model<B>) -> Result<PairConsts<B>> {
    if model.classes() != 2 {
        return Err(Error::invalid(
            "classes",
            format!("differential training needs a two-class model; {} has {} outputs", model.name(), model.classes()),
        ));
    }
    if m == 0 || k == 0 {
        return Err(Error::invalid("batch", "the pair loss needs at least one point of each class"));
    }
    Ok(PairConsts {
        m,
        k,
        diff: b.upload_f32(&[-1.0, 1.0], &Shape::from([1, 2]))?,
        ones_k: b.upload_f32(&vec![1.0; k], &Shape::from([k, 1]))?,
        ones_m: b.upload_f32(&vec![1.0; m], &Shape::from([m, 1]))?,
        to_logits: b.upload_f32(&[1.0, 0.0], &Shape::from([2, 1]))?,
        zeros: b.upload_u32(&vec![0; m * k], &Shape::from([m * k]))?,
    })
}

fn pair_loss<B: Backend>(
    g: &Graph<'_, B>,
    model: &Model<B>,
    bound: &Bound,
    x_pos: &Tensor<B>,
    x_neg: &Tensor<B>,
    c: &PairConsts<B>,
) -> Result<Var> {
    let fp = scores(g, model.forward(g, bound, g.input(x_pos, false))?, &c.diff)?; // [m, 1]
    let fn_ = scores(g, model.forward(g, bound, g.input(x_neg, false))?, &c.diff)?; // [k, 1]
    let rows = g.linear(fp, g.constant(&c.ones_k))?; // [m, k]: f(x_i)
    let cols = g.linear(g.constant(&c.ones_m), fn_)?; // [m, k]: f(y_j)
    let d = g.reshape(g.sub(rows, cols)?, [c.m * c.k, 1])?;
    let logits = g.linear(d, g.constant(&c.to_logits))?; // [m k, 2] = [d, 0]
    Ok(g.softmax_xent(logits, &c.zeros, Reduction::Mean)?.loss)
}

/// Keeps the pair-loss constants between steps of the same split.
pub(crate) struct PairLoss<B: Backend> {
    cache: Option<PairConsts<B>>,
}

impl<B: Backend> PairLoss<B> {
    pub(crate) fn new() -> Self {
        PairLoss { cache: None }
    }

    pub(crate) fn loss(
        &mut self,
        b: &B,
        g: &Graph<'_, B>,
        model: &Model<B>,
        bound: &Bound,
        x_pos: &Tensor<B>,
        x_neg: &Tensor<B>,
    ) -> Result<Var> {
        let (m, k) = (x_pos.shape().batch(), x_neg.shape().batch());
        if !self.cache.as_ref().is_some_and(|c| c.m == m && c.k == k) {
            self.cache = Some(consts(b, m, k, model)?);
        }
        let c = self.cache.as_ref().ok_or_else(|| Error::Mismatch("pair constants missing".into()))?;
        pair_loss(g, model, bound, x_pos, x_neg, c)
    }
}

/// How [`set_differential_bias`] placed the threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BiasChoice {
    /// True when the training scores of the classes do not overlap.
    pub separable: bool,
    /// The threshold on the raw scores f (before the bias change); f - threshold is the new f.
    pub threshold: f32,
    /// The gap between the classes along f: min f(class 1) - max f(class 0) (negative when
    /// they overlap).
    pub gap: f32,
    /// Training accuracy with the new bias.
    pub train_accuracy: f64,
}

/// The scores f = z_1 - z_0 of every example of `data`, in batches.
pub fn differential_scores<B: Backend>(b: &B, model: &Model<B>, data: &Dataset, batch_size: usize) -> Result<Vec<f32>> {
    let [c, h, w] = model.input_shape();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut out = Vec::with_capacity(data.len());
    for first in (0..data.len()).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (first..(first + batch_size.max(1)).min(data.len())).collect();
        data.gather(&idx, &mut xs, &mut ys)?;
        let x = b.upload_f32(&xs, &Shape::from([idx.len(), c, h, w]))?;
        let z = b.download_f32(&model.infer(b, &x)?)?;
        out.extend(z.chunks_exact(2).map(|r| r[1] - r[0]));
    }
    Ok(out)
}

/// The threshold on scores `s` with labels `y` (0/1): the middle of the gap when the classes
/// are separated, else the midpoint between neighbouring scores with the fewest errors.
pub fn choose_threshold(s: &[f32], y: &[u8]) -> BiasChoice {
    let pos = s.iter().zip(y).filter(|(_, l)| **l == 1).map(|(v, _)| *v);
    let neg = s.iter().zip(y).filter(|(_, l)| **l != 1).map(|(v, _)| *v);
    let min_pos = pos.fold(f32::INFINITY, f32::min);
    let max_neg = neg.fold(f32::NEG_INFINITY, f32::max);
    let gap = min_pos - max_neg;
    let accuracy =
        |t: f32| s.iter().zip(y).filter(|(v, l)| (**v > t) == (**l == 1)).count() as f64 / s.len().max(1) as f64;
    if gap > 0.0 && gap.is_finite() {
        let t = 0.5 * (min_pos + max_neg);
        return BiasChoice { separable: true, threshold: t, gap, train_accuracy: accuracy(t) };
    }
    // Sweep the sorted scores: predicting class 1 above t, errors = class-0 points above t plus
    // class-1 points at or below it.
    let mut order: Vec<(f32, u8)> = s.iter().copied().zip(y.iter().copied()).filter(|(v, _)| v.is_finite()).collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total_neg = order.iter().filter(|(_, l)| *l != 1).count();
    let (mut best_err, mut best_t) = (total_neg, order.first().map_or(0.0, |p| p.0 - 1.0));
    let (mut pos_below, mut neg_below) = (0usize, 0usize);
    for (i, &(v, l)) in order.iter().enumerate() {
        if l == 1 {
            pos_below += 1
        } else {
            neg_below += 1
        }
        let next = order.get(i + 1).map_or(v + 1.0, |p| p.0);
        if next > v {
            let err = pos_below + (total_neg - neg_below);
            if err < best_err {
                best_err = err;
                best_t = 0.5 * (v + next);
            }
        }
    }
    BiasChoice { separable: false, threshold: best_t, gap, train_accuracy: accuracy(best_t) }
}

/// Sets the bias of f = z_1 - z_0 after differential training: shifts the last layer's biases
/// (b_1 by -t/2, b_0 by +t/2) so that f's threshold moves to 0 (see [`choose_threshold`]).
pub fn set_differential_bias<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    batch_size: usize,
) -> Result<BiasChoice> {
    let s = differential_scores(b, model, data, batch_size)?;
    let choice = choose_threshold(&s, &data.labels);
    let bias =
        model.params().last().filter(|p| p.name.ends_with(".bias") && p.tensor.numel() == 2).ok_or_else(|| {
            Error::Mismatch(format!("{} does not end in a two-output layer with a bias", model.name()))
        })?;
    let mut v = b.download_f32(&bias.tensor)?;
    let t = choice.threshold;
    v[0] += 0.5 * t;
    v[1] -= 0.5 * t;
    let new = b.upload_f32(&v, bias.tensor.shape())?;
    b.copy_(&bias.tensor, &new)?;
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let c = choose_threshold(&[-2.0, -1.0, 1.0, 3.0], &[0, 0, 1, 1]);
        assert!(c.separable && c.threshold == 0.0 && c.gap == 2.0 && c.train_accuracy == 1.0, "{c:?}");
        // One class-0 outlier at 5: the best threshold still keeps 4 of 5 right.
        let c = choose_threshold(&[-2.0, -1.0, 1.0, 3.0, 5.0], &[0, 0, 1, 1, 0]);
        assert!(!c.separable && c.threshold == 0.0 && (c.train_accuracy - 0.8).abs() < 1e-12, "{c:?}");
    }
}
