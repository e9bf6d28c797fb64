//! The gradient attacks on one batch: FGSM, R-FGSM, BIM and PGD (L-inf, L2, cross-entropy or
//! margin, untargeted or targeted, restarts).
//!
//! Every step is one fused backend op (`sign_step_`, `step_project_linf_`,
//! `step_project_l2_`: step, projection onto the eps-ball and clip to the data range in one
//! kernel) on buffers allocated when the attack first sees a batch of that size, not per
//! step. The backward computes d loss / d input only ([`crate::grad`]). The models here have no
//! layer whose training behaviour differs (no dropout or batch norm), and the weights are bound
//! as constants, so the attack runs the model exactly as inference does.
//!
//! Random starts and R-FGSM's noise come from the backend's Philox stream (`rng_fill_`) with
//! the attack's seed and a counter offset that depends only on the example's index in the data
//! set, the restart and the use: the same seed gives the same starts on every backend and for
//! every batch size.

use perturb_core::ops::{Dist, EltParams, RngParams, StepParams};
use perturb_core::{Backend, DType, Shape, Tensor, rng};
use perturb_nn::Model;
use rayon::prelude::*;

use crate::config::{AttackConfig, Method, Norm};
use crate::grad::{LossTargets, argmax, input_grad, loss_grad_logits, margin, reached};
use crate::{Error, Result};

/// Stream tags in the top bits of the Philox counter, so different uses never share blocks.
const TAG_LINF_START: u64 = 1;
const TAG_L2_START: u64 = 2;
const TAG_RFGSM: u64 = 3;

/// What an attack produced for one batch, on the host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutcome {
    /// The adversarial examples, [n, c, h, w] row-major.
    pub adv: Vec<f32>,
    /// The attacked model's predictions on `adv`.
    pub pred: Vec<u32>,
    /// Per example: the goal is reached (misclassified; for a targeted attack, the target hit).
    pub success: Vec<bool>,
    /// Per example: the margin towards the goal on `adv` (> 0 where reached; see [`margin`]).
    pub margin: Vec<f32>,
    /// Forward passes per example (gradient attacks: one per gradient step; Square: its queries).
    pub queries: Vec<u32>,
}

impl BatchOutcome {
    /// Appends the outcome of the batch that follows this one.
    pub fn append(&mut self, next: BatchOutcome) {
        self.adv.extend(next.adv);
        self.pred.extend(next.pred);
        self.success.extend(next.success);
        self.margin.extend(next.margin);
        self.queries.extend(next.queries);
    }

    /// Runs a batch of `n` points as up to `states.len()` contiguous parts at once, one per
    /// thread: `run(state, a, e)` attacks points `a..e` with a state of its own (a gradient
    /// attack's buffers, or `()`), and the outcomes are joined in order. The attacks draw their
    /// random numbers per point from the point's index and decide per point, so the outcome is
    /// the whole batch's; only the time changes (see `Backend::concurrent_batches`).
    pub(crate) fn in_parts<S: Send>(
        n: usize,
        states: &mut [S],
        run: impl Fn(&mut S, usize, usize) -> Result<BatchOutcome> + Sync,
    ) -> Result<BatchOutcome> {
        if states.is_empty() {
            return Err(Error::invalid("parts", "a batch needs at least one part"));
        }
        let size = n.div_ceil(states.len()).max(1);
        if size >= n {
            return run(&mut states[0], 0, n);
        }
        let parts = n.div_ceil(size);
        let outs: Vec<Result<BatchOutcome>> = states[..parts]
            .par_iter_mut()
            .enumerate()
            .map(|(p, s)| run(s, p * size, ((p + 1) * size).min(n)))
            .collect();
        let mut all = BatchOutcome::default();
        for out in outs {
            all.append(out?);
        }
        Ok(all)
    }
}

/// A gradient attack bound to a model; it keeps its device buffers between batches of the
/// same size.
pub struct GradientAttack<'m, B: Backend> {
    b: &'m B,
    model: &'m Model<B>,
    cfg: AttackConfig,
    features: usize,
    /// x (the iterate) and noise, [n, c, h, w].
    bufs: Option<(usize, Tensor<B>, Tensor<B>)>,
}

impl<'m, B: Backend> GradientAttack<'m, B> {
    /// Checks `cfg` against the model's input size; Square is not a gradient attack (see
    /// [`crate::square`]).
    pub fn new(b: &'m B, model: &'m Model<B>, cfg: AttackConfig) -> Result<Self> {
        let features: usize = model.input_shape().iter().product();
        cfg.validate(features)?;
        if !cfg.uses_gradients() {
            return Err(Error::invalid("method", "the Square attack takes no gradient: use square::square_batch"));
        }
        Ok(GradientAttack { b, model, cfg, features, bufs: None })
    }

    /// The configuration.
    pub fn config(&self) -> &AttackConfig {
        &self.cfg
    }

    fn buffers(&mut self, n: usize) -> Result<(Tensor<B>, Tensor<B>)> {
        if let Some((m, x, noise)) = &self.bufs
            && *m == n
        {
            return Ok((x.clone(), noise.clone()));
        }
        let [c, h, w] = self.model.input_shape();
        let shape = Shape::from([n, c, h, w]);
        let x = self.b.zeros(&shape, DType::F32)?;
        let noise = self.b.zeros(&shape, DType::F32)?;
        self.bufs = Some((n, x.clone(), noise.clone()));
        Ok((x, noise))
    }

    fn step_params(&self, n: usize, alpha: f32) -> Result<StepParams> {
        Ok(StepParams::new(n, self.features, alpha, self.cfg.eps, self.cfg.lo, self.cfg.hi)?)
    }

    /// The fill of `n` examples from example `first` on, restart `restart`, for the use `tag`;
    /// `(a, b)` are the distribution's parameters.
    fn rng(
        &self,
        dist: Dist,
        tag: u64,
        restart: usize,
        first: usize,
        n: usize,
        (a, b): (f32, f32),
    ) -> Result<RngParams> {
        let start = rng::counters_used(dist, first * self.features);
        let offset = (tag << 58) | ((restart as u64) << 44) | start;
        Ok(RngParams::new(n * self.features, self.cfg.seed, offset, dist, a, b)?)
    }

    /// One projected step: x = P(x + sgn * alpha * direction(g)).
    fn step(&self, x: &Tensor<B>, g: &Tensor<B>, x0: &Tensor<B>, n: usize, alpha: f32) -> Result<()> {
        let p = self.step_params(n, alpha)?;
        match self.cfg.norm {
            Norm::Linf => self.b.step_project_linf_(x, g, x0, &p)?,
            Norm::L2 => self.b.step_project_l2_(x, g, x0, &p)?,
        }
        Ok(())
    }

    /// Attacks one batch. `x0` is [n, c, h, w] in the data range, `goal` the true labels
    /// (untargeted) or the targets (targeted), `first` the index of the batch's first example
    /// in the data set (it selects the random streams).
    pub fn run_batch(&mut self, x0: &Tensor<B>, goal: &[u32], first: usize) -> Result<BatchOutcome> {
        let n = goal.len();
        let [c, h, w] = self.model.input_shape();
        x0.expect_shape("attack", "clean batch x0", &[n, c, h, w])?;
        let targets = LossTargets::new(self.b, goal, self.model.classes(), self.cfg.loss)?;
        let (x, noise) = self.buffers(n)?;
        // Ascend the loss towards misclassification; descend it towards a target.
        let sgn = if self.cfg.target.is_some() { -1.0 } else { 1.0 };
        let (eps, cfg) = (self.cfg.eps, self.cfg.clone());
        let restarts = if cfg.method == Method::Pgd { cfg.restarts } else { 1 };
        let mut best: Option<BatchOutcome> = None;
        let mut per_restart = 0u32;
        for r in 0..restarts {
            let mut reached_at: Option<BatchOutcome> = None;
            self.b.copy_(&x, x0)?;
            let grads = match cfg.method {
                Method::Fgsm => {
                    let g = input_grad(self.b, self.model, &x, &targets, cfg.loss)?;
                    match cfg.norm {
                        Norm::Linf => self.b.sign_step_(&x, &g, &self.step_params(n, sgn * eps)?)?,
                        Norm::L2 => self.step(&x, &g, x0, n, sgn * eps)?,
                    }
                    1
                }
                Method::RFgsm => {
                    self.b.rng_fill_(&noise, &self.rng(Dist::Sign, TAG_RFGSM, r, first, n, (1.0, 0.0))?)?;
                    self.b.sign_step_(&x, &noise, &self.step_params(n, cfg.alpha)?)?;
                    let g = input_grad(self.b, self.model, &x, &targets, cfg.loss)?;
                    self.step(&x, &g, x0, n, sgn * (eps - cfg.alpha))?;
                    1
                }
                Method::Bim | Method::Pgd => {
                    if cfg.method == Method::Pgd && cfg.random_start {
                        self.random_start(&x, &noise, x0, r, first, n)?;
                    }
                    for _ in 0..cfg.steps {
                        let (_, g, z) = loss_grad_logits(self.b, self.model, &x, &targets, cfg.loss)?;
                        self.keep_reached(&mut reached_at, &x, &z, goal)?;
                        self.step(&x, &g, x0, n, sgn * cfg.step_size)?;
                    }
                    cfg.steps as u32
                }
                Method::Square => return Err(Error::invalid("method", "the Square attack takes no gradient")),
            };
            let mut out = self.judge(&x, goal)?;
            // An iterate that reached the goal stays the answer (broken at step 12 stays broken).
            if let Some(kept) = reached_at.take() {
                keep_worst_case(&mut out, &kept, self.features);
            }
            best = Some(match best {
                None => out,
                Some(mut kept) => {
                    keep_worst_case(&mut kept, &out, self.features);
                    kept
                }
            });
            per_restart = grads;
        }
        if let Some(b) = best.as_mut() {
            b.queries.iter_mut().for_each(|q| *q = per_restart * restarts as u32);
        }
        best.ok_or_else(|| Error::invalid("restarts", "must be at least 1"))
    }

    /// A uniform point of the L-inf box (x0 + U(-eps, eps), clipped), or x0 plus a random
    /// direction of length eps (L2, then clipped).
    fn random_start(
        &self,
        x: &Tensor<B>,
        noise: &Tensor<B>,
        x0: &Tensor<B>,
        r: usize,
        first: usize,
        n: usize,
    ) -> Result<()> {
        let eps = self.cfg.eps;
        match self.cfg.norm {
            Norm::Linf => {
                self.b.rng_fill_(noise, &self.rng(Dist::Uniform, TAG_LINF_START, r, first, n, (-eps, eps))?)?;
                let start = self.b.axpby(x0, noise, &EltParams::new(x0.numel(), 1.0, 1.0)?)?;
                self.b.copy_(x, &start)?;
                // alpha = 0: no step, only the projection onto the box and the clip.
                self.b.step_project_linf_(x, noise, x0, &self.step_params(n, 0.0)?)?;
            }
            Norm::L2 => {
                self.b.rng_fill_(noise, &self.rng(Dist::Normal, TAG_L2_START, r, first, n, (0.0, 1.0))?)?;
                self.b.step_project_l2_(x, noise, x0, &self.step_params(n, eps)?)?;
            }
        }
        Ok(())
    }

    /// Records in `kept` the examples whose iterate `x` (with logits `z`) reaches the goal and
    /// that no earlier iterate of this restart reached; downloads x only when one does.
    fn keep_reached(&self, kept: &mut Option<BatchOutcome>, x: &Tensor<B>, z: &Tensor<B>, goal: &[u32]) -> Result<()> {
        let targeted = self.cfg.target.is_some();
        let logits = self.b.download_f32(z)?;
        let k = self.model.classes();
        let n = goal.len();
        let new: Vec<usize> = (0..n)
            .filter(|&i| {
                let before = kept.as_ref().is_some_and(|o| o.success[i]);
                !before && reached(argmax(&logits[i * k..(i + 1) * k]), goal[i], targeted)
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let xs = self.b.download_f32(x)?;
        let d = self.features;
        let o = kept.get_or_insert_with(|| BatchOutcome {
            adv: vec![0.0; n * d],
            pred: vec![0; n],
            success: vec![false; n],
            margin: vec![f32::NEG_INFINITY; n],
            queries: vec![0; n],
        });
        for i in new {
            let row = &logits[i * k..(i + 1) * k];
            o.adv[i * d..(i + 1) * d].copy_from_slice(&xs[i * d..(i + 1) * d]);
            o.pred[i] = argmax(row);
            o.success[i] = true;
            o.margin[i] = margin(row, goal[i], targeted);
        }
        Ok(())
    }

    /// x downloaded, with the model's predictions and margins on it.
    fn judge(&self, x: &Tensor<B>, goal: &[u32]) -> Result<BatchOutcome> {
        let targeted = self.cfg.target.is_some();
        let logits = self.b.download_f32(&self.model.infer(self.b, x)?)?;
        let classes = self.model.classes();
        let mut out = BatchOutcome {
            adv: self.b.download_f32(x)?,
            pred: Vec::with_capacity(goal.len()),
            success: Vec::with_capacity(goal.len()),
            margin: Vec::with_capacity(goal.len()),
            queries: vec![0; goal.len()],
        };
        for (row, &y) in logits.chunks_exact(classes).zip(goal) {
            let p = argmax(row);
            out.pred.push(p);
            out.success.push(reached(p, y, targeted));
            out.margin.push(margin(row, y, targeted));
        }
        Ok(out)
    }
}

/// Replaces the examples of `best` for which `new` is worse for the model: the goal reached
/// where it was not, or, with the same outcome, a larger margin.
pub fn keep_worst_case(best: &mut BatchOutcome, new: &BatchOutcome, features: usize) {
    for i in 0..best.pred.len() {
        let better = (new.success[i], new.margin[i]) > (best.success[i], best.margin[i]);
        if better {
            best.pred[i] = new.pred[i];
            best.success[i] = new.success[i];
            best.margin[i] = new.margin[i];
            let r = i * features..(i + 1) * features;
            if let (Some(dst), Some(src)) = (best.adv.get_mut(r.clone()), new.adv.get(r)) {
                dst.copy_from_slice(src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outcome whose predictions are the points' indices, so the join's order shows.
    fn marked(a: usize, e: usize) -> BatchOutcome {
        let n = e - a;
        BatchOutcome {
            adv: (a..e).map(|i| i as f32).collect(),
            pred: (a as u32..e as u32).collect(),
            success: vec![true; n],
            margin: vec![0.0; n],
            queries: vec![1; n],
        }
    }

    #[test]
    fn parts_cover_the_batch_in_order_each_with_its_own_state() {
        for n in [0usize, 1, 2, 5, 7, 250] {
            for k in 1..=4usize {
                let mut states: Vec<Vec<(usize, usize)>> = vec![Vec::new(); k];
                let out = BatchOutcome::in_parts(n, &mut states, |s, a, e| {
                    s.push((a, e));
                    Ok(marked(a, e))
                })
                .unwrap();
                assert_eq!(out.pred, (0..n as u32).collect::<Vec<_>>(), "n {n}, {k} parts");
                // Each state ran at most one part, no part was empty unless the batch is, and the
                // parts are of one size (the last may be shorter).
                let ran: Vec<(usize, usize)> = states.iter().flatten().copied().collect();
                assert!(states.iter().all(|s| s.len() <= 1));
                assert!(ran.iter().all(|&(a, e)| e > a || n == 0), "{ran:?}");
                assert_eq!(ran.len(), if n == 0 { 1 } else { n.div_ceil(n.div_ceil(k)) }, "n {n}, {k} parts: {ran:?}");
                assert!(ran.len() <= k);
            }
        }
        let err = BatchOutcome::in_parts(3, &mut Vec::<()>::new(), |_, a, e| Ok(marked(a, e)));
        assert!(err.is_err());
        // A failing part fails the batch.
        let failed = BatchOutcome::in_parts(6, &mut [(), ()], |_, a, e| {
            if a > 0 { Err(Error::invalid("part", "boom")) } else { Ok(marked(a, e)) }
        });
        assert!(failed.is_err());
    }
}
