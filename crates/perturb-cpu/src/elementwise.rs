//! Elementwise ops (relu, axpby, mul, bias), row reductions (sum_rows, argmax_rows, bias_grad),
//! fill and the Philox fill. Parallel over fixed-size element chunks; no per-element allocation.
//!
//! Sums use one fixed order everywhere ([`sum_fixed`]): blocks of [`SUM_BLOCK`] elements, each
//! summed in 8 lanes then pairwise, block sums added left to right, so a sum is the same
//! whether its blocks ran on one thread or several.

use crate::matmul::{Par, chunked_sum};
use crate::storage::{CpuTensor, dtype_error, with_f32};
use crate::{CpuData, wrap_f32};
use perturb_core::ops::{BiasParams, EltParams, RngParams, RowParams};
use perturb_core::{DType, Error, Result, rng};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task of an elementwise op.
pub(crate) const ELT_CHUNK: usize = 16 * 1024;
/// Elements per block of a fixed-order sum.
pub const SUM_BLOCK: usize = 4096;
/// Outer items (batch entries) per partial of `bias_grad`.
pub const BIAS_CHUNK: usize = 8;

/// Sum of at most a block: 8 lanes (so the compiler vectorises it), then a fixed pairwise tree.
#[inline]
fn sum_block(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = xs.chunks_exact(8);
    for c in &mut it {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    for (l, &v) in it.remainder().iter().enumerate() {
        acc[l] += v;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// The fixed-order sum (single-threaded).
pub(crate) fn sum_fixed(xs: &[f32]) -> f32 {
    xs.chunks(SUM_BLOCK).map(sum_block).fold(0.0, |a, b| a + b)
}

/// The same sum, blocks in parallel; bit-identical to [`sum_fixed`].
pub(crate) fn sum_fixed_par(xs: &[f32]) -> f32 {
    let parts: Vec<f32> = xs.par_chunks(SUM_BLOCK).map(sum_block).collect();
    parts.into_iter().fold(0.0, |a, b| a + b)
}

/// A new vector of `len` floats, every one written by `fill(chunk, start)` on the chunks of
/// `chunk` floats (the last may be shorter) that start at `start`, in parallel; no zero-fill
/// first (an elementwise op writes each output once: clearing the memory beforehand cost it a
/// second pass, 8% of the samples of a PGD loop).
fn new_filled(len: usize, chunk: usize, fill: impl Fn(&mut [MaybeUninit<f32>], usize) + Sync) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk).enumerate().for_each(|(c, o)| fill(o, c * chunk));
    // SAFETY: the chunks cover all `len` elements of the spare capacity and `fill` writes
    // every element of its chunk (each caller's loop zips the chunk with inputs of equal length).
    unsafe { out.set_len(len) };
    out
}

fn map1(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    new_filled(a.len(), ELT_CHUNK, |o, at| {
        let n = o.len();
        for (o, &a) in o.iter_mut().zip(&a[at..at + n]) {
            o.write(f(a));
        }
    })
}

fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    new_filled(a.len(), ELT_CHUNK, |o, at| {
        let n = o.len();
        for ((o, &a), &b) in o.iter_mut().zip(&a[at..at + n]).zip(&b[at..at + n]) {
            o.write(f(a, b));
        }
    })
}

/// max(x, 0); NaN maps to 0 (`x > 0` is false).
pub(crate) fn relu_fwd(x: &CpuTensor) -> Result<CpuTensor> {
    const OP: &str = "relu_fwd";
    let y = with_f32(OP, &[x], &[], |r, _| Ok(map1(r[0], |v| if v > 0.0 { v } else { 0.0 })))?;
    wrap_f32(y, x.shape().clone())
}

/// dy where x > 0, else 0.
pub(crate) fn relu_bwd(dy: &CpuTensor, x: &CpuTensor) -> Result<CpuTensor> {
    const OP: &str = "relu_bwd";
    if dy.shape() != x.shape() {
        return Err(Error::shape(OP, format!("dy {} and x {} differ", dy.shape(), x.shape())));
    }
    let dx = with_f32(OP, &[dy, x], &[], |r, _| Ok(map2(r[0], r[1], |g, v| if v > 0.0 { g } else { 0.0 })))?;
    wrap_f32(dx, x.shape().clone())
}

fn same_numel(op: &'static str, x: &CpuTensor, y: &CpuTensor) -> Result<()> {
    if x.numel() != y.numel() {
        return Err(Error::shape(
            op,
            format!("x {} ({} elements) and y {} ({} elements) differ", x.shape(), x.numel(), y.shape(), y.numel()),
        ));
    }
    Ok(())
}

/// a*x + b*y, shaped like x.
pub(crate) fn axpby(x: &CpuTensor, y: &CpuTensor, p: &EltParams) -> Result<CpuTensor> {
    const OP: &str = "axpby";
    same_numel(OP, x, y)?;
    x.expect_numel(OP, "x", p.len as usize)?;
    let (a, b) = (p.a, p.b);
    let out = with_f32(OP, &[x, y], &[], |r, _| Ok(map2(r[0], r[1], |u, v| a * u + b * v)))?;
    wrap_f32(out, x.shape().clone())
}

/// x * y, shaped like x.
pub(crate) fn mul(x: &CpuTensor, y: &CpuTensor) -> Result<CpuTensor> {
    const OP: &str = "mul";
    same_numel(OP, x, y)?;
    let out = with_f32(OP, &[x, y], &[], |r, _| Ok(map2(r[0], r[1], |u, v| u * v)))?;
    wrap_f32(out, x.shape().clone())
}

fn row_dims(op: &'static str, x: &CpuTensor, p: &RowParams) -> Result<(usize, usize)> {
    let (rows, cols) = (p.rows as usize, p.cols as usize);
    if rows == 0 || cols == 0 {
        return Err(Error::invalid(op, format!("rows = {rows} and cols = {cols} must be > 0")));
    }
    if x.numel() != rows * cols {
        return Err(Error::shape(
            op,
            format!("x {} has {} elements, not rows {rows} x cols {cols}", x.shape(), x.numel()),
        ));
    }
    Ok((rows, cols))
}

/// Sum of each row of x viewed as [rows, cols] -> [rows].
pub(crate) fn sum_rows(x: &CpuTensor, p: &RowParams) -> Result<CpuTensor> {
    const OP: &str = "sum_rows";
    let (rows, cols) = row_dims(OP, x, p)?;
    let mut out = vec![0.0f32; rows];
    with_f32(OP, &[x], &[], |r, _| {
        let xs = r[0];
        if rows >= rayon::current_num_threads() {
            let min = (ELT_CHUNK / cols).max(1);
            out.par_iter_mut().zip(xs.par_chunks(cols)).with_min_len(min).for_each(|(o, row)| *o = sum_fixed(row));
        } else {
            for (o, row) in out.iter_mut().zip(xs.chunks(cols)) {
                *o = sum_fixed_par(row);
            }
        }
        Ok(())
    })?;
    wrap_f32(out, [rows])
}

/// First index of the maximum of each row -> u32 [rows]. The running maximum starts at the
/// row's first element and moves only on a strictly greater one (so NaN never wins later on).
pub(crate) fn argmax_rows(x: &CpuTensor, p: &RowParams) -> Result<CpuTensor> {
    const OP: &str = "argmax_rows";
    let (rows, cols) = row_dims(OP, x, p)?;
    let mut out = vec![0u32; rows];
    with_f32(OP, &[x], &[], |r, _| {
        let min = (ELT_CHUNK / cols).max(1);
        out.par_iter_mut().zip(r[0].par_chunks(cols)).with_min_len(min).for_each(|(o, row)| {
            let (mut best, mut at) = (row[0], 0usize);
            for (j, &v) in row.iter().enumerate().skip(1) {
                if v > best {
                    best = v;
                    at = j;
                }
            }
            *o = at as u32;
        });
        Ok(())
    })?;
    crate::wrap(CpuData::U32(out), [rows].into(), DType::U32)
}

fn bias_dims(op: &'static str, p: &BiasParams) -> Result<(usize, usize, usize)> {
    let q = BiasParams::new(p.outer as usize, p.channels as usize, p.inner as usize)?;
    if q != *p {
        return Err(Error::invalid(op, format!("inconsistent BiasParams {p:?}")));
    }
    Ok((p.outer as usize, p.channels as usize, p.inner as usize))
}

/// y + b broadcast over y viewed as [outer, channels, inner].
pub(crate) fn bias_add(y: &CpuTensor, b: &CpuTensor, p: &BiasParams) -> Result<CpuTensor> {
    const OP: &str = "bias_add";
    let (outer, ch, inner) = bias_dims(OP, p)?;
    y.expect_numel(OP, "y", outer * ch * inner)?;
    b.expect_numel(OP, "bias b", ch)?;
    let out = with_f32(OP, &[y, b], &[], |r, _| {
        let (ys, bs) = (r[0], r[1]);
        if ys.is_empty() {
            return Ok(Vec::new());
        }
        // Whole rows (one channel's `inner` values) per chunk, about ELT_CHUNK floats.
        let rows = (ELT_CHUNK / inner.max(1)).max(1);
        Ok(new_filled(ys.len(), rows * inner, |o, at| {
            let n = o.len();
            for (k, (o, row)) in o.chunks_mut(inner).zip(ys[at..at + n].chunks(inner)).enumerate() {
                let bv = bs[(at / inner + k) % ch];
                for (o, &v) in o.iter_mut().zip(row) {
                    o.write(v + bv);
                }
            }
        }))
    })?;
    wrap_f32(out, y.shape().clone())
}

/// db [channels] = Σ over outer and inner of dy; outer cut into fixed chunks of [`BIAS_CHUNK`].
pub(crate) fn bias_grad(dy: &CpuTensor, p: &BiasParams) -> Result<CpuTensor> {
    const OP: &str = "bias_grad";
    let (outer, ch, inner) = bias_dims(OP, p)?;
    dy.expect_numel(OP, "dy", outer * ch * inner)?;
    let mut db = vec![0.0f32; ch];
    with_f32(OP, &[dy], &[], |r, _| {
        let ds = r[0];
        chunked_sum(outer.div_ceil(BIAS_CHUNK), &mut db, |c, part, par| {
            let (o0, o1) = (c * BIAS_CHUNK, ((c + 1) * BIAS_CHUNK).min(outer));
            let channel = |ci: usize| {
                (o0..o1).fold(0.0f32, |acc, o| {
                    let s = (o * ch + ci) * inner;
                    acc + sum_fixed(&ds[s..s + inner])
                })
            };
            if par == Par::Pool {
                part.par_iter_mut().enumerate().for_each(|(ci, v)| *v = channel(ci));
            } else {
                for (ci, v) in part.iter_mut().enumerate() {
                    *v = channel(ci);
                }
            }
            Ok(())
        })
    })?;
    wrap_f32(db, [ch])
}

/// Overwrites a float tensor with `value` (f16/bf16 get the rounded value).
pub(crate) fn fill(dst: &CpuTensor, value: f32) -> Result<()> {
    const OP: &str = "fill_";
    let mut g = dst.storage().write();
    if g.dtype() != dst.dtype() || g.len() != dst.numel() {
        return Err(Error::shape(OP, format!("tensor {} ({}) does not match its storage", dst.shape(), dst.dtype())));
    }
    match &mut *g {
        CpuData::F32(v) => v.par_chunks_mut(ELT_CHUNK).for_each(|c| c.fill(value)),
        CpuData::F16(v) => v.fill(half::f16::from_f32(value)),
        CpuData::BF16(v) => v.fill(half::bf16::from_f32(value)),
        CpuData::U32(_) => return Err(dtype_error(OP, dst)),
    }
    Ok(())
}

/// Element i = `rng::sample(p, dist, i)`, filled in parallel.
pub(crate) fn rng_fill(dst: &CpuTensor, p: &RngParams) -> Result<()> {
    const OP: &str = "rng_fill";
    let dist = p.dist()?;
    dst.expect_numel(OP, "destination", p.len as usize)?;
    with_f32(OP, &[], &[dst], |_, w| {
        w[0].par_chunks_mut(ELT_CHUNK).enumerate().for_each(|(c, out)| {
            let base = (c * ELT_CHUNK) as u64;
            for (j, o) in out.iter_mut().enumerate() {
                *o = rng::sample(p, dist, base + j as u64);
            }
        });
        Ok(())
    })
}
