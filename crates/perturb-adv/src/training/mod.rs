//! Adversarial training: the methods of `perturb train --method ...`, generic over any
//! [`perturb_core::Backend`].
//!
//! | method | loss per step (x clean, y label, CE mean cross-entropy) |
//! |---|---|
//! | `standard` | CE(x) |
//! | `fgsm` | a CE(x) + (1 - a) CE(x_fgsm), a = 0.5 (Goodfellow, Shlens and Szegedy 2015) |
//! | `rfgsm` | a CE(x) + (1 - a) CE(x_rfgsm): a random sign step of size alpha, then an FGSM step of eps - alpha (Tramèr et al. 2018) |
//! | `fgsm-rs` | CE(x_rs): a uniform start in the eps-box, one sign step of 1.25 eps, projection (Wong, Rice and Kolter 2020) |
//! | `fgsm-reg` | CE(x_fgsm) + lambda mean_i \|\|z(x_fgsm) - z(x_rfgsm)\|\|² on the logits z (Vivek, Baburaj and Babu 2019) |
//! | `pgd` | CE(x_pgd), PGD-k with a random start (Madry et al. 2018) |
//! | `differential` | mean over pairs (x_i of class 1, y_j of class 0) of log(1 + exp(-(f(x_i) - f(y_j)))), f = z_1 - z_0; the bias is set afterwards (Nar et al. 2019) |
//! | `self-gradient` | CE with eps_l sign(d CE / d a_l) added to the activations a_l of chosen layers (the project's reading of Aboutalebi et al. 2020) |
//!
//! Every adversarial example is regenerated from the current weights at every step, with a
//! backward pass that computes d loss / d input only (the weights are bound as constants, so no
//! weight-gradient kernel runs), and every step of it is one fused backend op (`sign_step_`,
//! `step_project_linf_`) on buffers allocated once per run ([`Perturber`]).
//!
//! During the adversarial methods a [`monitor`] runs FGSM and a short PGD on a held-out batch
//! after every epoch and flags catastrophic overfitting: PGD accuracy collapsing while FGSM
//! accuracy stays high, the signature of gradient masking in the making (Wong et al. 2020).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use perturb_adv::training::{MethodConfig, RunConfig, TrainMethod, train};
//! use perturb_data::Dataset;
//! use perturb_nn::{LrSchedule, Sgd, SgdConfig, build_model};
//!
//! let backend = perturb_cpu::CpuBackend::new();
//! let data = Dataset {
//!     name: "toy".into(),
//!     images: (0..8 * 16).map(|i| (i % 5) as f32 / 5.0).collect(),
//!     labels: vec![0, 1, 2, 0, 1, 2, 0, 1],
//!     n: 8,
//!     channels: 1,
//!     height: 4,
//!     width: 4,
//!     num_classes: 3,
//! };
//! let model = build_model(&backend, "mlp", [1, 4, 4], 3, 0)?;
//! let mut opt = Sgd::new(&backend, model.params(), SgdConfig { lr: 0.05, ..Default::default() })?;
//! let method = MethodConfig::new(TrainMethod::Pgd, 0.1).with_pgd(3, None);
//! let run = RunConfig { epochs: 2, batch_size: 4, ..RunConfig::default() };
//! let schedule = LrSchedule::Constant { lr: 0.05 };
//! let report = train(&backend, &model, &data, None, &method, &run, &mut opt, &schedule, &mut |_| {})?;
//! // 8 examples in batches of 4 for 2 epochs; the PGD buffers are allocated once, not per step.
//! assert_eq!((report.steps, report.epochs_run, report.buffer_allocations), (4, 2, 1));
//! assert!(report.final_loss.is_finite() && report.final_loss > 0.0);
//! # Ok(())
//! # }
//! ```

pub mod differential;
pub mod monitor;
pub mod perturb;
pub mod resume;
pub mod self_gradient;
pub mod step;
pub mod trainer;

pub use differential::{BiasChoice, differential_loss, set_differential_bias};
pub use monitor::{MonitorConfig, MonitorReading};
pub use perturb::Perturber;
pub use resume::{Checkpointing, TrainOptions};
pub use trainer::{Event, RunConfig, TrainReport, logit_gap, train, train_with};

use serde::Serialize;

use crate::{Error, Result};

/// A training method (see the [module docs](self) for each loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainMethod {
    /// Cross-entropy on clean examples.
    Standard,
    /// Goodfellow et al. 2015: a mix of clean and FGSM cross-entropy.
    Fgsm,
    /// Tramèr et al. 2018: the FGSM mix with the R-FGSM example.
    Rfgsm,
    /// Wong et al. 2020: FGSM from a uniform random start, step 1.25 eps, projected.
    FgsmRs,
    /// Vivek et al. 2019: FGSM cross-entropy plus the FGSM/R-FGSM logit-distance regulariser.
    FgsmReg,
    /// Madry et al. 2018: PGD-k with a random start.
    Pgd,
    /// Nar et al. 2019: a loss over pairs of opposite classes, two-class tasks only.
    Differential,
    /// The project's reading of Aboutalebi et al. 2020: sign-gradient perturbations of hidden
    /// activations.
    SelfGradient,
}

impl TrainMethod {
    /// Every method, in the order of the command line's help.
    pub const ALL: [TrainMethod; 8] = [
        TrainMethod::Standard,
        TrainMethod::Fgsm,
        TrainMethod::Rfgsm,
        TrainMethod::FgsmRs,
        TrainMethod::FgsmReg,
        TrainMethod::Pgd,
        TrainMethod::Differential,
        TrainMethod::SelfGradient,
    ];

    /// The command-line name (`fgsm-rs`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            TrainMethod::Standard => "standard",
            TrainMethod::Fgsm => "fgsm",
            TrainMethod::Rfgsm => "rfgsm",
            TrainMethod::FgsmRs => "fgsm-rs",
            TrainMethod::FgsmReg => "fgsm-reg",
            TrainMethod::Pgd => "pgd",
            TrainMethod::Differential => "differential",
            TrainMethod::SelfGradient => "self-gradient",
        }
    }

    /// One line on what the method trains on (the command line's help for `--method`).
    pub const fn summary(self) -> &'static str {
        match self {
            TrainMethod::Standard => "Cross-entropy on clean examples",
            TrainMethod::Fgsm => "Goodfellow et al. 2015: a CE(x) + (1 - a) CE(x_fgsm), a = --mix",
            TrainMethod::Rfgsm => "Tramer et al. 2018: the same mix with the R-FGSM example (random step --alpha)",
            TrainMethod::FgsmRs => "Wong et al. 2020: uniform random start, one sign step of --rs-step, projection",
            TrainMethod::FgsmReg => "Vivek et al. 2019: CE(x_fgsm) + --lambda * mean ||z(x_fgsm) - z(x_rfgsm)||^2",
            TrainMethod::Pgd => "Madry et al. 2018: PGD-k (--pgd-steps, --pgd-step-size) with a random start",
            TrainMethod::Differential => "Nar et al. 2019: pair loss over opposite classes; needs --classes A,B",
            TrainMethod::SelfGradient => {
                "This project's reading of Aboutalebi et al. 2020: sign-gradient steps on hidden activations"
            }
        }
    }

    /// The method called `name`; an error lists the known names.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
            Error::invalid("method", format!("unknown method '{name}' (known: {})", known.join(", ")))
        })
    }

    /// True for the methods that train on input-space adversarial examples (the catastrophic
    /// overfitting monitor watches these).
    pub const fn is_adversarial(self) -> bool {
        matches!(
            self,
            TrainMethod::Fgsm | TrainMethod::Rfgsm | TrainMethod::FgsmRs | TrainMethod::FgsmReg | TrainMethod::Pgd
        )
    }
}

impl std::fmt::Display for TrainMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The method and its hyperparameters. Build with [`MethodConfig::new`] (every default below)
/// and adjust with the `with_*` methods or the public fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodConfig {
    /// The method.
    pub method: TrainMethod,
    /// L-inf radius of the training perturbations, in data units (default 0.3, MNIST's usual).
    pub eps: f32,
    /// Weight a of the clean loss in `fgsm` and `rfgsm` (default 0.5, Goodfellow et al.).
    pub mix: f32,
    /// R-FGSM's random sign step (`rfgsm`, and the R-FGSM sample of `fgsm-reg`); `None`: eps / 2.
    pub alpha: Option<f32>,
    /// `fgsm-rs`'s sign step from the random start; `None`: 1.25 eps (Wong et al.).
    pub rs_step: Option<f32>,
    /// Weight of `fgsm-reg`'s logit-distance regulariser (default 2, chosen on the embedded
    /// digits at eps 0.3; see docs/results.md).
    pub lambda: f32,
    /// PGD steps of `pgd` training (default 10).
    pub pgd_steps: usize,
    /// PGD step size; `None`: 2.5 eps / steps (Madry et al.'s rule).
    pub pgd_step_size: Option<f32>,
    /// `self-gradient`: the size eps_l of the sign-gradient perturbation of each chosen
    /// activation (default 0.001: every unit of a layer moves at once, so on cnn-small's 4,800
    /// ReLU units 0.01 already stops it from learning; the mlp still learns at 0.01).
    pub sg_eps: f32,
    /// `self-gradient`: indices (in the model's layer list) of the layers whose outputs are
    /// perturbed; `None`: every ReLU's output.
    pub sg_layers: Option<Vec<usize>>,
    /// The data range the examples are clipped to.
    pub lo: f32,
    /// Upper end of the data range.
    pub hi: f32,
    /// Seed of the random starts and R-FGSM noise.
    pub seed: u64,
}

impl MethodConfig {
    /// `method` at radius `eps` with every other setting at its default.
    pub fn new(method: TrainMethod, eps: f32) -> Self {
        MethodConfig {
            method,
            eps,
            mix: 0.5,
            alpha: None,
            rs_step: None,
            lambda: 2.0,
            pgd_steps: 10,
            pgd_step_size: None,
            sg_eps: 0.001,
            sg_layers: None,
            lo: 0.0,
            hi: 1.0,
            seed: 0,
        }
    }

    /// Sets PGD's steps and step size (`None`: 2.5 eps / steps).
    pub fn with_pgd(mut self, steps: usize, step_size: Option<f32>) -> Self {
        self.pgd_steps = steps;
        self.pgd_step_size = step_size;
        self
    }

    /// Sets `fgsm-reg`'s lambda.
    pub fn with_lambda(mut self, lambda: f32) -> Self {
        self.lambda = lambda;
        self
    }

    /// Sets the R-FGSM random step.
    pub fn with_alpha(mut self, alpha: f32) -> Self {
        self.alpha = Some(alpha);
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// R-FGSM's random step in effect.
    pub fn alpha(&self) -> f32 {
        self.alpha.unwrap_or(self.eps / 2.0)
    }

    /// `fgsm-rs`'s step in effect.
    pub fn rs_step(&self) -> f32 {
        self.rs_step.unwrap_or(1.25 * self.eps)
    }

    /// PGD's step size in effect.
    pub fn pgd_step_size(&self) -> f32 {
        self.pgd_step_size.unwrap_or(2.5 * self.eps / self.pgd_steps.max(1) as f32)
    }

    /// The same method at `scale` times the radius, with every step size that follows eps
    /// (alpha, the fgsm-rs step, the PGD step) scaled alike and resolved to a number: the
    /// settings of a step during the eps warm-up.
    pub fn scaled(&self, scale: f32) -> Self {
        MethodConfig {
            eps: self.eps * scale,
            alpha: Some(self.alpha() * scale),
            rs_step: Some(self.rs_step() * scale),
            pgd_step_size: Some(self.pgd_step_size() * scale),
            ..self.clone()
        }
    }

    /// Checks every setting the method uses; errors name the setting (`eps`, `alpha`, ...) so
    /// the command line can name its flag.
    pub fn validate(&self) -> Result<()> {
        let m = self.method;
        if !(self.lo.is_finite() && self.hi.is_finite() && self.lo < self.hi) {
            return Err(Error::invalid("bounds", format!("data range [{}, {}] is empty", self.lo, self.hi)));
        }
        let range = self.hi - self.lo;
        if m.is_adversarial() && !(self.eps.is_finite() && self.eps > 0.0 && self.eps <= range) {
            return Err(Error::invalid("eps", format!("{} must lie in (0, {range}] (the data range)", self.eps)));
        }
        if matches!(m, TrainMethod::Fgsm | TrainMethod::Rfgsm) && !(0.0..=1.0).contains(&self.mix) {
            return Err(Error::invalid("mix", format!("{} must lie in [0, 1]", self.mix)));
        }
        if matches!(m, TrainMethod::Rfgsm | TrainMethod::FgsmReg) {
            let a = self.alpha();
            if !(a.is_finite() && a >= 0.0 && a < self.eps) {
                return Err(Error::invalid("alpha", format!("{a} must lie in [0, eps = {}) ", self.eps)));
            }
        }
        if m == TrainMethod::FgsmRs {
            let s = self.rs_step();
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::invalid("rs_step", format!("{s} must be a positive number")));
            }
        }
        if m == TrainMethod::FgsmReg && !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(Error::invalid("lambda", format!("{} must be a number >= 0", self.lambda)));
        }
        if m == TrainMethod::Pgd {
            if self.pgd_steps == 0 || self.pgd_steps > 10_000 {
                return Err(Error::invalid("pgd_steps", format!("{} must lie in 1..=10000", self.pgd_steps)));
            }
            let s = self.pgd_step_size();
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::invalid("pgd_step_size", format!("{s} must be a positive number")));
            }
        }
        if m == TrainMethod::SelfGradient {
            if !(self.sg_eps.is_finite() && self.sg_eps >= 0.0) {
                return Err(Error::invalid("sg_eps", format!("{} must be a number >= 0", self.sg_eps)));
            }
            if self.sg_layers.as_ref().is_some_and(Vec::is_empty) {
                return Err(Error::invalid("sg_layers", "give at least one layer index"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_defaults() {
        for m in TrainMethod::ALL {
            assert_eq!(TrainMethod::parse(m.name()).unwrap(), m);
        }
        let e = TrainMethod::parse("fgm").unwrap_err().to_string();
        assert!(e.starts_with("method:") && e.contains("fgsm-reg"), "{e}");
        let c = MethodConfig::new(TrainMethod::Pgd, 0.3);
        assert!((c.pgd_step_size() - 0.075).abs() < 1e-7);
        assert!((c.alpha() - 0.15).abs() < 1e-7 && (c.rs_step() - 0.375).abs() < 1e-7);
    }

    #[test]
    fn validation_names_the_setting() {
        let bad = |c: MethodConfig| c.validate().unwrap_err().to_string();
        assert!(bad(MethodConfig::new(TrainMethod::Fgsm, 0.0)).starts_with("eps:"));
        assert!(bad(MethodConfig::new(TrainMethod::Pgd, 1.5)).starts_with("eps:"));
        assert!(bad(MethodConfig::new(TrainMethod::Pgd, 0.3).with_pgd(0, None)).starts_with("pgd_steps:"));
        assert!(bad(MethodConfig::new(TrainMethod::FgsmReg, 0.3).with_alpha(0.3)).starts_with("alpha:"));
        assert!(bad(MethodConfig::new(TrainMethod::FgsmReg, 0.3).with_lambda(-1.0)).starts_with("lambda:"));
        // Standard training ignores eps.
        assert!(MethodConfig::new(TrainMethod::Standard, 0.0).validate().is_ok());
    }
}
