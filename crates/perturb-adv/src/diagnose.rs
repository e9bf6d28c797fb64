//! The gradient-masking report: a six-item checklist (after Athalye, Carlini and Wagner 2018
//! and Carlini et al. 2019, "On evaluating adversarial robustness"), each item PASS or WARN with
//! the numbers behind it, and a one-line verdict.
//!
//! 1. The iterative attack is at least as strong as the single-step one (PGD >= FGSM success),
//!    and FGSM does not see a robust model that PGD breaks (the catastrophic-overfitting
//!    signature of the training monitor).
//! 2. White-box is at least as strong as transfer and gradient-free attacks: the white-box worst
//!    case (FGSM, PGD, CW-PGD, per example) against FGSM and PGD transferred from a surrogate and
//!    the Square attack.
//! 3. An unbounded eps (the whole data box) reaches 100% success.
//! 4. Success grows monotonically with eps (FGSM and PGD) and with steps (PGD).
//! 5. Input gradients: no NaN or inf, few examples with an all-zero gradient.
//! 6. The linearity picture: the loss along the FGSM direction rises about as its first-order
//!    prediction says, does not fall back before the FGSM point, and does not rise more in the
//!    opposite direction.
//!
//! The item functions (`check_*`) are pure functions of the measured numbers, so each can be
//! tested on numbers whose answer is known; [`diagnose()`] measures them on a model.

use std::path::{Path, PathBuf};

use perturb_core::Backend;
use perturb_data::Dataset;
use perturb_nn::Model;
use serde::Serialize;
use serde_json::{Value, json};

use crate::autoattack::{AutoAttackConfig, AutoAttackReport, run_autoattack};
use crate::config::AttackConfig;
use crate::eval::{AttackSummary, Curve, accuracy_vs_eps, accuracy_vs_steps, decimal, evaluate};
use crate::linearity::{GradientStats, LinearityMetrics, LinearityScan, gradient_stats, linearity_scan};
use crate::plot::{Series, line_chart};
use crate::run::{Attack, check_compatible, run_attack};
use crate::training::monitor::{MonitorConfig, single_step_collapse};
use crate::{Error, Result};

/// PASS or WARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// No sign of gradient masking from this item.
    Pass,
    /// This item shows a sign of gradient masking.
    Warn,
}

/// One checklist item.
#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    /// 1..=6.
    pub id: u8,
    /// What the item checks.
    pub title: &'static str,
    /// The outcome.
    pub status: Status,
    /// The numbers behind it, in words.
    pub detail: String,
    /// The numbers behind it, machine-readable.
    pub numbers: Value,
}

fn item(id: u8, title: &'static str, ok: bool, detail: String, numbers: Value) -> CheckItem {
    CheckItem { id, title, status: if ok { Status::Pass } else { Status::Warn }, detail, numbers }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// Item 1: PGD's success rate is at least FGSM's (within `slack`), and FGSM does not see a
/// robust model that PGD breaks: FGSM accuracy at least 50% while PGD accuracy is below half of
/// it is the catastrophic-overfitting signature the training monitor uses
/// ([`single_step_collapse`] with the monitor's default thresholds), the classic sign that a
/// single-step attack's gradient has been masked (Tramèr et al. 2018; Wong et al. 2020).
pub fn check_iterative(fgsm_success: f64, pgd_success: f64, slack: f64) -> CheckItem {
    let stronger = pgd_success + slack >= fgsm_success;
    let (fgsm_acc, pgd_acc) = (1.0 - fgsm_success, 1.0 - pgd_success);
    let m = MonitorConfig::default();
    let collapse = single_step_collapse(fgsm_acc, pgd_acc, m.min_fgsm, m.ratio);
    let rel = if stronger { ">=" } else { "<" };
    let mut detail = format!("PGD success {} {rel} FGSM success {}", pct(pgd_success), pct(fgsm_success));
    if collapse {
        detail.push_str(&format!(
            "; single-step collapse: FGSM leaves {} accurate, PGD only {} (below {} of it)",
            pct(fgsm_acc),
            pct(pgd_acc),
            pct(m.ratio)
        ));
    }
    item(
        1,
        "iterative attack at least as strong as single-step, and no single-step collapse",
        stronger && !collapse,
        detail,
        json!({ "fgsm_success": fgsm_success, "pgd_success": pgd_success, "slack": slack,
                "collapse": collapse, "collapse_min_fgsm_accuracy": m.min_fgsm, "collapse_ratio": m.ratio }),
    )
}

/// Item 2: the white-box attacks are at least as strong as the black-box attacks they are
/// paired with: `pairs` holds (white-box name, its success, black-box name, its success). The
/// diagnosis pairs the white-box worst case (broken by any of FGSM, PGD and CW-PGD, per example)
/// with FGSM and PGD transferred from a surrogate and with the gradient-free Square attack, as
/// Carlini et al. 2019 ask: if a black-box attack beats every white-box attack, the white-box
/// attacks are not using the gradient they are given. (FGSM against transferred FGSM alone is
/// not an item: on adversarially trained MNIST models a transferred single step often beats the
/// white-box single step by a few points while PGD breaks more than both; the single-step
/// collapse that matters is item 1's.)
pub fn check_white_vs_black(pairs: &[(&str, f64, &str, f64)], slack: f64) -> CheckItem {
    let mut parts = Vec::new();
    let mut ok = true;
    let mut numbers = Vec::new();
    for &(white, ws, black, bs) in pairs {
        let fine = ws + slack >= bs;
        ok &= fine;
        let rel = if fine { ">=" } else { "<" };
        parts.push(format!("{white} {} {rel} {black} {}{}", pct(ws), pct(bs), if fine { "" } else { " (stronger!)" }));
        numbers
            .push(json!({ "white_box": white, "white_box_success": ws, "black_box": black, "black_box_success": bs }));
    }
    let detail = if parts.is_empty() { "no black-box attack was run".to_string() } else { parts.join("; ") };
    item(
        2,
        "white-box at least as strong as transfer and gradient-free",
        ok,
        detail,
        json!({ "pairs": numbers, "slack": slack }),
    )
}

/// Item 3: PGD with eps = the whole data range breaks every example.
pub fn check_unbounded(success: f64, eps: f32) -> CheckItem {
    let ok = success >= 1.0;
    item(
        3,
        "unbounded eps reaches 100% success",
        ok,
        format!("PGD at eps = {eps} (the whole box): success {}{}", pct(success), if ok { "" } else { ", not 100%" }),
        json!({ "eps": eps, "success": success }),
    )
}

/// Item 4: no curve's success rate (1 - accuracy) falls more than `slack` below its best value
/// at a smaller eps or fewer steps.
pub fn check_monotone(curves: &[Curve], slack: f64) -> CheckItem {
    let mut drops = Vec::new();
    for c in curves {
        let mut best: Option<(f64, f64)> = None;
        for (x, s) in c.success() {
            if let Some((bx, bs)) = best
                && s + slack < bs
            {
                drops.push(format!(
                    "{} success falls from {} at {} = {bx} to {} at {x}",
                    c.attack,
                    pct(bs),
                    c.x,
                    pct(s)
                ));
                continue;
            }
            if best.is_none_or(|(_, bs)| s > bs) {
                best = Some((x, s));
            }
        }
    }
    let names: Vec<String> = curves.iter().map(|c| format!("{} vs {}", c.attack, c.x)).collect();
    let ok = drops.is_empty();
    let detail = if ok { format!("monotone: {}", names.join(", ")) } else { drops.join("; ") };
    item(4, "success grows monotonically with eps and steps", ok, detail, json!({ "drops": drops, "slack": slack }))
}

/// Item 5: no NaN or inf, at most 1% of examples with an all-zero gradient.
pub fn check_gradients(s: &GradientStats) -> CheckItem {
    let ok = s.nan == 0 && s.inf == 0 && s.zero_example_share <= 0.01;
    item(
        5,
        "input gradients finite and informative",
        ok,
        format!(
            "{} of values exactly 0, {} of examples with an all-zero gradient, {} NaN, {} inf",
            pct(s.zero_share),
            pct(s.zero_example_share),
            s.nan,
            s.inf
        ),
        serde_json::to_value(s).unwrap_or(Value::Null),
    )
}

/// Item 6: along the FGSM direction the loss rises at least half as much as its first-order
/// prediction (median); it falls back before the FGSM point for at most [`MAX_NON_MONOTONE`] of
/// the examples and rises more at t = -e than at t = +e for at most [`MAX_REVERSE`]; at most half
/// the examples lack a direction. The limits sit between what this project measured on its
/// demo models at eps 0.3 (100 digits each): PGD-, fgsm-rs- and fgsm-reg-trained cnn-small
/// 13% / 5% / 2% early peaks and 1% / 2% / 0% reversed; the catastrophically overfit fgsm model
/// 30% and 17%.
pub fn check_linearity(m: &LinearityMetrics, e: f32) -> CheckItem {
    let ok = m.gain_ratio >= 0.5
        && m.non_monotone_share <= MAX_NON_MONOTONE
        && m.reverse_share <= MAX_REVERSE
        && m.no_direction_share <= 0.5;
    item(
        6,
        "loss along the FGSM direction follows its first-order prediction",
        ok,
        format!(
            "at t = {e}: actual / predicted loss rise {:.2} (median), gap to the first-order prediction {:+.3} (mean), \
             {} of examples peak before t = {e}, {} rise more at t = -{e} than at t = {e}, logit linearity R^2 {:.3}, \
             {} without a direction",
            m.gain_ratio,
            m.mean_gap,
            pct(m.non_monotone_share),
            pct(m.reverse_share),
            m.logit_r2,
            pct(m.no_direction_share)
        ),
        serde_json::to_value(m).unwrap_or(Value::Null),
    )
}

/// Item 6's limit on the share of examples whose loss peaks before the FGSM point.
pub const MAX_NON_MONOTONE: f64 = 0.2;
/// Item 6's limit on the share of examples whose loss rises more against the gradient's sign.
pub const MAX_REVERSE: f64 = 0.1;

/// What [`diagnose()`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnoseConfig {
    /// The L-inf radius under test.
    pub eps: f32,
    /// PGD steps.
    pub steps: usize,
    /// PGD step size.
    pub step_size: f32,
    /// PGD restarts.
    pub restarts: usize,
    /// Square attack queries per example.
    pub square_queries: usize,
    /// Fractions of eps at which FGSM's curve is measured (eps itself is added).
    pub fgsm_fractions: Vec<f32>,
    /// Fractions of eps at which PGD's curve is measured (eps itself is added).
    pub pgd_fractions: Vec<f32>,
    /// Step counts of PGD's curve (`steps` itself is added).
    pub steps_grid: Vec<usize>,
    /// Points of the linearity scan over [-eps, eps].
    pub linearity_points: usize,
    /// Examples in the linearity scan.
    pub linearity_examples: usize,
    /// Tolerance of the success-rate comparisons (items 1, 2, 4), as a share of examples.
    pub slack: f64,
    /// Seed of every attack.
    pub seed: u64,
    /// Examples per batch.
    pub batch_size: usize,
    /// AutoAttack's settings (`None`: not run). Only with it does the verdict call a number
    /// credible; it adds item 7 (the PGD - AutoAttack gap) and Square-5000 to item 2.
    pub autoattack: Option<AutoAttackConfig>,
}

impl Default for DiagnoseConfig {
    /// eps 0.3; PGD and CW-PGD with 50 steps of 2.5 * eps / 50 = 0.015 and 2 restarts (a
    /// white-box reference that has converged on adversarially trained MNIST models: with one
    /// restart of PGD-40 at step 0.01, Square beats it there by several points); Square with
    /// 1,000 queries; a 2-point slack.
    fn default() -> Self {
        DiagnoseConfig {
            eps: 0.3,
            steps: 50,
            step_size: 0.015,
            restarts: 2,
            square_queries: 1000,
            fgsm_fractions: (1..10).map(|k| k as f32 / 10.0).collect(),
            pgd_fractions: vec![0.25, 0.5, 0.75],
            steps_grid: vec![1, 2, 5, 10, 20],
            linearity_points: 21,
            linearity_examples: 100,
            slack: 0.02,
            seed: 0,
            batch_size: 250,
            autoattack: Some(AutoAttackConfig::standard(0.3)),
        }
    }
}

/// The report: every measurement, the checklist and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// The model's name.
    pub model: String,
    /// Examples evaluated.
    pub n: usize,
    /// The eps under test.
    pub eps: f32,
    /// Clean accuracy.
    pub clean_accuracy: f64,
    /// FGSM, PGD, CW-PGD, transferred FGSM and PGD (with a surrogate), Square and unbounded PGD.
    pub attacks: Vec<AttackSummary>,
    /// Share correct clean and under every attack but the unbounded one.
    pub worst_case_accuracy: f64,
    /// Accuracy vs eps (FGSM, PGD) and vs steps (PGD).
    pub curves: Vec<Curve>,
    /// Input-gradient counts.
    pub gradients: GradientStats,
    /// The linearity picture.
    pub linearity: LinearityScan,
    /// The six masking items, and item 7 (PGD vs AutoAttack) when AutoAttack ran.
    pub items: Vec<CheckItem>,
    /// True when any of the masking items 1-6 warns.
    pub masking_suspected: bool,
    /// True when item 7 warns: PGD's accuracy is more than the slack above AutoAttack's, so the
    /// PGD number is too optimistic even where no other sign of masking shows.
    pub pgd_overestimates: bool,
    /// One line.
    pub verdict: String,
    /// The AutoAttack-standard run, when it was part of the checklist.
    pub autoattack: Option<AutoAttackReport>,
}

/// Item 7: PGD's accuracy is no more than `slack` above AutoAttack's (a larger gap means the
/// white-box attack the other items rest on is too weak on this model).
pub fn check_pgd_vs_autoattack(pgd_accuracy: f64, autoattack_accuracy: f64, slack: f64) -> CheckItem {
    let gap = pgd_accuracy - autoattack_accuracy;
    let ok = gap <= slack;
    item(
        7,
        "PGD close to AutoAttack",
        ok,
        format!(
            "PGD {} vs AutoAttack-standard {}: gap {:.1} points{}",
            pct(pgd_accuracy),
            pct(autoattack_accuracy),
            gap * 100.0,
            if ok { "" } else { " (PGD overestimates robustness)" }
        ),
        json!({ "pgd_accuracy": pgd_accuracy, "autoattack_accuracy": autoattack_accuracy, "gap": gap, "slack": slack }),
    )
}

/// The verdict line for a checklist. A number is called credible only when AutoAttack ran
/// (`autoattack` = its accuracy) and no item warns. A warning from item 7 alone (PGD above
/// AutoAttack, no other symptom) names AutoAttack's accuracy as the number to report.
pub fn verdict(items: &[CheckItem], autoattack: Option<f64>, pgd_accuracy: f64, worst_case: f64) -> String {
    let warned: Vec<u8> = items.iter().filter(|i| i.status == Status::Warn).map(|i| i.id).collect();
    let masking: Vec<String> = warned.iter().filter(|&&id| id != 7).map(|id| id.to_string()).collect();
    if !masking.is_empty() {
        return format!(
            "WARN: gradient masking suspected (item{} {}); trust the worst case over all attacks ({}), not a single white-box number",
            if masking.len() > 1 { "s" } else { "" },
            masking.join(", "),
            pct(worst_case)
        );
    }
    match autoattack {
        Some(aa) if warned.contains(&7) => format!(
            "WARN: PGD overestimates robustness by {:.1} points (item 7: PGD {} vs AutoAttack-standard {}); no other \
             sign of gradient masking; report the AutoAttack accuracy, or the worst case over all attacks ({}), \
             not PGD's",
            (pgd_accuracy - aa) * 100.0,
            pct(pgd_accuracy),
            pct(aa),
            pct(worst_case)
        ),
        Some(aa) => format!(
            "PASS: no sign of gradient masking; the AutoAttack-standard accuracy ({}) is a credible robustness \
             estimate (PGD: {})",
            pct(aa),
            pct(pgd_accuracy)
        ),
        None => format!(
            "PASS on the checks run, but AutoAttack was not run: PGD's {} is an upper bound, not yet a credible \
             estimate (run with AutoAttack)",
            pct(pgd_accuracy)
        ),
    }
}

fn grid(fractions: &[f32], eps: f32) -> Vec<f32> {
    fractions.iter().map(|f| f * eps).filter(|&e| e > 0.0 && e < eps).collect()
}

/// Runs the checklist on `model` over `data`. `surrogate` (same input shape and classes) gives
/// item 2 its transfer attack; without it only the gradient-free attack is compared.
pub fn diagnose<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    surrogate: Option<&Model<B>>,
    cfg: &DiagnoseConfig,
) -> Result<Diagnosis> {
    if let Some(s) = surrogate {
        check_compatible(model, s)?;
    }
    let bs = cfg.batch_size;
    let fgsm = AttackConfig::fgsm(cfg.eps).with_seed(cfg.seed);
    let pgd = AttackConfig::pgd(cfg.eps, cfg.steps, cfg.step_size).with_restarts(cfg.restarts).with_seed(cfg.seed);
    let square = AttackConfig::square(cfg.eps, cfg.square_queries).with_seed(cfg.seed);
    let cw = AttackConfig::cw(cfg.eps, cfg.steps, cfg.step_size).with_restarts(cfg.restarts).with_seed(cfg.seed);
    let mut attacks = vec![
        ("fgsm".to_string(), Attack::new(fgsm.clone())),
        ("pgd".to_string(), Attack::new(pgd.clone())),
        ("cw".to_string(), Attack::new(cw)),
    ];
    if let Some(s) = surrogate {
        attacks.push(("transfer-fgsm".to_string(), Attack::transfer(fgsm.clone(), s)));
        attacks.push(("transfer".to_string(), Attack::transfer(pgd.clone(), s)));
    }
    attacks.push(("square".to_string(), Attack::new(square)));
    let (mut report, runs) = evaluate(b, model, data, &attacks, bs)?;
    // Item 2's white-box reference: per example, broken by any of FGSM, PGD and CW-PGD.
    let mut white: Vec<bool> = runs.iter().take(3).fold(vec![false; data.len()], |mut acc, r| {
        acc.iter_mut().zip(&r.correct).for_each(|(a, &c)| *a |= !c);
        acc
    });
    let white_s = white.iter().filter(|&&w| w).count() as f64 / data.len().max(1) as f64;
    let aa = match &cfg.autoattack {
        Some(aa_cfg) => {
            let aa_cfg = AutoAttackConfig { eps: cfg.eps, batch_size: bs, ..aa_cfg.clone() };
            Some(run_autoattack(b, model, data, &aa_cfg, &mut |_| {})?)
        }
        None => None,
    };
    let share = |v: &[bool]| v.iter().filter(|&&w| w).count() as f64 / data.len().max(1) as f64;
    // With AutoAttack: its gradient attacks join the white-box side of item 2, and Square-5000
    // (run on the points they all left) is compared with them; the worst case includes it.
    let mut aa_pair = None;
    if let Some(aa) = &aa {
        let square = aa.report.stages.iter().position(|s| s.name == "square");
        for (w, by) in white.iter_mut().zip(&aa.broken_by) {
            *w |= by.is_some() && *by != square;
        }
        let with_square: Vec<bool> = white.iter().zip(&aa.broken_by).map(|(&w, by)| w || by.is_some()).collect();
        aa_pair = Some((share(&white), share(&with_square)));
        let all = runs.iter().fold(aa.robust.clone(), |mut acc, r| {
            acc.iter_mut().zip(&r.correct).for_each(|(a, &c)| *a &= c);
            acc
        });
        report.worst_case_accuracy = share(&all);
    }
    let success = |name: &str| report.attacks.iter().find(|a| a.name == name).map(|a| 1.0 - a.accuracy);
    let missing = || Error::Mismatch("an attack of the checklist did not run".into());
    let (fgsm_s, pgd_s) = (success("fgsm").ok_or_else(missing)?, success("pgd").ok_or_else(missing)?);

    // Item 3: the whole box, with Madry's step rule 2.5 * eps / steps.
    let range = pgd.hi - pgd.lo;
    let unbounded_cfg = pgd.clone().with_eps(range).with_step_size(2.5 * range / cfg.steps as f32);
    let unbounded = run_attack(b, model, &Attack::new(unbounded_cfg), data, bs)?;

    // Item 4: curves, each ending at the point already measured.
    let clean_point = (0.0, report.clean_accuracy);
    let mut fgsm_curve =
        accuracy_vs_eps(b, model, data, "fgsm", &Attack::new(fgsm), &grid(&cfg.fgsm_fractions, cfg.eps), bs)?;
    let mut pgd_curve =
        accuracy_vs_eps(b, model, data, "pgd", &Attack::new(pgd.clone()), &grid(&cfg.pgd_fractions, cfg.eps), bs)?;
    for (c, s) in [(&mut fgsm_curve, fgsm_s), (&mut pgd_curve, pgd_s)] {
        c.points.insert(0, clean_point);
        c.points.push((decimal(cfg.eps), 1.0 - s));
    }
    let steps: Vec<usize> = cfg.steps_grid.iter().copied().filter(|&k| k > 0 && k < cfg.steps).collect();
    let mut steps_curve = accuracy_vs_steps(b, model, data, "pgd", &Attack::new(pgd), &steps, bs)?;
    steps_curve.points.push((cfg.steps as f64, 1.0 - pgd_s));

    let gradients = gradient_stats(b, model, data, data.len(), bs)?;
    let linearity = linearity_scan(b, model, data, cfg.eps, cfg.linearity_points, cfg.linearity_examples, bs)?;

    let curves = vec![fgsm_curve, pgd_curve, steps_curve];
    let mut pairs = Vec::new();
    if let (Some(t1), Some(tk)) = (success("transfer-fgsm"), success("transfer")) {
        pairs.push(("white-box", white_s, "transferred FGSM", t1));
        pairs.push(("white-box", white_s, "transferred PGD", tk));
    }
    if let Some(sq) = success("square") {
        pairs.push(("white-box", white_s, "Square", sq));
    }
    if let Some((w, with_square)) = aa_pair {
        pairs.push(("white-box with APGD-CE, APGD-T, FAB-T", w, "the same plus Square-5000", with_square));
    }
    let mut items = vec![
        check_iterative(fgsm_s, pgd_s, cfg.slack),
        check_white_vs_black(&pairs, cfg.slack),
        check_unbounded(1.0 - unbounded.accuracy, unbounded.config.eps),
        check_monotone(&curves, cfg.slack),
        check_gradients(&gradients),
        check_linearity(&linearity.metrics, cfg.eps),
    ];
    let pgd_acc = 1.0 - pgd_s;
    if let Some(aa) = &aa {
        items.push(check_pgd_vs_autoattack(pgd_acc, aa.report.robust_accuracy, cfg.slack));
    }
    let aa_acc = aa.as_ref().map(|r| r.report.robust_accuracy);
    let verdict = verdict(&items, aa_acc, pgd_acc, report.worst_case_accuracy);
    let mut attacks = report.attacks;
    attacks.push(AttackSummary::of("pgd-unbounded", &unbounded));
    Ok(Diagnosis {
        model: model.name().to_string(),
        n: report.n,
        eps: cfg.eps,
        clean_accuracy: report.clean_accuracy,
        attacks,
        worst_case_accuracy: report.worst_case_accuracy,
        curves,
        gradients,
        linearity,
        masking_suspected: items.iter().any(|i| i.status == Status::Warn && i.id != 7),
        pgd_overestimates: items.iter().any(|i| i.status == Status::Warn && i.id == 7),
        items,
        verdict,
        autoattack: aa.map(|r| r.report),
    })
}

impl Diagnosis {
    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The checklist as text, one line per item, then the verdict.
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "gradient-masking report: {} on {} examples, eps {} (L-inf)\nclean {}",
            self.model,
            self.n,
            self.eps,
            pct(self.clean_accuracy)
        );
        for a in &self.attacks {
            s += &format!("  {} {}", a.name, pct(a.accuracy));
        }
        if let Some(aa) = &self.autoattack {
            s += &format!("  autoattack {}", pct(aa.robust_accuracy));
        }
        s += &format!("  worst case {}\n", pct(self.worst_case_accuracy));
        for i in &self.items {
            let st = if i.status == Status::Pass { "PASS" } else { "WARN" };
            s += &format!("{}. {st}  {}: {}\n", i.id, i.title, i.detail);
        }
        s + &format!("verdict: {}\n", self.verdict)
    }

    /// Writes `diagnosis.json` and the PNGs (accuracy vs eps, vs steps, the linearity picture's
    /// logits and loss) into `dir` (created if needed); returns the paths written.
    pub fn write_report(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let mut written = Vec::new();
        let p = dir.join("accuracy_vs_eps.png");
        let eps_series: Vec<Series> = self
            .curves
            .iter()
            .filter(|c| c.x == "eps")
            .map(|c| Series::line(c.attack.clone(), c.points.clone()))
            .collect();
        line_chart(
            &p,
            &format!("{}: accuracy vs eps", self.model),
            "eps (L-inf)",
            "accuracy",
            &eps_series,
            Some((0.0, 1.0)),
        )?;
        written.push(p);
        let p = dir.join("accuracy_vs_steps.png");
        let steps_series: Vec<Series> = self
            .curves
            .iter()
            .filter(|c| c.x == "steps")
            .map(|c| Series::line(format!("{} eps={}", c.attack, self.eps), c.points.clone()))
            .collect();
        line_chart(
            &p,
            &format!("{}: accuracy vs PGD steps", self.model),
            "steps",
            "accuracy",
            &steps_series,
            Some((0.0, 1.0)),
        )?;
        written.push(p);
        written.extend(write_linearity(&self.linearity, &self.model, dir)?);
        let p = dir.join("diagnosis.json");
        let text = serde_json::to_string_pretty(&self.to_json())?;
        perturb_nn::write_atomic(&p, text.as_bytes()).map_err(|source| Error::Io { path: p.clone(), source })?;
        written.push(p);
        Ok(written)
    }
}

/// The linearity picture: `linearity_logits.png` (one example's logits along the FGSM
/// direction) and `linearity_loss.png` (mean loss and its first-order prediction).
pub fn write_linearity(scan: &LinearityScan, model: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let classes = scan.showcase_logits.first().map_or(0, |z| z.len());
    let series: Vec<Series> = (0..classes)
        .map(|k| {
            let pts = scan.t.iter().zip(&scan.showcase_logits).map(|(&t, z)| (t, z[k] as f64)).collect();
            let name = if k as u32 == scan.showcase_label { format!("{k} (label)") } else { k.to_string() };
            Series::line(name, pts)
        })
        .collect();
    let p1 = dir.join("linearity_logits.png");
    let title = format!("{model}: logits along sign(grad), one example");
    line_chart(&p1, &title, "t (x = x0 + t * sign(grad))", "logit", &series, None)?;
    let p2 = dir.join("linearity_loss.png");
    let series = vec![
        Series::line("cross-entropy", scan.t.iter().copied().zip(scan.mean_loss.iter().copied()).collect()),
        Series::dashed(
            "first-order prediction",
            scan.t.iter().copied().zip(scan.mean_first_order.iter().copied()).collect(),
        ),
    ];
    let title = format!("{model}: mean loss along sign(grad), {} examples", scan.examples);
    line_chart(&p2, &title, "t", "loss", &series, None)?;
    Ok(vec![p1, p2])
}
