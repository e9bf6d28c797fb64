//! Max pooling, NCHW, square window k, stride s, no padding; one (n, c) plane per task.
//!
//! The maximum of a window is its first element in row-major order that no later element
//! strictly exceeds (the running maximum moves only on `>`), i.e. the first maximum.
//! Backward, per plane (one task, so no atomics): dy of each window, in (oy, ox) order, is added
//! to the window's first maximum; each input element thus sums dy over the windows that contain
//! it and chose it, in (oy, ox) order.

use crate::storage::{CpuTensor, alloc_f32, with_f32};
use crate::wrap_f32;
use perturb_core::ops::Pool2dParams;
use perturb_core::{Error, Result};
use rayon::prelude::*;

#[derive(Clone, Copy)]
struct Geo {
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    ho: usize,
    wo: usize,
}

fn geo(op: &'static str, p: &Pool2dParams) -> Result<Geo> {
    let q = Pool2dParams::new(p.input_dims(), p.k as usize, p.stride as usize)?;
    if q != *p {
        return Err(Error::invalid(
            op,
            format!("inconsistent Pool2dParams {p:?}: input {:?} gives output {:?}", p.input_dims(), q.output_dims()),
        ));
    }
    Ok(Geo {
        h: p.h as usize,
        w: p.w as usize,
        k: p.k as usize,
        s: p.stride as usize,
        ho: p.h_out as usize,
        wo: p.w_out as usize,
    })
}

/// (max, index within the plane) of window (oy, ox).
#[inline]
fn window_max(g: &Geo, plane: &[f32], oy: usize, ox: usize) -> (f32, usize) {
    let (y0, x0) = (oy * g.s, ox * g.s);
    let mut at = y0 * g.w + x0;
    let mut best = plane[at];
    for dy in 0..g.k {
        let row = (y0 + dy) * g.w;
        for dx in 0..g.k {
            let v = plane[row + x0 + dx];
            if v > best {
                best = v;
                at = row + x0 + dx;
            }
        }
    }
    (best, at)
}

/// y [n, c, h_out, w_out] = window maxima of x [n, c, h, w].
pub(crate) fn fwd(x: &CpuTensor, p: &Pool2dParams) -> Result<CpuTensor> {
    const OP: &str = "maxpool2d_fwd";
    let g = geo(OP, p)?;
    x.expect_shape(OP, "input x", &p.input_dims())?;
    let planes = (p.n * p.c) as usize;
    let mut y = alloc_f32(OP, &[planes, g.ho, g.wo])?;
    with_f32(OP, &[x], &[], |r, _| {
        y.par_chunks_mut(g.ho * g.wo).zip(r[0].par_chunks(g.h * g.w)).for_each(|(yp, xp)| {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    yp[oy * g.wo + ox] = window_max(&g, xp, oy, ox).0;
                }
            }
        });
        Ok(())
    })?;
    wrap_f32(y, p.output_dims())
}

/// dx [n, c, h, w]: each dy routed to the first maximum of its window.
pub(crate) fn bwd(dy: &CpuTensor, x: &CpuTensor, p: &Pool2dParams) -> Result<CpuTensor> {
    const OP: &str = "maxpool2d_bwd";
    let g = geo(OP, p)?;
    dy.expect_shape(OP, "output gradient dy", &p.output_dims())?;
    x.expect_shape(OP, "input x", &p.input_dims())?;
    let mut dx = vec![0.0f32; x.numel()];
    with_f32(OP, &[dy, x], &[], |r, _| {
        let (dys, xs) = (r[0], r[1]);
        // One plane per task, windows visited in (oy, ox) order: each input element receives
        // its contributions in the same order a gather over the windows containing it would
        // add them, so the result is that gather's, bit for bit, without atomics.
        dx.par_chunks_mut(g.h * g.w).zip(xs.par_chunks(g.h * g.w)).zip(dys.par_chunks(g.ho * g.wo)).for_each(
            |((dxp, xp), dyp)| {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let at = window_max(&g, xp, oy, ox).1;
                        dxp[at] += dyp[oy * g.wo + ox];
                    }
                }
            },
        );
        Ok(())
    })?;
    wrap_f32(dx, p.input_dims())
}
