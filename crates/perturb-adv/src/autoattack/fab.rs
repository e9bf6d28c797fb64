//! FAB-T under L-inf (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a
//! fast adaptive boundary attack"), the targeted version AutoAttack runs.
//!
//! Per example, towards one target class t: linearise f = z_y - z_t at the iterate x_k
//! (f and its input gradient w from one forward and one input-only backward), and take the
//! minimal L-inf steps d_k from x_k and d_0 from the clean x onto the hyperplane
//! f(x_k) + w . (p - x_k) = 0 inside the data box. The next iterate mixes the two,
//! x_{k+1} = clip((x_k + eta d_k)(1 - a) + (x + eta d_0) a), a = min(|d_k| / (|d_k| + |d_0|),
//! alpha_max), so it moves towards the boundary while staying close to x. When x_{k+1} is
//! misclassified it is kept if closer than the best so far, and the iterate is pulled back
//! towards x: x + beta (x_{k+1} - x). Defaults are the reference's: 100 iterations, alpha_max
//! 0.1, eta 1.05, beta 0.9, one restart without a random start.
//!
//! In AutoAttack only "misclassified within eps" matters, so an example stops once its best
//! point is within eps (the outcome cannot change after that).

use perturb_core::{Backend, Shape};
use perturb_nn::Model;
use rayon::prelude::*;

use crate::attack::BatchOutcome;
use crate::grad::{argmax, logits_loss_grad, margin};
use crate::run::logits;
use crate::{Error, Result};

/// The settings of FAB-T.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FabConfig {
    /// Radius of the L-inf ball a point must fall in to count as broken.
    pub eps: f32,
    /// Iterations per target.
    pub n_iter: usize,
    /// Target classes (the 2nd..(n+1)th largest clean logits).
    pub n_target_classes: usize,
    /// Upper bound on the step's weight towards the clean point.
    pub alpha_max: f32,
    /// Overshoot of the projection (> 1 crosses the boundary).
    pub eta: f32,
    /// Backtracking factor towards the clean point after a success.
    pub beta: f32,
    /// Restarts (1: no random start, as AutoAttack standard).
    pub n_restarts: usize,
    /// Seed (reserved for random starts; unused with one restart).
    pub seed: u64,
    /// Lower end of the data range.
    pub lo: f32,
    /// Upper end of the data range.
    pub hi: f32,
}

impl FabConfig {
    /// AutoAttack-standard's settings for `eps` in the data range [0, 1].
    pub fn standard(eps: f32) -> Self {
        FabConfig {
            eps,
            n_iter: 100,
            n_target_classes: 9,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
            n_restarts: 1,
            seed: 0,
            lo: 0.0,
            hi: 1.0,
        }
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
        if self.n_target_classes == 0 || self.n_target_classes + 1 > classes {
            return Err(Error::invalid(
                "n_target_classes",
                format!(
                    "{} must lie in 1..={} for a model with {classes} classes",
                    self.n_target_classes,
                    classes.saturating_sub(1)
                ),
            ));
        }
        if !(self.alpha_max >= 0.0 && self.alpha_max <= 1.0) {
            return Err(Error::invalid("alpha_max", format!("{} must lie in [0, 1]", self.alpha_max)));
        }
        if !(self.eta.is_finite() && self.eta > 0.0) {
            return Err(Error::invalid("eta", format!("{} must be a positive number", self.eta)));
        }
        if !(self.beta > 0.0 && self.beta <= 1.0) {
            return Err(Error::invalid("beta", format!("{} must lie in (0, 1]", self.beta)));
        }
        if self.n_restarts != 1 {
            return Err(Error::invalid("n_restarts", "FAB-T runs one restart without a random start here"));
        }
        Ok(())
    }
}

thread_local! {
    /// [`project_linf`]'s (cap, weight) pairs, kept between calls.
    static CAPS: std::cell::RefCell<Vec<(f64, f64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The smallest-L-inf step `delta` from `x` with `w . delta = c` and `x + delta` in [lo, hi]
/// (written into `out`); where the box makes it impossible, the step that gets closest. Returns
/// its L-inf norm.
pub fn project_linf(x: &[f32], w: &[f32], c: f32, lo: f32, hi: f32, out: &mut [f32]) -> f32 {
    let s = if c >= 0.0 { 1.0 } else { -1.0 };
    let target = (c as f64).abs();
    // Moving coordinate i by r in the helpful direction gains |w_i| * min(r, cap_i); a
    // coordinate already at its bound (cap 0, common on MNIST's black background) gains
    // nothing and is left out.
    let r = CAPS.with(|cell| {
        let mut caps = cell.borrow_mut();
        caps.clear();
        caps.extend(x.iter().zip(w).filter(|&(_, &wi)| wi != 0.0).filter_map(|(&xi, &wi)| {
            let cap = if s * wi > 0.0 { hi - xi } else { xi - lo };
            (cap > 0.0).then_some((cap as f64, (wi as f64).abs()))
        }));
        solve_caps(&mut caps, target).unwrap_or_else(|| caps.iter().map(|c| c.0).fold(0.0, f64::max))
    });
    // Each coordinate moves by min(r, cap_i) in its helpful direction. In f32 without branches
    // (so it vectorises): cap_i is an f32, so min(r, cap_i) rounded to f32 is min(f32(r), cap_i).
    let rf = r as f32;
    let mut norm = 0f32;
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        let up = s * wi > 0.0;
        let m = rf.min(if up { hi - xi } else { xi - lo }.max(0.0));
        *o = if wi == 0.0 {
            0.0
        } else if up {
            m
        } else {
            -m
        };
        norm = norm.max(o.abs());
    }
    norm
}

/// The smallest r >= 0 with g(r) = sum_i a_i min(cap_i, r) = `target`, for `caps` = (cap_i,
/// a_i), a_i > 0 (g is piecewise linear and increasing); `None` when even every coordinate at
/// its cap falls short. Expected linear time: a quickselect on the caps keeps halving the
/// interval between two caps that holds r (the median's g decides which half), and the last
/// few caps are sorted and walked segment by segment.
fn solve_caps(caps: &mut [(f64, f64)], target: f64) -> Option<f64> {
    // g(lo) and the slope of g just above lo (the weights of the caps above lo).
    let (mut lo, mut g_lo, mut slope) = (0.0f64, 0.0f64, caps.iter().map(|c| c.1).sum::<f64>());
    if target <= 0.0 {
        return Some(0.0);
    }
    let mut v = caps;
    while v.len() > 16 {
        let mid = v.len() / 2;
        v.select_nth_unstable_by(mid, |a, b| a.0.total_cmp(&b.0));
        let p = v[mid].0;
        // Caps at or below the pivot: their gain from lo, and their weight.
        let (gain, weight) = v[..=mid].iter().fold((0.0, 0.0), |(g, w), c| (g + c.1 * (c.0 - lo), w + c.1));
        let g_p = g_lo + gain + (slope - weight) * (p - lo);
        if g_p >= target {
            v = &mut v[..=mid];
        } else {
            (lo, g_lo, slope) = (p, g_p, slope - weight);
            v = &mut v[mid + 1..];
        }
    }
    v.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let (mut prev, mut gained) = (lo, g_lo);
    for &(cap, wa) in v.iter() {
        let at_cap = gained + slope * (cap - prev);
        if at_cap >= target {
            return Some(prev + (target - gained) / slope);
        }
        (gained, prev) = (at_cap, cap);
        slope -= wa;
    }
    None
}

/// Runs FAB-T on one batch: `x0` [n, c, h, w] on the host, the true `labels` and one target
/// per example. Per example the closest misclassified point found (success: within eps), else
/// the clean point. `first` is accepted for the same signature as the other attacks (FAB-T
/// with one restart draws no random numbers).
pub fn fab_targeted_batch<B: Backend>(
    b: &B,
    model: &Model<B>,
    cfg: &FabConfig,
    x0: &[f32],
    labels: &[u32],
    targets: &[u32],
    first: usize,
) -> Result<BatchOutcome> {
    let _ = first;
    let (mut out, best) = fab_core(b, model, cfg, x0, labels, targets, true)?;
    let (k, d) = (model.classes(), x0.len() / labels.len().max(1));
    let clean = logits(b, model, x0)?;
    for i in 0..labels.len() {
        out.success[i] = best[i] <= cfg.eps;
        if !out.success[i] {
            out.adv[i * d..(i + 1) * d].copy_from_slice(&x0[i * d..(i + 1) * d]);
            out.pred[i] = argmax(&clean[i * k..(i + 1) * k]);
            out.margin[i] = margin(&clean[i * k..(i + 1) * k], labels[i], false);
        }
    }
    Ok(out)
}

/// FAB-T as a minimal-distortion attack: all `n_iter` iterations for every example, then a
/// bisection (`BISECTION_STEPS` forward passes) on the segment from the clean point to the
/// closest misclassified point found, which removes the overshoot eta leaves. Returns that
/// point (the clean point where none was found) and its L-inf distance (infinity where none).
pub fn fab_minimal<B: Backend>(
    b: &B,
    model: &Model<B>,
    cfg: &FabConfig,
    x0: &[f32],
    labels: &[u32],
    targets: &[u32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (out, mut best) = fab_core(b, model, cfg, x0, labels, targets, false)?;
    let mut adv = out.adv;
    let (k, n) = (model.classes(), labels.len());
    let d = x0.len() / n.max(1);
    let found: Vec<usize> = (0..n).filter(|&i| best[i].is_finite() && best[i] > 0.0).collect();
    // Per example: t in (lo_t, hi_t], the point x0 + t (adv - x0) misclassified at hi_t.
    let (mut lo_t, mut hi_t) = (vec![0f32; found.len()], vec![1f32; found.len()]);
    let mut pts = vec![0f32; found.len() * d];
    for _ in 0..BISECTION_STEPS {
        for (j, &i) in found.iter().enumerate() {
            let t = 0.5 * (lo_t[j] + hi_t[j]);
            for p in 0..d {
                let c0 = x0[i * d + p];
                pts[j * d + p] = c0 + t * (adv[i * d + p] - c0);
            }
        }
        if found.is_empty() {
            break;
        }
        let z = logits(b, model, &pts)?;
        for (j, &i) in found.iter().enumerate() {
            let t = 0.5 * (lo_t[j] + hi_t[j]);
            if argmax(&z[j * k..(j + 1) * k]) != labels[i] { hi_t[j] = t } else { lo_t[j] = t }
        }
    }
    for (j, &i) in found.iter().enumerate() {
        let t = hi_t[j];
        let mut dist = 0f32;
        for p in 0..d {
            let c0 = x0[i * d + p];
            adv[i * d + p] = c0 + t * (adv[i * d + p] - c0);
            dist = dist.max((adv[i * d + p] - c0).abs());
        }
        best[i] = dist;
    }
    Ok((adv, best))
}

/// Forward passes of [`fab_minimal`]'s final bisection (2^-20 of the distance).
pub const BISECTION_STEPS: usize = 20;

/// The iterations; `stop_within_eps` ends an example once its best point is within eps.
fn fab_core<B: Backend>(
    b: &B,
    model: &Model<B>,
    cfg: &FabConfig,
    x0: &[f32],
    labels: &[u32],
    targets: &[u32],
    stop_within_eps: bool,
) -> Result<(BatchOutcome, Vec<f32>)> {
    let k = model.classes();
    let d: usize = model.input_shape().iter().product();
    let n = labels.len();
    if k < 2 {
        return Err(Error::invalid("classes", "FAB-T needs at least 2 classes"));
    }
    FabConfig { n_target_classes: 1, ..cfg.clone() }.validate(k)?;
    if x0.len() != n * d || targets.len() != n {
        return Err(Error::Mismatch(format!(
            "fab-t: {} values and {} targets for {n} examples of {d}",
            x0.len(),
            targets.len()
        )));
    }
    if let Some(bad) = labels.iter().chain(targets).find(|&&l| l as usize >= k) {
        return Err(Error::Mismatch(format!("class {bad} out of range for a model with {k} classes")));
    }
    let clean = logits(b, model, x0)?;
    let mut out = BatchOutcome {
        adv: x0.to_vec(),
        pred: clean.chunks_exact(k).map(argmax).collect(),
        success: vec![false; n],
        margin: (0..n).map(|i| margin(&clean[i * k..(i + 1) * k], labels[i], false)).collect(),
        queries: vec![1; n],
    };
    let mut best = vec![f32::INFINITY; n];
    // Already misclassified: distance 0.
    for i in 0..n {
        if out.pred[i] != labels[i] {
            best[i] = 0.0;
            out.success[i] = true;
        }
    }
    let mut x1 = x0.to_vec();
    let mut active: Vec<usize> = (0..n).filter(|&i| !out.success[i] && targets[i] != labels[i]).collect();
    let [c, h, w] = model.input_shape();
    for _ in 0..cfg.n_iter {
        active.retain(|&i| !stop_within_eps || best[i] > cfg.eps);
        if active.is_empty() {
            break;
        }
        let xa: Vec<f32> = crate::run::gather_rows(&x1, &active, d);
        let xt = b.upload_f32(&xa, &Shape::from([active.len(), c, h, w]))?;
        let (_, f, g) = logits_loss_grad(b, model, &xt, |j, z, dz| {
            let (y, t) = (labels[active[j]] as usize, targets[active[j]] as usize);
            dz[y] += 1.0;
            dz[t] -= 1.0;
            z[y] - z[t]
        })?;
        let g = b.download_f32(&g)?;
        // Per example (in parallel, each on its own): the two projections and the mixed step.
        let mut next = vec![0f32; xa.len()];
        next.par_chunks_mut(d).zip(active.par_iter()).enumerate().for_each_init(
            || (vec![0f32; d], vec![0f32; d]),
            |(d1, d2), (j, (nj, &i))| {
                let (xi, ci, wi) = (&x1[i * d..(i + 1) * d], &x0[i * d..(i + 1) * d], &g[j * d..(j + 1) * d]);
                // f(x1) + w . (p - x1) = 0, from x1 and from the clean point.
                let a0 = project_linf(xi, wi, -f[j], cfg.lo, cfg.hi, d1);
                let lin: f64 = wi.iter().zip(ci).zip(xi).map(|((&w, &c0), &x)| w as f64 * (c0 - x) as f64).sum();
                let a1 = project_linf(ci, wi, -(f[j] + lin as f32), cfg.lo, cfg.hi, d2);
                let alpha = if a0 + a1 > 0.0 { (a0 / (a0 + a1)).clamp(0.0, cfg.alpha_max) } else { 0.0 };
                for p in 0..d {
                    let v = (xi[p] + cfg.eta * d1[p]) * (1.0 - alpha) + (ci[p] + cfg.eta * d2[p]) * alpha;
                    nj[p] = v.clamp(cfg.lo, cfg.hi);
                }
            },
        );
        let z = logits(b, model, &next)?;
        for (j, &i) in active.iter().enumerate() {
            out.queries[i] += 2;
            let cand = &next[j * d..(j + 1) * d];
            let ci = &x0[i * d..(i + 1) * d];
            let row = &z[j * k..(j + 1) * k];
            let pred = argmax(row);
            let x1i = &mut x1[i * d..(i + 1) * d];
            if pred != labels[i] {
                let dist = cand.iter().zip(ci).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                if dist < best[i] {
                    best[i] = dist;
                    out.adv[i * d..(i + 1) * d].copy_from_slice(cand);
                    out.pred[i] = pred;
                    out.margin[i] = margin(row, labels[i], false);
                }
                // Back towards the clean point.
                for ((p, &a), &c0) in x1i.iter_mut().zip(cand).zip(ci) {
                    *p = c0 + (a - c0) * cfg.beta;
                }
            } else {
                x1i.copy_from_slice(cand);
            }
        }
    }
    Ok((out, best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_is_minimal_and_respects_the_box() {
        let x = [0.5f32, 0.5, 0.9];
        let w = [1.0f32, -2.0, 1.0];
        let mut o = [0f32; 3];
        // Unconstrained: r = c / ||w||_1 = 0.4 / 4.
        let r = project_linf(&x, &w, 0.4, 0.0, 1.0, &mut o);
        assert!((r - 0.1).abs() < 1e-6, "{r}");
        let dot: f32 = o.iter().zip(&w).map(|(a, b)| a * b).sum();
        assert!((dot - 0.4).abs() < 1e-6 && o[2] > 0.0);
        // Coordinate 2 can rise only 0.1: 0.1 + 3 r = 1.0 -> r = 0.3.
        let r = project_linf(&x, &w, 1.0, 0.0, 1.0, &mut o);
        assert!((r - 0.3).abs() < 1e-6 && (o[2] - 0.1).abs() < 1e-6, "{r} {o:?}");
    }

    /// The quickselect search agrees with walking every cap in sorted order, on MNIST-sized
    /// inputs with ties, zero caps and targets past what the box allows.
    #[test]
    fn the_cap_search_matches_the_sorted_walk() {
        let walk = |caps: &[(f64, f64)], target: f64| {
            let mut c = caps.to_vec();
            c.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (mut slope, mut gained, mut prev) = (c.iter().map(|c| c.1).sum::<f64>(), 0.0, 0.0);
            for &(cap, wa) in &c {
                let at_cap = gained + slope * (cap - prev);
                if at_cap >= target {
                    return Some(prev + (target - gained) / slope);
                }
                (gained, prev) = (at_cap, cap);
                slope -= wa;
            }
            None
        };
        let mut rng = perturb_data::SplitMix64::for_epoch(5, 0);
        for case in 0..200 {
            let d = [1, 7, 17, 100, 784][case % 5];
            let caps: Vec<(f64, f64)> = (0..d)
                .map(|_| {
                    // A third of the caps are 0 or 1 (pixels at the data range's ends).
                    let cap = match rng.below(6) {
                        0 => 0.0,
                        1 => 1.0,
                        _ => rng.below(1000) as f64 / 1000.0,
                    };
                    (cap, 1e-3 + rng.below(1000) as f64 / 100.0)
                })
                .collect();
            let total: f64 = caps.iter().map(|c| c.0 * c.1).sum();
            for target in [0.0, total * 0.01, total * 0.5, total * 0.999, total * 1.5] {
                let (want, got) = (walk(&caps, target), solve_caps(&mut caps.clone(), target));
                match (want, got) {
                    (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-9 * (1.0 + a.abs()), "case {case}: {a} vs {b}"),
                    (None, None) => {}
                    _ => panic!("case {case} target {target}: {want:?} vs {got:?}"),
                }
            }
        }
    }

    #[test]
    fn finds_the_minimal_distance_of_a_linear_classifier() {
        use perturb_nn::{Layer, Param};
        let b = perturb_cpu::CpuBackend::new();
        let d = 5;
        // z_0 = 0, z_1 = v . x + c; label 0 at x0 with v . x0 + c = -0.3: the boundary is
        // 0.3 / ||v||_1 = 0.3 / 3 = 0.1 away in L-inf, inside the box.
        let v = [1.0f32, -0.5, 0.75, -0.25, 0.5];
        let x0 = [0.5f32; 5];
        let c = -0.3 - v.iter().zip(&x0).map(|(a, b)| a * b).sum::<f32>();
        let mut wt = vec![0f32; 2 * d];
        wt[d..].copy_from_slice(&v);
        let params = vec![
            Param { name: "1.weight".into(), tensor: b.upload_f32(&wt, &Shape::from([2, d])).unwrap() },
            Param { name: "1.bias".into(), tensor: b.upload_f32(&[0.0, c], &Shape::from([2])).unwrap() },
        ];
        let model = Model::from_params("linear", [1, 1, d], vec![Layer::Flatten, Layer::linear(d, 2)], params).unwrap();
        let cfg = FabConfig { n_target_classes: 1, ..FabConfig::standard(0.3) };
        let (adv, dist) = fab_minimal(&b, &model, &cfg, &x0, &[0], &[1]).unwrap();
        assert!((dist[0] - 0.1).abs() < 1e-4, "minimal distance {} (known: 0.1)", dist[0]);
        let z: f32 = v.iter().zip(&adv).map(|(a, b)| a * b).sum::<f32>() + c;
        assert!(z > 0.0, "the point is misclassified");
        // Within eps 0.3: broken; within eps 0.05 (below the distance): the clean point.
        let out = fab_targeted_batch(&b, &model, &cfg, &x0, &[0], &[1], 0).unwrap();
        assert!(out.success[0] && out.pred[0] == 1);
        let small = FabConfig { eps: 0.05, ..cfg.clone() };
        let out = fab_targeted_batch(&b, &model, &small, &x0, &[0], &[1], 0).unwrap();
        assert!(!out.success[0] && out.adv == x0);
        let e = FabConfig { n_target_classes: 9, ..FabConfig::standard(0.3) }.validate(2).unwrap_err().to_string();
        assert!(e.starts_with("n_target_classes:"), "{e}");
        let e = FabConfig { beta: 0.0, ..FabConfig::standard(0.3) }.validate(10).unwrap_err().to_string();
        assert!(e.starts_with("beta:"), "{e}");
    }
}
