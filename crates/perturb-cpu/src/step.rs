//! Attack steps, in place on x [n, d] (see `perturb_core::ops::StepParams`):
//! - sign_step:         x = clip(x + alpha * sign(g), lo, hi)
//! - step_project_linf: x = clip(clamp(x + alpha * sign(g), x0 - eps, x0 + eps), lo, hi)
//! - step_project_l2:   s = x + alpha * g / ||g|| (zero g: s = x), δ = s - x0,
//!   x = clip(x0 + δ * min(1, eps / ||δ||), lo, hi), norms per example.
//!
//! sign(0) = 0 (and sign(NaN) = 0); clip(v) = min(max(v, lo), hi). The L2 step works in f64
//! per example (norms, δ, the scaled sum) and rounds once when it stores x.

use crate::storage::{CpuTensor, with_f32};
use perturb_core::ops::StepParams;
use perturb_core::{Error, Result};
use rayon::prelude::*;

const ELT_CHUNK: usize = crate::elementwise::ELT_CHUNK;

#[inline]
fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn check(op: &'static str, p: &StepParams, ts: &[(&CpuTensor, &str)]) -> Result<usize> {
    let q = StepParams::new(p.n as usize, p.d as usize, p.alpha, p.eps, p.lo, p.hi)?;
    if q != *p {
        return Err(Error::invalid(op, format!("inconsistent StepParams {p:?}")));
    }
    let len = p.n as usize * p.d as usize;
    for (t, what) in ts {
        t.expect_numel(op, what, len)?;
    }
    Ok(len)
}

/// The FGSM step.
pub(crate) fn sign_step(x: &CpuTensor, g: &CpuTensor, p: &StepParams) -> Result<()> {
    const OP: &str = "sign_step";
    check(OP, p, &[(x, "x"), (g, "gradient g")])?;
    let (alpha, lo, hi) = (p.alpha, p.lo, p.hi);
    with_f32(OP, &[g], &[x], |r, w| {
        w[0].par_chunks_mut(ELT_CHUNK).zip(r[0].par_chunks(ELT_CHUNK)).for_each(|(xs, gs)| {
            for (x, &g) in xs.iter_mut().zip(gs) {
                *x = (*x + alpha * sign(g)).max(lo).min(hi);
            }
        });
        Ok(())
    })
}

/// One PGD L-inf step with projection onto the eps-box around x0 and the [lo, hi] clip.
pub(crate) fn step_project_linf(x: &CpuTensor, g: &CpuTensor, x0: &CpuTensor, p: &StepParams) -> Result<()> {
    const OP: &str = "step_project_linf";
    check(OP, p, &[(x, "x"), (g, "gradient g"), (x0, "clean input x0")])?;
    let (alpha, eps, lo, hi) = (p.alpha, p.eps, p.lo, p.hi);
    with_f32(OP, &[g, x0], &[x], |r, w| {
        w[0].par_chunks_mut(ELT_CHUNK).zip(r[0].par_chunks(ELT_CHUNK)).zip(r[1].par_chunks(ELT_CHUNK)).for_each(
            |((xs, gs), x0s)| {
                for ((x, &g), &c) in xs.iter_mut().zip(gs).zip(x0s) {
                    let s = *x + alpha * sign(g);
                    *x = s.max(c - eps).min(c + eps).max(lo).min(hi);
                }
            },
        );
        Ok(())
    })
}

/// One PGD L2 step: normalised-gradient step, projection onto the eps-ball around x0, clip.
pub(crate) fn step_project_l2(x: &CpuTensor, g: &CpuTensor, x0: &CpuTensor, p: &StepParams) -> Result<()> {
    const OP: &str = "step_project_l2";
    check(OP, p, &[(x, "x"), (g, "gradient g"), (x0, "clean input x0")])?;
    let d = p.d as usize;
    let (alpha, eps, lo, hi) = (p.alpha as f64, p.eps as f64, p.lo, p.hi);
    with_f32(OP, &[g, x0], &[x], |r, w| {
        let min = (ELT_CHUNK / d).max(1);
        w[0].par_chunks_mut(d).zip(r[0].par_chunks(d)).zip(r[1].par_chunks(d)).with_min_len(min).for_each(
            |((xs, gs), x0s)| {
                let gn = gs.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
                let step = if gn > 0.0 { alpha / gn } else { 0.0 };
                let delta = |x: f32, g: f32, c: f32| x as f64 + step * g as f64 - c as f64;
                let dn = xs.iter().zip(gs).zip(x0s).map(|((&x, &g), &c)| delta(x, g, c).powi(2)).sum::<f64>().sqrt();
                let factor = if dn > eps { eps / dn } else { 1.0 };
                for ((x, &g), &c) in xs.iter_mut().zip(gs).zip(x0s) {
                    let v = (c as f64 + delta(*x, g, c) * factor) as f32;
                    *x = v.max(lo).min(hi);
                }
            },
        );
        Ok(())
    })
}
