//! The catastrophic-overfitting monitor (Wong, Rice and Kolter 2020, section 5): after every
//! epoch of an adversarial method, FGSM and a short PGD at the training eps on a held-out batch.
//! Single-step training can suddenly learn to defeat its own attack: FGSM accuracy climbs while
//! PGD accuracy collapses towards 0, i.e. the model masks its gradients instead of becoming
//! robust. The monitor flags an epoch when PGD accuracy falls below `ratio` times FGSM accuracy
//! while FGSM accuracy stays at least `min_fgsm`; the trainer warns, or with `stop_on_overfit`
//! stops and restores the weights of the epoch with the best PGD accuracy.

use perturb_core::Backend;
use perturb_data::Dataset;
use perturb_nn::Model;
use serde::Serialize;

use crate::Result;
use crate::config::AttackConfig;
use crate::run::{Attack, run_attack};

/// What the monitor runs and when it calls an epoch overfit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorConfig {
    /// Run the monitor at all (only adversarial methods are monitored).
    pub enabled: bool,
    /// Held-out examples it attacks (default 256).
    pub examples: usize,
    /// PGD steps (default 10, step size 2.5 eps / steps, one random start).
    pub pgd_steps: usize,
    /// Flag when FGSM accuracy is at least this (default 0.5) ...
    pub min_fgsm: f64,
    /// ... and PGD accuracy is below this share of it (default 0.5).
    pub ratio: f64,
    /// Stop training at the first flagged epoch and restore the best weights.
    pub stop_on_overfit: bool,
}

/// The signature of catastrophic overfitting, shared by the monitor and the diagnosis: FGSM
/// accuracy at least `min_fgsm` while PGD accuracy is below `ratio` times it, i.e. the
/// single-step attack sees a robust model that an iterative attack at the same radius breaks.
pub fn single_step_collapse(fgsm_accuracy: f64, pgd_accuracy: f64, min_fgsm: f64, ratio: f64) -> bool {
    fgsm_accuracy >= min_fgsm && pgd_accuracy < ratio * fgsm_accuracy
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig { enabled: true, examples: 256, pgd_steps: 10, min_fgsm: 0.5, ratio: 0.5, stop_on_overfit: false }
    }
}

/// One epoch's measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorReading {
    /// 1-based epoch.
    pub epoch: usize,
    /// Clean accuracy on the held-out batch.
    pub clean_accuracy: f64,
    /// FGSM accuracy at the training eps.
    pub fgsm_accuracy: f64,
    /// PGD accuracy at the training eps.
    pub pgd_accuracy: f64,
    /// The epoch shows catastrophic overfitting.
    pub overfit: bool,
}

impl MonitorReading {
    /// The warning line for a flagged epoch.
    pub fn warning(&self) -> String {
        format!(
            "epoch {}: catastrophic overfitting suspected: PGD accuracy {:.1}% while FGSM accuracy is {:.1}% on the held-out batch (gradient masking in the making)",
            self.epoch,
            100.0 * self.pgd_accuracy,
            100.0 * self.fgsm_accuracy
        )
    }
}

impl MonitorConfig {
    /// Checks the settings; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.examples == 0 {
            return Err(crate::Error::invalid("monitor_examples", "must be at least 1"));
        }
        if self.pgd_steps == 0 {
            return Err(crate::Error::invalid("monitor_steps", "must be at least 1"));
        }
        Ok(())
    }

    /// True when a reading shows PGD collapsed while FGSM stays high.
    pub fn is_overfit(&self, fgsm: f64, pgd: f64) -> bool {
        single_step_collapse(fgsm, pgd, self.min_fgsm, self.ratio)
    }

    /// Measures `model` on `held_out` at radius `eps` after epoch `epoch`.
    pub fn measure<B: Backend>(
        &self,
        b: &B,
        model: &Model<B>,
        held_out: &Dataset,
        eps: f32,
        epoch: usize,
        seed: u64,
    ) -> Result<MonitorReading> {
        let steps = self.pgd_steps.max(1);
        let fgsm = Attack::new(AttackConfig::fgsm(eps));
        let pgd = Attack::new(AttackConfig::pgd(eps, steps, 2.5 * eps / steps as f32).with_seed(seed ^ epoch as u64));
        let bs = held_out.len().clamp(1, 256);
        let f = run_attack(b, model, &fgsm, held_out, bs)?;
        let p = run_attack(b, model, &pgd, held_out, bs)?;
        let clean = crate::run::predict_all(b, model, held_out, bs)?;
        let clean_accuracy = clean.iter().zip(&held_out.labels).filter(|(p, y)| **p == u32::from(**y)).count() as f64
            / held_out.len().max(1) as f64;
        Ok(MonitorReading {
            epoch,
            clean_accuracy,
            fgsm_accuracy: f.accuracy,
            pgd_accuracy: p.accuracy,
            overfit: self.is_overfit(f.accuracy, p.accuracy),
        })
    }
}
