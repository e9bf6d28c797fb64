//! Optimiser updates, in place, elementwise over fixed-size chunks (PyTorch's rules):
//! - SGD: g' = g + wd*w; m = momentum*m + g'; w -= lr * (nesterov ? g' + momentum*m : m)
//! - Adam: decoupled = 0: g' = g + wd*w; decoupled = 1 (AdamW): w *= 1 - lr*wd, g' = g;
//!   m = b1*m + (1-b1)*g'; v = b2*v + (1-b2)*g'^2; w -= lr * (m/bc1) / (sqrt(v/bc2) + eps),
//!   with bc1, bc2 the host-side bias corrections in `AdamParams`.

use crate::elementwise::ELT_CHUNK;
use crate::storage::{CpuTensor, with_f32};
use perturb_core::ops::{AdamParams, SgdParams};
use perturb_core::{Error, Result};
use rayon::prelude::*;

fn check_len(op: &'static str, len: usize, ts: &[(&CpuTensor, &str)]) -> Result<()> {
    for (t, what) in ts {
        t.expect_numel(op, what, len)?;
    }
    Ok(())
}

/// SGD with momentum buffer `m`.
pub(crate) fn sgd(w: &CpuTensor, g: &CpuTensor, m: &CpuTensor, p: &SgdParams) -> Result<()> {
    const OP: &str = "sgd_update";
    let q = SgdParams::new(p.len as usize, p.lr, p.momentum, p.weight_decay, p.nesterov != 0)?;
    if q != *p {
        return Err(Error::invalid(OP, format!("inconsistent SgdParams {p:?}")));
    }
    check_len(OP, p.len as usize, &[(w, "weights w"), (g, "gradient g"), (m, "momentum m")])?;
    let (lr, mom, wd, nesterov) = (p.lr, p.momentum, p.weight_decay, p.nesterov != 0);
    with_f32(OP, &[g], &[w, m], |r, wr| {
        let [ws, ms] = wr else {
            return Err(Error::invalid(OP, "expected two destinations"));
        };
        ws.par_chunks_mut(ELT_CHUNK).zip(ms.par_chunks_mut(ELT_CHUNK)).zip(r[0].par_chunks(ELT_CHUNK)).for_each(
            |((ws, ms), gs)| {
                for ((w, m), &g) in ws.iter_mut().zip(ms.iter_mut()).zip(gs) {
                    let g = g + wd * *w;
                    *m = mom * *m + g;
                    let d = if nesterov { g + mom * *m } else { *m };
                    *w -= lr * d;
                }
            },
        );
        Ok(())
    })
}

/// Adam / AdamW with moment buffers `m`, `v`.
pub(crate) fn adam(w: &CpuTensor, g: &CpuTensor, m: &CpuTensor, v: &CpuTensor, p: &AdamParams) -> Result<()> {
    const OP: &str = "adam_update";
    if !(p.bc1 > 0.0 && p.bc1 <= 1.0 && p.bc2 > 0.0 && p.bc2 <= 1.0) {
        return Err(Error::invalid(
            OP,
            format!("bias corrections bc1 = {}, bc2 = {} must lie in (0, 1]", p.bc1, p.bc2),
        ));
    }
    if !(p.lr.is_finite() && p.lr >= 0.0 && p.eps > 0.0 && p.weight_decay >= 0.0) {
        return Err(Error::invalid(OP, format!("inconsistent AdamParams {p:?}")));
    }
    check_len(
        OP,
        p.len as usize,
        &[(w, "weights w"), (g, "gradient g"), (m, "first moment m"), (v, "second moment v")],
    )?;
    let (lr, b1, b2, eps, wd, bc1, bc2) = (p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, p.bc1, p.bc2);
    let decoupled = p.decoupled != 0;
    with_f32(OP, &[g], &[w, m, v], |r, wr| {
        let [ws, ms, vs] = wr else {
            return Err(Error::invalid(OP, "expected three destinations"));
        };
        ws.par_chunks_mut(ELT_CHUNK)
            .zip(ms.par_chunks_mut(ELT_CHUNK))
            .zip(vs.par_chunks_mut(ELT_CHUNK))
            .zip(r[0].par_chunks(ELT_CHUNK))
            .for_each(|(((ws, ms), vs), gs)| {
                for (((w, m), v), &g) in ws.iter_mut().zip(ms.iter_mut()).zip(vs.iter_mut()).zip(gs) {
                    let g = if decoupled {
                        *w *= 1.0 - lr * wd;
                        g
                    } else {
                        g + wd * *w
                    };
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *w -= lr * (*m / bc1) / ((*v / bc2).sqrt() + eps);
                }
            });
        Ok(())
    })
}
