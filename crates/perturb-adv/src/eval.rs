//! Robust evaluation: several attacks on one model, the per-example worst case over all of
//! them, and accuracy curves against eps and against the number of steps.

use std::time::Instant;

use perturb_core::Backend;
use perturb_data::Dataset;
use perturb_nn::Model;
use serde::Serialize;

use crate::config::Method;
use crate::run::{Attack, AttackRun, predict_all, run_attack};
use crate::{Error, Result};

/// One attack's line in a [`RobustReport`].
#[derive(Debug, Clone, Serialize)]
pub struct AttackSummary {
    /// The name the caller gave (for the command line, exactly as typed).
    pub name: String,
    /// Robust accuracy under the attack.
    pub accuracy: f64,
    /// Share of examples where the attack's goal was reached.
    pub success_rate: f64,
    /// The attack's eps.
    pub eps: f32,
    /// `linf` or `l2`.
    pub norm: String,
    /// The method (`fgsm`, `pgd`, `square`, ...; [`crate::AttackConfig::name`]).
    pub method: String,
    /// Gradient steps per restart (1 for single-step and gradient-free attacks).
    pub steps: usize,
    /// Restarts.
    pub restarts: usize,
    /// True for a transfer attack.
    pub transfer: bool,
    /// Mean forward passes per example.
    pub mean_queries: f64,
    /// Wall time.
    pub seconds: f64,
    /// Examples per second.
    pub images_per_second: f64,
}

impl AttackSummary {
    /// The summary of a run under the caller's name.
    pub fn of(name: &str, run: &AttackRun) -> Self {
        AttackSummary {
            name: name.to_string(),
            accuracy: run.accuracy,
            success_rate: run.success_rate,
            eps: run.config.eps,
            norm: format!("{:?}", run.config.norm).to_lowercase(),
            method: run.config.name(),
            steps: if matches!(run.config.method, Method::Bim | Method::Pgd) { run.config.steps } else { 1 },
            restarts: if run.config.method == Method::Pgd { run.config.restarts } else { 1 },
            transfer: run.transfer,
            mean_queries: run.mean_queries,
            seconds: run.seconds,
            images_per_second: run.images_per_second(),
        }
    }
}

/// Clean and robust accuracy of one model.
#[derive(Debug, Clone, Serialize)]
pub struct RobustReport {
    /// Examples evaluated.
    pub n: usize,
    /// Accuracy on the clean examples.
    pub clean_accuracy: f64,
    /// Seconds for the clean pass.
    pub clean_seconds: f64,
    /// One line per attack, in the order given.
    pub attacks: Vec<AttackSummary>,
    /// Share of examples classified correctly clean and under every attack.
    pub worst_case_accuracy: f64,
}

/// Runs every attack (named by the caller) against `model` on `data`, with the per-example
/// worst case (an example counts as robust only if it is correct clean and under every attack).
/// Returns the report and each attack's run (with the adversarial examples).
pub fn evaluate<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    attacks: &[(String, Attack<'_, B>)],
    batch_size: usize,
) -> Result<(RobustReport, Vec<AttackRun>)> {
    let t0 = Instant::now();
    let clean = predict_all(b, model, data, batch_size)?;
    let clean_seconds = t0.elapsed().as_secs_f64();
    let mut robust: Vec<bool> = clean.iter().zip(&data.labels).map(|(&p, &y)| p == u32::from(y)).collect();
    let clean_accuracy = share(&robust);
    let mut runs = Vec::with_capacity(attacks.len());
    let mut lines = Vec::with_capacity(attacks.len());
    for (name, attack) in attacks {
        let run = run_attack(b, model, attack, data, batch_size)?;
        for (r, &c) in robust.iter_mut().zip(&run.correct) {
            *r &= c;
        }
        lines.push(AttackSummary::of(name, &run));
        runs.push(run);
    }
    let report = RobustReport {
        n: data.len(),
        clean_accuracy,
        clean_seconds,
        attacks: lines,
        worst_case_accuracy: share(&robust),
    };
    Ok((report, runs))
}

/// An f32 setting as an f64 rounded to 6 decimals (0.1 * 0.3 in f32 -> 0.03, not
/// 0.030000001192092896), for JSON and plot axes.
pub fn decimal(v: f32) -> f64 {
    (v as f64 * 1e6).round() / 1e6
}

fn share(v: &[bool]) -> f64 {
    v.iter().filter(|&&c| c).count() as f64 / v.len().max(1) as f64
}

/// Accuracy of one attack as a function of one setting.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// The attack's name.
    pub attack: String,
    /// What varies: `eps` or `steps`.
    pub x: &'static str,
    /// (setting, robust accuracy) pairs in the order of the grid.
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    /// The success rate (1 - accuracy) at each point.
    pub fn success(&self) -> Vec<(f64, f64)> {
        self.points.iter().map(|&(x, a)| (x, 1.0 - a)).collect()
    }
}

/// Robust accuracy of `attack` for each eps of `grid` (all other settings kept).
pub fn accuracy_vs_eps<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    name: &str,
    attack: &Attack<'_, B>,
    grid: &[f32],
    batch_size: usize,
) -> Result<Curve> {
    let mut points = Vec::with_capacity(grid.len());
    for &eps in grid {
        let a = Attack { config: attack.config.clone().with_eps(eps), surrogate: attack.surrogate };
        points.push((decimal(eps), run_attack(b, model, &a, data, batch_size)?.accuracy));
    }
    Ok(Curve { attack: name.to_string(), x: "eps", points })
}

/// Robust accuracy of an iterative `attack` for each number of steps of `grid`.
pub fn accuracy_vs_steps<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    name: &str,
    attack: &Attack<'_, B>,
    grid: &[usize],
    batch_size: usize,
) -> Result<Curve> {
    if !matches!(attack.config.method, Method::Bim | Method::Pgd) {
        return Err(Error::invalid("steps", format!("{} is not an iterative attack", attack.config.name())));
    }
    let mut points = Vec::with_capacity(grid.len());
    for &steps in grid {
        let a = Attack { config: attack.config.clone().with_steps(steps), surrogate: attack.surrogate };
        points.push((steps as f64, run_attack(b, model, &a, data, batch_size)?.accuracy));
    }
    Ok(Curve { attack: name.to_string(), x: "steps", points })
}
