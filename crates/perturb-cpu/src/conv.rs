//! 2-D convolution, NCHW, weights [c_out, c_in, kh, kw], as im2col + gemm.
//!
//! Per image, `col` is the [K, P] patch matrix (K = c_in*kh*kw rows ordered (ci, ky, kx),
//! P = h_out*w_out columns ordered (oy, ox)); the weight is the [c_out, K] matrix. Then
//! - forward:        y_img [c_out, P]  = W · col
//! - backward input: dcol  [K, P]      = Wᵀ · dy_img, then col2im adds dcol back into dx_img
//! - backward weight: dW   [c_out, K]  = Σ_img dy_img · colᵀ, summed over fixed chunks of
//!   [`WGRAD_CHUNK`] images in chunk order, so the result does not depend on the thread count.
//!
//! A 1x1 kernel with stride 1 and no padding needs no im2col: the image is its own col.
//! Many images: one image per task, single-threaded gemm. Few images: one image at a time,
//! threads inside the gemm and the (col2im/im2col) channel loops.

use crate::matmul::{MatMut, MatRef, Par, chunked_sum, sgemm};
use crate::storage::{CpuTensor, alloc_f32, with_f32};
use crate::{CpuBackend, wrap_f32};
use perturb_core::ops::Conv2dParams;
use perturb_core::{Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// Images per partial of the weight gradient; fixed so sums do not depend on the thread count.
pub const WGRAD_CHUNK: usize = 4;

/// The geometry of one call, in usize.
#[derive(Clone, Copy, Debug)]
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
    /// Length of the col scratch (none for a pointwise kernel).
    fn col_len(&self) -> usize {
        if self.is_pointwise() { 0 } else { self.k() * self.p() }
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
    /// Many images: parallel over images. Few: parallel inside each image.
    fn per_image_tasks(&self) -> bool {
        let t = rayon::current_num_threads();
        t > 1 && self.n >= 2 * t
    }
}

/// Fills the rows of `col` ([K, P]) that belong to input channels `c0..`, `col.len() / (kh*kw*P)`
/// of them, from one image.
fn im2col_rows(g: &Geo, img: &[f32], c0: usize, col: &mut [f32]) {
    let (p, khw) = (g.p(), g.kh * g.kw);
    for (r, row) in col.chunks_exact_mut(p).enumerate() {
        let ci = c0 + r / khw;
        let (ky, kx) = ((r % khw) / g.kw, r % g.kw);
        let plane = &img[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        let (lo, hi) = g.ox_range(kx);
        for (oy, out) in row.chunks_exact_mut(g.wo).enumerate() {
            let Some(iy) = g.iy(oy, ky) else {
                out.fill(0.0);
                continue;
            };
            let src = &plane[iy * g.w..(iy + 1) * g.w];
            out[..lo].fill(0.0);
            out[hi..].fill(0.0);
            if g.stride == 1 {
                let s0 = lo + kx - g.pad;
                out[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
            } else {
                for (ox, o) in out[lo..hi].iter_mut().enumerate() {
                    *o = src[(lo + ox) * g.stride + kx - g.pad];
                }
            }
        }
    }
}

fn im2col(g: &Geo, img: &[f32], col: &mut [f32], par: Par) {
    let rows_per_c = g.kh * g.kw * g.p();
    if par == Par::Pool && g.c_in > 1 {
        col.par_chunks_mut(rows_per_c).enumerate().for_each(|(ci, c)| im2col_rows(g, img, ci, c));
    } else {
        im2col_rows(g, img, 0, col);
    }
}

/// dx_plane (channel ci) = Σ over its kh*kw rows of dcol, scattered back; rows in (ky, kx) order.
fn col2im_plane(g: &Geo, dcol_c: &[f32], plane: &mut [f32]) {
    plane.fill(0.0);
    let p = g.p();
    for (r, row) in dcol_c.chunks_exact(p).enumerate() {
        let (ky, kx) = (r / g.kw, r % g.kw);
        let (lo, hi) = g.ox_range(kx);
        for (oy, src) in row.chunks_exact(g.wo).enumerate() {
            let Some(iy) = g.iy(oy, ky) else { continue };
            let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
            if g.stride == 1 {
                let d0 = lo + kx - g.pad;
                for (d, s) in dst[d0..d0 + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                    *d += *s;
                }
            } else {
                for ox in lo..hi {
                    dst[ox * g.stride + kx - g.pad] += src[ox];
                }
            }
        }
    }
}

fn col2im(g: &Geo, dcol: &[f32], dx_img: &mut [f32], par: Par) {
    let (rows_per_c, hw) = (g.kh * g.kw * g.p(), g.h * g.w);
    if par == Par::Pool && g.c_in > 1 {
        dx_img.par_chunks_mut(hw).zip(dcol.par_chunks(rows_per_c)).for_each(|(plane, d)| col2im_plane(g, d, plane));
    } else {
        for (plane, d) in dx_img.chunks_mut(hw).zip(dcol.chunks(rows_per_c)) {
            col2im_plane(g, d, plane);
        }
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
    let mut y = alloc_f32(OP, &p.output_dims())?;
    with_f32(OP, &[x, w], &[], |r, _| {
        let (xs, ws) = (r[0], r[1]);
        let one = |xi: &[f32], yi: &mut [f32], col: &mut [f32], par: Par| -> Result<()> {
            let colm: &[f32] = if g.is_pointwise() {
                xi
            } else {
                im2col(&g, xi, col, par);
                col
            };
            sgemm(
                [g.c_out, g.p(), g.k()],
                MatMut { data: yi, rs: g.p(), cs: 1 },
                MatRef { data: ws, rs: g.k(), cs: 1 },
                MatRef { data: colm, rs: g.p(), cs: 1 },
                false,
                par,
            )
        };
        if g.per_image_tasks() {
            y.par_chunks_mut(g.out_img())
                .zip(xs.par_chunks(g.in_img()))
                .try_for_each(|(yi, xi)| with_scratch(g.col_len(), |col| one(xi, yi, col, Par::Seq)))
        } else {
            with_scratch(g.col_len(), |col| {
                for (yi, xi) in y.chunks_mut(g.out_img()).zip(xs.chunks(g.in_img())) {
                    one(xi, yi, col, Par::Pool)?;
                }
                Ok(())
            })
        }
    })?;
    wrap_f32(y, p.output_dims())
}

/// dx [n, c_in, h, w] from dy [n, c_out, h_out, w_out] and w [c_out, c_in, kh, kw].
pub(crate) fn bwd_input(dy: &CpuTensor, w: &CpuTensor, p: &Conv2dParams) -> Result<CpuTensor> {
    const OP: &str = "conv2d_bwd_input";
    let g = Geo::new(OP, p)?;
    check_io(OP, (dy, "output gradient dy", p.output_dims()), (w, "weight w", p.weight_dims()))?;
    let mut dx = alloc_f32(OP, &p.input_dims())?;
    with_f32(OP, &[dy, w], &[], |r, _| {
        let (dys, ws) = (r[0], r[1]);
        let one = |dyi: &[f32], dxi: &mut [f32], col: &mut [f32], par: Par| -> Result<()> {
            let wt = MatRef { data: ws, rs: 1, cs: g.k() };
            let dyv = MatRef { data: dyi, rs: g.p(), cs: 1 };
            if g.is_pointwise() {
                return sgemm([g.c_in, g.p(), g.c_out], MatMut { data: dxi, rs: g.p(), cs: 1 }, wt, dyv, false, par);
            }
            sgemm([g.k(), g.p(), g.c_out], MatMut { data: col, rs: g.p(), cs: 1 }, wt, dyv, false, par)?;
            col2im(&g, col, dxi, par);
            Ok(())
        };
        if g.per_image_tasks() {
            dx.par_chunks_mut(g.in_img())
                .zip(dys.par_chunks(g.out_img()))
                .try_for_each(|(dxi, dyi)| with_scratch(g.col_len(), |col| one(dyi, dxi, col, Par::Seq)))
        } else {
            with_scratch(g.col_len(), |col| {
                for (dxi, dyi) in dx.chunks_mut(g.in_img()).zip(dys.chunks(g.out_img())) {
                    one(dyi, dxi, col, Par::Pool)?;
                }
                Ok(())
            })
        }
    })?;
    wrap_f32(dx, p.input_dims())
}

/// dw [c_out, c_in, kh, kw] = Σ over the batch of dy_img · colᵀ, in fixed chunks of images.
pub(crate) fn bwd_weight(x: &CpuTensor, dy: &CpuTensor, p: &Conv2dParams) -> Result<CpuTensor> {
    const OP: &str = "conv2d_bwd_weight";
    let g = Geo::new(OP, p)?;
    check_io(OP, (x, "input x", p.input_dims()), (dy, "output gradient dy", p.output_dims()))?;
    let mut dw = alloc_f32(OP, &p.weight_dims())?;
    with_f32(OP, &[x, dy], &[], |r, _| {
        let (xs, dys) = (r[0], r[1]);
        let chunks = g.n.div_ceil(WGRAD_CHUNK);
        chunked_sum(chunks, &mut dw, |c, part, par| {
            with_scratch(g.col_len(), |col| {
                let (i0, i1) = (c * WGRAD_CHUNK, ((c + 1) * WGRAD_CHUNK).min(g.n));
                for i in i0..i1 {
                    let xi = &xs[i * g.in_img()..(i + 1) * g.in_img()];
                    let dyi = &dys[i * g.out_img()..(i + 1) * g.out_img()];
                    let colm: &[f32] = if g.is_pointwise() {
                        xi
                    } else {
                        im2col(&g, xi, col, par);
                        col
                    };
                    sgemm(
                        [g.c_out, g.k(), g.p()],
                        MatMut { data: part, rs: g.k(), cs: 1 },
                        MatRef { data: dyi, rs: g.p(), cs: 1 },
                        MatRef { data: colm, rs: 1, cs: g.p() },
                        i > i0,
                        par,
                    )?;
                }
                Ok(())
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
