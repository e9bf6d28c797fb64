// conv2d_tex.wgsl: variant v3 of the conv2d family (see conv2d.wgsl for the implicit-GEMM
// formulation, the modes and v1/v2), for CPU adapters. One file of its own because WGSL has
// no includes and conv2d.wgsl would pass 800 lines; the parameter struct and the few
// indexing helpers below are copies of conv2d.wgsl's.
//
// Variants:
//   v3 texture operands, for CPU adapters: llvmpipe turns each storage-buffer load into a
//      per-lane scalar loop (about 8 ns a float on a 2-core EPYC) while a texel fetch of 4
//      floats costs about 3 ns, so both operands are read from rgba32float texture copies
//      the host makes, and each invocation does as many multiply-adds per fetch as it can:
//      64 invocations per workgroup, each CR output rows (CR = 1, 2, 4 or 8, an override set
//      from M) by 4 columns.
//      fwd: weight rows read as whole texels (4 taps per fetch) when AVEC says they start on
//      texel boundaries; with KW4 (kw = 4) a kernel row's 4 taps read 4 adjacent x values,
//      fetched as 2 texels and shifted (x_quad), so a step is CR + 8 fetches for 16 CR
//      multiply-adds.
//      bwd_input: w and dy come packed channels-last ([c_in, kh, kw, C4], [n, h_out, w_out,
//      C4], C4 = c_out rounded up to 4; bias.wgsl pack_channels_last4), so one fetch gives 4
//      output channels; only the taps that reach a pixel are walked (kh/s x kw/s of them for
//      stride s), the columns of one workgroup being the pixels of one stride-parity class
//      (ih % s, iw % s) so every invocation visits the same taps.
//      bwd_weight with KW4: dy packed as [c_out, L4] (bias.wgsl pack_channels_first4), one
//      (ci, r) column quad per invocation, 4 reduction steps per dy texel; otherwise scalar
//      fetches. No workgroup memory, no barriers anywhere.
//
// bwd_weight splits K like the other variants (Conv2dParams._pad0 = splits > 1); the partials
// are added by conv2d.wgsl's conv2d_bwd_weight_sum_splits.
//
// Bindings: 0 Conv2dParams, 6 ta and 7 tb (rgba32float texture copies of the operands a and b,
// or of their packed layouts), 3 c (the output, or a K-split's partial).

struct Conv2dParams {
    n: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    h_out: u32,
    w_out: u32,
    // The core struct's _pad0: how many K-splits bwd_weight computes (0 or 1: none).
    splits: u32,
}

@group(0) @binding(0) var<uniform> p: Conv2dParams;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const FWD: u32 = 0u;
const BWD_INPUT: u32 = 1u;
const BWD_WEIGHT: u32 = 2u;

// (M, N, K) of each mode's product.
fn dims(mode: u32) -> vec3<u32> {
    let khw = p.kh * p.kw;
    let out_px = p.n * p.h_out * p.w_out;
    switch mode {
        case 0u: { return vec3<u32>(p.c_out, out_px, p.c_in * khw); }
        case 1u: { return vec3<u32>(p.c_in, p.n * p.h * p.w, p.c_out * khw); }
        default: { return vec3<u32>(p.c_out, p.c_in * khw, out_px); }
    }
}

// Offset of this workgroup's K-split partial in c (bwd_weight with splits > 1), else 0.
var<private> c_base: u32;

// Split-K (bwd_weight): the workgroup row index is m_tile + tiles_m * split, and split s
// sums kk in [s * chunk, (s + 1) * chunk). Returns (m_tile, k_begin, k_end, split).
fn split_k(wid_y: u32, d: vec3<u32>, tile_rows: u32) -> vec4<u32> {
    let s = max(p.splits, 1u);
    let tiles_m = (d.x + tile_rows - 1u) / tile_rows;
    let split = wid_y / tiles_m;
    let chunk = (d.z + s - 1u) / s;
    let kb = min(split * chunk, d.z);
    return vec4<u32>(wid_y - split * tiles_m, kb, min(kb + chunk, d.z), split);
}

// Where C(i, j) lives in the output tensor (or in the split's partial for bwd_weight).
fn c_index(mode: u32, d: vec3<u32>, i: u32, j: u32) -> u32 {
    switch mode {
        case 0u: {
            let hw = p.h_out * p.w_out;
            let bb = j / hw;
            return (bb * p.c_out + i) * hw + (j - bb * hw);
        }
        case 1u: {
            let hw = p.h * p.w;
            let bb = j / hw;
            return (bb * p.c_in + i) * hw + (j - bb * hw);
        }
        default: { return c_base + i * d.y + j; }
    }
}

fn store4(mode: u32, d: vec3<u32>, i: u32, j0: u32, step: u32, v: vec4<f32>) {
    if (i >= d.x) {
        return;
    }
    for (var s = 0u; s < 4u; s++) {
        let j = j0 + step * s;
        if (j < d.y) {
            c[c_index(mode, d, i, j)] = v[s];
        }
    }
}

// ---- v3 ----------------------------------------------------------------------------------
//
// Float i of a tensor is component i % 4 of texel i / 4, texel q at (q % TEX_W, q / TEX_W).
// Invocation lid.x of a workgroup owns columns j0 + 64 c (c = 0..3) and rows i0 + r
// (r < CR); its accumulators are one vec4 (the 4 columns) per row.

@group(0) @binding(6) var ta: texture_2d<f32>;
@group(0) @binding(7) var tb: texture_2d<f32>;

const TEX_W: u32 = 1024u;
// Rows per invocation (1, 2, 4 or 8).
override CR: u32 = 8u;
// fwd: the weight rows (c_in*kh*kw floats) start on texel boundaries.
override AVEC: bool = false;
// fwd and bwd_weight with kw = 4 (and, for fwd, AVEC): a kernel row's 4 taps read 4
// adjacent x values, fetched as 2 texels (x_quad) instead of 4; bwd_weight then reads dy
// packed as [c_out, L4] (bias.wgsl pack_channels_first4), 4 reduction steps per texel.
override KW4: bool = false;
// Texels of headroom below 0 for x_quad's start index (pad <= 4 * QBIAS).
const QBIAS: i32 = 1048576;

fn ta4(q: u32) -> vec4<f32> {
    return textureLoad(ta, vec2<u32>(q % TEX_W, q / TEX_W), 0);
}

fn pick(v: vec4<f32>, c: u32) -> f32 {
    return select(select(v.x, v.y, c == 1u), select(v.z, v.w, c == 3u), c >= 2u);
}

fn tb4(q: u32) -> vec4<f32> {
    return textureLoad(tb, vec2<u32>(q % TEX_W, q / TEX_W), 0);
}

fn ta1(i: u32) -> f32 {
    return pick(ta4(i >> 2u), i & 3u);
}

fn tb1(i: u32) -> f32 {
    return pick(tb4(i >> 2u), i & 3u);
}

// x (in tb) at rows ih, cols iw of channel offset `base`, zero outside the image.
fn gather_tx(base: vec4<u32>, ih: vec4<i32>, iw: vec4<i32>) -> vec4<f32> {
    let inside = (ih >= vec4<i32>(0)) & (ih < vec4<i32>(i32(p.h))) & (iw >= vec4<i32>(0)) & (iw < vec4<i32>(i32(p.w)));
    let idx = base + vec4<u32>(max(ih, vec4<i32>(0))) * p.w + vec4<u32>(max(iw, vec4<i32>(0)));
    let v = vec4<f32>(tb1(idx.x), tb1(idx.y), tb1(idx.z), tb1(idx.w));
    return select(vec4<f32>(0.0), v, inside);
}

// x (in tb) at row ih of the channel starting at `base`, columns iw0 .. iw0 + 3, zero outside
// the image: two texel fetches shifted by the start's offset within its texel. Positions
// past either end of x are always outside the image (masked), so their texels may be
// anything.
fn x_quad(base: u32, ih: i32, iw0: i32) -> vec4<f32> {
    let okh = ih >= 0 && ih < i32(p.h);
    let start = i32(base) + max(ih, 0) * i32(p.w) + iw0;
    let sb = u32(start + 4 * QBIAS);
    let k = sb & 3u;
    let q = i32(sb >> 2u) - QBIAS;
    let lo = tb4(u32(max(q, 0)));
    let hi = tb4(u32(max(q + 1, 0)));
    let v = select(select(lo, vec4<f32>(lo.yzw, hi.x), k == 1u),
                   select(vec4<f32>(lo.zw, hi.xy), vec4<f32>(lo.w, hi.xyz), k == 3u), k >= 2u);
    let iw = vec4<i32>(iw0) + vec4<i32>(0, 1, 2, 3);
    let ok = (iw >= vec4<i32>(0)) & (iw < vec4<i32>(i32(p.w))) & vec4<bool>(okh);
    return select(vec4<f32>(0.0), v, ok);
}

struct Acc8 {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
    r4: vec4<f32>,
    r5: vec4<f32>,
    r6: vec4<f32>,
    r7: vec4<f32>,
}

// acc.r += a[r] * v for the CR rows (a[r]: row r's scalar for this step).
fn mac8(acc: ptr<function, Acc8>, a0: f32, a1: f32, a2: f32, a3: f32, a4: f32, a5: f32, a6: f32, a7: f32,
        v: vec4<f32>) {
    (*acc).r0 += a0 * v;
    if (CR > 1u) {
        (*acc).r1 += a1 * v;
    }
    if (CR > 2u) {
        (*acc).r2 += a2 * v;
        (*acc).r3 += a3 * v;
    }
    if (CR > 4u) {
        (*acc).r4 += a4 * v;
        (*acc).r5 += a5 * v;
        (*acc).r6 += a6 * v;
        (*acc).r7 += a7 * v;
    }
}

// Rows i0 + r clamped to m - 1 (rows past the edge load row m - 1 and are not stored).
fn rows8(i0: u32, m: u32) -> array<u32, 8> {
    let l = m - 1u;
    return array<u32, 8>(min(i0, l), min(i0 + 1u, l), min(i0 + 2u, l), min(i0 + 3u, l),
                         min(i0 + 4u, l), min(i0 + 5u, l), min(i0 + 6u, l), min(i0 + 7u, l));
}

// Stores the CR rows of acc at columns j (4 of them), through `index` (c_index or the
// bwd_input pixel map), where row < m and the column is valid.
fn store8(mode: u32, d: vec3<u32>, i0: u32, j0: u32, acc: Acc8) {
    store4(mode, d, i0, j0, 64u, acc.r0);
    if (CR > 1u) {
        store4(mode, d, i0 + 1u, j0, 64u, acc.r1);
    }
    if (CR > 2u) {
        store4(mode, d, i0 + 2u, j0, 64u, acc.r2);
        store4(mode, d, i0 + 3u, j0, 64u, acc.r3);
    }
    if (CR > 4u) {
        store4(mode, d, i0 + 4u, j0, 64u, acc.r4);
        store4(mode, d, i0 + 5u, j0, 64u, acc.r5);
        store4(mode, d, i0 + 6u, j0, 64u, acc.r6);
        store4(mode, d, i0 + 7u, j0, 64u, acc.r7);
    }
}

// One step of kk = (ci, r, t) (the fwd reduction index).
fn next_tap(r: ptr<function, u32>, t: ptr<function, u32>, cofs: ptr<function, u32>) {
    *t += 1u;
    if (*t == p.kw) {
        *t = 0u;
        *r += 1u;
        if (*r == p.kh) {
            *r = 0u;
            *cofs += p.h * p.w;
        }
    }
}

// ta = w [c_out, K], tb = x; C = y.
@compute @workgroup_size(64)
fn conv2d_fwd_v3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let d = dims(FWD);
    let j0 = (wid.x + wid.z * nwg.x) * 256u + lid.x;
    if (j0 >= d.y) {
        return;
    }
    let i0 = wid.y * CR;
    let hw_out = p.h_out * p.w_out;
    let jc = min(vec4<u32>(j0, j0 + 64u, j0 + 128u, j0 + 192u), vec4<u32>(d.y - 1u));
    let bb = jc / vec4<u32>(hw_out);
    let px = jc - bb * hw_out;
    let oh = px / vec4<u32>(p.w_out);
    let ow = px - oh * p.w_out;
    let xbase = bb * (p.c_in * p.h * p.w);
    let ih0 = vec4<i32>(oh * p.stride) - vec4<i32>(i32(p.pad));
    let iw0 = vec4<i32>(ow * p.stride) - vec4<i32>(i32(p.pad));
    let rw = rows8(i0, d.x);
    var acc: Acc8;
    var r = 0u;
    var t = 0u;
    var cofs = 0u;
    if (KW4) {
        // Step (ci, r): the 4 taps t = 0..3 are one weight texel and one x_quad per column.
        let k4 = d.z / 4u;
        var rr = 0u;
        var cb = xbase;
        for (var q = 0u; q < k4; q++) {
            let ih = ih0 + vec4<i32>(i32(rr));
            let x0 = x_quad(cb.x, ih.x, iw0.x);
            let x1 = x_quad(cb.y, ih.y, iw0.y);
            let x2 = x_quad(cb.z, ih.z, iw0.z);
            let x3 = x_quad(cb.w, ih.w, iw0.w);
            let w0 = ta4(rw[0] * k4 + q);
            acc.r0 += vec4<f32>(dot(w0, x0), dot(w0, x1), dot(w0, x2), dot(w0, x3));
            if (CR > 1u) {
                let w1 = ta4(rw[1] * k4 + q);
                acc.r1 += vec4<f32>(dot(w1, x0), dot(w1, x1), dot(w1, x2), dot(w1, x3));
            }
            if (CR > 2u) {
                let w2 = ta4(rw[2] * k4 + q);
                acc.r2 += vec4<f32>(dot(w2, x0), dot(w2, x1), dot(w2, x2), dot(w2, x3));
                let w3 = ta4(rw[3] * k4 + q);
                acc.r3 += vec4<f32>(dot(w3, x0), dot(w3, x1), dot(w3, x2), dot(w3, x3));
            }
            if (CR > 4u) {
                let w4 = ta4(rw[4] * k4 + q);
                acc.r4 += vec4<f32>(dot(w4, x0), dot(w4, x1), dot(w4, x2), dot(w4, x3));
                let w5 = ta4(rw[5] * k4 + q);
                acc.r5 += vec4<f32>(dot(w5, x0), dot(w5, x1), dot(w5, x2), dot(w5, x3));
                let w6 = ta4(rw[6] * k4 + q);
                acc.r6 += vec4<f32>(dot(w6, x0), dot(w6, x1), dot(w6, x2), dot(w6, x3));
                let w7 = ta4(rw[7] * k4 + q);
                acc.r7 += vec4<f32>(dot(w7, x0), dot(w7, x1), dot(w7, x2), dot(w7, x3));
            }
            rr += 1u;
            if (rr == p.kh) {
                rr = 0u;
                cb += vec4<u32>(p.h * p.w);
            }
        }
    } else if (AVEC) {
        // Weight rows of K / 4 texels: one fetch gives a row's 4 taps of this step.
        let k4 = d.z / 4u;
        for (var q = 0u; q < k4; q++) {
            let x0 = gather_tx(xbase + vec4<u32>(cofs), ih0 + vec4<i32>(i32(r)), iw0 + vec4<i32>(i32(t)));
            next_tap(&r, &t, &cofs);
            let x1 = gather_tx(xbase + vec4<u32>(cofs), ih0 + vec4<i32>(i32(r)), iw0 + vec4<i32>(i32(t)));
            next_tap(&r, &t, &cofs);
            let x2 = gather_tx(xbase + vec4<u32>(cofs), ih0 + vec4<i32>(i32(r)), iw0 + vec4<i32>(i32(t)));
            next_tap(&r, &t, &cofs);
            let x3 = gather_tx(xbase + vec4<u32>(cofs), ih0 + vec4<i32>(i32(r)), iw0 + vec4<i32>(i32(t)));
            next_tap(&r, &t, &cofs);
            let w0 = ta4(rw[0] * k4 + q);
            acc.r0 += w0.x * x0 + w0.y * x1 + w0.z * x2 + w0.w * x3;
            if (CR > 1u) {
                let w1 = ta4(rw[1] * k4 + q);
                acc.r1 += w1.x * x0 + w1.y * x1 + w1.z * x2 + w1.w * x3;
            }
            if (CR > 2u) {
                let w2 = ta4(rw[2] * k4 + q);
                acc.r2 += w2.x * x0 + w2.y * x1 + w2.z * x2 + w2.w * x3;
                let w3 = ta4(rw[3] * k4 + q);
                acc.r3 += w3.x * x0 + w3.y * x1 + w3.z * x2 + w3.w * x3;
            }
            if (CR > 4u) {
                let w4 = ta4(rw[4] * k4 + q);
                acc.r4 += w4.x * x0 + w4.y * x1 + w4.z * x2 + w4.w * x3;
                let w5 = ta4(rw[5] * k4 + q);
                acc.r5 += w5.x * x0 + w5.y * x1 + w5.z * x2 + w5.w * x3;
                let w6 = ta4(rw[6] * k4 + q);
                acc.r6 += w6.x * x0 + w6.y * x1 + w6.z * x2 + w6.w * x3;
                let w7 = ta4(rw[7] * k4 + q);
                acc.r7 += w7.x * x0 + w7.y * x1 + w7.z * x2 + w7.w * x3;
            }
        }
    } else {
        for (var kk = 0u; kk < d.z; kk++) {
            let xv = gather_tx(xbase + vec4<u32>(cofs), ih0 + vec4<i32>(i32(r)), iw0 + vec4<i32>(i32(t)));
            next_tap(&r, &t, &cofs);
            var a: array<f32, 8>;
            a[0] = ta1(rw[0] * d.z + kk);
            if (CR > 1u) {
                a[1] = ta1(rw[1] * d.z + kk);
            }
            if (CR > 2u) {
                a[2] = ta1(rw[2] * d.z + kk);
                a[3] = ta1(rw[3] * d.z + kk);
            }
            if (CR > 4u) {
                a[4] = ta1(rw[4] * d.z + kk);
                a[5] = ta1(rw[5] * d.z + kk);
                a[6] = ta1(rw[6] * d.z + kk);
                a[7] = ta1(rw[7] * d.z + kk);
            }
            mac8(&acc, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], xv);
        }
    }
    store8(FWD, d, i0, j0, acc);
}

// ta = w packed as [c_in, kh, kw, C4], tb = dy packed as [n, h_out, w_out, C4] (C4: c_out
// rounded up to whole texels, zero-padded; bias.wgsl pack_channels_last4), so one fetch gives
// 4 output channels of a weight tap or of a dy pixel; C = dx. Workgroup row wid.y = class *
// ceil(c_in / CR) + row block, class = (ih % s) * s + iw % s; columns enumerate that class's
// pixels (b, a, e) with ih = ph + s a, iw = pw + s e, each invocation's 4 columns 64 apart.
@compute @workgroup_size(64)
fn conv2d_bwd_input_v3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = p.stride;
    let blocks = (p.c_in + CR - 1u) / CR;
    let pc = wid.y / blocks;
    let i0 = (wid.y - pc * blocks) * CR;
    let ph = pc / s;
    let pw = pc - ph * s;
    // This class's pixel grid (ha x wa per image; empty when ph >= h or pw >= w).
    let ha = select(0u, (p.h - ph + s - 1u) / s, ph < p.h);
    let wa = select(0u, (p.w - pw + s - 1u) / s, pw < p.w);
    let cols = p.n * ha * wa;
    let j0 = (wid.x + wid.z * nwg.x) * 256u + lid.x;
    if (j0 >= cols) {
        return;
    }
    let jc = min(vec4<u32>(j0, j0 + 64u, j0 + 128u, j0 + 192u), vec4<u32>(cols - 1u));
    let plane = ha * wa;
    let bb = jc / vec4<u32>(plane);
    let pp = jc - bb * plane;
    let ai = pp / vec4<u32>(wa);
    let ei = pp - ai * wa;
    // The taps reaching this class: r = r0 + s * u (u < nr), t = t0 + s * v (v < nt).
    let r0 = (ph + p.pad) % s;
    let t0 = (pw + p.pad) % s;
    let nr = select(0u, (p.kh - r0 + s - 1u) / s, r0 < p.kh);
    let nt = select(0u, (p.kw - t0 + s - 1u) / s, t0 < p.kw);
    // For tap r = r0 + s u: oh = a + (ph + pad - r) / s = a + oh0 - u (exact, since
    // r = ph + pad mod s); likewise ow = e + ow0 - v. No division inside the loops.
    let oh0 = vec4<i32>(ai) + vec4<i32>(i32((ph + p.pad - r0) / s));
    let ow0 = vec4<i32>(ei) + vec4<i32>(i32((pw + p.pad - t0) / s));
    let c4 = (p.c_out + 3u) / 4u;
    let khw = p.kh * p.kw;
    let rw = rows8(i0, p.c_in);
    var acc: Acc8;
    for (var u = 0u; u < nr; u++) {
        let r = r0 + s * u;
        let oh = oh0 - vec4<i32>(i32(u));
        let okh = (oh >= vec4<i32>(0)) & (oh < vec4<i32>(i32(p.h_out)));
        for (var v = 0u; v < nt; v++) {
            let t = t0 + s * v;
            let ow = ow0 - vec4<i32>(i32(v));
            let ok = okh & (ow >= vec4<i32>(0)) & (ow < vec4<i32>(i32(p.w_out)));
            let pix = ((bb * p.h_out + vec4<u32>(max(oh, vec4<i32>(0)))) * p.w_out + vec4<u32>(max(ow, vec4<i32>(0)))) * c4;
            let tap = r * p.kw + t;
            for (var q = 0u; q < c4; q++) {
                let y0 = select(vec4<f32>(0.0), tb4(pix.x + q), ok.x);
                let y1 = select(vec4<f32>(0.0), tb4(pix.y + q), ok.y);
                let y2 = select(vec4<f32>(0.0), tb4(pix.z + q), ok.z);
                let y3 = select(vec4<f32>(0.0), tb4(pix.w + q), ok.w);
                let w0 = ta4((rw[0] * khw + tap) * c4 + q);
                acc.r0 += vec4<f32>(dot(w0, y0), dot(w0, y1), dot(w0, y2), dot(w0, y3));
                if (CR > 1u) {
                    let w1 = ta4((rw[1] * khw + tap) * c4 + q);
                    acc.r1 += vec4<f32>(dot(w1, y0), dot(w1, y1), dot(w1, y2), dot(w1, y3));
                }
                if (CR > 2u) {
                    let w2 = ta4((rw[2] * khw + tap) * c4 + q);
                    acc.r2 += vec4<f32>(dot(w2, y0), dot(w2, y1), dot(w2, y2), dot(w2, y3));
                    let w3 = ta4((rw[3] * khw + tap) * c4 + q);
                    acc.r3 += vec4<f32>(dot(w3, y0), dot(w3, y1), dot(w3, y2), dot(w3, y3));
                }
                if (CR > 4u) {
                    let w4 = ta4((rw[4] * khw + tap) * c4 + q);
                    acc.r4 += vec4<f32>(dot(w4, y0), dot(w4, y1), dot(w4, y2), dot(w4, y3));
                    let w5 = ta4((rw[5] * khw + tap) * c4 + q);
                    acc.r5 += vec4<f32>(dot(w5, y0), dot(w5, y1), dot(w5, y2), dot(w5, y3));
                    let w6 = ta4((rw[6] * khw + tap) * c4 + q);
                    acc.r6 += vec4<f32>(dot(w6, y0), dot(w6, y1), dot(w6, y2), dot(w6, y3));
                    let w7 = ta4((rw[7] * khw + tap) * c4 + q);
                    acc.r7 += vec4<f32>(dot(w7, y0), dot(w7, y1), dot(w7, y2), dot(w7, y3));
                }
            }
        }
    }
    // Store through the pixel map: dx[b, ci, ph + s a, pw + s e].
    let ih = ph + s * ai;
    let iw = pw + s * ei;
    let out_px = bb * (p.c_in * p.h * p.w) + ih * p.w + iw;
    let valid = jc == vec4<u32>(j0, j0 + 64u, j0 + 128u, j0 + 192u);
    let rows = array<vec4<f32>, 8>(acc.r0, acc.r1, acc.r2, acc.r3, acc.r4, acc.r5, acc.r6, acc.r7);
    for (var r = 0u; r < CR; r++) {
        let ci = i0 + r;
        if (ci < p.c_in) {
            let o = out_px + vec4<u32>(ci * p.h * p.w);
            let v = rows[r];
            if (valid.x) {
                c[o.x] = v.x;
            }
            if (valid.y) {
                c[o.y] = v.y;
            }
            if (valid.z) {
                c[o.z] = v.z;
            }
            if (valid.w) {
                c[o.w] = v.w;
            }
        }
    }
}

// The x quad of reduction step (b, oh, ow) for kernel row rr of the channel at cofs, zero
// past the reduction's end (`live` false); then steps (b, oh, ow) to the next pixel.
fn kw4_x(bb: ptr<function, u32>, oh: ptr<function, u32>, ow: ptr<function, u32>, chw: u32, cofs: u32, rr: u32,
         live: bool) -> vec4<f32> {
    let xq = x_quad(*bb * chw + cofs, i32(*oh * p.stride + rr) - i32(p.pad), i32(*ow * p.stride) - i32(p.pad));
    *ow += 1u;
    if (*ow == p.w_out) {
        *ow = 0u;
        *oh += 1u;
        if (*oh == p.h_out) {
            *oh = 0u;
            *bb += 1u;
        }
    }
    return select(vec4<f32>(0.0), xq, live);
}

// KW4: ta = dy packed as [c_out, L4] (L = n*h_out*w_out, zero-padded), tb = x; C = dw or a
// K-split's partial. Each invocation owns CR rows by one column quad (ci, r, t = 0..3)
// (lane lid.x of workgroup column tile wid.x); split sp of wid.y's row index covers texels
// [sp * chunk, (sp + 1) * chunk) of L4 / 4, so every step reads one dy texel per row.
fn bwd_weight_kw4(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) {
    let d = dims(BWD_WEIGHT);
    let nq = p.c_in * p.kh;
    let jq = (wid.x + wid.z * nwg.x) * 64u + lid.x;
    if (jq >= nq) {
        return;
    }
    let howo = p.h_out * p.w_out;
    let l4 = (d.z + 3u) / 4u;
    let splits = max(p.splits, 1u);
    let tiles_m = (d.x + CR - 1u) / CR;
    let sp = wid.y / tiles_m;
    let i0 = (wid.y - sp * tiles_m) * CR;
    c_base = sp * d.x * d.y;
    let chunk = (l4 + splits - 1u) / splits;
    let qb = min(sp * chunk, l4);
    let qe = min(qb + chunk, l4);
    let ci = jq / p.kh;
    let rr = jq - ci * p.kh;
    let cofs = ci * p.h * p.w;
    let chw = p.c_in * p.h * p.w;
    let rw = rows8(i0, d.x);
    // kk = 4 qb decoded once, then walked.
    let k0 = 4u * qb;
    var bb = k0 / howo;
    let px0 = k0 - bb * howo;
    var oh = px0 / p.w_out;
    var ow = px0 - oh * p.w_out;
    var acc: Acc8;
    for (var q = qb; q < qe; q++) {
        let x0 = kw4_x(&bb, &oh, &ow, chw, cofs, rr, 4u * q < d.z);
        let x1 = kw4_x(&bb, &oh, &ow, chw, cofs, rr, 4u * q + 1u < d.z);
        let x2 = kw4_x(&bb, &oh, &ow, chw, cofs, rr, 4u * q + 2u < d.z);
        let x3 = kw4_x(&bb, &oh, &ow, chw, cofs, rr, 4u * q + 3u < d.z);
        let y0 = ta4(rw[0] * l4 + q);
        acc.r0 += y0.x * x0 + y0.y * x1 + y0.z * x2 + y0.w * x3;
        if (CR > 1u) {
            let y1 = ta4(rw[1] * l4 + q);
            acc.r1 += y1.x * x0 + y1.y * x1 + y1.z * x2 + y1.w * x3;
        }
        if (CR > 2u) {
            let y2 = ta4(rw[2] * l4 + q);
            acc.r2 += y2.x * x0 + y2.y * x1 + y2.z * x2 + y2.w * x3;
            let y3 = ta4(rw[3] * l4 + q);
            acc.r3 += y3.x * x0 + y3.y * x1 + y3.z * x2 + y3.w * x3;
        }
        if (CR > 4u) {
            let y4 = ta4(rw[4] * l4 + q);
            acc.r4 += y4.x * x0 + y4.y * x1 + y4.z * x2 + y4.w * x3;
            let y5 = ta4(rw[5] * l4 + q);
            acc.r5 += y5.x * x0 + y5.y * x1 + y5.z * x2 + y5.w * x3;
            let y6 = ta4(rw[6] * l4 + q);
            acc.r6 += y6.x * x0 + y6.y * x1 + y6.z * x2 + y6.w * x3;
            let y7 = ta4(rw[7] * l4 + q);
            acc.r7 += y7.x * x0 + y7.y * x1 + y7.z * x2 + y7.w * x3;
        }
    }
    let j0 = 4u * jq;
    store4(BWD_WEIGHT, d, i0, j0, 1u, acc.r0);
    if (CR > 1u) {
        store4(BWD_WEIGHT, d, i0 + 1u, j0, 1u, acc.r1);
    }
    if (CR > 2u) {
        store4(BWD_WEIGHT, d, i0 + 2u, j0, 1u, acc.r2);
        store4(BWD_WEIGHT, d, i0 + 3u, j0, 1u, acc.r3);
    }
    if (CR > 4u) {
        store4(BWD_WEIGHT, d, i0 + 4u, j0, 1u, acc.r4);
        store4(BWD_WEIGHT, d, i0 + 5u, j0, 1u, acc.r5);
        store4(BWD_WEIGHT, d, i0 + 6u, j0, 1u, acc.r6);
        store4(BWD_WEIGHT, d, i0 + 7u, j0, 1u, acc.r7);
    }
}

// ta = dy, tb = x; C = dw (or a K-split's partial). Columns j = (ci, r, t).
@compute @workgroup_size(64)
fn conv2d_bwd_weight_v3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>) {
    if (KW4) {
        bwd_weight_kw4(wid, nwg, lid);
        return;
    }
    let d = dims(BWD_WEIGHT);
    let j0 = (wid.x + wid.z * nwg.x) * 256u + lid.x;
    if (j0 >= d.y) {
        return;
    }
    let sk = split_k(wid.y, d, CR);
    c_base = sk.w * d.x * d.y;
    let i0 = sk.x * CR;
    let khw = p.kh * p.kw;
    let howo = p.h_out * p.w_out;
    let chw = p.c_in * p.h * p.w;
    let jc = min(vec4<u32>(j0, j0 + 64u, j0 + 128u, j0 + 192u), vec4<u32>(d.y - 1u));
    let ci = jc / vec4<u32>(khw);
    let rt = jc - ci * khw;
    let rr = rt / vec4<u32>(p.kw);
    let tt = rt - rr * p.kw;
    let cofs = ci * (p.h * p.w);
    let rpad = vec4<i32>(rr) - vec4<i32>(i32(p.pad));
    let tpad = vec4<i32>(tt) - vec4<i32>(i32(p.pad));
    // Row co: dy[b, co, oh, ow] = dy[co * howo + dofs], dofs = b * c_out * howo + oh * w_out + ow.
    let rw = rows8(i0, d.x);
    let b0 = sk.y / howo;
    let px0 = sk.y - b0 * howo;
    var oh = px0 / p.w_out;
    var ow = px0 - oh * p.w_out;
    var xb = b0 * chw;
    var dofs = b0 * p.c_out * howo + px0;
    var acc: Acc8;
    for (var kk = sk.y; kk < sk.z; kk++) {
        let xv = gather_tx(vec4<u32>(xb) + cofs, vec4<i32>(i32(oh * p.stride)) + rpad, vec4<i32>(i32(ow * p.stride)) + tpad);
        var a: array<f32, 8>;
        a[0] = ta1(rw[0] * howo + dofs);
        if (CR > 1u) {
            a[1] = ta1(rw[1] * howo + dofs);
        }
        if (CR > 2u) {
            a[2] = ta1(rw[2] * howo + dofs);
            a[3] = ta1(rw[3] * howo + dofs);
        }
        if (CR > 4u) {
            a[4] = ta1(rw[4] * howo + dofs);
            a[5] = ta1(rw[5] * howo + dofs);
            a[6] = ta1(rw[6] * howo + dofs);
            a[7] = ta1(rw[7] * howo + dofs);
        }
        mac8(&acc, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], xv);
        ow += 1u;
        dofs += 1u;
        if (ow == p.w_out) {
            ow = 0u;
            oh += 1u;
            if (oh == p.h_out) {
                oh = 0u;
                xb += chw;
                dofs += (p.c_out - 1u) * howo;
            }
        }
    }
    store8(BWD_WEIGHT, d, i0, j0, acc);
}
