//! The Square attack under L-inf (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020): a
//! gradient-free random search, the standard check that an attack's failure is not a
//! gradient's failure.
//!
//! Start: vertical stripes, x = clip(x0 + eps * s) with one random sign s per (channel,
//! column). Each iteration proposes, for every example not yet broken, a square window of side
//! round(sqrt(p * h * w)) at a random position whose perturbation becomes +-eps (one random sign
//! per channel, redrawn if the window would not change), and keeps the proposal when the
//! margin towards the goal grows. The share p follows the paper's schedule (halved at 10, 50,
//! 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 iterations, rescaled to the budget).
//!
//! The search is decided on the host, so each iteration uploads the proposals of the examples
//! still standing (fewer as they fall) and downloads their logits: one forward pass each, no
//! gradient. Random draws come from a SplitMix64 stream per example, keyed by the seed and the
//! example's index in the data set, so results do not depend on the batch size.

use perturb_core::{Backend, Shape};
use perturb_data::SplitMix64;
use perturb_nn::Model;

use crate::attack::BatchOutcome;
use crate::config::{AttackConfig, Method};
use crate::grad::{argmax, margin, reached};
use crate::square_delta::{Delta, Window};
use crate::{Error, Result};

/// The share of pixels in a square at iteration `it` of `n_iters` (the paper's schedule).
pub fn p_selection(p_init: f32, it: usize, n_iters: usize) -> f32 {
    let it = (it as f64 / n_iters.max(1) as f64 * 10_000.0) as usize;
    let div = match it {
        0..=10 => 1.0,
        11..=50 => 2.0,
        51..=200 => 4.0,
        201..=500 => 8.0,
        501..=1000 => 16.0,
        1001..=2000 => 32.0,
        2001..=4000 => 64.0,
        4001..=6000 => 128.0,
        6001..=8000 => 256.0,
        _ => 512.0,
    };
    p_init / div
}

fn sign(rng: &mut SplitMix64) -> f32 {
    if rng.next_u64() >> 63 == 0 { 1.0 } else { -1.0 }
}

/// Runs the Square attack on one batch: `x0` is [n, c, h, w] on the host, `goal` the labels
/// (untargeted) or targets (targeted), `first` the batch's first index in the data set.
pub fn square_batch<B: Backend>(
    b: &B,
    model: &Model<B>,
    cfg: &AttackConfig,
    x0: &[f32],
    goal: &[u32],
    first: usize,
) -> Result<BatchOutcome> {
    let [c, h, w] = model.input_shape();
    let d = c * h * w;
    cfg.validate(d)?;
    if cfg.method != Method::Square {
        return Err(Error::invalid("method", format!("square_batch was given a {} attack", cfg.name())));
    }
    let n = goal.len();
    if x0.len() != n * d {
        return Err(Error::Mismatch(format!("square: {} values for {n} examples of {d}", x0.len())));
    }
    let targeted = cfg.target.is_some();
    let (eps, lo, hi) = (cfg.eps, cfg.lo, cfg.hi);
    let clip = |v: f32| v.max(lo).min(hi);
    let mut rngs: Vec<SplitMix64> = (0..n).map(|i| SplitMix64::for_epoch(cfg.seed, (first + i) as u64)).collect();

    let mut adv = vec![0f32; n * d];
    for (i, rng) in rngs.iter_mut().enumerate() {
        for ch in 0..c {
            for col in 0..w {
                let s = sign(rng) * eps;
                for row in 0..h {
                    let k = i * d + (ch * h + row) * w + col;
                    adv[k] = clip(x0[k] + s);
                }
            }
        }
    }
    let all: Vec<usize> = (0..n).collect();
    // Through a model's leading convolutions a proposal is evaluated only where its window
    // reaches (see `square_delta`); other models take full forward passes.
    let mut delta = Delta::new(b, model)?;
    let k = model.classes();
    let logits0 = match delta.as_mut() {
        Some(dl) => dl.init(b, &adv)?,
        None => forward(b, model, &adv, n)?,
    };
    let (pred, marg) = judge(&logits0, k, &all, goal, targeted);
    let mut out = BatchOutcome {
        success: pred.iter().zip(goal).map(|(&p, &y)| reached(p, y, targeted)).collect(),
        adv,
        pred,
        margin: marg,
        queries: vec![1; n],
    };
    let side_max = h.min(w).saturating_sub(1).max(1);
    let mut cand = Vec::new();
    let mut windows = Vec::new();
    for it in 1..cfg.queries {
        let active: Vec<usize> = (0..n).filter(|&i| !out.success[i]).collect();
        if active.is_empty() || eps == 0.0 {
            break;
        }
        let p = p_selection(cfg.p_init, it, cfg.queries);
        let side = ((p as f64 * (h * w) as f64).sqrt().round() as usize).clamp(1, side_max);
        cand.clear();
        windows.clear();
        for &i in &active {
            let start = cand.len();
            cand.extend_from_slice(&out.adv[i * d..(i + 1) * d]);
            let rng = &mut rngs[i];
            let (r0, c0) = (rng.below(h - side + 1), rng.below(w - side + 1));
            windows.push(Window { r0, c0, side });
            let window =
                |ch: usize| (r0..r0 + side).flat_map(move |r| (c0..c0 + side).map(move |col| (ch * h + r) * w + col));
            // Redraw the signs while the window would not change (at most 10 draws).
            let mut signs = vec![0f32; c];
            for _ in 0..10 {
                signs.iter_mut().for_each(|s| *s = sign(rng) * eps);
                let changes =
                    (0..c).any(|ch| window(ch).any(|k| clip(x0[i * d + k] + signs[ch]) != out.adv[i * d + k]));
                if changes {
                    break;
                }
            }
            for (ch, &s) in signs.iter().enumerate() {
                for k in window(ch) {
                    cand[start + k] = clip(x0[i * d + k] + s);
                }
            }
        }
        let (logits, pending) = match delta.as_ref() {
            Some(dl) => {
                let (z, pending) = dl.query(b, &cand, &active, &windows)?;
                (z, Some(pending))
            }
            None => (forward(b, model, &cand, active.len())?, None),
        };
        let (pred, marg) = judge(&logits, k, &active, goal, targeted);
        for (j, &i) in active.iter().enumerate() {
            out.queries[i] += 1;
            if marg[j] > out.margin[i] {
                out.margin[i] = marg[j];
                out.pred[i] = pred[j];
                out.success[i] = reached(pred[j], goal[i], targeted);
                out.adv[i * d..(i + 1) * d].copy_from_slice(&cand[j * d..(j + 1) * d]);
                if let (Some(dl), Some(pending)) = (delta.as_mut(), pending.as_ref()) {
                    dl.accept(pending, j, i);
                }
            }
        }
    }
    Ok(out)
}

/// Logits of `m` stacked examples `x` (one forward pass, no gradient).
fn forward<B: Backend>(b: &B, model: &Model<B>, x: &[f32], m: usize) -> Result<Vec<f32>> {
    let [c, h, w] = model.input_shape();
    let xt = b.upload_f32(x, &Shape::from([m, c, h, w]))?;
    Ok(b.download_f32(&model.infer(b, &xt)?)?)
}

/// Predictions and margins towards their goals of the examples `which` from their logits.
fn judge(logits: &[f32], k: usize, which: &[usize], goal: &[u32], targeted: bool) -> (Vec<u32>, Vec<f32>) {
    let mut pred = Vec::with_capacity(which.len());
    let mut marg = Vec::with_capacity(which.len());
    for (row, &i) in logits.chunks_exact(k).zip(which) {
        pred.push(argmax(row));
        marg.push(margin(row, goal[i], targeted));
    }
    (pred, marg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_halves() {
        assert_eq!(p_selection(0.8, 0, 10_000), 0.8);
        assert_eq!(p_selection(0.8, 30, 10_000), 0.4);
        assert_eq!(p_selection(0.8, 9_999, 10_000), 0.8 / 512.0);
        // Rescaled to a 1,000-query budget: iteration 5 is iteration 50 of 10,000.
        assert_eq!(p_selection(0.8, 5, 1_000), 0.4);
    }
}
