//! The loss of one training step for the methods that train on input-space examples
//! (`standard`, `fgsm`, `rfgsm`, `fgsm-rs`, `fgsm-reg`, `pgd`); `differential` and
//! `self-gradient` have their own modules.
//!
//! The adversarial examples are made first (each with its own input-only backward on its own
//! tape), then one training tape binds the weights as trainable parameters once and runs every
//! forward the loss needs on them, so the gradients of all terms add up in one backward.

use perturb_autograd::{Graph, Reduction, Var};
use perturb_core::{Backend, Tensor};
use perturb_nn::{Bound, Model};

use super::perturb::Perturber;
use super::{MethodConfig, TrainMethod};
use crate::grad::LossTargets;
use crate::{Error, Result};

/// The scalar loss of a step, and for `fgsm-reg` its regulariser term (unweighted: the mean
/// squared L2 distance between the logits of the FGSM and the R-FGSM example).
#[derive(Debug, Clone, Copy)]
pub struct StepLoss {
    /// The loss the optimiser descends, shape `[1]`.
    pub loss: Var,
    /// `fgsm-reg` only: `mean_i ||z(x_fgsm) - z(x_rfgsm)||²`, shape `[1]`.
    pub regulariser: Option<Var>,
}

fn xent<B: Backend>(g: &Graph<'_, B>, model: &Model<B>, bound: &Bound, x: &Tensor<B>, y: &Tensor<B>) -> Result<Var> {
    let xv = g.input(x, false);
    let z = model.forward(g, bound, xv)?;
    Ok(g.softmax_xent(z, y, Reduction::Mean)?.loss)
}

/// Makes the method's adversarial examples from the current weights (input-only backward) and
/// records the step's loss on `g`, with the weights bound trainable in `bound`.
#[allow(clippy::too_many_arguments)]
pub fn input_space_loss<B: Backend>(
    b: &B,
    g: &Graph<'_, B>,
    model: &Model<B>,
    bound: &Bound,
    cfg: &MethodConfig,
    pert: &mut Perturber<B>,
    x0: &Tensor<B>,
    targets: &LossTargets<B>,
) -> Result<StepLoss> {
    let y = &targets.labels;
    let plain = |loss: Var| -> Result<StepLoss> { Ok(StepLoss { loss, regulariser: None }) };
    match cfg.method {
        TrainMethod::Standard => plain(xent(g, model, bound, x0, y)?),
        TrainMethod::Fgsm | TrainMethod::Rfgsm => {
            let adv = if cfg.method == TrainMethod::Fgsm {
                pert.fgsm(b, model, x0, targets)?
            } else {
                pert.rfgsm(b, model, x0, targets, cfg.alpha())?
            };
            let clean = xent(g, model, bound, x0, y)?;
            let robust = xent(g, model, bound, &adv, y)?;
            plain(g.axpby(clean, robust, cfg.mix, 1.0 - cfg.mix)?)
        }
        TrainMethod::FgsmRs => {
            let adv = pert.fgsm_rs(b, model, x0, targets, cfg.rs_step())?;
            plain(xent(g, model, bound, &adv, y)?)
        }
        TrainMethod::Pgd => {
            let adv = pert.pgd(b, model, x0, targets, cfg.pgd_steps, cfg.pgd_step_size())?;
            plain(xent(g, model, bound, &adv, y)?)
        }
        TrainMethod::FgsmReg => {
            let x_fgsm = pert.fgsm(b, model, x0, targets)?;
            let x_rfgsm = pert.rfgsm(b, model, x0, targets, cfg.alpha())?;
            let zf = model.forward(g, bound, g.input(&x_fgsm, false))?;
            let zr = model.forward(g, bound, g.input(&x_rfgsm, false))?;
            let ce = g.softmax_xent(zf, y, Reduction::Mean)?.loss;
            let reg = g.mean_all(g.sq_dist_rows(zf, zr)?)?;
            // mean_all averages over the n examples: sq_dist_rows already summed each row.
            let loss = g.axpby(ce, reg, 1.0, cfg.lambda)?;
            Ok(StepLoss { loss, regulariser: Some(reg) })
        }
        TrainMethod::Differential | TrainMethod::SelfGradient => {
            Err(Error::invalid("method", format!("{} has no input-space step", cfg.method)))
        }
    }
}
