//! AutoAttack (Croce & Hein, ICML 2020), the field's reference evaluation, in its "standard"
//! version: APGD-CE, APGD-T (targeted DLR, 9 targets), FAB-T (9 targets) and Square with
//! 5,000 queries, run in that order, each only on the points every earlier attack failed on.
//! A point counts as broken only when the model, run again on the returned point, misclassifies
//! it and the point lies in the eps-ball and the data range (checked in f32 with the reference's
//! tolerance, 1e-5); a returned point outside them is an error, never a number.
//!
//! The reference's automatic checks run too and land in [`AutoAttackReport::flags`]: logits
//! that differ across two forward passes of the same input (a randomised defence: use EOT),
//! outputs that look like probabilities (rows in [0, 1] summing to 1: attacks need logits),
//! inputs whose gradient is exactly zero, and Square breaking points every gradient attack
//! failed on (a sign of gradient masking).

pub mod apgd;
pub mod fab;
pub mod losses;

use std::time::Instant;

use perturb_core::{Backend, Shape};
use perturb_data::Dataset;
use perturb_nn::Model;
use serde::Serialize;

use crate::attack::BatchOutcome;
use crate::config::{AttackConfig, Norm};
use crate::grad::{argmax, logits_loss_grad};
use crate::run::{check_data, logits};
use crate::square::square_batch;
use crate::{Error, Result};
use apgd::{ApgdConfig, ApgdLoss, apgd_batch};
use fab::{FabConfig, fab_targeted_batch};

/// The reference's tolerance on the eps-ball check of returned points.
pub const BALL_TOLERANCE: f32 = 1e-5;

/// The suites `perturb eval --suite` knows.
pub const SUITES: &[&str] = &["autoattack", "standard"];

/// The settings of an AutoAttack-standard run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoAttackConfig {
    /// Radius of the L-inf ball.
    pub eps: f32,
    /// Seed of every random draw (APGD's starts, Square's search).
    pub seed: u64,
    /// Target classes of APGD-T and FAB-T: the 2nd..(n+1)th largest clean logits (9; at most
    /// classes - 1).
    pub n_target_classes: usize,
    /// APGD iterations (100).
    pub apgd_iter: usize,
    /// FAB iterations (100).
    pub fab_iter: usize,
    /// Square's query budget (5,000).
    pub square_queries: usize,
    /// Square's initial patch share (0.8).
    pub square_p_init: f32,
    /// Examples per batch.
    pub batch_size: usize,
    /// Lower end of the data range.
    pub lo: f32,
    /// Upper end of the data range.
    pub hi: f32,
}

impl AutoAttackConfig {
    /// The standard version's settings for `eps`.
    pub fn standard(eps: f32) -> Self {
        AutoAttackConfig {
            eps,
            seed: 0,
            n_target_classes: 9,
            apgd_iter: 100,
            fab_iter: 100,
            square_queries: 5000,
            square_p_init: 0.8,
            batch_size: 500,
            lo: 0.0,
            hi: 1.0,
        }
    }

    /// The settings for a suite name of [`SUITES`]; an unknown name is an error listing them.
    pub fn for_suite(name: &str, eps: f32) -> Result<Self> {
        match name {
            "autoattack" | "standard" => Ok(Self::standard(eps)),
            other => Err(Error::invalid("suite", format!("unknown suite '{other}'; known: {}", SUITES.join(", ")))),
        }
    }

    /// Checks every setting for a model with `classes` outputs and `features` inputs.
    pub fn validate(&self, classes: usize, features: usize) -> Result<()> {
        AttackConfig::square(self.eps, self.square_queries.max(1))
            .with_bounds(self.lo, self.hi)
            .with_p_init(self.square_p_init)
            .validate(features)?;
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        if self.n_target_classes == 0 || self.n_target_classes + 1 > classes {
            return Err(Error::invalid(
                "n_target_classes",
                format!("{} must lie in 1..={} for a model with {classes} classes", self.n_target_classes, classes - 1),
            ));
        }
        if self.apgd_iter == 0 || self.fab_iter == 0 || self.square_queries == 0 {
            return Err(Error::invalid("iterations", "APGD, FAB and Square need at least one iteration each"));
        }
        if classes < 4 {
            return Err(Error::invalid(
                "classes",
                format!("APGD-T's targeted DLR needs 4 classes; the model has {classes}"),
            ));
        }
        Ok(())
    }
}

/// One attack of the suite.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// `apgd-ce`, `apgd-t`, `fab-t` or `square`.
    pub name: String,
    /// Points it ran on (those still robust when it started; per target for the targeted ones,
    /// the count at its start).
    pub attacked: usize,
    /// Points it broke.
    pub broken: usize,
    /// Robust accuracy over all points after it.
    pub robust_accuracy: f64,
    /// Wall time.
    pub seconds: f64,
}

/// The result of an AutoAttack run.
#[derive(Debug, Clone, Serialize)]
pub struct AutoAttackReport {
    /// `standard`.
    pub version: String,
    /// The settings.
    pub config: AutoAttackConfig,
    /// Examples evaluated.
    pub n: usize,
    /// Clean accuracy.
    pub clean_accuracy: f64,
    /// Accuracy after every attack: the per-example worst case of the suite.
    pub robust_accuracy: f64,
    /// One line per attack, in the order run.
    pub stages: Vec<StageReport>,
    /// The largest L-inf distance of a returned point from its clean image.
    pub max_linf: f32,
    /// The reference's automatic checks that fired, as sentences (empty: none).
    pub flags: Vec<String>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// What a progress callback is told after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The attack running.
    pub stage: &'a str,
    /// Points of this stage done.
    pub done: usize,
    /// Points of this stage in all.
    pub total: usize,
    /// Points still robust over the whole set.
    pub robust: usize,
}

/// What [`run_autoattack`] returns.
#[derive(Debug, Clone)]
pub struct AutoAttackOutcome {
    /// The numbers.
    pub report: AutoAttackReport,
    /// The adversarial examples, [n, c, h, w]: the clean image where no attack succeeded.
    pub adv: Vec<f32>,
    /// Per example: correct clean and under every attack of the suite.
    pub robust: Vec<bool>,
    /// Per example: the index in `report.stages` of the attack that broke it (`None`: not
    /// broken, or misclassified clean).
    pub broken_by: Vec<Option<usize>>,
}

/// Runs AutoAttack-standard on `data`; `progress` is called after every batch.
pub fn run_autoattack<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    cfg: &AutoAttackConfig,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<AutoAttackOutcome> {
    check_data(model, data)?;
    let k = model.classes();
    let d = data.image_len();
    cfg.validate(k, d)?;
    let t0 = Instant::now();
    let n = data.len();
    let labels: Vec<u32> = data.labels.iter().map(|&l| u32::from(l)).collect();
    let mut clean_logits = Vec::with_capacity(n * k);
    for start in (0..n).step_by(cfg.batch_size) {
        let end = (start + cfg.batch_size).min(n);
        clean_logits.extend(logits(b, model, &data.images[start * d..end * d])?);
    }
    let mut robust: Vec<bool> = (0..n).map(|i| argmax(&clean_logits[i * k..(i + 1) * k]) == labels[i]).collect();
    let clean_accuracy = share(&robust);
    let mut broken_by = vec![None; n];
    let mut flags = checks(b, model, data, &clean_logits, &labels, cfg)?;
    let mut adv = data.images.clone();
    let mut stages = Vec::new();
    let ranks: Vec<usize> = (2..cfg.n_target_classes + 2).collect();

    let mut ctx = Ctx { b, model, data, cfg, labels: &labels, d, broken_by: &mut broken_by, stage: 0 };
    let apgd_ce = ApgdConfig {
        n_iter: cfg.apgd_iter,
        seed: cfg.seed,
        lo: cfg.lo,
        hi: cfg.hi,
        ..ApgdConfig::new(Norm::Linf, cfg.eps, ApgdLoss::Xent)
    };
    stages.push(ctx.stage("apgd-ce", &[0], &mut robust, &mut adv, progress, &|x, y, _, first| {
        apgd_batch(b, model, &apgd_ce, x, y, None, first)
    })?);
    let apgd_t = ApgdConfig { loss: ApgdLoss::DlrTargeted, ..apgd_ce.clone() };
    stages.push(ctx.stage("apgd-t", &ranks, &mut robust, &mut adv, progress, &|x, y, t, first| {
        apgd_batch(b, model, &apgd_t, x, y, Some(t), first)
    })?);
    let fab_cfg = FabConfig {
        n_iter: cfg.fab_iter,
        n_target_classes: cfg.n_target_classes,
        seed: cfg.seed,
        lo: cfg.lo,
        hi: cfg.hi,
        ..FabConfig::standard(cfg.eps)
    };
    stages.push(ctx.stage("fab-t", &ranks, &mut robust, &mut adv, progress, &|x, y, t, first| {
        fab_targeted_batch(b, model, &fab_cfg, x, y, t, first)
    })?);
    let square = AttackConfig::square(cfg.eps, cfg.square_queries)
        .with_p_init(cfg.square_p_init)
        .with_seed(cfg.seed)
        .with_bounds(cfg.lo, cfg.hi);
    let white_box_robust = robust.iter().filter(|&&r| r).count();
    stages.push(ctx.stage("square", &[0], &mut robust, &mut adv, progress, &|x, y, _, first| {
        square_batch(b, model, &square, x, y, first)
    })?);
    let square_broke = white_box_robust - robust.iter().filter(|&&r| r).count();
    if square_broke > 0 {
        flags.push(format!(
            "Square (no gradients) broke {square_broke} points that APGD-CE, APGD-T and FAB-T failed on: the \
             gradients may be masked"
        ));
    }
    // Every returned point: in the ball and the data range.
    let mut max_linf = 0f32;
    for (i, (a, x)) in adv.chunks_exact(d).zip(data.images.chunks_exact(d)).enumerate() {
        let linf = a.iter().zip(x).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        max_linf = max_linf.max(linf);
        if linf > cfg.eps + BALL_TOLERANCE || a.iter().any(|v| !(cfg.lo..=cfg.hi).contains(v)) {
            return Err(Error::Mismatch(format!(
                "autoattack: example {i} was returned {linf} from its clean image (eps {}) or outside [{}, {}]",
                cfg.eps, cfg.lo, cfg.hi
            )));
        }
    }
    let report = AutoAttackReport {
        version: "standard".into(),
        config: cfg.clone(),
        n,
        clean_accuracy,
        robust_accuracy: share(&robust),
        stages,
        max_linf,
        flags,
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok(AutoAttackOutcome { report, adv, robust, broken_by })
}

type Runner<'r> = dyn Fn(&[f32], &[u32], &[u32], usize) -> Result<BatchOutcome> + Sync + 'r;

struct Ctx<'a, B: Backend> {
    b: &'a B,
    model: &'a Model<B>,
    data: &'a Dataset,
    cfg: &'a AutoAttackConfig,
    labels: &'a [u32],
    d: usize,
    broken_by: &'a mut [Option<usize>],
    /// The index of the next stage.
    stage: usize,
}

impl<B: Backend> Ctx<'_, B> {
    /// Runs one attack, once per target rank (`ranks`: 0 for untargeted; r for the r-th largest
    /// clean logit), on the points still robust, in batches; marks as broken the points whose
    /// returned image the model misclassifies when run again and that lie in the ball.
    fn stage(
        &mut self,
        name: &str,
        ranks: &[usize],
        robust: &mut [bool],
        adv: &mut [f32],
        progress: &mut dyn FnMut(Progress<'_>),
        run: &Runner<'_>,
    ) -> Result<StageReport> {
        let t0 = Instant::now();
        let (d, k, cfg) = (self.d, self.model.classes(), self.cfg);
        let attacked = robust.iter().filter(|&&r| r).count();
        let mut broken = 0;
        let total = attacked * ranks.len();
        let mut done = 0;
        for &rank in ranks {
            let todo: Vec<usize> = (0..robust.len()).filter(|&i| robust[i]).collect();
            for (c, chunk) in todo.chunks(cfg.batch_size).enumerate() {
                let x: Vec<f32> = chunk.iter().flat_map(|&i| self.data.image(i).iter().copied()).collect();
                let y: Vec<u32> = chunk.iter().map(|&i| self.labels[i]).collect();
                let t: Vec<u32> = if rank == 0 {
                    y.clone()
                } else {
                    let clean = logits(self.b, self.model, &x)?;
                    clean.chunks_exact(k).map(|row| losses::order_desc(row)[rank - 1] as u32).collect()
                };
                // Random streams are keyed by the point's place among those attacked and the
                // target, so they do not depend on the batch size.
                // Split into sub-batches run at once; a sub-batch starts at point `first + a`.
                let first = c * cfg.batch_size + (rank << 32);
                let out =
                    BatchOutcome::in_parts(chunk.len(), &mut vec![(); self.b.concurrent_batches()], |_, a, e| {
                        run(&x[a * d..e * d], &y[a..e], &t[a..e], first + a)
                    })?;
                let pred: Vec<u32> = logits(self.b, self.model, &out.adv)?.chunks_exact(k).map(argmax).collect();
                for (j, &i) in chunk.iter().enumerate() {
                    let a = &out.adv[j * d..(j + 1) * d];
                    let linf = a.iter().zip(self.data.image(i)).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                    let inside = linf <= cfg.eps + BALL_TOLERANCE && a.iter().all(|v| (cfg.lo..=cfg.hi).contains(v));
                    if pred[j] != y[j] && inside {
                        robust[i] = false;
                        self.broken_by[i] = Some(self.stage);
                        broken += 1;
                        adv[i * d..(i + 1) * d].copy_from_slice(a);
                    }
                }
                done += chunk.len();
                let left = robust.iter().filter(|&&r| r).count();
                progress(Progress { stage: name, done, total, robust: left });
            }
        }
        self.stage += 1;
        Ok(StageReport {
            name: name.to_string(),
            attacked,
            broken,
            robust_accuracy: share(robust),
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// The reference's checks before the attacks: randomness, probabilities for logits, zero
/// gradients (on the first batch).
fn checks<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    clean_logits: &[f32],
    labels: &[u32],
    cfg: &AutoAttackConfig,
) -> Result<Vec<String>> {
    let (k, d) = (model.classes(), data.image_len());
    let m = data.len().min(cfg.batch_size);
    let x = &data.images[..m * d];
    let mut flags = Vec::new();
    let again = logits(b, model, x)?;
    if again.iter().zip(clean_logits).any(|(a, c)| (a - c).abs() > 1e-7 * c.abs().max(1.0)) {
        flags.push(
            "the logits differ across two forward passes of the same inputs: the model looks randomised, \
             and AutoAttack's numbers need EOT"
                .into(),
        );
    }
    if looks_like_probabilities(clean_logits, k) {
        flags.push(
            "every output row lies in [0, 1] and sums to 1: the model seems to return probabilities, but the \
             attacks need logits"
                .into(),
        );
    }
    let xt = b.upload_f32(x, &Shape::from([m, data.channels, data.height, data.width]))?;
    let (_, _, g) = logits_loss_grad(b, model, &xt, |i, z, dz| losses::xent(z, labels[i] as usize, dz))?;
    let g = b.download_f32(&g)?;
    let zero = g.chunks_exact(d).filter(|row| row.iter().all(|&v| v == 0.0)).count();
    if zero > 0 {
        flags.push(format!(
            "{zero} of {m} inputs checked have an exactly zero cross-entropy gradient: gradient attacks cannot \
             move them (gradient masking?)"
        ));
    }
    Ok(flags)
}

/// Whether every row of `out` ([n, k]) lies in [0, 1] and sums to 1 within 1e-5 (the
/// reference's test for a model that returns softmax outputs).
pub fn looks_like_probabilities(out: &[f32], k: usize) -> bool {
    !out.is_empty()
        && out.chunks_exact(k).all(|row| {
            row.iter().all(|v| (0.0..=1.0).contains(v))
                && (row.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-5
        })
}

fn share(v: &[bool]) -> f64 {
    v.iter().filter(|&&c| c).count() as f64 / v.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_look_like_probabilities_and_logits_do_not() {
        assert!(looks_like_probabilities(&[0.2, 0.8, 1.0, 0.0], 2));
        // Logits: outside [0, 1], or not summing to 1.
        assert!(!looks_like_probabilities(&[2.0, -1.0, 0.5, 0.5], 2));
        assert!(!looks_like_probabilities(&[0.2, 0.7, 0.5, 0.5], 2));
        // One logit-like row is enough to call the whole output logits.
        assert!(!looks_like_probabilities(&[0.5, 0.5, 0.3, 0.3], 2));
        assert!(!looks_like_probabilities(&[], 2));
    }
}
