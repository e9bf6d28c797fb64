//! Learning-rate schedules, evaluated per optimiser step (for per-epoch schedules pass
//! steps = epochs * steps per epoch).

use crate::{Error, Result};

/// A learning rate as a function of the step index (0 for the first step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// The same rate throughout.
    Constant {
        /// The rate.
        lr: f32,
    },
    /// `lr * gamma^(step / every)`: multiplied by `gamma` every `every` steps.
    Step {
        /// The initial rate.
        lr: f32,
        /// The factor applied every `every` steps.
        gamma: f32,
        /// Steps between decays.
        every: u64,
    },
    /// One cycle as in fast adversarial training (Wong et al. 2020): linear from 0 up to
    /// `max_lr` at `peak_frac * total` steps, then linear down to 0 at `total`. Step `i` uses
    /// the rate at progress `i + 1` (the end of the step, as their per-iteration schedule),
    /// so the first step's rate is above 0 and the last one's is 0.
    OneCycle {
        /// The peak rate.
        max_lr: f32,
        /// Steps in the whole run.
        total: u64,
        /// Where the peak lies, as a fraction of `total` (0.4 in fast adversarial training).
        peak_frac: f32,
    },
}

impl LrSchedule {
    /// One cycle peaking at 2/5 of training, as in fast adversarial training.
    pub fn one_cycle(max_lr: f32, total: u64) -> Self {
        LrSchedule::OneCycle { max_lr, total, peak_frac: 0.4 }
    }

    /// Checks the settings (finite non-negative rates, `every` and `total` > 0,
    /// 0 < peak_frac < 1).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Optim(format!("learning-rate schedule: {m}")));
        let rate_ok = |r: f32| r.is_finite() && r >= 0.0;
        match *self {
            LrSchedule::Constant { lr } if !rate_ok(lr) => bad(format!("lr = {lr} must be finite and >= 0")),
            LrSchedule::Step { lr, gamma, every } if !rate_ok(lr) || !rate_ok(gamma) || every == 0 => {
                bad(format!("lr = {lr}, gamma = {gamma}, every = {every}: need lr, gamma >= 0 and every > 0"))
            }
            LrSchedule::OneCycle { max_lr, total, peak_frac }
                if !rate_ok(max_lr) || total == 0 || !(peak_frac > 0.0 && peak_frac < 1.0) =>
            {
                bad(format!(
                    "max_lr = {max_lr}, total = {total}, peak_frac = {peak_frac}: need max_lr >= 0, total > 0, 0 < peak_frac < 1"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The rate for step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f32 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::Step { lr, gamma, every } => {
                let k = (step / every.max(1)).min(i32::MAX as u64) as i32;
                (lr as f64 * (gamma as f64).powi(k)) as f32
            }
            LrSchedule::OneCycle { max_lr, total, peak_frac } => {
                let t = (step + 1).min(total) as f64;
                let peak = peak_frac as f64 * total as f64;
                let f = if t <= peak { t / peak } else { (total as f64 - t) / (total as f64 - peak) };
                (max_lr as f64 * f.clamp(0.0, 1.0)) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(LrSchedule::Constant { lr: 0.1 }.lr_at(1000), 0.1);
        let s = LrSchedule::Step { lr: 1.0, gamma: 0.1, every: 10 };
        assert_eq!(s.lr_at(9), 1.0);
        assert!((s.lr_at(10) - 0.1).abs() < 1e-7);
        assert!((s.lr_at(25) - 0.01).abs() < 1e-8);
        let c = LrSchedule::one_cycle(0.2, 100);
        c.validate().unwrap();
        assert!((c.lr_at(39) - 0.2).abs() < 1e-6, "peak at 40% of training");
        assert!((c.lr_at(19) - 0.1).abs() < 1e-6, "half way up");
        assert!((c.lr_at(69) - 0.1).abs() < 1e-6, "half way down");
        assert!(c.lr_at(0) > 0.0);
        assert_eq!(c.lr_at(99), 0.0);
        assert_eq!(c.lr_at(500), 0.0);
        // Monotone up, then down.
        let v: Vec<f32> = (0..100).map(|i| c.lr_at(i)).collect();
        assert!(v[..40].windows(2).all(|w| w[0] <= w[1]) && v[39..].windows(2).all(|w| w[0] >= w[1]));
        assert!(LrSchedule::OneCycle { max_lr: 0.1, total: 10, peak_frac: 1.5 }.validate().is_err());
        assert!(LrSchedule::Step { lr: 0.1, gamma: 0.5, every: 0 }.validate().is_err());
        assert!(LrSchedule::Constant { lr: f32::NAN }.validate().is_err());
    }
}
