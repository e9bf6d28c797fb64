//! The training loop shared by every method: seeded shuffled batches, the method's loss, one
//! optimiser step per batch with the schedule's rate, the monitor after each epoch, and for
//! `differential` the bias set at the end.

use std::time::Instant;

use perturb_autograd::Graph;
use perturb_core::{Backend, Shape, Tensor};
use perturb_data::{Batches, Dataset};
use perturb_nn::{HostTensor, LrSchedule, Model, Optimizer};
use serde::Serialize;

use super::differential::{BiasChoice, PairLoss, set_differential_bias};
use super::monitor::{MonitorConfig, MonitorReading};
use super::perturb::Perturber;
use super::self_gradient::SelfGradient;
use super::step::{StepLoss, input_space_loss};
use super::{MethodConfig, TrainMethod};
use crate::config::Loss;
use crate::grad::LossTargets;
use crate::run::check_data;
use crate::{Error, Result};

/// How long and in what batches to train.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Examples per step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Seed of the shuffling.
    pub seed: u64,
    /// The catastrophic-overfitting monitor (adversarial methods only).
    pub monitor: MonitorConfig,
    /// Read the loss back every this many steps (a device sync on a GPU).
    pub loss_every: u64,
    /// Epochs over which the training eps (and every step size that follows it) ramps up
    /// linearly from 0 to its value; 0: the full eps from the first step. Training on the full
    /// eps = 0.3 from a random initialisation can collapse a small model to a constant output.
    pub eps_warmup_epochs: f32,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            epochs: 1,
            batch_size: 32,
            seed: 0,
            monitor: MonitorConfig::default(),
            loss_every: 10,
            eps_warmup_epochs: 0.0,
        }
    }
}

/// Progress reported to the caller while training runs.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A step finished; `loss` is read back every [`RunConfig::loss_every`] steps.
    Step {
        /// Steps done.
        step: u64,
        /// Steps in the whole run.
        total: u64,
        /// 1-based epoch.
        epoch: usize,
        /// The step's loss, when read back.
        loss: Option<f32>,
    },
    /// The monitor measured an epoch.
    Monitor(&'a MonitorReading),
    /// A warning (catastrophic overfitting, an early stop).
    Warning(&'a str),
}

/// What a training run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// The method.
    pub method: TrainMethod,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Epochs completed.
    pub epochs_run: usize,
    /// The last loss read back.
    pub final_loss: f32,
    /// `fgsm-reg`: the last regulariser value read back (mean ||z(x_fgsm) - z(x_rfgsm)||²).
    pub regulariser: Option<f32>,
    /// Seconds spent training (the monitor's time excluded).
    pub train_seconds: f64,
    /// Seconds spent in the monitor.
    pub monitor_seconds: f64,
    /// The monitor's reading after each epoch.
    pub monitor: Vec<MonitorReading>,
    /// Warnings issued (one per flagged epoch, and the early stop).
    pub warnings: Vec<String>,
    /// Training stopped at a flagged epoch (`stop_on_overfit`).
    pub stopped_early: bool,
    /// The epoch whose weights were restored after an early stop.
    pub restored_epoch: Option<usize>,
    /// `differential`: how the bias was set.
    pub bias: Option<BiasChoice>,
    /// Buffer sets the perturber allocated (one per distinct batch size, never per step).
    pub buffer_allocations: usize,
}

/// The per-method state that lives for the whole run.
enum Stepper<B: Backend> {
    InputSpace(Perturber<B>),
    Differential(PairLoss<B>),
    SelfGradient(SelfGradient<B>),
}

/// Trains `model` on `data` with `method`. `held_out` is the monitor's batch (its first
/// `run.monitor.examples` examples; `None` turns the monitor off). The optimiser was built for
/// the model's parameters; `schedule` gives each step's rate. `on_event` sees progress.
#[allow(clippy::too_many_arguments)]
pub fn train<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    held_out: Option<&Dataset>,
    method: &MethodConfig,
    run: &RunConfig,
    opt: &mut dyn Optimizer<B>,
    schedule: &LrSchedule,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<TrainReport> {
    method.validate()?;
    run.monitor.validate()?;
    if run.epochs == 0 || run.batch_size == 0 {
        return Err(Error::invalid("epochs", "training needs epochs >= 1 and batch_size >= 1"));
    }
    if !(run.eps_warmup_epochs.is_finite() && run.eps_warmup_epochs >= 0.0) {
        return Err(Error::invalid("eps_warmup", format!("{} must be a number of epochs >= 0", run.eps_warmup_epochs)));
    }
    schedule.validate()?;
    check_data(model, data)?;
    let m = method.method;
    if m == TrainMethod::Differential && (data.num_classes != 2 || model.classes() != 2) {
        return Err(Error::invalid(
            "classes",
            format!(
                "differential training is for a two-class task (e.g. --classes 3,7); the data has {} classes, the model {} outputs",
                data.num_classes,
                model.classes()
            ),
        ));
    }
    let monitor_data = match held_out {
        Some(h) if m.is_adversarial() && run.monitor.enabled => {
            check_data(model, h)?;
            Some(h.take(run.monitor.examples))
        }
        _ => None,
    };
    let input = model.input_shape();
    let mut stepper = match m {
        TrainMethod::Differential => Stepper::Differential(PairLoss::new()),
        TrainMethod::SelfGradient => Stepper::SelfGradient(SelfGradient::new(model, method)?),
        _ => Stepper::InputSpace(Perturber::new(input, method.eps, method.lo, method.hi, method.seed)),
    };
    let per_epoch = data.len().div_ceil(run.batch_size) as u64;
    let total = per_epoch * run.epochs as u64;
    let warmup_steps = (run.eps_warmup_epochs as f64 * per_epoch as f64).round() as u64;
    let mut report = TrainReport {
        method: m,
        steps: 0,
        epochs_run: 0,
        final_loss: f32::NAN,
        regulariser: None,
        train_seconds: 0.0,
        monitor_seconds: 0.0,
        monitor: Vec::new(),
        warnings: Vec::new(),
        stopped_early: false,
        restored_epoch: None,
        bias: None,
        buffer_allocations: 0,
    };
    let mut best: Option<(f64, usize, Vec<HostTensor>)> = None;
    let [c, h, w] = input;
    let (mut xs, mut ys, mut xs2, mut ys2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut train_time = 0.0;
    for epoch in 1..=run.epochs {
        let t0 = Instant::now();
        let batches = Batches::new(data.len(), run.batch_size, Some(run.seed), epoch as u64 - 1, false)?;
        for idx in batches.iter() {
            report.steps += 1;
            let step = report.steps;
            let g = Graph::new(b);
            let bound = model.bind(&g, true);
            let loss = match &mut stepper {
                Stepper::Differential(pairs) => {
                    let (pos, neg): (Vec<usize>, Vec<usize>) =
                        idx.iter().partition(|&&i| data.labels.get(i).is_some_and(|&l| l == 1));
                    if pos.is_empty() || neg.is_empty() {
                        // A batch of one class has no pair; nothing to learn from it.
                        on_event(Event::Step { step, total, epoch, loss: None });
                        continue;
                    }
                    data.gather(&pos, &mut xs, &mut ys)?;
                    data.gather(&neg, &mut xs2, &mut ys2)?;
                    let xp = b.upload_f32(&xs, &Shape::from([pos.len(), c, h, w]))?;
                    let xn = b.upload_f32(&xs2, &Shape::from([neg.len(), c, h, w]))?;
                    StepLoss { loss: pairs.loss(b, &g, model, &bound, &xp, &xn)?, regulariser: None }
                }
                Stepper::InputSpace(pert) => {
                    let (x0, targets) = upload(b, data, idx, input, model.classes(), &mut xs, &mut ys)?;
                    if step <= warmup_steps {
                        let cfg = method.scaled(step as f32 / warmup_steps as f32);
                        pert.set_eps(cfg.eps);
                        input_space_loss(b, &g, model, &bound, &cfg, pert, &x0, &targets)?
                    } else {
                        pert.set_eps(method.eps);
                        input_space_loss(b, &g, model, &bound, method, pert, &x0, &targets)?
                    }
                }
                Stepper::SelfGradient(sg) => {
                    let (x0, targets) = upload(b, data, idx, input, model.classes(), &mut xs, &mut ys)?;
                    sg.loss(b, &g, model, &bound, &x0, &targets)?
                }
            };
            let grads = bound.grads(&g.backward(loss.loss)?)?;
            opt.set_lr(schedule.lr_at(step - 1));
            opt.step(b, model.params(), &grads)?;
            let read = step % run.loss_every.max(1) == 0 || step == total;
            let mut shown = None;
            if read {
                let l = first(b, &g.value(loss.loss)?)?;
                if !l.is_finite() {
                    return Err(Error::invalid(
                        "lr",
                        format!(
                            "training diverged: the loss is {l} at step {step} (epoch {epoch}); lower the learning rate"
                        ),
                    ));
                }
                report.final_loss = l;
                if let Some(r) = loss.regulariser {
                    report.regulariser = Some(first(b, &g.value(r)?)?);
                }
                shown = Some(l);
            }
            on_event(Event::Step { step, total, epoch, loss: shown });
        }
        b.synchronize()?;
        train_time += t0.elapsed().as_secs_f64();
        report.epochs_run = epoch;
        if let Some(held) = &monitor_data {
            let t1 = Instant::now();
            let r = run.monitor.measure(b, model, held, method.eps, epoch, method.seed)?;
            report.monitor_seconds += t1.elapsed().as_secs_f64();
            on_event(Event::Monitor(&r));
            let improved = best.as_ref().is_none_or(|(acc, _, _)| r.pgd_accuracy > *acc);
            if run.monitor.stop_on_overfit && improved {
                best = Some((r.pgd_accuracy, epoch, model.to_host(b)?));
            }
            let overfit = r.overfit;
            if overfit {
                let msg = r.warning();
                on_event(Event::Warning(&msg));
                report.warnings.push(msg);
            }
            report.monitor.push(r);
            if overfit && run.monitor.stop_on_overfit {
                report.stopped_early = true;
                let mut msg = format!("stopping after epoch {epoch} (--stop-on-overfit)");
                if let Some((acc, e, weights)) = best.take() {
                    model.load_host_weights(b, &weights)?;
                    report.restored_epoch = Some(e);
                    msg += &format!("; restored the weights of epoch {e} (PGD accuracy {:.1}%)", 100.0 * acc);
                }
                on_event(Event::Warning(&msg));
                report.warnings.push(msg);
                break;
            }
        }
    }
    let t2 = Instant::now();
    if m == TrainMethod::Differential {
        report.bias = Some(set_differential_bias(b, model, data, 500)?);
    }
    if let Stepper::InputSpace(p) = &stepper {
        report.buffer_allocations = p.allocations();
    }
    b.synchronize()?;
    report.train_seconds = train_time + t2.elapsed().as_secs_f64();
    Ok(report)
}

fn first<B: Backend>(b: &B, t: &Tensor<B>) -> Result<f32> {
    Ok(b.download_f32(t)?.first().copied().unwrap_or(f32::NAN))
}

/// Gathers a batch and uploads its images and labels.
fn upload<B: Backend>(
    b: &B,
    data: &Dataset,
    idx: &[usize],
    input: [usize; 3],
    classes: usize,
    xs: &mut Vec<f32>,
    ys: &mut Vec<u32>,
) -> Result<(Tensor<B>, LossTargets<B>)> {
    data.gather(idx, xs, ys)?;
    let [c, h, w] = input;
    let x0 = b.upload_f32(xs, &Shape::from([idx.len(), c, h, w]))?;
    Ok((x0, LossTargets::new(b, ys, classes, Loss::Xent)?))
}

/// Mean over `data` of ||z(x_fgsm) - z(x_rfgsm)||²: how far apart the logits of the FGSM and the
/// R-FGSM example of each input lie (the quantity `fgsm-reg` penalises; large values go with
/// gradient masking, Vivek et al. 2019).
pub fn logit_gap<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    eps: f32,
    alpha: f32,
    seed: u64,
    batch_size: usize,
) -> Result<f64> {
    check_data(model, data)?;
    let input = model.input_shape();
    let mut pert = Perturber::new(input, eps, 0.0, 1.0, seed);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let (mut sum, mut n) = (0f64, 0usize);
    let all: Vec<usize> = (0..data.len()).collect();
    for idx in all.chunks(batch_size.max(1)) {
        let (x0, t) = upload(b, data, idx, input, model.classes(), &mut xs, &mut ys)?;
        let zf = b.download_f32(&model.infer(b, &pert.fgsm(b, model, &x0, &t)?)?)?;
        let zr = b.download_f32(&model.infer(b, &pert.rfgsm(b, model, &x0, &t, alpha)?)?)?;
        sum += zf.iter().zip(&zr).map(|(a, c)| ((a - c) as f64).powi(2)).sum::<f64>();
        n += idx.len();
    }
    Ok(sum / n.max(1) as f64)
}
