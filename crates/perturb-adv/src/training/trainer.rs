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
use super::resume::{
    BEST_PREFIX, Progress, Snapshot, TrainOptions, check_config, find_non_finite, fingerprint, probe, progress_of, save,
};
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
/// the model's parameters; `schedule` gives each step's rate. `on_event` sees progress. The
/// numerical guard is on and no checkpoint is written (see [`train_with`]).
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
    train_with(b, model, data, held_out, method, run, opt, schedule, &TrainOptions::default(), on_event)
}

/// [`train`] with checkpoints, resume and the numerical guard set by `opts` (see
/// [`super::resume`]). With `opts.resume`, the checkpoint's configuration must be this run's
/// (method, run, schedule, optimiser kind, model, data fingerprint), and the run continues from
/// its position: on the CPU backend it ends with the weights of the uninterrupted run, bit for
/// bit. A non-finite loss or weight stops the run with an error naming the step and the
/// parameter, after writing the state before that step as the last good checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn train_with<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    held_out: Option<&Dataset>,
    method: &MethodConfig,
    run: &RunConfig,
    opt: &mut dyn Optimizer<B>,
    schedule: &LrSchedule,
    opts: &TrainOptions<'_>,
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
    let config = (opts.checkpoint.is_some() || opts.resume.is_some())
        .then(|| run_config(model, data, monitor_data.as_ref(), method, run, opt, schedule, opts));
    // Where this session starts: (1-based epoch, batches of it already done).
    let (mut start_epoch, mut start_batch, mut finished, mut train_time) = (1usize, 0usize, false, 0.0);
    if let (Some(ck), Some(config)) = (opts.resume, &config) {
        check_config(ck, config)?;
        let p = progress_of(ck)?;
        let fits = p.total_steps == total
            && (1..=run.epochs).contains(&p.epoch)
            && p.batch as u64 <= per_epoch
            && p.step == (p.epoch as u64 - 1) * per_epoch + p.batch as u64;
        if !fits {
            return Err(ck.in_source(perturb_nn::Error::Format(format!(
                "the state (epoch {}, batch {}, step {} of {}) does not fit this run ({} epochs of {per_epoch} batches)",
                p.epoch, p.batch, p.step, p.total_steps, run.epochs
            )))
            .into());
        }
        ck.restore(b, model, opt)?;
        if let Stepper::InputSpace(pert) = &mut stepper {
            pert.set_rng_counter(p.rng_counter);
        }
        report.steps = p.step;
        report.epochs_run = p.epochs_run;
        report.final_loss = p.final_loss.unwrap_or(f32::NAN);
        report.regulariser = p.regulariser;
        report.monitor_seconds = p.monitor_seconds;
        report.monitor = p.monitor.iter().filter_map(reading_from_json).collect();
        report.warnings = p.warnings.clone();
        report.stopped_early = p.stopped_early;
        report.restored_epoch = p.restored_epoch;
        best = p.best.map(|(acc, e)| (f64::from_bits(acc), e, ck.extra_with_prefix(BEST_PREFIX)));
        train_time = p.train_seconds;
        finished = p.finished;
        (start_epoch, start_batch) = if p.batch as u64 >= per_epoch { (p.epoch + 1, 0) } else { (p.epoch, p.batch) };
    }
    let mut snapshot = match (&opts.checkpoint, opts.guard) {
        (Some(_), true) => Some(Snapshot::new(b, model, opt)?),
        _ => None,
    };
    // The state a checkpoint saves, at a position (epoch, batches done, steps done).
    let progress = |report: &TrainReport,
                    best: &Option<(f64, usize, Vec<HostTensor>)>,
                    pos: (usize, usize, u64),
                    counter: u64,
                    finished: bool,
                    train_time: f64|
     -> Progress {
        Progress {
            epoch: pos.0,
            batch: pos.1,
            step: pos.2,
            total_steps: total,
            rng_counter: counter,
            finished,
            epochs_run: report.epochs_run,
            final_loss: Some(report.final_loss).filter(|l| l.is_finite()),
            regulariser: report.regulariser.filter(|l| l.is_finite()),
            train_seconds: train_time,
            monitor_seconds: report.monitor_seconds,
            monitor: report.monitor.iter().filter_map(|r| serde_json::to_value(r).ok()).collect(),
            warnings: report.warnings.clone(),
            stopped_early: report.stopped_early,
            restored_epoch: report.restored_epoch,
            best: best.as_ref().map(|(a, e, _)| (a.to_bits(), *e)),
        }
    };
    let counter_of = |s: &Stepper<B>| if let Stepper::InputSpace(p) = s { p.rng_counter() } else { 0 };
    let [c, h, w] = input;
    let (mut xs, mut ys, mut xs2, mut ys2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for epoch in start_epoch..=run.epochs {
        if finished {
            break;
        }
        let t0 = Instant::now();
        let batches = Batches::new(data.len(), run.batch_size, Some(run.seed), epoch as u64 - 1, false)?;
        let skip = if epoch == start_epoch { start_batch } else { 0 };
        for (bi, idx) in batches.iter().enumerate().skip(skip) {
            let counter_before = counter_of(&stepper);
            if let Some(s) = &mut snapshot {
                s.take(b, model, opt)?;
            }
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
                        None
                    } else {
                        data.gather(&pos, &mut xs, &mut ys)?;
                        data.gather(&neg, &mut xs2, &mut ys2)?;
                        let xp = b.upload_f32(&xs, &Shape::from([pos.len(), c, h, w]))?;
                        let xn = b.upload_f32(&xs2, &Shape::from([neg.len(), c, h, w]))?;
                        Some(StepLoss { loss: pairs.loss(b, &g, model, &bound, &xp, &xn)?, regulariser: None })
                    }
                }
                Stepper::InputSpace(pert) => {
                    let (x0, targets) = upload(b, data, idx, input, model.classes(), &mut xs, &mut ys)?;
                    Some(if step <= warmup_steps {
                        let cfg = method.scaled(step as f32 / warmup_steps as f32);
                        pert.set_eps(cfg.eps);
                        input_space_loss(b, &g, model, &bound, &cfg, pert, &x0, &targets)?
                    } else {
                        pert.set_eps(method.eps);
                        input_space_loss(b, &g, model, &bound, method, pert, &x0, &targets)?
                    })
                }
                Stepper::SelfGradient(sg) => {
                    let (x0, targets) = upload(b, data, idx, input, model.classes(), &mut xs, &mut ys)?;
                    Some(sg.loss(b, &g, model, &bound, &x0, &targets)?)
                }
            };
            let mut shown = None;
            if let Some(loss) = loss {
                let grads = bound.grads(&g.backward(loss.loss)?)?;
                opt.set_lr(schedule.lr_at(step - 1));
                opt.step(b, model.params(), &grads)?;
                let loss_t = g.value(loss.loss)?;
                if opts.guard && !probe(b, &loss_t, model.params())?.is_finite() {
                    let l = first(b, &loss_t)?;
                    if let Some(what) = find_non_finite(b, model, l, &grads)? {
                        let mut msg = format!(
                            "training diverged: non-finite values at step {step} (epoch {epoch}, batch {} of {per_epoch}): {what}; lower the learning rate",
                            bi + 1
                        );
                        if let (Some(s), Some(ck), Some(config)) = (&snapshot, &opts.checkpoint, &config) {
                            // Undo the step, and save the state before it as the last good one.
                            s.restore(b, model, opt)?;
                            report.steps = step - 1;
                            let p = progress(&report, &best, (epoch, bi, step - 1), counter_before, false, train_time);
                            let file = save(b, model, opt, ck, config, &p, best.as_ref().map(|x| x.2.as_slice()))?;
                            msg += &format!(
                                ". The state after step {} (the last good one) is in {}",
                                step - 1,
                                file.display()
                            );
                        }
                        return Err(Error::invalid("lr", msg));
                    }
                }
                let read = step.is_multiple_of(run.loss_every.max(1)) || step == total;
                if read {
                    let l = first(b, &loss_t)?;
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
            }
            on_event(Event::Step { step, total, epoch, loss: shown });
            if let (Some(ck), Some(config)) = (&opts.checkpoint, &config) {
                // The epoch's last batch is saved after the monitor, below.
                if ck.every > 0 && step.is_multiple_of(ck.every) && ((bi + 1) as u64) < per_epoch {
                    let t = train_time + t0.elapsed().as_secs_f64();
                    let p = progress(&report, &best, (epoch, bi + 1, step), counter_of(&stepper), false, t);
                    save(b, model, opt, ck, config, &p, best.as_ref().map(|x| x.2.as_slice()))?;
                }
            }
        }
        b.synchronize()?;
        train_time += t0.elapsed().as_secs_f64();
        report.epochs_run = epoch;
        let mut stop = false;
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
                stop = true;
            }
        }
        if let (Some(ck), Some(config)) = (&opts.checkpoint, &config) {
            let done = stop || epoch == run.epochs;
            let p = progress(
                &report,
                &best,
                (epoch, per_epoch as usize, report.steps),
                counter_of(&stepper),
                done,
                train_time,
            );
            save(b, model, opt, ck, config, &p, best.as_ref().map(|x| x.2.as_slice()))?;
        }
        if stop {
            break;
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

/// The configuration a checkpoint records and a resume must match: everything the trainer
/// reads, the optimiser's kind, the model, and fingerprints of the data.
#[allow(clippy::too_many_arguments)]
fn run_config<B: Backend>(
    model: &Model<B>,
    data: &Dataset,
    held: Option<&Dataset>,
    method: &MethodConfig,
    run: &RunConfig,
    opt: &dyn Optimizer<B>,
    schedule: &LrSchedule,
    opts: &TrainOptions<'_>,
) -> serde_json::Value {
    let set = |d: &Dataset| serde_json::json!({"examples": d.len(), "fingerprint": fingerprint(d)});
    let meta = model.metadata();
    serde_json::json!({
        "command": opts.checkpoint.as_ref().map(|c| c.command.clone()),
        "method": method,
        "run": run,
        "schedule": format!("{schedule:?}"),
        "optimizer": {"kind": opt.state().kind, "settings": opt.hyperparameters()},
        "model": meta.get(perturb_nn::META_MODEL),
        "architecture": meta.get(perturb_nn::META_ARCHITECTURE),
        "data": set(data),
        "held_out": held.map(set),
    })
}

/// A monitor reading as a checkpoint's state stores it (its JSON form).
fn reading_from_json(v: &serde_json::Value) -> Option<MonitorReading> {
    Some(MonitorReading {
        epoch: v.get("epoch")?.as_u64()? as usize,
        clean_accuracy: v.get("clean_accuracy")?.as_f64()?,
        fgsm_accuracy: v.get("fgsm_accuracy")?.as_f64()?,
        pgd_accuracy: v.get("pgd_accuracy")?.as_f64()?,
        overfit: v.get("overfit")?.as_bool()?,
    })
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
