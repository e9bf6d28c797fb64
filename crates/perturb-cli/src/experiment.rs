//! `perturb experiment`: the studies behind docs/results.md that compare several trained models.
//!
//! - `adam-lr` (Yanagita and Yamamura 2018): one model per Adam learning rate, trained with the
//!   chosen method (FGSM adversarial training by default); per model, white-box FGSM accuracy,
//!   the accuracy under FGSM examples crafted on a substitute (a standard model) and the gap
//!   between them. A white-box attack weaker than a transfer attack (gap > 0) is the mark of
//!   gradient masking.
//! - `differential` (Nar et al. 2019): the same two-class network trained with cross-entropy
//!   and with differential training; per eps, the share of test points for which PGD finds an
//!   adversarial example.

use crate::backends::BackendArgs;
use crate::train::{OptimSettings, OptimizerKind, ScheduleKind, hold_out, method_parser, train_with_progress};
use crate::{Error, Result, on_backend, print_json};
use clap::{Args, Subcommand};
use perturb_adv::training::{MethodConfig, MonitorConfig, RunConfig, TrainMethod};
use perturb_adv::{Attack, AttackConfig, run_attack};
use perturb_core::Backend;
use perturb_data::Dataset;
use perturb_nn::{Model, build_model};
use serde_json::{Value, json};
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Which {
    /// One model per Adam learning rate: white-box FGSM accuracy, transfer accuracy from a
    /// substitute, and the gap (Yanagita and Yamamura 2018).
    AdamLr(AdamLrArgs),
    /// Cross-entropy vs differential training on two classes: share of test points PGD breaks
    /// at each eps (Nar et al. 2019).
    Differential(DifferentialArgs),
}

/// Settings both experiments share.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Model trained in every arm: cnn-small, cnn-madry or mlp.
    #[arg(long, default_value = "cnn-small")]
    pub model: String,
    /// Training epochs of every model [default: 3 for adam-lr, 10 for differential].
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// Training examples (the first ones of the embedded training split).
    #[arg(long, default_value_t = 8000)]
    pub train_limit: usize,
    /// Test examples attacked (the first ones of the embedded test split).
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Adversarial methods: epochs over which the training eps ramps up from 0.
    #[arg(long, default_value_t = 0.0)]
    pub eps_warmup: f32,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl Common {
    fn validate(&self) -> Result<()> {
        if !perturb_nn::MODEL_NAMES.contains(&self.model.as_str()) {
            return Err(Error::flag(
                "--model",
                format!("unknown model '{}' (known: {})", self.model, perturb_nn::MODEL_NAMES.join(", ")),
            ));
        }
        let epochs = self.epochs.unwrap_or(1);
        for (flag, v) in [("--epochs", epochs), ("--batch-size", self.batch_size), ("--n", self.n)] {
            if v == 0 {
                return Err(Error::flag(flag, "must be at least 1"));
            }
        }
        if !(self.eps_warmup.is_finite() && self.eps_warmup >= 0.0) {
            return Err(Error::flag("--eps-warmup", format!("{} must be a number of epochs >= 0", self.eps_warmup)));
        }
        if self.train_limit < 10 {
            return Err(Error::flag("--train-limit", "must be at least 10"));
        }
        Ok(())
    }

    fn run_config(&self, seed: u64) -> RunConfig {
        RunConfig {
            epochs: self.epochs.unwrap_or(1),
            batch_size: self.batch_size,
            seed,
            monitor: MonitorConfig { examples: 200, ..MonitorConfig::default() },
            loss_every: 10,
            eps_warmup_epochs: self.eps_warmup,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct AdamLrArgs {
    /// Adam learning rates, one model each (constant schedule).
    #[arg(long, value_delimiter = ',', default_values_t = [1e-4f32, 1e-3, 1e-2])]
    pub lrs: Vec<f32>,
    /// Training method of every model.
    #[arg(long, value_parser = method_parser(), default_value = "fgsm")]
    pub method: TrainMethod,
    /// L-inf radius of training (adversarial methods) and of the FGSM attacks.
    #[arg(long, default_value_t = 0.3)]
    pub eps: f32,
    /// Epochs of the substitute (a standard model, SGD, another seed).
    #[arg(long, default_value_t = 3)]
    pub substitute_epochs: usize,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct DifferentialArgs {
    /// The two classes (class 1 of the pair loss is the second).
    #[arg(long, value_delimiter = ',', default_values_t = [3u8, 7])]
    pub classes: Vec<u8>,
    /// L-inf radii at which PGD is run.
    #[arg(long, value_delimiter = ',', default_values_t = [0.05f32, 0.1, 0.15, 0.2, 0.3])]
    pub eps: Vec<f32>,
    /// PGD steps (step size 2.5 eps / steps, 2 restarts).
    #[arg(long, default_value_t = 20)]
    pub pgd_steps: usize,
    /// Peak learning rate (SGD, Nesterov momentum 0.9, one-cycle) of both arms.
    #[arg(long, default_value_t = 0.02)]
    pub lr: f32,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(args: &ExperimentArgs) -> Result<()> {
    match &args.which {
        Which::AdamLr(a) => {
            let mut a = a.clone();
            a.common.epochs.get_or_insert(3);
            let a = &a;
            a.common.validate()?;
            if a.lrs.is_empty() || a.lrs.iter().any(|&lr| !(lr.is_finite() && lr > 0.0)) {
                return Err(Error::flag(
                    "--lrs",
                    format!("{:?}: give positive learning rates, e.g. 1e-4,1e-3,1e-2", a.lrs),
                ));
            }
            if !(a.eps.is_finite() && a.eps > 0.0 && a.eps <= 1.0) {
                return Err(Error::flag("--eps", format!("{} must lie in (0, 1]", a.eps)));
            }
            if a.method == TrainMethod::Differential {
                return Err(Error::flag(
                    "--method",
                    "differential has its own experiment: perturb experiment differential",
                ));
            }
            if a.substitute_epochs == 0 {
                return Err(Error::flag("--substitute-epochs", "must be at least 1"));
            }
            let (train, test) = load(&a.common, None)?;
            let backend = a.common.backend.resolve()?;
            on_backend!(backend, adam_lr_on(a, &train, &test))
        }
        Which::Differential(a) => {
            let mut a = a.clone();
            a.common.epochs.get_or_insert(10);
            let a = &a;
            a.common.validate()?;
            if a.classes.len() != 2 || a.classes[0] == a.classes[1] {
                return Err(Error::flag("--classes", format!("{:?}: give two different classes, e.g. 3,7", a.classes)));
            }
            if a.eps.is_empty() || a.eps.iter().any(|&e| !(e.is_finite() && e > 0.0 && e <= 1.0)) {
                return Err(Error::flag("--eps", format!("{:?}: give radii in (0, 1]", a.eps)));
            }
            if a.pgd_steps == 0 {
                return Err(Error::flag("--pgd-steps", "must be at least 1"));
            }
            if !(a.lr.is_finite() && a.lr > 0.0) {
                return Err(Error::flag("--lr", format!("{} must be a positive number", a.lr)));
            }
            let (train, test) = load(&a.common, Some(&a.classes))?;
            let backend = a.common.backend.resolve()?;
            on_backend!(backend, differential_on(a, &train, &test))
        }
    }
}

fn load(c: &Common, classes: Option<&[u8]>) -> Result<(Dataset, Dataset)> {
    let (train, test) = perturb_data::embedded_mnist10k()?;
    let (train, test) = match classes {
        Some(k) => (train.filter_classes(k)?, test.filter_classes(k)?),
        None => (train, test),
    };
    Ok((train.take(c.train_limit), test.take(c.n)))
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

fn accuracy_under<B: Backend>(b: &B, model: &Model<B>, attack: &Attack<'_, B>, test: &Dataset) -> Result<f64> {
    Ok(run_attack(b, model, attack, test, 250)?.accuracy)
}

fn adam_lr_on<B: Backend>(b: &B, a: &AdamLrArgs, train: &Dataset, test: &Dataset) -> Result<()> {
    let c = &a.common;
    let t0 = Instant::now();
    let input = [train.channels, train.height, train.width];
    let quiet = false;
    let substitute = build_model(b, &c.model, input, train.num_classes, c.seed + 1000)?;
    let sub_run = RunConfig { epochs: a.substitute_epochs, ..c.run_config(c.seed + 1000) };
    let std_cfg = MethodConfig::new(TrainMethod::Standard, a.eps);
    train_with_progress(
        b,
        &substitute,
        train,
        None,
        &std_cfg,
        &sub_run,
        &OptimSettings::default(),
        "substitute",
        quiet,
    )?;
    let fgsm = AttackConfig::fgsm(a.eps);
    let steps = 20;
    let pgd = AttackConfig::pgd(a.eps, steps, 2.5 * a.eps / steps as f32).with_seed(c.seed);
    let mut rows = Vec::new();
    for &lr in &a.lrs {
        let model = build_model(b, &c.model, input, train.num_classes, c.seed)?;
        let cfg = MethodConfig::new(a.method, a.eps).with_seed(c.seed);
        let run = c.run_config(c.seed);
        let (train_set, held) = hold_out(train, &cfg, &run.monitor)?;
        let optim = OptimSettings {
            optimizer: OptimizerKind::Adam,
            lr,
            schedule: ScheduleKind::Constant,
            ..OptimSettings::default()
        };
        let label = format!("lr {lr:e}");
        let report = train_with_progress(b, &model, &train_set, held.as_ref(), &cfg, &run, &optim, &label, quiet)?;
        let clean = perturb_adv::predict_all(b, &model, test, 250)?;
        let clean_acc =
            clean.iter().zip(&test.labels).filter(|(p, y)| **p == u32::from(**y)).count() as f64 / test.len() as f64;
        let white = accuracy_under(b, &model, &Attack::new(fgsm.clone()), test)?;
        let transfer = accuracy_under(b, &model, &Attack::transfer(fgsm.clone(), &substitute), test)?;
        let pgd_acc = accuracy_under(b, &model, &Attack::new(pgd.clone()), test)?;
        eprintln!(
            "  lr {lr:e}: clean {}, white-box FGSM {}, transfer FGSM {}, gap {:+.1} points, PGD-{steps} {}",
            pct(clean_acc),
            pct(white),
            pct(transfer),
            100.0 * (white - transfer),
            pct(pgd_acc)
        );
        rows.push(json!({
            "lr": lr,
            "clean_accuracy": clean_acc,
            "white_box_fgsm_accuracy": white,
            "transfer_fgsm_accuracy": transfer,
            "gap": white - transfer,
            "pgd_accuracy": pgd_acc,
            "train_seconds": report.train_seconds,
            "warnings": report.warnings,
        }));
    }
    let out = json!({
        "experiment": "adam-lr",
        "backend": b.name(),
        "device": b.device_name(),
        "model": c.model,
        "method": a.method.name(),
        "eps": a.eps,
        "epochs": c.epochs,
        "n_train": train.len(),
        "n": test.len(),
        "substitute": "standard model, SGD one-cycle, another seed",
        "gap": "white-box FGSM accuracy - transfer FGSM accuracy (> 0: the white-box attack is the weaker one: gradient masking)",
        "models": rows,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if c.json {
        print_json(&out)?;
    } else {
        println!(
            "Adam learning rate vs gradient masking: {} trained with {} at eps {} on {} digits",
            c.model,
            a.method,
            a.eps,
            train.len()
        );
        println!(
            "{:>8} {:>7} {:>15} {:>15} {:>8} {:>8} {:>8}",
            "lr", "clean", "white-box FGSM", "transfer FGSM", "gap", "PGD", "train s"
        );
        for r in out["models"].as_array().into_iter().flatten() {
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "{:>8.0e} {:>7} {:>15} {:>15} {:>+8.1} {:>8} {:>8.1}",
                f("lr"),
                pct(f("clean_accuracy")),
                pct(f("white_box_fgsm_accuracy")),
                pct(f("transfer_fgsm_accuracy")),
                100.0 * f("gap"),
                pct(f("pgd_accuracy")),
                f("train_seconds")
            );
        }
    }
    Ok(())
}

fn differential_on<B: Backend>(b: &B, a: &DifferentialArgs, train: &Dataset, test: &Dataset) -> Result<()> {
    let c = &a.common;
    let t0 = Instant::now();
    let arms = [
        differential_arm(b, a, TrainMethod::Standard, train, test)?,
        differential_arm(b, a, TrainMethod::Differential, train, test)?,
    ];
    let out = json!({
        "experiment": "differential",
        "backend": b.name(),
        "device": b.device_name(),
        "model": c.model,
        "classes": a.classes,
        "epochs": c.epochs,
        "n_train": train.len(),
        "n": test.len(),
        "pgd_steps": a.pgd_steps,
        "restarts": 2,
        "adversarial_found_share": "among test points classified correctly, the share PGD flips",
        "arms": arms,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if c.json {
        return print_json(&out);
    }
    println!(
        "cross-entropy vs differential training, {} on classes {:?} ({} training, {} test digits); PGD-{} x2 restarts",
        c.model,
        a.classes,
        train.len(),
        test.len(),
        a.pgd_steps
    );
    print!("{:<14} {:>7}", "training", "clean");
    for e in &a.eps {
        print!(" {:>10}", format!("eps {e}"));
    }
    println!("   (share of correctly classified test points PGD flips)");
    for arm in &arms {
        print!(
            "{:<14} {:>7}",
            arm["method"].as_str().unwrap_or("?"),
            pct(arm["clean_accuracy"].as_f64().unwrap_or(f64::NAN))
        );
        for p in arm["pgd"].as_array().into_iter().flatten() {
            print!(" {:>10}", pct(p["adversarial_found_share"].as_f64().unwrap_or(f64::NAN)));
        }
        println!();
    }
    Ok(())
}

fn differential_arm<B: Backend>(
    b: &B,
    a: &DifferentialArgs,
    method: TrainMethod,
    train: &Dataset,
    test: &Dataset,
) -> Result<Value> {
    let c = &a.common;
    let input = [train.channels, train.height, train.width];
    let model = build_model(b, &c.model, input, 2, c.seed)?;
    let cfg = MethodConfig::new(method, 0.3).with_seed(c.seed);
    let run = c.run_config(c.seed);
    let optim = OptimSettings { lr: a.lr, ..OptimSettings::default() };
    let report = train_with_progress(b, &model, train, None, &cfg, &run, &optim, method.name(), false)?;
    let clean = perturb_adv::predict_all(b, &model, test, 250)?;
    let correct: Vec<bool> = clean.iter().zip(&test.labels).map(|(p, y)| *p == u32::from(*y)).collect();
    let clean_acc = correct.iter().filter(|&&c| c).count() as f64 / test.len() as f64;
    let mut points = Vec::new();
    for &eps in &a.eps {
        let pgd =
            AttackConfig::pgd(eps, a.pgd_steps, 2.5 * eps / a.pgd_steps as f32).with_restarts(2).with_seed(c.seed);
        let r = run_attack(b, &model, &Attack::new(pgd), test, 250)?;
        // Among the points classified correctly, the share PGD flips.
        let flipped = r.correct.iter().zip(&correct).filter(|(adv, clean)| **clean && !**adv).count();
        let n_correct = correct.iter().filter(|&&c| c).count().max(1);
        points.push(json!({
            "eps": eps,
            "robust_accuracy": r.accuracy,
            "adversarial_found_share": flipped as f64 / n_correct as f64,
        }));
    }
    Ok(json!({
        "method": method.name(),
        "clean_accuracy": clean_acc,
        "train_seconds": report.train_seconds,
        "bias": report.bias,
        "pgd": points,
    }))
}
