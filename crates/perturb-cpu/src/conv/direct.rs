//! Direct convolution (forward and input gradient) for layers whose patch matrix is small:
//! no [K, P] col matrix goes through memory.
//!
//! Per image the input is copied once into a zero-padded, channel-last buffer
//! `xpad [h + 2 pad][w + 2 pad][c_in]`, so every kernel row of a patch is one contiguous run of
//! `kw * c_in` floats and the patch index kk = (ky * kw + kx) * c_in + ci has a fixed offset
//! from the pixel's corner. Then
//! - forward: a block of PB output pixels times CB blocks of 16 output channels is held in
//!   registers and accumulated over kk (one weight vector load and PB broadcasts per step), then
//!   written to the NCHW output;
//! - input gradient: a block of PB pixels times KB blocks of 16 patch entries is accumulated
//!   over c_out (the pixels' patch gradients, dcol's rows), then added run by run into a padded
//!   channel-last gradient buffer that is finally copied to NCHW.
//!
//! Each image is computed by one thread in a fixed order, so results depend neither on the
//! thread count nor on the batch size. The block shapes are picked per instruction set at run
//! time (AVX-512, AVX2 + FMA, plain); the arithmetic order is the same for every block shape,
//! but FMA machines round once per multiply-add and plain ones twice.

use super::{Geo, with_scratch};
use crate::isa::{Isa, isa, madd};
use crate::storage::par_filled_f32;
use perturb_core::Result;

/// Lanes of one vector block.
const L: usize = 16;
type V = [f32; L];

impl Geo {
    fn hp(&self) -> usize {
        self.h + 2 * self.pad
    }
    fn wp(&self) -> usize {
        self.w + 2 * self.pad
    }
    fn padded_len(&self) -> usize {
        self.hp() * self.wp() * self.c_in
    }
    /// Offset of output pixel `pix`'s patch corner in the padded channel-last buffer.
    fn corner(&self, pix: usize) -> usize {
        let (oy, ox) = (pix / self.wo, pix % self.wo);
        (oy * self.stride * self.wp() + ox * self.stride) * self.c_in
    }
}

/// Whether the direct kernels take this convolution: at least 4 input channels (with fewer,
/// a patch is a few floats and writing the NCHW output lane by lane costs more than the
/// im2col copy it saves), a patch of at most 4,096 floats and at most 256 output channels.
/// Measured on cnn-small's and cnn-madry's layers and the bench's conv layer (docs/bench.md).
/// Pointwise kernels never: they need no copy at all.
pub(super) fn wanted(g: &Geo) -> bool {
    !g.is_pointwise() && g.c_in >= 4 && g.k() <= 4096 && g.c_out <= 256
}

/// Copies one NCHW image into the zero-padded channel-last buffer (only the border is
/// zeroed; the interior is written pixel by pixel, all channels of a pixel side by side).
fn pad_hwc(g: &Geo, img: &[f32], out: &mut [f32]) {
    let (wp, c, hw, p) = (g.wp(), g.c_in, g.h * g.w, g.pad);
    let row = wp * c;
    out[..p * row].fill(0.0);
    out[(p + g.h) * row..].fill(0.0);
    for y in 0..g.h {
        let line = &mut out[(y + p) * row..(y + p + 1) * row];
        line[..p * c].fill(0.0);
        line[(p + g.w) * c..].fill(0.0);
        for (x, px) in line[p * c..(p + g.w) * c].chunks_exact_mut(c).enumerate() {
            for (ci, d) in px.iter_mut().enumerate() {
                *d = img[ci * hw + y * g.w + x];
            }
        }
    }
}

/// Forward weights as 16-lane blocks: block `b * K + kk` holds w[16 b .. 16 b + 16, kk] (zero
/// past c_out), kk in the channel-last patch order.
fn pack_fwd(g: &Geo, ws: &[f32], blocks: usize) -> Vec<V> {
    let (k, khw) = (g.k(), g.kh * g.kw);
    let mut out = vec![[0f32; L]; blocks * k];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            for t in 0..khw {
                out[(co / L) * k + t * g.c_in + ci][co % L] = ws[(co * g.c_in + ci) * khw + t];
            }
        }
    }
    out
}

/// Input-gradient weights: `[c_out][K rounded up to 16]`, kk in the channel-last patch order.
fn pack_bwd(g: &Geo, ws: &[f32], kblocks: usize) -> Vec<V> {
    let khw = g.kh * g.kw;
    let mut out = vec![[0f32; L]; g.c_out * kblocks];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            for t in 0..khw {
                let kk = t * g.c_in + ci;
                out[co * kblocks + kk / L][kk % L] = ws[(co * g.c_in + ci) * khw + t];
            }
        }
    }
    out
}

/// One image's forward: `y_img [c_out, P]` from the padded input.
#[inline(always)]
fn fwd_image<const CB: usize, const PB: usize, const FMA: bool>(g: &Geo, xpad: &[f32], wt: &[V], y_img: &mut [f32]) {
    let (k, p_all, run, row) = (g.k(), g.p(), g.kw * g.c_in, g.wp() * g.c_in);
    let span = (g.kh - 1) * row + run;
    let blocks = wt.len() / k;
    for b0 in (0..blocks).step_by(CB) {
        for pix0 in (0..p_all).step_by(PB) {
            let valid = PB.min(p_all - pix0);
            let mut base = [0usize; PB];
            for (p, b) in base.iter_mut().enumerate() {
                *b = g.corner(pix0 + p.min(valid - 1));
            }
            assert!(base.iter().all(|&b| b + span <= xpad.len()));
            let mut acc = [[[0f32; L]; CB]; PB];
            for ky in 0..g.kh {
                for j in 0..run {
                    let kk = ky * g.kw * g.c_in + j;
                    let off = ky * row + j;
                    let mut wv = [[0f32; L]; CB];
                    for (cb, w) in wv.iter_mut().enumerate() {
                        *w = wt[(b0 + cb) * k + kk];
                    }
                    for p in 0..PB {
                        // SAFETY: base[p] + off < base[p] + span <= xpad.len() (asserted above).
                        let xv = unsafe { *xpad.get_unchecked(base[p] + off) };
                        for cb in 0..CB {
                            for l in 0..L {
                                acc[p][cb][l] = madd::<FMA>(xv, wv[cb][l], acc[p][cb][l]);
                            }
                        }
                    }
                }
            }
            for (p, a) in acc.iter().enumerate().take(valid) {
                for (cb, lanes) in a.iter().enumerate() {
                    for (l, &v) in lanes.iter().enumerate() {
                        let co = (b0 + cb) * L + l;
                        if co < g.c_out {
                            y_img[co * p_all + pix0 + p] = v;
                        }
                    }
                }
            }
        }
    }
}

/// One image's input gradient, accumulated into the padded channel-last `dxpad` (zeroed by
/// the caller); `v` is scratch of PB * kblocks * 16 floats.
#[inline(always)]
fn bwd_image<const KB: usize, const PB: usize, const FMA: bool>(
    g: &Geo,
    dy_img: &[f32],
    wk: &[V],
    dxpad: &mut [f32],
    v: &mut [f32],
) {
    let (p_all, run, row) = (g.p(), g.kw * g.c_in, g.wp() * g.c_in);
    let kblocks = wk.len() / g.c_out;
    let kpad = kblocks * L;
    for pix0 in (0..p_all).step_by(PB) {
        let valid = PB.min(p_all - pix0);
        let mut kb0 = 0;
        while kb0 < kblocks {
            if kb0 + KB <= kblocks {
                block::<KB, PB, FMA>(g, dy_img, wk, kblocks, pix0, valid, kb0, v, kpad);
                kb0 += KB;
            } else {
                block::<1, PB, FMA>(g, dy_img, wk, kblocks, pix0, valid, kb0, v, kpad);
                kb0 += 1;
            }
        }
        for p in 0..valid {
            let base = g.corner(pix0 + p);
            let vp = &v[p * kpad..p * kpad + g.k()];
            for ky in 0..g.kh {
                let dst = &mut dxpad[base + ky * row..base + ky * row + run];
                for (d, s) in dst.iter_mut().zip(&vp[ky * run..(ky + 1) * run]) {
                    *d += *s;
                }
            }
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn block<const KB: usize, const PB: usize, const FMA: bool>(
        g: &Geo,
        dy_img: &[f32],
        wk: &[V],
        kblocks: usize,
        pix0: usize,
        valid: usize,
        kb0: usize,
        v: &mut [f32],
        kpad: usize,
    ) {
        let p_all = g.p();
        let mut acc = [[[0f32; L]; KB]; PB];
        for co in 0..g.c_out {
            let mut wv = [[0f32; L]; KB];
            for (kb, w) in wv.iter_mut().enumerate() {
                *w = wk[co * kblocks + kb0 + kb];
            }
            let dyr = &dy_img[co * p_all..(co + 1) * p_all];
            for p in 0..PB {
                let d = dyr[pix0 + p.min(valid - 1)];
                for kb in 0..KB {
                    for l in 0..L {
                        acc[p][kb][l] = madd::<FMA>(d, wv[kb][l], acc[p][kb][l]);
                    }
                }
            }
        }
        for (p, a) in acc.iter().enumerate().take(valid) {
            for (kb, lanes) in a.iter().enumerate() {
                let o = p * kpad + (kb0 + kb) * L;
                v[o..o + L].copy_from_slice(lanes);
            }
        }
    }
}

/// Copies the interior of the padded channel-last gradient into the NCHW `dx_img`.
fn unpad_hwc(g: &Geo, dxpad: &[f32], dx_img: &mut [f32]) {
    let (wp, c) = (g.wp(), g.c_in);
    for (ci, plane) in dx_img.chunks_exact_mut(g.h * g.w).enumerate() {
        for (y, row) in plane.chunks_exact_mut(g.w).enumerate() {
            let o = ((y + g.pad) * wp + g.pad) * c + ci;
            for (x, d) in row.iter_mut().enumerate() {
                *d = dxpad[o + x * c];
            }
        }
    }
}

/// y [n, c_out, P] = conv(xs, ws), direct; each image's output is allocated and written by the
/// task that computes it.
pub(super) fn fwd(g: &Geo, xs: &[f32], ws: &[f32]) -> Result<Vec<f32>> {
    fwd_with(isa(), g, xs, ws)
}

fn fwd_with(isa: Isa, g: &Geo, xs: &[f32], ws: &[f32]) -> Result<Vec<f32>> {
    let blocks0 = g.c_out.div_ceil(L);
    let wide = blocks0.is_multiple_of(2);
    let wt = pack_fwd(g, ws, blocks0);
    let (n, in_img) = (xs.len() / g.in_img(), g.in_img());
    par_filled_f32(n * g.out_img(), g.out_img(), |i, yi| {
        with_scratch(g.padded_len(), |xpad| {
            pad_hwc(g, &xs[i * in_img..(i + 1) * in_img], xpad);
            fwd_dispatch(isa, wide, g, xpad, &wt, yi);
        })
    })
}

fn fwd_dispatch(isa: Isa, wide: bool, g: &Geo, xpad: &[f32], wt: &[V], yi: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            #[target_feature(enable = "avx512f,fma")]
            fn k(wide: bool, g: &Geo, xpad: &[f32], wt: &[V], yi: &mut [f32]) {
                if wide { fwd_image::<2, 6, true>(g, xpad, wt, yi) } else { fwd_image::<1, 12, true>(g, xpad, wt, yi) }
            }
            // SAFETY: the CPU has AVX-512F and FMA (checked by `isa`).
            unsafe { k(wide, g, xpad, wt, yi) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            #[target_feature(enable = "avx2,fma")]
            fn k(g: &Geo, xpad: &[f32], wt: &[V], yi: &mut [f32]) {
                fwd_image::<1, 6, true>(g, xpad, wt, yi)
            }
            // SAFETY: the CPU has AVX2 and FMA (checked by `isa`).
            unsafe { k(g, xpad, wt, yi) }
        }
        _ => fwd_image::<1, 4, false>(g, xpad, wt, yi),
    }
}

/// dx [n, c_in, h, w] from dy [n, c_out, P] and ws, direct.
pub(super) fn bwd_input(g: &Geo, dys: &[f32], ws: &[f32]) -> Result<Vec<f32>> {
    bwd_input_with(isa(), g, dys, ws)
}

fn bwd_input_with(isa: Isa, g: &Geo, dys: &[f32], ws: &[f32]) -> Result<Vec<f32>> {
    let kblocks = g.k().div_ceil(L);
    let wk = pack_bwd(g, ws, kblocks);
    const PB: usize = 4;
    let (n, out_img) = (dys.len() / g.out_img(), g.out_img());
    par_filled_f32(n * g.in_img(), g.in_img(), |i, dxi| {
        with_scratch(g.padded_len() + PB * kblocks * L, |buf| {
            let (dxpad, v) = buf.split_at_mut(g.padded_len());
            dxpad.fill(0.0);
            bwd_dispatch(isa, g, &dys[i * out_img..(i + 1) * out_img], &wk, dxpad, v);
            unpad_hwc(g, dxpad, dxi);
        })
    })
}

fn bwd_dispatch(isa: Isa, g: &Geo, dyi: &[f32], wk: &[V], dxpad: &mut [f32], v: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            #[target_feature(enable = "avx512f,fma")]
            fn k(g: &Geo, dyi: &[f32], wk: &[V], dxpad: &mut [f32], v: &mut [f32]) {
                bwd_image::<4, 4, true>(g, dyi, wk, dxpad, v)
            }
            // SAFETY: the CPU has AVX-512F and FMA (checked by `isa`).
            unsafe { k(g, dyi, wk, dxpad, v) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            #[target_feature(enable = "avx2,fma")]
            fn k(g: &Geo, dyi: &[f32], wk: &[V], dxpad: &mut [f32], v: &mut [f32]) {
                bwd_image::<2, 3, true>(g, dyi, wk, dxpad, v)
            }
            // SAFETY: the CPU has AVX2 and FMA (checked by `isa`).
            unsafe { k(g, dyi, wk, dxpad, v) }
        }
        _ => bwd_image::<1, 4, false>(g, dyi, wk, dxpad, v),
    }
}

/// Whether the direct weight gradient takes this convolution: [`wanted`], and kernel rows of
/// whole 16-lane blocks (`kw * c_in` a multiple of 16), so every block of patch entries is one
/// contiguous load from the padded image.
pub(super) fn wanted_wgrad(g: &Geo) -> bool {
    wanted(g) && (g.kw * g.c_in).is_multiple_of(L)
}

/// One chunk's weight gradient, `part [c_out, c_in, kh, kw] = sum over its images and pixels
/// of dy[co, pix] * patch(pix)`, summed image by image, pixel by pixel (a fixed order).
pub(super) fn wgrad_chunk(g: &Geo, xc: &[f32], dyc: &[f32], part: &mut [f32]) {
    wgrad_chunk_with(isa(), g, xc, dyc, part)
}

fn wgrad_chunk_with(isa: Isa, g: &Geo, xc: &[f32], dyc: &[f32], part: &mut [f32]) {
    let count = xc.len() / g.in_img();
    let kblocks = g.k() / L;
    let corners: Vec<usize> = (0..g.p()).map(|pix| g.corner(pix)).collect();
    with_scratch(count * g.padded_len() + g.c_out * g.k(), |buf| {
        let (xpads, acc) = buf.split_at_mut(count * g.padded_len());
        for (xi, xp) in xc.chunks_exact(g.in_img()).zip(xpads.chunks_exact_mut(g.padded_len())) {
            pad_hwc(g, xi, xp);
        }
        let blocks: Vec<usize> =
            (0..kblocks).map(|kb| (kb * L / (g.kw * g.c_in)) * g.wp() * g.c_in + (kb * L) % (g.kw * g.c_in)).collect();
        let w = Wgrad { g, xpads, dyc, corners: &corners, blocks: &blocks };
        wgrad_dispatch(isa, &w, acc);
        // acc [c_out][kk] (channel-last patch order) -> part [c_out][ci][ky][kx].
        let khw = g.kh * g.kw;
        for co in 0..g.c_out {
            for kk in 0..g.k() {
                let (t, ci) = (kk / g.c_in, kk % g.c_in);
                part[(co * g.c_in + ci) * khw + t] = acc[co * g.k() + kk];
            }
        }
    })
}

/// The operands of one chunk's weight gradient: padded images side by side, dy, each pixel's
/// patch corner and each 16-lane block's offset from the corner.
struct Wgrad<'a> {
    g: &'a Geo,
    xpads: &'a [f32],
    dyc: &'a [f32],
    corners: &'a [usize],
    blocks: &'a [usize],
}

/// acc [c_out][K] for the chunk: CO output channels times KB blocks of patch entries held in
/// registers, accumulated over every image and pixel.
#[inline(always)]
fn wgrad_image<const CO: usize, const KB: usize, const FMA: bool>(w: &Wgrad, acc: &mut [f32]) {
    let g = w.g;
    let (p_all, k, kblocks) = (g.p(), g.k(), w.blocks.len());
    let mut co0 = 0;
    while co0 < g.c_out {
        let co_n = if co0 + CO <= g.c_out { CO } else { 1 };
        let mut kb0 = 0;
        while kb0 < kblocks {
            let kb_n = if kb0 + KB <= kblocks { KB } else { 1 };
            if co_n == CO && kb_n == KB {
                tile::<CO, KB, FMA>(w, co0, kb0, acc, p_all, k);
            } else if co_n == CO {
                tile::<CO, 1, FMA>(w, co0, kb0, acc, p_all, k);
            } else if kb_n == KB {
                tile::<1, KB, FMA>(w, co0, kb0, acc, p_all, k);
            } else {
                tile::<1, 1, FMA>(w, co0, kb0, acc, p_all, k);
            }
            kb0 += kb_n;
        }
        co0 += co_n;
    }

    #[inline(always)]
    fn tile<const CO: usize, const KB: usize, const FMA: bool>(
        w: &Wgrad,
        co0: usize,
        kb0: usize,
        acc: &mut [f32],
        p_all: usize,
        k: usize,
    ) {
        let g = w.g;
        let mut a = [[[0f32; L]; KB]; CO];
        let offs: [usize; KB] = std::array::from_fn(|kb| w.blocks[kb0 + kb]);
        for (xp, dyi) in w.xpads.chunks_exact(g.padded_len()).zip(w.dyc.chunks_exact(g.out_img())) {
            let dyr: [&[f32]; CO] = std::array::from_fn(|c| &dyi[(co0 + c) * p_all..(co0 + c + 1) * p_all]);
            for (pix, &corner) in w.corners.iter().enumerate() {
                let xv: [V; KB] = std::array::from_fn(|kb| {
                    let o = corner + offs[kb];
                    xp[o..o + L].try_into().expect("a 16-lane block")
                });
                for c in 0..CO {
                    let d = dyr[c][pix];
                    for kb in 0..KB {
                        for l in 0..L {
                            a[c][kb][l] = madd::<FMA>(d, xv[kb][l], a[c][kb][l]);
                        }
                    }
                }
            }
        }
        for (c, rows) in a.iter().enumerate() {
            for (kb, lanes) in rows.iter().enumerate() {
                let o = (co0 + c) * k + (kb0 + kb) * L;
                acc[o..o + L].copy_from_slice(lanes);
            }
        }
    }
}

fn wgrad_dispatch(isa: Isa, w: &Wgrad, acc: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            #[target_feature(enable = "avx512f,fma")]
            fn k(w: &Wgrad, acc: &mut [f32]) {
                wgrad_image::<4, 4, true>(w, acc)
            }
            // SAFETY: the CPU has AVX-512F and FMA (checked by `isa`).
            unsafe { k(w, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            #[target_feature(enable = "avx2,fma")]
            fn k(w: &Wgrad, acc: &mut [f32]) {
                wgrad_image::<2, 2, true>(w, acc)
            }
            // SAFETY: the CPU has AVX2 and FMA (checked by `isa`).
            unsafe { k(w, acc) }
        }
        _ => wgrad_image::<1, 2, false>(w, acc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perturb_core::ops::Conv2dParams;

    fn vals(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0).collect()
    }

    /// The definition, in f64: y[co, oy, ox] = sum w[co, ci, ky, kx] x[ci, oy s + ky - p, ox s + kx - p].
    fn naive(g: &Geo, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mut y, mut dx) = (vec![0f64; g.n * g.out_img()], vec![0f64; g.n * g.in_img()]);
        let mut dw = vec![0f64; w.len()];
        for i in 0..g.n {
            for co in 0..g.c_out {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let o = ((i * g.c_out + co) * g.ho + oy) * g.wo + ox;
                        for ci in 0..g.c_in {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let (iy, ix) = (
                                        (oy * g.stride + ky) as isize - g.pad as isize,
                                        (ox * g.stride + kx) as isize - g.pad as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        continue;
                                    }
                                    let xi = ((i * g.c_in + ci) * g.h + iy as usize) * g.w + ix as usize;
                                    let wv = w[((co * g.c_in + ci) * g.kh + ky) * g.kw + kx] as f64;
                                    y[o] += wv * x[xi] as f64;
                                    dx[xi] += wv * dy[o] as f64;
                                    dw[((co * g.c_in + ci) * g.kh + ky) * g.kw + kx] += x[xi] as f64 * dy[o] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
        (f(y), f(dx), f(dw))
    }

    #[test]
    fn matches_the_definition_on_every_instruction_set() {
        // [n, c_in, h, w], [c_out, kh, kw], stride, pad: one and several channel blocks (odd and
        // even counts), c_out not a multiple of 16, non-square kernels, strides, wide padding,
        // pixel counts that leave partial blocks.
        let cases = [
            ([3, 4, 7, 9], [5, 3, 3], 1, 1),
            ([2, 16, 14, 14], [32, 4, 4], 2, 1),
            ([2, 6, 8, 8], [48, 3, 3], 2, 0),
            ([1, 5, 5, 6], [17, 2, 3], 3, 2),
            ([2, 20, 6, 5], [64, 5, 5], 1, 2),
            // Whole 16-lane kernel rows (the direct weight gradient), c_out not a multiple of 4.
            ([3, 16, 9, 9], [6, 3, 4], 2, 1),
            ([2, 32, 7, 7], [20, 3, 3], 1, 1),
        ];
        assert_eq!(cases.iter().filter(|c| (c.1[2] * c.0[1]) % L == 0).count(), 3);
        for (case, ([n, c, h, w], [co, kh, kw], s, p)) in cases.into_iter().enumerate() {
            let prm = Conv2dParams::new([n, c, h, w], [co, c, kh, kw], s, p).unwrap();
            let g = Geo::new("test", &prm).unwrap();
            assert!(wanted(&g));
            let (x, wt, dy) =
                (vals(g.n * g.in_img(), case), vals(co * g.k(), case + 10), vals(g.n * g.out_img(), case + 20));
            let (y_ref, dx_ref, dw_ref) = naive(&g, &x, &wt, &dy);
            for isa in crate::isa::all() {
                // (An element a kernel failed to write would stay 0, against a non-zero reference.)
                let y = fwd_with(isa, &g, &x, &wt).unwrap();
                let dx = bwd_input_with(isa, &g, &dy, &wt).unwrap();
                let mut dw = vec![f32::NAN; dw_ref.len()];
                if wanted_wgrad(&g) {
                    wgrad_chunk_with(isa, &g, &x, &dy, &mut dw);
                } else {
                    dw.copy_from_slice(&dw_ref);
                }
                let tol = 1e-5 * (g.k().max(g.c_out * g.kh * g.kw).max(g.n * g.p()) as f32);
                for (what, got, want) in [("y", &y, &y_ref), ("dx", &dx, &dx_ref), ("dw", &dw, &dw_ref)] {
                    for (j, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                        assert!((a - b).abs() <= tol, "case {case} {isa:?} {what}[{j}]: {a} vs {b}");
                    }
                }
            }
        }
    }
}
