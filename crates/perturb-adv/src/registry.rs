//! The attack registry: every attack perturb runs by name, in one table. The CLI (`perturb
//! attack --attack NAME`, `perturb eval --attacks A,B`) and programs look names up here, so a
//! new attack is one entry (name, summary, whether it needs gradients, constructor), not a new
//! arm in each front end.
//!
//! ```
//! use perturb_adv::registry::{AttackParams, lookup};
//!
//! let pgd = lookup("pgd").expect("registered").build(&AttackParams { steps: 20, ..AttackParams::default() });
//! assert_eq!(pgd.steps, 20);
//! assert!(lookup("pgd-l3").is_none());
//! ```
//!
//! Modifiers that apply to every entry stay with the caller: restarts, seed and `-targeted`
//! are `with_*` methods of [`AttackConfig`]; a transfer attack is any gradient entry crafted on
//! a surrogate ([`crate::Attack::transfer`]). AutoAttack's stages are a suite
//! ([`crate::autoattack`]), not entries: they carry their own schedules.

use crate::config::{AttackConfig, Loss, Norm};

/// The numbers an entry's constructor may read. Defaults are the CLI's.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackParams {
    /// L-inf radius (pixels in [0, 1]).
    pub eps: f32,
    /// L2 radius.
    pub eps_l2: f32,
    /// Gradient steps of the iterative attacks.
    pub steps: usize,
    /// Step size of the iterative L-inf attacks.
    pub step_size: f32,
    /// Step size of the iterative L2 attacks (None: 2.5 * eps_l2 / steps, Madry's rule).
    pub step_size_l2: Option<f32>,
    /// R-FGSM's random step (None: eps / 2).
    pub alpha: Option<f32>,
    /// Square attack: forward passes per example at most.
    pub queries: usize,
    /// Square attack: initial share of pixels in a square.
    pub p_init: f32,
}

impl Default for AttackParams {
    fn default() -> Self {
        AttackParams {
            eps: 0.3,
            eps_l2: 2.0,
            steps: 40,
            step_size: 0.01,
            step_size_l2: None,
            alpha: None,
            queries: 1000,
            p_init: 0.3,
        }
    }
}

impl AttackParams {
    /// The L2 step size: the given one, else 2.5 * eps_l2 / steps.
    pub fn l2_step(&self) -> f32 {
        self.step_size_l2.unwrap_or(2.5 * self.eps_l2 / self.steps.max(1) as f32)
    }
}

/// One registered attack.
#[derive(Debug)]
pub struct AttackEntry {
    /// The name front ends accept.
    pub name: &'static str,
    /// One line for help texts.
    pub summary: &'static str,
    /// Whether it follows input gradients (only those can be crafted on a surrogate).
    pub gradient: bool,
    make: fn(&AttackParams) -> AttackConfig,
}

impl AttackEntry {
    /// The attack with these settings (restarts 1, seed 0, untargeted: adjust with `with_*`).
    pub fn build(&self, p: &AttackParams) -> AttackConfig {
        (self.make)(p)
    }
}

/// Every attack, in the order help texts list them.
pub static ATTACKS: &[AttackEntry] = &[
    AttackEntry {
        name: "fgsm",
        summary: "one gradient-sign step of size eps (Goodfellow et al. 2015)",
        gradient: true,
        make: |p| AttackConfig::fgsm(p.eps),
    },
    AttackEntry {
        name: "fgm-l2",
        summary: "one normalised-gradient step of L2 length eps-l2",
        gradient: true,
        make: |p| AttackConfig::fgsm(p.eps_l2).with_norm(Norm::L2),
    },
    AttackEntry {
        name: "rfgsm",
        summary: "a random sign step of alpha, then a gradient-sign step of eps - alpha (Tramer et al. 2018)",
        gradient: true,
        make: |p| AttackConfig::rfgsm(p.eps).with_alpha(p.alpha.unwrap_or(p.eps / 2.0)),
    },
    AttackEntry {
        name: "bim",
        summary: "BIM / I-FGSM: steps projected sign steps from the clean input (Kurakin et al. 2017)",
        gradient: true,
        make: |p| AttackConfig::bim(p.eps, p.steps, p.step_size),
    },
    AttackEntry {
        name: "bim-l2",
        summary: "BIM under L2",
        gradient: true,
        make: |p| AttackConfig::bim(p.eps_l2, p.steps, p.l2_step()).with_norm(Norm::L2),
    },
    AttackEntry {
        name: "pgd",
        summary: "PGD from a random start in the L-inf ball (Madry et al. 2018)",
        gradient: true,
        make: |p| AttackConfig::pgd(p.eps, p.steps, p.step_size),
    },
    AttackEntry {
        name: "pgd-l2",
        summary: "PGD under L2",
        gradient: true,
        make: |p| AttackConfig::pgd_l2(p.eps_l2, p.steps, p.l2_step()),
    },
    AttackEntry {
        name: "cw",
        summary: "PGD on the Carlini-Wagner margin loss, L-inf",
        gradient: true,
        make: |p| AttackConfig::cw(p.eps, p.steps, p.step_size),
    },
    AttackEntry {
        name: "cw-l2",
        summary: "PGD on the Carlini-Wagner margin loss, L2",
        gradient: true,
        make: |p| AttackConfig::pgd_l2(p.eps_l2, p.steps, p.l2_step()).with_loss(Loss::CwMargin),
    },
    AttackEntry {
        name: "square",
        summary: "gradient-free random search over square patches, L-inf (Andriushchenko et al. 2020)",
        gradient: false,
        make: |p| AttackConfig::square(p.eps, p.queries).with_p_init(p.p_init),
    },
];

/// The entry named `name`.
pub fn lookup(name: &str) -> Option<&'static AttackEntry> {
    ATTACKS.iter().find(|e| e.name == name)
}

/// The registered names, comma-separated (for help texts and errors).
pub fn names() -> String {
    ATTACKS.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Method;

    #[test]
    fn names_are_unique_and_found() {
        for (i, e) in ATTACKS.iter().enumerate() {
            assert!(ATTACKS[..i].iter().all(|o| o.name != e.name), "{} twice", e.name);
            assert!(std::ptr::eq(lookup(e.name).expect("found"), e));
        }
        assert!(lookup("").is_none() && lookup("PGD").is_none());
        assert_eq!(names().split(", ").count(), ATTACKS.len());
    }

    #[test]
    fn every_entry_builds_a_valid_attack_from_the_defaults() {
        for e in ATTACKS {
            let c = e.build(&AttackParams::default());
            c.validate(784).unwrap_or_else(|err| panic!("{}: {err}", e.name));
            assert_eq!(e.gradient, c.method != Method::Square, "{}", e.name);
            let l2 = e.name.ends_with("-l2");
            assert_eq!(c.norm, if l2 { Norm::L2 } else { Norm::Linf }, "{}", e.name);
            assert_eq!(c.eps, if l2 { 2.0 } else { 0.3 }, "{}", e.name);
        }
    }

    #[test]
    fn constructors_read_the_settings() {
        let p = AttackParams {
            eps: 0.1,
            eps_l2: 1.5,
            steps: 10,
            step_size: 0.02,
            step_size_l2: None,
            alpha: Some(0.03),
            queries: 77,
            p_init: 0.5,
        };
        let get = |n: &str| lookup(n).expect("registered").build(&p);
        let pgd = get("pgd");
        assert_eq!((pgd.method, pgd.eps, pgd.steps, pgd.step_size), (Method::Pgd, 0.1, 10, 0.02));
        assert!(pgd.random_start);
        let l2 = get("pgd-l2");
        assert_eq!((l2.eps, l2.step_size), (1.5, 2.5 * 1.5 / 10.0));
        let given = lookup("bim-l2").expect("registered").build(&AttackParams { step_size_l2: Some(0.2), ..p.clone() });
        assert_eq!(given.step_size, 0.2);
        assert_eq!(get("rfgsm").alpha, 0.03);
        assert_eq!(get("cw").loss, Loss::CwMargin);
        assert_eq!(get("cw-l2").loss, Loss::CwMargin);
        let sq = get("square");
        assert_eq!((sq.queries, sq.p_init), (77, 0.5));
    }
}
