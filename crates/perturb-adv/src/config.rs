//! What an attack is: [`AttackConfig`] (method, threat model, loss, budget, seed) and its
//! validation. Every check names the setting it refuses (`eps`, `steps`, ...) so the command
//! line can name its flag.

use serde::Serialize;

use crate::{Error, Result};

/// The perturbation set: an L-inf box or an L2 ball of radius eps around the clean input,
/// intersected with the data range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// max_i |x_i - x0_i| <= eps; steps move by step_size * sign(gradient).
    Linf,
    /// ||x - x0||_2 <= eps per example; steps move by step_size * gradient / ||gradient||_2.
    L2,
}

/// The loss a gradient attack ascends (untargeted) or descends (targeted, on the target class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Softmax cross-entropy against the label.
    Xent,
    /// The Carlini–Wagner margin max_{j != y} z_j - z_y on the logits z: unlike cross-entropy it
    /// does not vanish when the softmax saturates.
    CwMargin,
}

/// How a targeted attack picks each example's target class (never the true label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetRule {
    /// (y + 1) mod classes.
    Next,
    /// The class with the smallest clean logit (Kurakin et al. 2017).
    LeastLikely,
    /// A uniformly random other class, from the attack's seed and the example's index.
    Random,
}

/// The attack method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// One gradient step of size eps from the clean input (Goodfellow et al. 2015); under L2,
    /// the fast gradient method (a normalised-gradient step of length eps).
    Fgsm,
    /// A random sign step of size alpha, then a gradient sign step of size eps - alpha
    /// (Tramèr et al. 2018). L-inf only.
    RFgsm,
    /// BIM / I-FGSM (Kurakin et al. 2017): `steps` projected steps from the clean input.
    Bim,
    /// PGD (Madry et al. 2018): a random start in the ball, `steps` projected steps, `restarts`
    /// times, keeping each example's worst case.
    Pgd,
    /// Square attack, L-inf (Andriushchenko et al. 2020): gradient-free random search over
    /// square patches of the margin loss, `queries` forward passes per example at most.
    Square,
}

/// One attack, fully specified. Build it with a constructor ([`AttackConfig::fgsm`],
/// [`AttackConfig::pgd`], ...) and adjust with the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackConfig {
    /// The method.
    pub method: Method,
    /// The threat model's norm.
    pub norm: Norm,
    /// Radius of the perturbation set, in data units (pixels in [0, 1]).
    pub eps: f32,
    /// Gradient steps per restart (BIM, PGD); 1 for FGSM and R-FGSM.
    pub steps: usize,
    /// Step size of BIM and PGD (L-inf: per pixel; L2: per example).
    pub step_size: f32,
    /// Independent random starts (PGD); each example keeps its worst case.
    pub restarts: usize,
    /// Start from a uniform point of the L-inf box (a random direction on the L2 sphere)
    /// instead of the clean input (PGD).
    pub random_start: bool,
    /// The loss the gradient attacks follow.
    pub loss: Loss,
    /// `Some(rule)` for a targeted attack.
    pub target: Option<TargetRule>,
    /// R-FGSM's random step size (default eps / 2).
    pub alpha: f32,
    /// Square attack: forward passes per example at most.
    pub queries: usize,
    /// Square attack: initial share of pixels in a square (the schedule halves it over time).
    pub p_init: f32,
    /// Seed of every random draw (random starts, R-FGSM's noise, random targets, Square).
    pub seed: u64,
    /// The data range every adversarial example is clipped to.
    pub lo: f32,
    /// Upper end of the data range.
    pub hi: f32,
}

impl AttackConfig {
    fn base(method: Method, eps: f32) -> Self {
        AttackConfig {
            method,
            norm: Norm::Linf,
            eps,
            steps: 1,
            step_size: eps,
            restarts: 1,
            random_start: false,
            loss: Loss::Xent,
            target: None,
            alpha: eps / 2.0,
            queries: 1000,
            p_init: 0.3,
            seed: 0,
            lo: 0.0,
            hi: 1.0,
        }
    }

    /// FGSM: one sign step of size eps.
    pub fn fgsm(eps: f32) -> Self {
        Self::base(Method::Fgsm, eps)
    }

    /// R-FGSM with the random step alpha = eps / 2 (change it with [`AttackConfig::with_alpha`]).
    pub fn rfgsm(eps: f32) -> Self {
        Self::base(Method::RFgsm, eps)
    }

    /// BIM / I-FGSM: `steps` projected sign steps of `step_size` from the clean input.
    pub fn bim(eps: f32, steps: usize, step_size: f32) -> Self {
        AttackConfig { steps, step_size, ..Self::base(Method::Bim, eps) }
    }

    /// PGD under L-inf with a random start and one restart, on cross-entropy.
    pub fn pgd(eps: f32, steps: usize, step_size: f32) -> Self {
        AttackConfig { steps, step_size, random_start: true, ..Self::base(Method::Pgd, eps) }
    }

    /// PGD under L2 (radius eps per example) with a random start on the sphere.
    pub fn pgd_l2(eps: f32, steps: usize, step_size: f32) -> Self {
        Self::pgd(eps, steps, step_size).with_norm(Norm::L2)
    }

    /// PGD (L-inf) on the Carlini–Wagner margin loss.
    pub fn cw(eps: f32, steps: usize, step_size: f32) -> Self {
        Self::pgd(eps, steps, step_size).with_loss(Loss::CwMargin)
    }

    /// The Square attack (L-inf) with at most `queries` forward passes per example.
    pub fn square(eps: f32, queries: usize) -> Self {
        AttackConfig { queries, ..Self::base(Method::Square, eps) }
    }

    /// Sets the norm.
    pub fn with_norm(mut self, norm: Norm) -> Self {
        self.norm = norm;
        self
    }
    /// Sets the loss.
    pub fn with_loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }
    /// Sets the number of restarts.
    pub fn with_restarts(mut self, restarts: usize) -> Self {
        self.restarts = restarts;
        self
    }
    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Makes the attack targeted, choosing targets by `rule`.
    pub fn targeted(mut self, rule: TargetRule) -> Self {
        self.target = Some(rule);
        self
    }
    /// Sets R-FGSM's random step.
    pub fn with_alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    /// Sets eps, keeping everything else (R-FGSM keeps alpha = eps / 2 if it was that).
    pub fn with_eps(mut self, eps: f32) -> Self {
        if self.alpha == self.eps / 2.0 {
            self.alpha = eps / 2.0;
        }
        if self.method == Method::Fgsm {
            self.step_size = eps;
        }
        self.eps = eps;
        self
    }
    /// Sets the number of steps.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }
    /// Sets the step size.
    pub fn with_step_size(mut self, step_size: f32) -> Self {
        self.step_size = step_size;
        self
    }
    /// Sets Square's initial patch share.
    pub fn with_p_init(mut self, p_init: f32) -> Self {
        self.p_init = p_init;
        self
    }
    /// Sets the data range (default [0, 1]).
    pub fn with_bounds(mut self, lo: f32, hi: f32) -> Self {
        self.lo = lo;
        self.hi = hi;
        self
    }

    /// A short name: `fgsm`, `rfgsm`, `bim`, `pgd`, `pgd-l2`, `cw`, `square`, with `-targeted`
    /// for targeted attacks.
    pub fn name(&self) -> String {
        let base = match (self.method, self.norm, self.loss) {
            (Method::Fgsm, Norm::L2, _) => "fgm-l2",
            (Method::Fgsm, ..) => "fgsm",
            (Method::RFgsm, ..) => "rfgsm",
            (Method::Bim, ..) => "bim",
            (Method::Pgd, Norm::Linf, Loss::CwMargin) => "cw",
            (Method::Pgd, Norm::L2, Loss::CwMargin) => "cw-l2",
            (Method::Pgd, Norm::Linf, Loss::Xent) => "pgd",
            (Method::Pgd, Norm::L2, Loss::Xent) => "pgd-l2",
            (Method::Square, ..) => "square",
        };
        if self.target.is_some() { format!("{base}-targeted") } else { base.to_string() }
    }

    /// True for the methods that take gradients (all but Square).
    pub fn uses_gradients(&self) -> bool {
        self.method != Method::Square
    }

    /// The largest meaningful eps for inputs of `features` values per example: the data
    /// range (L-inf) or the diameter of the data box (L2).
    pub fn max_eps(&self, features: usize) -> f32 {
        let range = self.hi - self.lo;
        match self.norm {
            Norm::Linf => range,
            Norm::L2 => range * (features as f32).sqrt(),
        }
    }

    /// Checks every setting for inputs of `features` values per example; errors name the
    /// setting (`eps`, `steps`, ...).
    pub fn validate(&self, features: usize) -> Result<()> {
        if !(self.lo.is_finite() && self.hi.is_finite() && self.lo < self.hi) {
            return Err(Error::invalid("bounds", format!("data range [{}, {}] is empty", self.lo, self.hi)));
        }
        let max = self.max_eps(features);
        if !self.eps.is_finite() || self.eps < 0.0 {
            return Err(Error::invalid("eps", format!("{} must be a number >= 0", self.eps)));
        }
        if self.eps > max * (1.0 + 1e-6) {
            let what = match self.norm {
                Norm::Linf => format!("the data range [{}, {}] ({max})", self.lo, self.hi),
                Norm::L2 => format!("the L2 diameter of the data box ({max:.3} for {features} values)"),
            };
            return Err(Error::invalid("eps", format!("{} is larger than {what}", self.eps)));
        }
        let iterative = matches!(self.method, Method::Bim | Method::Pgd);
        if iterative && self.steps == 0 {
            return Err(Error::invalid("steps", "must be at least 1"));
        }
        if iterative && !(self.step_size.is_finite() && self.step_size > 0.0) {
            return Err(Error::invalid("step_size", format!("{} must be a positive number", self.step_size)));
        }
        if self.restarts == 0 || self.restarts > 4096 {
            return Err(Error::invalid("restarts", format!("{} must be in 1..=4096", self.restarts)));
        }
        if self.method == Method::RFgsm {
            if self.norm != Norm::Linf {
                return Err(Error::invalid("norm", "R-FGSM is defined under L-inf only"));
            }
            if !(self.alpha.is_finite() && (0.0..=self.eps).contains(&self.alpha)) {
                return Err(Error::invalid("alpha", format!("{} must lie in [0, eps = {}]", self.alpha, self.eps)));
            }
        }
        if self.method == Method::Square {
            if self.norm != Norm::Linf {
                return Err(Error::invalid("norm", "the Square attack is implemented under L-inf only"));
            }
            if self.queries == 0 {
                return Err(Error::invalid("queries", "must be at least 1"));
            }
            if !(self.p_init > 0.0 && self.p_init <= 1.0) {
                return Err(Error::invalid("p_init", format!("{} must lie in (0, 1]", self.p_init)));
            }
        }
        if features == 0 {
            return Err(Error::invalid("input", "examples have no features"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_setting() {
        let e = AttackConfig::pgd(-0.1, 10, 0.01).validate(784).unwrap_err().to_string();
        assert!(e.starts_with("eps:"), "{e}");
        let e = AttackConfig::pgd(1.5, 10, 0.01).validate(784).unwrap_err().to_string();
        assert!(e.starts_with("eps:") && e.contains("data range"), "{e}");
        assert!(AttackConfig::pgd_l2(1.5, 10, 0.1).validate(784).is_ok());
        assert!(AttackConfig::pgd_l2(28.5, 10, 0.1).validate(784).is_err());
        let e = AttackConfig::pgd(0.3, 0, 0.01).validate(784).unwrap_err().to_string();
        assert!(e.starts_with("steps:"), "{e}");
        let e = AttackConfig::bim(0.3, 5, 0.0).validate(784).unwrap_err().to_string();
        assert!(e.starts_with("step_size:"), "{e}");
        let e = AttackConfig::pgd(0.3, 5, 0.1).with_restarts(0).validate(784).unwrap_err().to_string();
        assert!(e.starts_with("restarts:"), "{e}");
        let e = AttackConfig::rfgsm(0.3).with_alpha(0.5).validate(784).unwrap_err().to_string();
        assert!(e.starts_with("alpha:"), "{e}");
        let e = AttackConfig::square(0.3, 0).validate(784).unwrap_err().to_string();
        assert!(e.starts_with("queries:"), "{e}");
        assert!(AttackConfig::fgsm(0.0).validate(784).is_ok());
        assert!(AttackConfig::fgsm(f32::NAN).validate(784).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(AttackConfig::cw(0.3, 10, 0.01).name(), "cw");
        assert_eq!(AttackConfig::pgd_l2(2.0, 10, 0.1).name(), "pgd-l2");
        assert_eq!(AttackConfig::pgd(0.3, 10, 0.01).targeted(TargetRule::Next).name(), "pgd-targeted");
        assert_eq!(AttackConfig::rfgsm(0.3).with_eps(0.2).alpha, 0.1);
    }
}
