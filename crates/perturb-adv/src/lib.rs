//! perturb-adv: adversarial attacks, robust evaluation and the gradient-masking report, generic
//! over any [`perturb_core::Backend`].
//!
//! - Attacks ([`AttackConfig`]): FGSM, R-FGSM, BIM / I-FGSM, PGD under L-inf and L2 with random
//!   starts and restarts, PGD on the Carlini–Wagner margin, targeted variants, transfer from a
//!   surrogate ([`Attack::transfer`]) and the gradient-free Square attack. Every step is one
//!   fused backend op; the backward computes d loss / d input only.
//! - Evaluation ([`evaluate`], [`accuracy_vs_eps`], [`accuracy_vs_steps`]): robust accuracy per
//!   attack, the per-example worst case, curves.
//! - Diagnosis ([`diagnose()`]): the six-item gradient-masking checklist with a verdict, PNGs and
//!   JSON.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use perturb_adv::{Attack, AttackConfig, run_attack};
//! use perturb_data::Dataset;
//!
//! let backend = perturb_cpu::CpuBackend::new();
//! let model = perturb_nn::build_model(&backend, "mlp", [1, 4, 4], 3, 0)?;
//! let data = Dataset {
//!     name: "toy".into(),
//!     images: (0..2 * 16).map(|i| (i % 7) as f32 / 7.0).collect(),
//!     labels: vec![0, 2],
//!     n: 2,
//!     channels: 1,
//!     height: 4,
//!     width: 4,
//!     num_classes: 3,
//! };
//! let pgd = Attack::new(AttackConfig::pgd(0.1, 10, 0.025).with_restarts(2).with_seed(7));
//! let run = run_attack(&backend, &model, &pgd, &data, 64)?;
//! // Every example stays in the eps-box around its clean image and in [0, 1].
//! for (linf, _l2) in run.distances(&data) {
//!     assert!(linf <= 0.1 + 1e-6);
//! }
//! assert!(run.adv.iter().all(|&v| (0.0..=1.0).contains(&v)));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod attack;
pub mod autoattack;
pub mod config;
pub mod diagnose;
mod error;
pub mod eval;
pub mod grad;
pub mod linearity;
pub mod plot;
pub mod registry;
pub mod run;
pub mod square;
pub mod square_delta;
pub mod surrogate;
pub mod training;

pub use attack::{BatchOutcome, GradientAttack};
pub use config::{AttackConfig, Loss, Method, Norm, TargetRule};
pub use diagnose::{CheckItem, DiagnoseConfig, Diagnosis, Status, diagnose};
pub use error::{Error, Result};
pub use eval::{AttackSummary, Curve, RobustReport, accuracy_vs_eps, accuracy_vs_steps, evaluate};
pub use run::{Attack, AttackRun, check_compatible, check_data, predict_all, run_attack};
