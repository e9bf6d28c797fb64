//! 2-D convolution, NCHW, weights [c_out, c_in, kh, kw]: direct for layers with at least 4
//! input channels (see [`direct`]), else as im2col + gemm, described here.
//!
//! Per image, `col` is the [K, P] patch matrix (K = c_in*kh*kw rows ordered (ci, ky, kx),
//! P = h_out*w_out columns ordered (oy, ox)); the weight is the [c_out, K] matrix. Then
//! - forward:        y_img [c_out, P]  = W · col
//! - backward input: dcol  [K, P]      = Wᵀ · dy_img, then col2im adds dcol back into dx_img
//! - backward weight: dW   [c_out, K]  = Σ_img dy_img · colᵀ, summed over fixed chunks of
//!   [`WGRAD_CHUNK`] images in chunk order, so the result does not depend on the thread count.
//!
//! A 1x1 kernel with stride 1 and no padding needs no im2col: the image is its own col.
//!
//! Small outputs (P below [`GROUP_COLS`]) are done a group of G images at a time, so one gemm
//! call has enough columns to run at speed instead of paying a call's fixed cost per image:
//! the group's cols sit side by side in one [K, G*P] matrix, the forward writes a
//! [c_out, G*P] product that is then copied out image by image (the backward input reads dy the
//! same way, gathered), and the weight gradient reduces over the chunk's G*P columns in one
//! call. G depends only on the shape, and a batch's last group is padded to G images, so every
//! image goes through the same gemm shape: results depend neither on the thread count nor on
//! the batch size. Many groups: one group per task, single-threaded gemm. Few groups: one at a
//! time, threads inside the gemm and the (col2im/im2col) channel loops.

use crate::matmul::{MatMut, MatRef, Par, chunked_sum, sgemm};
use crate::storage::{CpuTensor, alloc_f32, with_f32};
use crate::{CpuBackend, wrap_f32};
use perturb_core::ops::Conv2dParams;
use perturb_core::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

mod direct;

/// Images per partial of the weight gradient; fixed so sums do not depend on the thread count.
pub const WGRAD_CHUNK: usize = 4;

/// A group of images is made wide enough that its gemm has at least this many columns.
pub const GROUP_COLS: usize = 256;

/// The most images in one group.
const GROUP_MAX: usize = 16;

/// The geometry of one call, in usize.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Geo {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geo {
    fn new(op: &'static str, p: &Conv2dParams) -> Result<Self> {
        // The fields are public, so re-derive them: a hand-made struct with a wrong h_out
        // would otherwise index out of bounds.
        let q = Conv2dParams::new(p.input_dims(), p.weight_dims(), p.stride as usize, p.pad as usize)?;
        if q != *p {
            return Err(Error::invalid(
                op,
                format!(
                    "inconsistent Conv2dParams {p:?}: input {:?}, weight {:?}, stride {}, pad {} give output {:?}",
                    p.input_dims(),
                    p.weight_dims(),
                    p.stride,
                    p.pad,
                    q.output_dims()
                ),
            ));
        }
        // Every buffer length below must fit in usize (products of u32 fields may not).
        let dims = [p.input_dims(), p.weight_dims(), p.output_dims()];
        let too_big = dims.iter().any(|d| d.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).is_none())
            || (p.patch_len()).checked_mul((p.h_out as usize) * (p.w_out as usize)).is_none();
        if too_big {
            return Err(Error::invalid(op, format!("conv of input {:?} is too large to index", p.input_dims())));
        }
        Ok(Geo {
            n: p.n as usize,
            c_in: p.c_in as usize,
            h: p.h as usize,
            w: p.w as usize,
            c_out: p.c_out as usize,
            kh: p.kh as usize,
            kw: p.kw as usize,
            stride: p.stride as usize,
            pad: p.pad as usize,
            ho: p.h_out as usize,
            wo: p.w_out as usize,
        })
    }
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.ho * self.wo
    }
    fn in_img(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn out_img(&self) -> usize {
        self.c_out * self.p()
    }
    /// 1x1, stride 1, no padding: the image already is the [c_in, P] col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// Range of output columns ox whose input column ox*stride + kx - pad lies in [0, w).
    fn ox_range(&self, kx: usize) -> (usize, usize) {
        let lo = if self.pad > kx { (self.pad - kx).div_ceil(self.stride) } else { 0 };
        let hi = if self.w + self.pad > kx { (self.w + self.pad - kx - 1) / self.stride + 1 } else { 0 };
        (lo.min(self.wo), hi.min(self.wo).max(lo.min(self.wo)))
    }
    /// Input row for output row oy and kernel row ky, if inside the image.
    fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky).checked_sub(self.pad).filter(|&i| i < self.h)
    }
    /// Images per group (1 for a pointwise kernel, whose image is its own col matrix, and for
    /// outputs of at least GROUP_COLS pixels). Depends only on the shape.
    fn group(&self) -> usize {
        if self.is_pointwise() { 1 } else { GROUP_COLS.div_ceil(self.p().max(1)).clamp(1, GROUP_MAX) }
    }
    /// Many groups: parallel over groups. Few: parallel inside each group.
    fn per_group_tasks(&self) -> bool {
        let t = rayon::current_num_threads();
        t > 1 && self.n.div_ceil(self.group()) >= 2 * t
    }
}

/// For every kernel tap (ky, kx) and output pixel p, the offset in an input plane that the
/// pixel reads, or `usize::MAX` where it falls in the padding: `[kh*kw, P]`, built once per
/// call so a strided im2col / col2im is one gather / scatter per element (stride 1 copies
/// contiguous runs instead and needs no table).
fn taps(g: &Geo) -> Vec<usize> {
    if g.stride == 1 {
        return Vec::new();
    }
    let mut t = vec![usize::MAX; g.kh * g.kw * g.p()];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let (lo, hi) = g.ox_range(kx);
            let row = &mut t[(ky * g.kw + kx) * g.p()..(ky * g.kw + kx + 1) * g.p()];
            for (oy, out) in row.chunks_exact_mut(g.wo).enumerate() {
                let Some(iy) = g.iy(oy, ky) else { continue };
                for (ox, o) in out.iter_mut().enumerate().take(hi).skip(lo) {
                    *o = iy * g.w + ox * g.stride + kx - g.pad;
                }
            }
        }
    }
    t
}

/// Fills the rows of `col` that belong to input channels `c0..` from one image: `col` holds
/// whole rows of `ld` floats (`col.len() / (kh*kw*ld)` channels of them), and this image's P
/// columns of each row start at `off` (a group's images sit side by side; `ld` = P, `off` = 0
/// for one image).
/// Stride 1 copies each output row's in-image run as one slice; other strides gather through
/// `taps`.
fn im2col_rows(g: &Geo, taps: &[usize], img: &[f32], c0: usize, col: &mut [f32], ld: usize, off: usize) {
    let (p, khw, hw) = (g.p(), g.kh * g.kw, g.h * g.w);
    for (r, full) in col.chunks_exact_mut(ld).enumerate() {
        let ci = c0 + r / khw;
        let plane = &img[ci * hw..(ci + 1) * hw];
        let row = &mut full[off..off + p];
        if g.stride != 1 {
            let tap = &taps[(r % khw) * p..(r % khw + 1) * p];
            for (o, &i) in row.iter_mut().zip(tap) {
                *o = plane.get(i).copied().unwrap_or(0.0);
            }
            continue;
        }
        let (ky, kx) = ((r % khw) / g.kw, r % g.kw);
        let (lo, hi) = g.ox_range(kx);
        for (oy, out) in row.chunks_exact_mut(g.wo).enumerate() {
            let Some(iy) = g.iy(oy, ky) else {
                out.fill(0.0);
                continue;
            };
            let s0 = iy * g.w + lo + kx - g.pad;
            out[..lo].fill(0.0);
            out[hi..].fill(0.0);
            out[lo..hi].copy_from_slice(&plane[s0..s0 + (hi - lo)]);
        }
    }
}

/// One image's col into the [K, ld] matrix `col` at column `off`.
fn im2col(g: &Geo, taps: &[usize], img: &[f32], col: &mut [f32], ld: usize, off: usize, par: Par) {
    let rows_per_c = g.kh * g.kw * ld;
    if par == Par::Pool && g.c_in > 1 {
        col.par_chunks_mut(rows_per_c).enumerate().for_each(|(ci, c)| im2col_rows(g, taps, img, ci, c, ld, off));
    } else {
        im2col_rows(g, taps, img, 0, col, ld, off);
    }
}

/// dx_plane (channel ci) = Σ over its kh*kw rows of dcol, scattered back; rows in (ky, kx)
/// order, each `ld` floats long with this image's columns at `off`.
fn col2im_plane(g: &Geo, taps: &[usize], dcol_c: &[f32], plane: &mut [f32], ld: usize, off: usize) {
    plane.fill(0.0);
    let p = g.p();
    for (r, full) in dcol_c.chunks_exact(ld).enumerate() {
        let row = &full[off..off + p];
        if g.stride != 1 {
            for (s, &i) in row.iter().zip(&taps[r * p..(r + 1) * p]) {
                if let Some(d) = plane.get_mut(i) {
                    *d += *s;
                }
            }
            continue;
        }
        let (ky, kx) = (r / g.kw, r % g.kw);
        let (lo, hi) = g.ox_range(kx);
        for (oy, src) in row.chunks_exact(g.wo).enumerate() {
            let Some(iy) = g.iy(oy, ky) else { continue };
            let d0 = iy * g.w + lo + kx - g.pad;
            for (d, s) in plane[d0..d0 + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                *d += *s;
            }
        }
    }
}

/// One image's dx from the [K, ld] matrix `dcol` at column `off`.
fn col2im(g: &Geo, taps: &[usize], dcol: &[f32], dx_img: &mut [f32], ld: usize, off: usize, par: Par) {
    let (rows_per_c, hw) = (g.kh * g.kw * ld, g.h * g.w);
    if par == Par::Pool && g.c_in > 1 {
        dx_img
            .par_chunks_mut(hw)
            .zip(dcol.par_chunks(rows_per_c))
            .for_each(|(plane, d)| col2im_plane(g, taps, d, plane, ld, off));
    } else {
        for (plane, d) in dx_img.chunks_mut(hw).zip(dcol.chunks(rows_per_c)) {
            col2im_plane(g, taps, d, plane, ld, off);
        }
    }
}

/// Runs `f(first image, outputs of the group, inputs of the group, par)` on every group of
/// `g.group()` images: one group per task (single-threaded inside) when there are many, else
/// one after another with threads inside. `out_img` / `in_img` are the per-image lengths.
fn for_groups<F>(g: &Geo, out: &mut [f32], out_img: usize, inp: &[f32], in_img: usize, f: F) -> Result<()>
where
    F: Fn(&mut [f32], &[f32], Par) -> Result<()> + Sync,
{
    let gsz = g.group();
    if g.per_group_tasks() {
        out.par_chunks_mut(gsz * out_img).zip(inp.par_chunks(gsz * in_img)).try_for_each(|(o, i)| f(o, i, Par::Seq))
    } else {
        out.chunks_mut(gsz * out_img).zip(inp.chunks(gsz * in_img)).try_for_each(|(o, i)| f(o, i, Par::Pool))
    }
}

fn check_io(op: &'static str, a: (&CpuTensor, &str, [usize; 4]), b: (&CpuTensor, &str, [usize; 4])) -> Result<()> {
    a.0.expect_shape(op, a.1, &a.2)?;
    b.0.expect_shape(op, b.1, &b.2)
}

/// y [n, c_out, h_out, w_out] = conv(x [n, c_in, h, w], w [c_out, c_in, kh, kw]).
pub(crate) fn fwd(x: &CpuTensor, w: &CpuTensor, p: &Conv2dParams) -> Result<CpuTensor> {
    const OP: &str = "conv2d_fwd";
    let g = Geo::new(OP, p)?;
    check_io(OP, (x, "input x", p.input_dims()), (w, "weight w", p.weight_dims()))?;
    if direct::wanted(&g) {
        let y = with_f32(OP, &[x, w], &[], |r, _| direct::fwd(&g, r[0], r[1]))?;
        return wrap_f32(y, p.output_dims());
    }
    let mut y = alloc_f32(OP, &p.output_dims())?;
    let (gsz, pp) = (g.group(), g.p());
    let ld = gsz * pp;
    let taps = if g.is_pointwise() { Vec::new() } else { taps(&g) };
    with_f32(OP, &[x, w], &[], |r, _| {
        let (xs, ws) = (r[0], r[1]);
        let wm = MatRef { data: ws, rs: g.k(), cs: 1 };
        for_groups(&g, &mut y, g.out_img(), xs, g.in_img(), |yg, xg, par| {
            if g.is_pointwise() {
                let xm = MatRef { data: xg, rs: pp, cs: 1 };
                return sgemm([g.c_out, pp, g.k()], MatMut { data: yg, rs: pp, cs: 1 }, wm, xm, false, par);
            }
            let count = xg.len() / g.in_img();
            with_scratch(g.k() * ld + if gsz > 1 { g.c_out * ld } else { 0 }, |buf| {
                let (col, t) = buf.split_at_mut(g.k() * ld);
                for (i, xi) in xg.chunks(g.in_img()).enumerate() {
                    im2col(&g, &taps, xi, col, ld, i * pp, par);
                }
                pad_columns(col, ld, count * pp);
                let colm = MatRef { data: col, rs: ld, cs: 1 };
                if gsz == 1 {
                    return sgemm([g.c_out, pp, g.k()], MatMut { data: yg, rs: pp, cs: 1 }, wm, colm, false, par);
                }
                sgemm([g.c_out, ld, g.k()], MatMut { data: t, rs: ld, cs: 1 }, wm, colm, false, par)?;
                // t [c_out, G*P] -> y [count, c_out, P]
                for (i, yi) in yg.chunks_mut(g.out_img()).enumerate() {
                    for (co, dst) in yi.chunks_exact_mut(pp).enumerate() {
                        dst.copy_from_slice(&t[co * ld + i * pp..co * ld + (i + 1) * pp]);
                    }
                }
                Ok(())
            })
        })
    })?;
    wrap_f32(y, p.output_dims())
}

/// Zeroes the columns `used..ld` of every row of an [rows, ld] matrix: a short last group's
/// missing images, so the padded columns hold finite values.
fn pad_columns(m: &mut [f32], ld: usize, used: usize) {
    if used < ld {
        for row in m.chunks_exact_mut(ld) {
            row[used..].fill(0.0);
        }
    }
}

/// dx [n, c_in, h, w] from dy [n, c_out, h_out, w_out] and w [c_out, c_in, kh, kw].
pub(crate) fn bwd_input(dy: &CpuTensor, w: &CpuTensor, p: &Conv2dParams) -> Result<CpuTensor> {
    const OP: &str = "conv2d_bwd_input";
    let g = Geo::new(OP, p)?;
    check_io(OP, (dy, "output gradient dy", p.output_dims()), (w, "weight w", p.weight_dims()))?;
    if direct::wanted(&g) {
        let dx = with_f32(OP, &[dy, w], &[], |r, _| direct::bwd_input(&g, r[0], r[1]))?;
        return wrap_f32(dx, p.input_dims());
    }
    let mut dx = alloc_f32(OP, &p.input_dims())?;
    let (gsz, pp) = (g.group(), g.p());
    let ld = gsz * pp;
    let taps = if g.is_pointwise() { Vec::new() } else { taps(&g) };
    with_f32(OP, &[dy, w], &[], |r, _| {
        let (dys, ws) = (r[0], r[1]);
        let wt = MatRef { data: ws, rs: 1, cs: g.k() };
        for_groups(&g, &mut dx, g.in_img(), dys, g.out_img(), |dxg, dyg, par| {
            if g.is_pointwise() {
                let dyv = MatRef { data: dyg, rs: pp, cs: 1 };
                return sgemm([g.c_in, pp, g.c_out], MatMut { data: dxg, rs: pp, cs: 1 }, wt, dyv, false, par);
            }
            let count = dyg.len() / g.out_img();
            with_scratch(g.k() * ld + if gsz > 1 { g.c_out * ld } else { 0 }, |buf| {
                let (dcol, t) = buf.split_at_mut(g.k() * ld);
                let dyv = if gsz == 1 {
                    MatRef { data: dyg, rs: pp, cs: 1 }
                } else {
                    // dy [count, c_out, P] -> t [c_out, G*P]
                    for (i, dyi) in dyg.chunks(g.out_img()).enumerate() {
                        for (co, src) in dyi.chunks_exact(pp).enumerate() {
                            t[co * ld + i * pp..co * ld + (i + 1) * pp].copy_from_slice(src);
                        }
                    }
                    pad_columns(t, ld, count * pp);
                    MatRef { data: &*t, rs: ld, cs: 1 }
                };
                sgemm([g.k(), ld, g.c_out], MatMut { data: dcol, rs: ld, cs: 1 }, wt, dyv, false, par)?;
                for (i, dxi) in dxg.chunks_mut(g.in_img()).enumerate() {
                    col2im(&g, &taps, dcol, dxi, ld, i * pp, par);
                }
                Ok(())
            })
        })
    })?;
    wrap_f32(dx, p.input_dims())
}

/// dw [c_out, c_in, kh, kw] = Σ over the batch of dy_img · colᵀ, in fixed chunks of images;
/// a chunk's images are side by side in one [K, chunk*P] col (and its dy in [c_out, chunk*P]),
/// so each chunk is one gemm reducing over chunk*P columns.
pub(crate) fn bwd_weight(x: &CpuTensor, dy: &CpuTensor, p: &Conv2dParams) -> Result<CpuTensor> {
    const OP: &str = "conv2d_bwd_weight";
    let g = Geo::new(OP, p)?;
    check_io(OP, (x, "input x", p.input_dims()), (dy, "output gradient dy", p.output_dims()))?;
    let mut dw = alloc_f32(OP, &p.weight_dims())?;
    let pp = g.p();
    let taps = if g.is_pointwise() { Vec::new() } else { taps(&g) };
    with_f32(OP, &[x, dy], &[], |r, _| {
        let (xs, dys) = (r[0], r[1]);
        let chunks = g.n.div_ceil(WGRAD_CHUNK);
        chunked_sum(chunks, &mut dw, |c, part, par| {
            let (i0, i1) = (c * WGRAD_CHUNK, ((c + 1) * WGRAD_CHUNK).min(g.n));
            let xc = &xs[i0 * g.in_img()..i1 * g.in_img()];
            let dyc = &dys[i0 * g.out_img()..i1 * g.out_img()];
            if g.is_pointwise() {
                for (i, (xi, dyi)) in xc.chunks(g.in_img()).zip(dyc.chunks(g.out_img())).enumerate() {
                    sgemm(
                        [g.c_out, g.k(), pp],
                        MatMut { data: part, rs: g.k(), cs: 1 },
                        MatRef { data: dyi, rs: pp, cs: 1 },
                        MatRef { data: xi, rs: 1, cs: pp },
                        i > 0,
                        par,
                    )?;
                }
                return Ok(());
            }
            if direct::wanted_wgrad(&g) {
                direct::wgrad_chunk(&g, xc, dyc, part);
                return Ok(());
            }
            let ld = (i1 - i0) * pp;
            with_scratch((g.k() + g.c_out) * ld, |buf| {
                let (col, t) = buf.split_at_mut(g.k() * ld);
                for (i, (xi, dyi)) in xc.chunks(g.in_img()).zip(dyc.chunks(g.out_img())).enumerate() {
                    im2col(&g, &taps, xi, col, ld, i * pp, par);
                    for (co, src) in dyi.chunks_exact(pp).enumerate() {
                        t[co * ld + i * pp..co * ld + (i + 1) * pp].copy_from_slice(src);
                    }
                }
                sgemm(
                    [g.c_out, g.k(), ld],
                    MatMut { data: part, rs: g.k(), cs: 1 },
                    MatRef { data: t, rs: ld, cs: 1 },
                    MatRef { data: col, rs: 1, cs: ld },
                    false,
                    par,
                )
            })
        })
    })?;
    wrap_f32(dw, p.weight_dims())
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Scratch kept per thread above this size is released after use.
const SCRATCH_KEEP: usize = 16 << 20;

/// Runs `f` with a per-thread scratch buffer of `len` floats (contents unspecified), so the
/// col matrices are not allocated (and page-faulted) per image. A nested call on the same
/// thread (a rayon worker that stole a task while inside `f`) gets a fresh buffer.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            let r = f(&mut v[..len]);
            if v.len() > SCRATCH_KEEP {
                *v = Vec::new();
            }
            r
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

impl CpuBackend {
    /// Images per weight-gradient partial (see the `conv` module docs).
    pub const CONV_WGRAD_CHUNK: usize = WGRAD_CHUNK;
}
