//! `perturb train`: training of a named model on the embedded digits (or `--data`) with one of
//! the methods of `perturb_adv::training` (`--method standard|fgsm|rfgsm|fgsm-rs|fgsm-reg|pgd|
//! differential|self-gradient`), then the held-out accuracy, and the model saved as safetensors.
//!
//! `--checkpoint-dir D` writes checkpoints (every `--checkpoint-every` steps and at each epoch's
//! end) and `--resume D` continues the newest one: the training flags come from the checkpoint,
//! and a flag given on the command line that differs from it is refused (see
//! `perturb_adv::training::resume` for what a checkpoint holds).

use crate::backends::BackendArgs;
use crate::data_args::DataArgs;
use crate::eval::accuracy;
use crate::{Error, Result, on_backend, print_json, progress};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches, ValueEnum};
use perturb_adv::training::{
    Event, MethodConfig, MonitorConfig, RunConfig, TrainMethod, TrainOptions, TrainReport, train_with,
};
use perturb_core::Backend;
use perturb_data::Dataset;
use perturb_nn::{Adam, AdamConfig, Checkpoint, LrSchedule, Model, Optimizer, Sgd, SgdConfig, build_model};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod resume;
use resume::{Plan, plan};

/// `--method NAME`: a training method by its name ([`TrainMethod::name`]); the help lists each
/// with its [`TrainMethod::summary`], so the library's enum is the only list of methods.
pub fn method_parser() -> impl clap::builder::TypedValueParser<Value = TrainMethod> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(TrainMethod::ALL.map(|m| PossibleValue::new(m.name()).help(m.summary())))
        .try_map(|name| TrainMethod::parse(&name))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleKind {
    /// The same rate throughout.
    Constant,
    /// Multiply by --gamma every --step-every epochs.
    Step,
    /// Linear up to --lr at 40% of training, then linear down to 0 (Wong et al. 2020).
    OneCycle,
}

/// `perturb train`'s flags, and which of them the command line gave (the rest are defaults):
/// a resumed run takes its training flags from the checkpoint and refuses a given one that
/// differs from it.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    pub flags: TrainFlags,
    /// Ids (field names) of the flags given on the command line.
    pub given: BTreeSet<String>,
}

impl std::ops::Deref for TrainArgs {
    type Target = TrainFlags;
    fn deref(&self) -> &TrainFlags {
        &self.flags
    }
}

/// The flags (not the argument groups clap also lists) the command line gave.
fn given_ids(m: &ArgMatches) -> BTreeSet<String> {
    let flags = TrainFlags::augment_args(clap::Command::new("train"));
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .filter(|id| flags.get_arguments().any(|a| a.get_id() == *id))
        .map(|id| id.to_string())
        .collect()
}

impl FromArgMatches for TrainArgs {
    fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        Ok(TrainArgs { flags: TrainFlags::from_arg_matches(m)?, given: given_ids(m) })
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
        self.flags.update_from_arg_matches(m)?;
        self.given.extend(given_ids(m));
        Ok(())
    }
}

impl Args for TrainArgs {
    fn group_id() -> Option<clap::Id> {
        TrainFlags::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        TrainFlags::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        TrainFlags::augment_args_for_update(cmd)
    }
}

#[derive(Debug, Clone, Args)]
pub struct TrainFlags {
    /// Model name: cnn-small, cnn-madry or mlp.
    #[arg(long, default_value = "cnn-small")]
    pub model: String,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Examples per step. The defaults (16, SGD with Nesterov momentum 0.9, one-cycle to 0.03)
    /// were chosen by a grid over batch size, rate, weight decay and Nesterov on the embedded
    /// digits: cnn-small reaches 97% in 3 epochs with them (see the README).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Sgd)]
    pub optimizer: OptimizerKind,
    /// Learning rate (the peak rate under one-cycle).
    #[arg(long, default_value_t = 0.03)]
    pub lr: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Nesterov momentum (SGD): `--nesterov false` for plain momentum.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub nesterov: bool,
    /// Adam's beta1 and beta2.
    #[arg(long, value_delimiter = ',', default_values_t = [0.9f32, 0.999])]
    pub betas: Vec<f32>,
    #[arg(long, value_enum, default_value_t = ScheduleKind::OneCycle)]
    pub schedule: ScheduleKind,
    /// Epochs between decays of the step schedule.
    #[arg(long, default_value_t = 1)]
    pub step_every: usize,
    /// Decay factor of the step schedule.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f32,
    /// Seed of the initialisation and of the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to save the model (safetensors); default `out/MODEL.safetensors` for standard
    /// training, `out/MODEL-METHOD.safetensors` for the other methods.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print the result as one JSON object (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Write checkpoints (weights, optimiser state, RNG position, configuration) to this folder,
    /// replacing `checkpoint.safetensors` atomically each time; it must not hold one already
    /// (continue that with --resume).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Optimiser steps between checkpoints (0: epoch ends only); a checkpoint is also written
    /// at the end of every epoch. On --resume the default is the checkpointed run's value.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Continue the run checkpointed in DIR (or that checkpoint file) from where it stopped, with
    /// its training flags; on the CPU backend it ends with the weights of the uninterrupted run,
    /// bit for bit. Checkpoints go on into DIR unless --checkpoint-dir says otherwise.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub method: MethodArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

/// `--method` and its settings; shared by `perturb train` and `perturb experiment`.
#[derive(Debug, Clone, Args)]
pub struct MethodArgs {
    /// Training method.
    #[arg(long, value_parser = method_parser(), default_value = "standard")]
    pub method: TrainMethod,
    /// L-inf radius of the training perturbations (adversarial methods).
    #[arg(long, default_value_t = 0.3)]
    pub eps: f32,
    /// fgsm, rfgsm: weight a of the clean loss in a CE(x) + (1 - a) CE(x_adv).
    #[arg(long, default_value_t = 0.5)]
    pub mix: f32,
    /// rfgsm and fgsm-reg: R-FGSM's random sign step [default: eps / 2].
    #[arg(long)]
    pub alpha: Option<f32>,
    /// fgsm-rs: the sign step from the random start [default: 1.25 * eps].
    #[arg(long)]
    pub rs_step: Option<f32>,
    /// fgsm-reg: weight of the logit-distance regulariser.
    #[arg(long, default_value_t = 2.0)]
    pub lambda: f32,
    /// pgd: PGD steps per training example.
    #[arg(long, default_value_t = 10)]
    pub pgd_steps: usize,
    /// pgd: PGD step size [default: 2.5 * eps / pgd-steps].
    #[arg(long)]
    pub pgd_step_size: Option<f32>,
    /// self-gradient: size of the sign-gradient step on each chosen activation.
    #[arg(long, default_value_t = 0.001)]
    pub sg_eps: f32,
    /// self-gradient: indices of the layers whose outputs are perturbed [default: every ReLU].
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    pub sg_layers: Option<Vec<usize>>,
    /// Adversarial methods: stop at the first epoch the monitor flags catastrophic overfitting
    /// and restore the weights of the epoch with the best held-out PGD accuracy.
    #[arg(long)]
    pub stop_on_overfit: bool,
    /// Adversarial methods: examples held out of the training split for the monitor's FGSM and
    /// PGD after every epoch (0: no monitor, nothing held out).
    #[arg(long, default_value_t = 256)]
    pub monitor_examples: usize,
    /// PGD steps of the monitor.
    #[arg(long, default_value_t = 10)]
    pub monitor_steps: usize,
    /// Adversarial methods: epochs over which eps (and the step sizes that follow it) ramps up
    /// linearly from 0; 0 trains at the full eps from the first step (at eps 0.3 that collapses
    /// cnn-small to a constant output under fgsm-reg, pgd and fgsm-rs).
    #[arg(long, default_value_t = 1.0)]
    pub eps_warmup: f32,
}

impl MethodArgs {
    /// The library's method settings (`seed` seeds the random starts and noise).
    pub fn config(&self, seed: u64) -> MethodConfig {
        MethodConfig {
            mix: self.mix,
            alpha: self.alpha,
            rs_step: self.rs_step,
            lambda: self.lambda,
            pgd_steps: self.pgd_steps,
            pgd_step_size: self.pgd_step_size,
            sg_eps: self.sg_eps,
            sg_layers: self.sg_layers.clone(),
            seed,
            ..MethodConfig::new(self.method, self.eps)
        }
    }

    /// The monitor's settings.
    pub fn monitor(&self) -> MonitorConfig {
        MonitorConfig {
            enabled: self.monitor_examples > 0,
            examples: self.monitor_examples.max(1),
            pgd_steps: self.monitor_steps,
            stop_on_overfit: self.stop_on_overfit,
            ..MonitorConfig::default()
        }
    }

    /// Checks the settings, naming the flag.
    pub fn validate(&self, classes: Option<&[u8]>) -> Result<()> {
        if self.method == TrainMethod::Differential && classes.is_none_or(|c| c.len() != 2) {
            return Err(Error::flag(
                "--classes",
                "differential training is for a two-class task: give two classes, e.g. --classes 3,7",
            ));
        }
        if !(self.eps_warmup.is_finite() && self.eps_warmup >= 0.0) {
            return Err(Error::flag("--eps-warmup", format!("{} must be a number of epochs >= 0", self.eps_warmup)));
        }
        if self.method.is_adversarial() && self.monitor_examples > 0 && self.monitor_steps == 0 {
            return Err(Error::flag("--monitor-steps", "must be at least 1"));
        }
        self.config(0).validate().map_err(training_error)
    }
}

/// The command-line flag of a setting the training library names in its errors.
fn training_flag(param: &str) -> Option<&'static str> {
    Some(match param {
        "eps" => "--eps",
        "mix" => "--mix",
        "alpha" => "--alpha",
        "rs_step" => "--rs-step",
        "lambda" => "--lambda",
        "pgd_steps" => "--pgd-steps",
        "pgd_step_size" => "--pgd-step-size",
        "sg_eps" => "--sg-eps",
        "sg_layers" => "--sg-layers",
        "eps_warmup" => "--eps-warmup",
        "monitor_examples" => "--monitor-examples",
        "monitor_steps" => "--monitor-steps",
        "classes" => "--classes",
        "method" => "--method",
        _ => return None,
    })
}

/// A training-library error as the command line reports it: a divergence as such, a refused
/// setting under its flag's name.
pub fn training_error(e: perturb_adv::Error) -> Error {
    match e {
        perturb_adv::Error::InvalidArgument { param: "lr", msg } => Error::Diverged(msg),
        perturb_adv::Error::InvalidArgument { param, msg } => match training_flag(param) {
            Some(flag) => Error::flag(flag, msg),
            None => perturb_adv::Error::InvalidArgument { param, msg }.into(),
        },
        other => other.into(),
    }
}

/// Optimiser and schedule settings, from `perturb train`'s flags or set by a caller.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimSettings {
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    pub betas: [f32; 2],
    pub schedule: ScheduleKind,
    /// Epochs between decays of the step schedule.
    pub step_every: usize,
    pub gamma: f32,
}

impl Default for OptimSettings {
    /// `perturb train`'s defaults: SGD, Nesterov momentum 0.9, one-cycle to 0.03.
    fn default() -> Self {
        OptimSettings {
            optimizer: OptimizerKind::Sgd,
            lr: 0.03,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: true,
            betas: [0.9, 0.999],
            schedule: ScheduleKind::OneCycle,
            step_every: 1,
            gamma: 0.1,
        }
    }
}

impl OptimSettings {
    /// The schedule for a run of `epochs` of `steps_per_epoch` steps.
    pub fn lr_schedule(&self, steps_per_epoch: u64, epochs: usize) -> Result<LrSchedule> {
        let s = match self.schedule {
            ScheduleKind::Constant => LrSchedule::Constant { lr: self.lr },
            ScheduleKind::Step => {
                LrSchedule::Step { lr: self.lr, gamma: self.gamma, every: self.step_every as u64 * steps_per_epoch }
            }
            ScheduleKind::OneCycle => LrSchedule::one_cycle(self.lr, steps_per_epoch * epochs as u64),
        };
        s.validate()?;
        Ok(s)
    }

    /// The optimiser over `model`'s parameters.
    pub fn build<B: Backend>(&self, b: &B, model: &Model<B>) -> Result<Box<dyn Optimizer<B>>> {
        Ok(match self.optimizer {
            OptimizerKind::Sgd => Box::new(Sgd::new(
                b,
                model.params(),
                SgdConfig {
                    lr: self.lr,
                    momentum: self.momentum,
                    weight_decay: self.weight_decay,
                    nesterov: self.nesterov,
                },
            )?),
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let base =
                    if self.optimizer == OptimizerKind::Adamw { AdamConfig::adamw() } else { AdamConfig::default() };
                Box::new(Adam::new(
                    b,
                    model.params(),
                    AdamConfig {
                        lr: self.lr,
                        beta1: self.betas[0],
                        beta2: self.betas[1],
                        weight_decay: self.weight_decay,
                        ..base
                    },
                )?)
            }
        })
    }
}

impl TrainFlags {
    /// The optimiser settings of the flags.
    pub fn optim(&self) -> OptimSettings {
        OptimSettings {
            optimizer: self.optimizer,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            betas: [self.betas.first().copied().unwrap_or(0.9), self.betas.get(1).copied().unwrap_or(0.999)],
            schedule: self.schedule,
            step_every: self.step_every,
            gamma: self.gamma,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::flag("--epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::flag("--batch-size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::flag("--lr", format!("{} must be a positive number", self.lr)));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::flag("--momentum", format!("{} must be in [0, 1)", self.momentum)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::flag("--weight-decay", format!("{} must be >= 0", self.weight_decay)));
        }
        if self.betas.len() != 2 || self.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(Error::flag("--betas", format!("{:?}: give two values in [0, 1), e.g. 0.9,0.999", self.betas)));
        }
        if self.step_every == 0 {
            return Err(Error::flag("--step-every", "must be at least 1"));
        }
        self.method.validate(self.data.classes.as_deref())
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let plan = plan(args)?;
    plan.flags.validate()?;
    let train = plan.flags.data.train()?;
    let test = plan.flags.data.test()?;
    let backend = plan.flags.backend.resolve()?;
    on_backend!(backend, train_on(&plan, &train, &test))
}

/// What one standard training run produced (see [`fit`]).
pub struct TrainOutcome {
    pub final_loss: f32,
    pub steps: u64,
    pub train_seconds: f64,
}

/// Splits `monitor_examples` examples off the end of the training split for the monitor of an
/// adversarial method (at most a fifth of the split); other methods train on all of it.
pub fn hold_out(train: &Dataset, method: &MethodConfig, monitor: &MonitorConfig) -> Result<(Dataset, Option<Dataset>)> {
    if !(method.method.is_adversarial() && monitor.enabled) || train.len() < 5 {
        return Ok((train.clone(), None));
    }
    let k = monitor.examples.min(train.len() / 5).max(1);
    let n = train.len() - k;
    Ok((train.slice(0..n)?, Some(train.slice(n..train.len())?)))
}

fn train_on<B: Backend>(b: &B, plan: &Plan, train: &Dataset, test: &Dataset) -> Result<()> {
    let args = &plan.flags;
    let input = [train.channels, train.height, train.width];
    let model = build_model(b, &args.model, input, train.num_classes, args.seed)?;
    let method = args.method.config(args.seed);
    let out = args.out.clone().unwrap_or_else(|| {
        let suffix = if method.method == TrainMethod::Standard { String::new() } else { format!("-{}", method.method) };
        PathBuf::from(format!("out/{}{suffix}.safetensors", args.model))
    });
    let quiet = args.json;
    let monitor = args.method.monitor();
    let (train, held) = hold_out(train, &method, &monitor)?;
    if !quiet {
        eprintln!(
            "training {} ({} parameters) with {} on {} ({} examples{}) with {} on {}",
            args.model,
            model.param_count(),
            method.method,
            train.name,
            train.len(),
            held.as_ref().map_or(String::new(), |h| format!(", {} held out for the monitor", h.len())),
            b.name(),
            b.device_name()
        );
    }
    let run = RunConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        seed: args.seed,
        monitor,
        loss_every: 10,
        eps_warmup_epochs: args.method.eps_warmup,
    };
    if let Some(ck) = &plan.checkpoint {
        let stale = Checkpoint::remove_stale_temporaries(&ck.dir);
        if stale > 0 && !quiet {
            eprintln!("removed {stale} partial checkpoint file(s) a killed run left in {}", ck.dir.display());
        }
    }
    let resumed_from = plan.resume.as_ref().map(|c| c.state.get("step").and_then(|v| v.as_u64()).unwrap_or(0));
    if let (Some(c), Some(step), false) = (&plan.resume, resumed_from, quiet) {
        let file = c.source.as_ref().map_or(String::new(), |p| p.display().to_string());
        eprintln!("resuming after step {step} from {file}");
    }
    let opts = TrainOptions { checkpoint: plan.checkpoint.clone(), resume: plan.resume.as_ref(), guard: true };
    let t0 = Instant::now();
    let report =
        train_with_options(b, &model, &train, held.as_ref(), &method, &run, &args.optim(), "train", quiet, &opts)?;
    let acc = accuracy(b, &model, test, 500)?;
    let seconds = t0.elapsed().as_secs_f64();
    save(b, &model, &out)?;
    if args.json {
        print_json(&json!({
            "model": args.model,
            "method": method.method.name(),
            "method_config": method,
            "backend": b.name(),
            "device": b.device_name(),
            "epochs": args.epochs,
            "epochs_run": report.epochs_run,
            "steps": report.steps,
            "final_loss": report.final_loss,
            "regulariser": report.regulariser,
            "test_accuracy": acc,
            "n_test": test.len(),
            "train_seconds": report.train_seconds,
            "monitor_seconds": report.monitor_seconds,
            "monitor": report.monitor,
            "warnings": report.warnings,
            "stopped_early": report.stopped_early,
            "restored_epoch": report.restored_epoch,
            "bias": report.bias,
            "seconds": seconds,
            "out": out.display().to_string(),
            "checkpoint_dir": plan.checkpoint.as_ref().map(|c| c.dir.display().to_string()),
            "resumed_from_step": resumed_from,
        }))?;
    } else {
        println!(
            "{} ({}): test accuracy {:.2}% on {} examples; trained {} steps in {:.1} s ({:.1} s in all); saved {}",
            args.model,
            method.method,
            acc * 100.0,
            test.len(),
            report.steps,
            report.train_seconds,
            seconds,
            out.display()
        );
        if let Some(bias) = &report.bias {
            println!(
                "  bias set after differential training: threshold {:.4} on f = z1 - z0 ({}; gap {:.4}; training accuracy {:.2}%)",
                bias.threshold,
                if bias.separable { "classes separated: middle of the gap" } else { "classes overlap: fewest errors" },
                bias.gap,
                bias.train_accuracy * 100.0
            );
        }
    }
    Ok(())
}

/// Trains with a progress bar (hidden when `quiet`) labelled `label`; monitor readings and
/// warnings go to stderr.
#[allow(clippy::too_many_arguments)]
pub fn train_with_progress<B: Backend>(
    b: &B,
    model: &Model<B>,
    train_set: &Dataset,
    held_out: Option<&Dataset>,
    method: &MethodConfig,
    run: &RunConfig,
    optim: &OptimSettings,
    label: &str,
    quiet: bool,
) -> Result<TrainReport> {
    let opts = TrainOptions::default();
    train_with_options(b, model, train_set, held_out, method, run, optim, label, quiet, &opts)
}

/// [`train_with_progress`] with checkpoints, resume and the guard set by `opts`.
#[allow(clippy::too_many_arguments)]
pub fn train_with_options<B: Backend>(
    b: &B,
    model: &Model<B>,
    train_set: &Dataset,
    held_out: Option<&Dataset>,
    method: &MethodConfig,
    run: &RunConfig,
    optim: &OptimSettings,
    label: &str,
    quiet: bool,
    opts: &TrainOptions<'_>,
) -> Result<TrainReport> {
    let steps_per_epoch = train_set.len().div_ceil(run.batch_size.max(1)) as u64;
    let schedule = optim.lr_schedule(steps_per_epoch, run.epochs)?;
    let mut opt = optim.build(b, model)?;
    let pb = progress::bar(steps_per_epoch * run.epochs as u64, label, quiet);
    let t0 = Instant::now();
    let batch = run.batch_size as f64;
    let mut first_step = None;
    let report =
        train_with(b, model, train_set, held_out, method, run, opt.as_mut(), &schedule, opts, &mut |e| match e {
            Event::Step { step, epoch, loss, .. } => {
                let first = *first_step.get_or_insert(step);
                if let Some(l) = loss {
                    let rate = (step + 1 - first) as f64 * batch / t0.elapsed().as_secs_f64().max(1e-9);
                    pb.set_message(format!("epoch {epoch} loss {l:.4} {rate:.0} img/s"));
                }
                pb.set_position(step);
            }
            Event::Monitor(r) => {
                if !quiet {
                    pb.suspend(|| {
                        eprintln!(
                            "  {label} monitor, epoch {}: held-out clean {:.1}%, FGSM {:.1}%, PGD {:.1}%",
                            r.epoch,
                            100.0 * r.clean_accuracy,
                            100.0 * r.fgsm_accuracy,
                            100.0 * r.pgd_accuracy
                        );
                    });
                }
            }
            Event::Warning(w) => pb.suspend(|| eprintln!("warning: {label}: {w}")),
        });
    pb.finish_and_clear();
    report.map_err(training_error)
}

fn save<B: Backend>(b: &B, model: &Model<B>, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    }
    model.save(b, out)?;
    Ok(())
}

/// Standard training with `args`' optimiser, schedule, epochs, batch size and seed (the
/// `standard` method of `perturb_adv::training`).
pub fn fit<B: Backend>(
    b: &B,
    model: &Model<B>,
    args: &TrainFlags,
    train_set: &Dataset,
    quiet: bool,
) -> Result<TrainOutcome> {
    let method = MethodConfig::new(TrainMethod::Standard, 0.0);
    let run = RunConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        seed: args.seed,
        monitor: MonitorConfig { enabled: false, ..MonitorConfig::default() },
        loss_every: 10,
        eps_warmup_epochs: 0.0,
    };
    let r = train_with_progress(b, model, train_set, None, &method, &run, &args.optim(), "train", quiet)?;
    Ok(TrainOutcome { final_loss: r.final_loss, steps: r.steps, train_seconds: r.train_seconds })
}
