//! APGD (Croce & Hein, ICML 2020, Algorithm 1): PGD with momentum and a step size that adapts
//! per example, under L-inf or L2, on cross-entropy, DLR or targeted DLR.
//!
//! Per example: start at x_0 = clip(x + eps * t / ||t||) (t uniform in [-1, 1]^d under L-inf,
//! normalised by its largest entry; standard normal under L2), step 2 eps. Each iteration takes
//! z = P(x_k + eta * s(g)) (s = sign under L-inf, g / ||g||_2 under L2) and
//! x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})), a = 1 on the first step and 0.75
//! after, P the projection onto the eps-ball intersected with [lo, hi]. At the checkpoints of
//! [`checkpoints`] the step of an example is halved, and its iterate and gradient reset to its
//! best point, when at most 75% of the steps since the last checkpoint raised its loss, or when
//! its step was not halved at the last checkpoint and its best loss did not improve since.
//! Every iterate the model misclassifies is kept: the attack returns the last misclassified
//! iterate (broken at step 12 stays broken), and the highest-loss point for examples it did not
//! break.
//!
//! Steps, projections and the bookkeeping run on the host (n * d values per step, small beside
//! the forward and backward pass); the pass itself is one forward and one input-only backward
//! on the backend ([`logits_loss_grad`]). One deviation from the reference code, documented in
//! the test: the first checkpoint compares the first step's loss with the loss at the start
//! point (the reference compares with an unset entry of its loss log, zero).

use perturb_core::{Backend, Shape};
use perturb_data::SplitMix64;
use perturb_nn::Model;

use crate::attack::BatchOutcome;
use crate::autoattack::losses::{dlr, dlr_targeted, xent};
use crate::config::Norm;
use crate::grad::{argmax, logits_loss_grad, margin};
use crate::{Error, Result};

/// The loss APGD ascends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApgdLoss {
    /// Softmax cross-entropy (APGD-CE).
    Xent,
    /// The Difference of Logits Ratio (APGD-DLR); needs 3 classes.
    Dlr,
    /// Targeted DLR towards a target class (APGD-T); needs 4 classes.
    DlrTargeted,
}

/// The settings of one APGD run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ApgdConfig {
    /// The threat model's norm.
    pub norm: Norm,
    /// Radius of the perturbation set.
    pub eps: f32,
    /// Iterations (gradient steps) per restart; AutoAttack uses 100.
    pub n_iter: usize,
    /// The loss.
    pub loss: ApgdLoss,
    /// Random restarts, each on the points still robust; AutoAttack standard uses 1.
    pub n_restarts: usize,
    /// The share of loss-raising steps at or below which a checkpoint halves the step (0.75).
    pub rho: f32,
    /// Seed of the random starts.
    pub seed: u64,
    /// Lower end of the data range.
    pub lo: f32,
    /// Upper end of the data range.
    pub hi: f32,
}

impl ApgdConfig {
    /// AutoAttack's settings: 100 iterations, 1 restart, rho 0.75, data range [0, 1].
    pub fn new(norm: Norm, eps: f32, loss: ApgdLoss) -> Self {
        ApgdConfig { norm, eps, n_iter: 100, loss, n_restarts: 1, rho: 0.75, seed: 0, lo: 0.0, hi: 1.0 }
    }

    /// Checks every setting for a model with `classes` outputs; errors name the setting.
    pub fn validate(&self, classes: usize) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::invalid("eps", format!("{} must be a number >= 0", self.eps)));
        }
        if !(self.lo.is_finite() && self.hi.is_finite() && self.lo < self.hi) {
            return Err(Error::invalid("bounds", format!("data range [{}, {}] is empty", self.lo, self.hi)));
        }
        if self.n_iter == 0 {
            return Err(Error::invalid("n_iter", "must be at least 1"));
        }
        if self.n_restarts == 0 {
            return Err(Error::invalid("n_restarts", "must be at least 1"));
        }
        if !(self.rho > 0.0 && self.rho <= 1.0) {
            return Err(Error::invalid("rho", format!("{} must lie in (0, 1]", self.rho)));
        }
        let need = match self.loss {
            ApgdLoss::Xent => 2,
            ApgdLoss::Dlr => 3,
            ApgdLoss::DlrTargeted => 4,
        };
        if classes < need {
            return Err(Error::invalid(
                "loss",
                format!("{:?} needs at least {need} classes; the model has {classes}", self.loss),
            ));
        }
        Ok(())
    }
}

/// The iteration counts after which APGD checks its step sizes, with 0 in front: the
/// reference's integer form of w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22,
/// p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06). For N = 100: 0, 22, 41, 57, 70, 80, 87, 93, 99.
pub fn checkpoints(n_iter: usize) -> Vec<usize> {
    let first = (n_iter * 22 / 100).max(1);
    let decr = (n_iter * 3 / 100).max(1);
    let min = (n_iter * 6 / 100).max(1);
    let (mut out, mut at, mut k) = (vec![0], 0usize, first);
    while at + k <= n_iter {
        at += k;
        out.push(at);
        k = k.saturating_sub(decr).max(min);
    }
    out
}

fn uniform(rng: &mut SplitMix64) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

fn normal(rng: &mut SplitMix64) -> f32 {
    // Box–Muller on (0, 1] x [0, 1).
    let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// The projection of `v` onto {||v - x0|| <= eps} ∩ [lo, hi]^d, in place (L2: radial scaling,
/// then the clip, as the reference does).
fn project(v: &mut [f32], x0: &[f32], cfg: &ApgdConfig) {
    let (lo, hi, eps) = (cfg.lo, cfg.hi, cfg.eps);
    match cfg.norm {
        Norm::Linf => {
            for (p, &c) in v.iter_mut().zip(x0) {
                *p = p.max(c - eps).min(c + eps).max(lo).min(hi);
            }
        }
        Norm::L2 => {
            let norm = v.iter().zip(x0).map(|(&p, &c)| ((p - c) as f64).powi(2)).sum::<f64>().sqrt() as f32;
            let scale = eps.min(norm) / (norm + 1e-12);
            for (p, &c) in v.iter_mut().zip(x0) {
                *p = (c + (*p - c) * scale).max(lo).min(hi);
            }
        }
    }
}

/// The random start of one example.
fn start(x: &mut [f32], x0: &[f32], rng: &mut SplitMix64, cfg: &ApgdConfig) {
    let t: Vec<f32> = match cfg.norm {
        Norm::Linf => (0..x0.len()).map(|_| 2.0 * uniform(rng) - 1.0).collect(),
        Norm::L2 => (0..x0.len()).map(|_| normal(rng)).collect(),
    };
    let norm = match cfg.norm {
        Norm::Linf => t.iter().fold(0f32, |m, v| m.max(v.abs())),
        Norm::L2 => t.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32,
    };
    let s = cfg.eps / norm.max(1e-12);
    for ((p, &c), &r) in x.iter_mut().zip(x0).zip(&t) {
        *p = (c + s * r).max(cfg.lo).min(cfg.hi);
    }
}

/// A batch's state on the host.
struct Pass {
    logits: Vec<f32>,
    loss: Vec<f32>,
    grad: Vec<f32>,
}

fn pass<B: Backend>(
    b: &B,
    model: &Model<B>,
    x: &[f32],
    labels: &[u32],
    targets: Option<&[u32]>,
    loss: ApgdLoss,
) -> Result<Pass> {
    let [c, h, w] = model.input_shape();
    let xt = b.upload_f32(x, &Shape::from([labels.len(), c, h, w]))?;
    let (logits, loss, g) = logits_loss_grad(b, model, &xt, |i, z, d| {
        let y = labels[i] as usize;
        match (loss, targets) {
            (ApgdLoss::Xent, _) => xent(z, y, d),
            (ApgdLoss::Dlr, _) => dlr(z, y, d),
            (ApgdLoss::DlrTargeted, Some(t)) => dlr_targeted(z, y, t[i] as usize, d),
            (ApgdLoss::DlrTargeted, None) => f32::NAN,
        }
    })?;
    Ok(Pass { logits, loss, grad: b.download_f32(&g)? })
}

/// Runs APGD on one batch: `x0` [n, c, h, w] on the host, `labels` the true classes, `targets`
/// the target classes of the targeted loss, `first` the batch's first index in the data set (it
/// keys the random starts, so results do not depend on the batch size). Success means
/// misclassified (for the targeted loss too, as in AutoAttack); `queries` counts passes.
pub fn apgd_batch<B: Backend>(
    b: &B,
    model: &Model<B>,
    cfg: &ApgdConfig,
    x0: &[f32],
    labels: &[u32],
    targets: Option<&[u32]>,
    first: usize,
) -> Result<BatchOutcome> {
    let k = model.classes();
    cfg.validate(k)?;
    let d: usize = model.input_shape().iter().product();
    let n = labels.len();
    if x0.len() != n * d {
        return Err(Error::Mismatch(format!("apgd: {} values for {n} examples of {d}", x0.len())));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
        return Err(Error::Mismatch(format!("label {bad} out of range for a model with {k} classes")));
    }
    match (cfg.loss, targets) {
        (ApgdLoss::DlrTargeted, None) => return Err(Error::invalid("targets", "the targeted DLR loss needs targets")),
        (ApgdLoss::DlrTargeted, Some(t)) if t.len() != n || t.iter().any(|&v| v as usize >= k) => {
            return Err(Error::invalid("targets", format!("need {n} targets below {k}")));
        }
        _ => {}
    }
    let mut out = BatchOutcome {
        adv: x0.to_vec(),
        pred: vec![0; n],
        success: vec![false; n],
        margin: vec![f32::NEG_INFINITY; n],
        queries: vec![0; n],
    };
    for restart in 0..cfg.n_restarts {
        let todo: Vec<usize> = (0..n).filter(|&i| !out.success[i]).collect();
        if todo.is_empty() {
            break;
        }
        let sub_x0: Vec<f32> = crate::run::gather_rows(x0, &todo, d);
        let sub_y: Vec<u32> = todo.iter().map(|&i| labels[i]).collect();
        let sub_t: Option<Vec<u32>> = targets.map(|t| todo.iter().map(|&i| t[i]).collect());
        let rngs = todo
            .iter()
            .map(|&i| SplitMix64::for_epoch(cfg.seed ^ 0x6170_6764, ((restart as u64) << 40) | (first + i) as u64))
            .collect();
        let r = single_run(b, model, cfg, &sub_x0, &sub_y, sub_t.as_deref(), rngs)?;
        for (j, &i) in todo.iter().enumerate() {
            out.queries[i] += r.queries[j];
            if r.success[j] || r.margin[j] > out.margin[i] {
                out.adv[i * d..(i + 1) * d].copy_from_slice(&r.adv[j * d..(j + 1) * d]);
                out.pred[i] = r.pred[j];
                out.success[i] = r.success[j];
                out.margin[i] = r.margin[j];
            }
        }
    }
    Ok(out)
}

/// One restart of APGD on every example given. An example leaves the batch once an iterate is
/// misclassified: that iterate is its answer, and nothing later can change the outcome, so the
/// passes shrink as examples fall (the reference keeps them in; the result is the same).
fn single_run<B: Backend>(
    b: &B,
    model: &Model<B>,
    cfg: &ApgdConfig,
    x0: &[f32],
    labels: &[u32],
    targets: Option<&[u32]>,
    mut rngs: Vec<SplitMix64>,
) -> Result<BatchOutcome> {
    let k = model.classes();
    let n = labels.len();
    let d = x0.len() / n.max(1);
    let mut x = vec![0f32; n * d];
    for (i, rng) in rngs.iter_mut().enumerate() {
        start(&mut x[i * d..(i + 1) * d], &x0[i * d..(i + 1) * d], rng, cfg);
    }
    let mut out = BatchOutcome {
        adv: x.clone(),
        pred: vec![0; n],
        success: vec![false; n],
        margin: vec![f32::NEG_INFINITY; n],
        queries: vec![0; n],
    };
    let mut active: Vec<usize> = (0..n).collect();
    let mut grad = vec![0f32; n * d];
    let mut loss_now = vec![0f32; n];
    // One pass over the active examples: their losses and gradients, and the judgement of x.
    let run_pass = |active: &[usize], x: &[f32], grad: &mut [f32], loss_now: &mut [f32], out: &mut BatchOutcome| {
        let xa: Vec<f32> = crate::run::gather_rows(x, active, d);
        let ya: Vec<u32> = active.iter().map(|&i| labels[i]).collect();
        let ta: Option<Vec<u32>> = targets.map(|t| active.iter().map(|&i| t[i]).collect());
        let p = pass(b, model, &xa, &ya, ta.as_deref(), cfg.loss)?;
        for (j, &i) in active.iter().enumerate() {
            grad[i * d..(i + 1) * d].copy_from_slice(&p.grad[j * d..(j + 1) * d]);
            loss_now[i] = p.loss[j];
            out.queries[i] += 1;
            let row = &p.logits[j * k..(j + 1) * k];
            let pred = argmax(row);
            out.pred[i] = pred;
            out.margin[i] = margin(row, labels[i], false);
            if pred != labels[i] {
                out.adv[i * d..(i + 1) * d].copy_from_slice(&x[i * d..(i + 1) * d]);
                out.success[i] = true;
            }
        }
        Result::Ok(())
    };
    run_pass(&active, &x, &mut grad, &mut loss_now, &mut out)?;

    let mut step = vec![2.0 * cfg.eps; n];
    let mut x_old = x.clone();
    let mut x_best = x.clone();
    let mut grad_best = grad.clone();
    let mut loss_best = loss_now.clone();
    let mut loss_prev = loss_now.clone();
    let mut raised = vec![0usize; n];
    let mut best_at_check = loss_best.clone();
    let mut halved_at_check = vec![true; n];
    let marks = checkpoints(cfg.n_iter);
    let mut mark = 1;
    let mut z = vec![0f32; d];
    let mut nx = vec![0f32; d];
    for it in 0..cfg.n_iter {
        active.retain(|&i| !out.success[i]);
        if active.is_empty() {
            break;
        }
        let a = if it == 0 { 1.0 } else { 0.75 };
        for &i in &active {
            let r = i * d..(i + 1) * d;
            let (xi, gi, ci) = (&x[r.clone()], &grad[r.clone()], &x0[r.clone()]);
            match cfg.norm {
                Norm::Linf => {
                    for j in 0..d {
                        z[j] = xi[j] + step[i] * sign(gi[j]);
                    }
                }
                Norm::L2 => {
                    let gn = gi.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32 + 1e-12;
                    for j in 0..d {
                        z[j] = xi[j] + step[i] * gi[j] / gn;
                    }
                }
            }
            project(&mut z, ci, cfg);
            let oi = &x_old[r.clone()];
            for j in 0..d {
                nx[j] = xi[j] + a * (z[j] - xi[j]) + (1.0 - a) * (xi[j] - oi[j]);
            }
            project(&mut nx, ci, cfg);
            x_old[r.clone()].copy_from_slice(&x[r.clone()]);
            x[r].copy_from_slice(&nx);
        }
        run_pass(&active, &x, &mut grad, &mut loss_now, &mut out)?;
        for &i in &active {
            let l = loss_now[i];
            raised[i] += (l > loss_prev[i]) as usize;
            loss_prev[i] = l;
            if l > loss_best[i] {
                let r = i * d..(i + 1) * d;
                x_best[r.clone()].copy_from_slice(&x[r.clone()]);
                grad_best[r.clone()].copy_from_slice(&grad[r]);
                loss_best[i] = l;
            }
        }
        if mark < marks.len() && it + 1 == marks[mark] {
            let since = marks[mark] - marks[mark - 1];
            for &i in &active {
                let oscillating = raised[i] as f32 <= since as f32 * cfg.rho;
                let no_gain = !halved_at_check[i] && best_at_check[i] >= loss_best[i];
                let halve = oscillating || no_gain;
                halved_at_check[i] = halve;
                best_at_check[i] = loss_best[i];
                raised[i] = 0;
                if halve {
                    step[i] /= 2.0;
                    let r = i * d..(i + 1) * d;
                    x[r.clone()].copy_from_slice(&x_best[r.clone()]);
                    grad[r.clone()].copy_from_slice(&grad_best[r]);
                }
            }
            mark += 1;
        }
    }
    // Examples not broken return their highest-loss point.
    for i in 0..n {
        if !out.success[i] {
            out.adv[i * d..(i + 1) * d].copy_from_slice(&x_best[i * d..(i + 1) * d]);
        }
    }
    Ok(out)
}

fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_schedule_is_the_papers() {
        assert_eq!(checkpoints(100), vec![0, 22, 41, 57, 70, 80, 87, 93, 99]);
        // The real-valued form of the paper gives the same points for N = 100.
        let mut p = vec![0.0f64, 0.22];
        while *p.last().unwrap() < 1.0 {
            let (a, b) = (p[p.len() - 2], p[p.len() - 1]);
            p.push(b + (b - a - 0.03).max(0.06));
        }
        let paper: Vec<usize> = p.iter().map(|v| (v * 100.0 - 1e-9).ceil() as usize).filter(|&w| w <= 100).collect();
        assert_eq!(paper, checkpoints(100));
        assert_eq!(checkpoints(1), vec![0, 1]);
    }

    #[test]
    fn projections_stay_in_the_ball_and_the_box() {
        let x0 = [0.1f32, 0.5, 0.95, 0.0];
        let mut v = [0.9f32, -3.0, 1.2, 0.2];
        let cfg = ApgdConfig::new(Norm::Linf, 0.1, ApgdLoss::Xent);
        project(&mut v, &x0, &cfg);
        assert_eq!(v, [0.2, 0.4, 1.0, 0.1]);
        let cfg = ApgdConfig::new(Norm::L2, 0.5, ApgdLoss::Xent);
        let mut v = [0.1f32, 0.5, 0.95, 3.0];
        project(&mut v, &x0, &cfg);
        let n: f32 = v.iter().zip(&x0).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
        assert!(n <= 0.5 + 1e-6 && (v[3] - 0.5).abs() < 1e-6, "{v:?}");
    }

    /// A linear model z = W x + b over [1, 1, d] inputs (flatten, linear).
    fn linear_model(b: &perturb_cpu::CpuBackend, w: &[f32], bias: &[f32], d: usize) -> Model<perturb_cpu::CpuBackend> {
        use perturb_nn::{Layer, Param};
        let k = bias.len();
        let params = vec![
            Param { name: "1.weight".into(), tensor: b.upload_f32(w, &Shape::from([k, d])).unwrap() },
            Param { name: "1.bias".into(), tensor: b.upload_f32(bias, &Shape::from([k])).unwrap() },
        ];
        Model::from_params("linear", [1, 1, d], vec![Layer::Flatten, Layer::linear(d, k)], params).unwrap()
    }

    #[test]
    fn reaches_the_known_optimum_of_a_convex_toy_problem() {
        // Two classes, z_1 - z_0 = v . x + c with c so negative that the label 0 holds in the
        // whole ball: cross-entropy softplus(v . x + c) rises with v . x, so its maximum over the
        // L-inf ball in [0, 1] is x0 + eps * sign(v), clipped; over the L2 ball (inside the box)
        // x0 + eps * v / ||v||.
        let b = perturb_cpu::CpuBackend::new();
        let d = 6;
        let v = [0.5f32, -1.0, 2.0, -0.25, 1.5, 0.0];
        let mut w = vec![0f32; 2 * d];
        w[d..].copy_from_slice(&v);
        let model = linear_model(&b, &w, &[10.0, 0.0], d);
        let x0 = [0.5f32, 0.5, 0.98, 0.5, 0.02, 0.5];
        let cfg = ApgdConfig { seed: 3, ..ApgdConfig::new(Norm::Linf, 0.1, ApgdLoss::Xent) };
        let out = apgd_batch(&b, &model, &cfg, &x0, &[0], None, 0).unwrap();
        let want: Vec<f32> = x0.iter().zip(&v).map(|(&x, &s)| (x + 0.1 * sign(s)).clamp(0.0, 1.0)).collect();
        // The zero-gradient coordinate keeps its random start; every other one hits the optimum.
        for j in 0..d {
            if v[j] != 0.0 {
                assert!((out.adv[j] - want[j]).abs() < 1e-6, "{:?} vs {want:?}", out.adv);
            } else {
                assert!((out.adv[j] - x0[j]).abs() <= 0.1 + 1e-6);
            }
        }
        assert!(!out.success[0] && out.queries[0] == 101);

        let x0 = [0.5f32; 6];
        let cfg = ApgdConfig { seed: 3, ..ApgdConfig::new(Norm::L2, 0.2, ApgdLoss::Xent) };
        let out = apgd_batch(&b, &model, &cfg, &x0, &[0], None, 0).unwrap();
        let vn = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        let best = 0.2 * vn;
        let got: f32 = out.adv.iter().zip(&x0).zip(&v).map(|((a, c), s)| (a - c) * s).sum();
        assert!((got - best).abs() < 1e-3 * best, "v . (x - x0) = {got}, optimum {best}");
    }

    #[test]
    fn keeps_the_first_misclassified_iterate_and_checks_its_inputs() {
        // A random mlp: every returned point lies in the ball and the box; success matches the
        // model's prediction on the returned point.
        let b = perturb_cpu::CpuBackend::new();
        let model = perturb_nn::build_model(&b, "mlp", [1, 4, 4], 10, 5).unwrap();
        let n = 8;
        let x0: Vec<f32> = (0..n * 16).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        let labels: Vec<u32> = (0..n as u32).collect();
        for (norm, eps) in [(Norm::Linf, 0.05f32), (Norm::L2, 0.3)] {
            for loss in [ApgdLoss::Xent, ApgdLoss::Dlr, ApgdLoss::DlrTargeted] {
                let targets: Vec<u32> = labels.iter().map(|&y| (y + 1) % 10).collect();
                let cfg = ApgdConfig { n_iter: 20, ..ApgdConfig::new(norm, eps, loss) };
                let out = apgd_batch(&b, &model, &cfg, &x0, &labels, Some(&targets), 0).unwrap();
                let logits = crate::run::logits(&b, &model, &out.adv).unwrap();
                for i in 0..n {
                    let (a, c) = (&out.adv[i * 16..(i + 1) * 16], &x0[i * 16..(i + 1) * 16]);
                    assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
                    let dist = match norm {
                        Norm::Linf => a.iter().zip(c).fold(0f32, |m, (p, q)| m.max((p - q).abs())),
                        Norm::L2 => a.iter().zip(c).map(|(p, q)| (p - q) * (p - q)).sum::<f32>().sqrt(),
                    };
                    assert!(dist <= eps + 1e-5, "{norm:?} {loss:?}: {dist}");
                    let pred = argmax(&logits[i * 10..(i + 1) * 10]);
                    assert_eq!(out.success[i], pred != labels[i], "{norm:?} {loss:?} example {i}");
                }
            }
        }
        let cfg = ApgdConfig::new(Norm::Linf, 0.1, ApgdLoss::DlrTargeted);
        let e = apgd_batch(&b, &model, &cfg, &x0, &labels, None, 0).unwrap_err().to_string();
        assert!(e.starts_with("targets:"), "{e}");
        let e = ApgdConfig { n_iter: 0, ..cfg.clone() }.validate(10).unwrap_err().to_string();
        assert!(e.starts_with("n_iter:"), "{e}");
        let e = cfg.validate(3).unwrap_err().to_string();
        assert!(e.starts_with("loss:"), "{e}");
    }
}
