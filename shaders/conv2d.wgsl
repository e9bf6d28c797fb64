// conv2d.wgsl: 2-D convolution (NCHW, weights [c_out, c_in, kh, kw], symmetric zero padding,
// stride s) and both backward passes as implicit GEMM: operands are gathered from the tensors
// on the fly, no im2col buffer exists. Each entry is C[M, N] = sum_kk A(i, kk) * B(kk, j):
//   conv2d_fwd_*        M = c_out, N = n*h_out*w_out, K = c_in*kh*kw
//                       A = w [c_out, K], B(kk=(ci,r,t), j=(b,oh,ow)) = x[b, ci, oh*s-pad+r, ow*s-pad+t]
//   conv2d_bwd_input_*  M = c_in, N = n*h*w, K = c_out*kh*kw
//                       A(i, kk=(co,r,t)) = w[co, i, r, t],
//                       B(kk, j=(b,ih,iw)) = dy[b, co, (ih+pad-r)/s, (iw+pad-t)/s] where divisible
//                       and in range, else 0 (a gather: no atomics, deterministic)
//   conv2d_bwd_weight_* M = c_out, N = c_in*kh*kw, K = n*h_out*w_out
//                       A(i, kk=(b,oh,ow)) = dy[b, i, oh, ow], B(kk, j=(ci,r,t)) = x[b, ci, oh*s-pad+r, ow*s-pad+t]
//
// Variants:
//   v1 register-blocked, barrier-free: TX x TY invocations each computing an RM x 4 block of C
//      (rows ly + TY*r, cols lx + TX*c), gathering operands straight from global memory and
//      walking the reduction index incrementally. TX, TY, RM are overrides the host sets from M
//      (32x32 tiles for M > 16, down to M x 256 for M <= 4).
//   v2 workgroup tiles: 16x16 invocations, a 64x64 tile of C, K in steps of 16 gathered into
//      workgroup memory (As[kk][i], Bs[kk][j], 8 KiB) with loads ordered along the operand's
//      contiguous dimension; each invocation a 4x4 block (rows ly + 16r, cols lx + 16c).
//
//   v3 texture operands, for CPU adapters: in conv2d_tex.wgsl.
//
// bwd_weight reduces over the whole batch (K = n*h_out*w_out, often 10^5) into a small M x N,
// so both variants split K when the host asks (Conv2dParams._pad0 = splits > 1): each split
// writes a partial [c_out, c_in*kh*kw] and conv2d_bwd_weight_sum_splits adds the partials in
// split order (deterministic, no atomics).
//
// The workgroup grid is (tiles along N folded into x and z, tiles along M times splits in y).
// v3 (texture operands, for CPU adapters) is in conv2d_tex.wgsl.
// Bindings: 0 Conv2dParams, 1 a (w or dy), 2 b (x or dy), 3 c (output).

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
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const FWD: u32 = 0u;
const BWD_INPUT: u32 = 1u;
const BWD_WEIGHT: u32 = 2u;

fn dims(mode: u32) -> vec3<u32> {
    let khw = p.kh * p.kw;
    let out_px = p.n * p.h_out * p.w_out;
    switch mode {
        case 0u: { return vec3<u32>(p.c_out, out_px, p.c_in * khw); }
        case 1u: { return vec3<u32>(p.c_in, p.n * p.h * p.w, p.c_out * khw); }
        default: { return vec3<u32>(p.c_out, p.c_in * khw, out_px); }
    }
}

// x[bb, ci, oh*s - pad + r, ow*s - pad + t] or 0 in the padding.
fn x_patch(bb: u32, ci: u32, oh: u32, ow: u32, r: u32, t: u32) -> f32 {
    let ih = i32(oh * p.stride + r) - i32(p.pad);
    let iw = i32(ow * p.stride + t) - i32(p.pad);
    let inside = ih >= 0 && ih < i32(p.h) && iw >= 0 && iw < i32(p.w);
    let idx = ((bb * p.c_in + ci) * p.h + u32(max(ih, 0))) * p.w + u32(max(iw, 0));
    return select(0.0, b[min(idx, arrayLength(&b) - 1u)], inside);
}

// A(i, kk), with i < M and kk < K.
fn load_a_raw(mode: u32, i: u32, kk: u32) -> f32 {
    let khw = p.kh * p.kw;
    switch mode {
        case 0u: { return a[i * p.c_in * khw + kk]; }
        case 1u: {
            let co = kk / khw;
            let rt = kk - co * khw;
            return a[(co * p.c_in + i) * khw + rt];
        }
        default: {
            let hw = p.h_out * p.w_out;
            let bb = kk / hw;
            let px = kk - bb * hw;
            return a[(bb * p.c_out + i) * hw + px];
        }
    }
}

// B(kk, j), with kk < K and j < N.
fn load_b_raw(mode: u32, kk: u32, j: u32) -> f32 {
    let khw = p.kh * p.kw;
    switch mode {
        case 0u: {
            let ci = kk / khw;
            let rt = kk - ci * khw;
            let r = rt / p.kw;
            let t = rt - r * p.kw;
            let hw = p.h_out * p.w_out;
            let bb = j / hw;
            let px = j - bb * hw;
            let oh = px / p.w_out;
            let ow = px - oh * p.w_out;
            return x_patch(bb, ci, oh, ow, r, t);
        }
        case 1u: {
            let co = kk / khw;
            let rt = kk - co * khw;
            let r = rt / p.kw;
            let t = rt - r * p.kw;
            let hw = p.h * p.w;
            let bb = j / hw;
            let px = j - bb * hw;
            let ih = px / p.w;
            let iw = px - ih * p.w;
            // oh * s = ih + pad - r must be a non-negative multiple of s below h_out * s.
            let th = i32(ih + p.pad) - i32(r);
            let tw = i32(iw + p.pad) - i32(t);
            let s = i32(p.stride);
            let oh = th / s;
            let ow = tw / s;
            let ok = th >= 0 && tw >= 0 && oh * s == th && ow * s == tw && oh < i32(p.h_out) && ow < i32(p.w_out);
            let idx = ((bb * p.c_out + co) * p.h_out + u32(max(oh, 0))) * p.w_out + u32(max(ow, 0));
            return select(0.0, b[min(idx, arrayLength(&b) - 1u)], ok);
        }
        default: {
            let hw = p.h_out * p.w_out;
            let bb = kk / hw;
            let px = kk - bb * hw;
            let oh = px / p.w_out;
            let ow = px - oh * p.w_out;
            let ci = j / khw;
            let rt = j - ci * khw;
            let r = rt / p.kw;
            let t = rt - r * p.kw;
            return x_patch(bb, ci, oh, ow, r, t);
        }
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

// ---- v1: register-blocked, barrier-free -------------------------------------------------
//
// Tile shape, set by the host from M so that products with few rows (c_in = 1 in the first
// layer's bwd_input) waste no invocations: TX x TY invocations, each computing RM rows
// (stride TY) by 4 columns (stride TX), a (TY*RM) x (4*TX) tile. The operand gathers walk
// kk incrementally (no divisions in the inner loop); each column's (b, pixel) is decoded once.

override TX: u32 = 8u;
override TY: u32 = 8u;
override RM: u32 = 4u;

fn cols4(j0: u32, n: u32) -> vec4<u32> {
    return min(vec4<u32>(j0, j0 + TX, j0 + 2u * TX, j0 + 3u * TX), vec4<u32>(n - 1u));
}

fn rows4(i0: u32, m: u32) -> vec4<u32> {
    return min(vec4<u32>(i0, i0 + TY, i0 + 2u * TY, i0 + 3u * TY), vec4<u32>(m - 1u));
}

fn mac(acc: ptr<function, array<vec4<f32>, 4>>, av: vec4<f32>, bv: vec4<f32>) {
    (*acc)[0] += av.x * bv;
    if (RM > 1u) {
        (*acc)[1] += av.y * bv;
    }
    if (RM > 2u) {
        (*acc)[2] += av.z * bv;
    }
    if (RM > 3u) {
        (*acc)[3] += av.w * bv;
    }
}

fn store_v1(mode: u32, d: vec3<u32>, i0: u32, j0: u32, acc: array<vec4<f32>, 4>) {
    for (var r = 0u; r < RM; r++) {
        store4(mode, d, i0 + TY * r, j0, TX, acc[r]);
    }
}

// x gathered at rows ih, cols iw of channel offset `base` (zero outside the image).
fn gather_x(base: vec4<u32>, ih: vec4<i32>, iw: vec4<i32>) -> vec4<f32> {
    let inside = (ih >= vec4<i32>(0)) & (ih < vec4<i32>(i32(p.h))) & (iw >= vec4<i32>(0)) & (iw < vec4<i32>(i32(p.w)));
    let last = vec4<u32>(arrayLength(&b) - 1u);
    let idx = min(base + vec4<u32>(max(ih, vec4<i32>(0))) * p.w + vec4<u32>(max(iw, vec4<i32>(0))), last);
    return select(vec4<f32>(0.0), vec4<f32>(b[idx.x], b[idx.y], b[idx.z], b[idx.w]), inside);
}

@compute @workgroup_size(TX, TY)
fn conv2d_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let d = dims(FWD);
    let tj = wid.x + wid.z * nwg.x;
    if (tj * 4u * TX >= d.y) {
        return;
    }
    let i0 = wid.y * TY * RM + lid.y;
    let j0 = tj * 4u * TX + lid.x;
    // Column j = (b, oh, ow): image base and top-left input pixel of its window.
    let hw_out = p.h_out * p.w_out;
    let jc = cols4(j0, d.y);
    let bb = jc / vec4<u32>(hw_out);
    let px = jc - bb * hw_out;
    let oh = px / vec4<u32>(p.w_out);
    let ow = px - oh * p.w_out;
    let xbase = bb * (p.c_in * p.h * p.w);
    let ih0 = vec4<i32>(oh * p.stride) - vec4<i32>(i32(p.pad));
    let iw0 = vec4<i32>(ow * p.stride) - vec4<i32>(i32(p.pad));
    let ia = rows4(i0, d.x) * d.z;
    var acc: array<vec4<f32>, 4>;
    // kk = (ci, r, t), walked incrementally; cofs = ci * h * w.
    var r = 0u;
    var t = 0u;
    var cofs = 0u;
    for (var kk = 0u; kk < d.z; kk++) {
        let av = vec4<f32>(a[ia.x + kk], a[ia.y + kk], a[ia.z + kk], a[ia.w + kk]);
        let bv = gather_x(xbase + vec4<u32>(cofs), ih0 + vec4<i32>(i32(r)), iw0 + vec4<i32>(i32(t)));
        mac(&acc, av, bv);
        t += 1u;
        if (t == p.kw) {
            t = 0u;
            r += 1u;
            if (r == p.kh) {
                r = 0u;
                cofs += p.h * p.w;
            }
        }
    }
    store_v1(FWD, d, i0, j0, acc);
}

@compute @workgroup_size(TX, TY)
fn conv2d_bwd_input_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let d = dims(BWD_INPUT);
    let tj = wid.x + wid.z * nwg.x;
    if (tj * 4u * TX >= d.y) {
        return;
    }
    let i0 = wid.y * TY * RM + lid.y;
    let j0 = tj * 4u * TX + lid.x;
    let khw = p.kh * p.kw;
    let howo = p.h_out * p.w_out;
    // Column j = (b, ih, iw): dy image base and the padded input position.
    let plane = p.h * p.w;
    let jc = cols4(j0, d.y);
    let bb = jc / vec4<u32>(plane);
    let px = jc - bb * plane;
    let ih = px / vec4<u32>(p.w);
    let iw = px - ih * p.w;
    let dybase = bb * (p.c_out * howo);
    let thp = vec4<i32>(ih + p.pad);
    let twp = vec4<i32>(iw + p.pad);
    let st = i32(p.stride);
    let last = vec4<u32>(arrayLength(&b) - 1u);
    // Row i (input channel): w[co, i, r, t] = w[i*khw + wofs], wofs = co*c_in*khw + r*kw + t.
    let ia = rows4(i0, d.x) * khw;
    var acc: array<vec4<f32>, 4>;
    var r = 0u;
    var t = 0u;
    var wofs = 0u;
    var dofs = 0u;
    for (var kk = 0u; kk < d.z; kk++) {
        let av = vec4<f32>(a[ia.x + wofs], a[ia.y + wofs], a[ia.z + wofs], a[ia.w + wofs]);
        // dy[b, co, oh, ow] with oh * s = ih + pad - r, ow * s = iw + pad - t.
        let th = thp - vec4<i32>(i32(r));
        let tw = twp - vec4<i32>(i32(t));
        let oh = th / vec4<i32>(st);
        let ow = tw / vec4<i32>(st);
        let ok = (th >= vec4<i32>(0)) & (tw >= vec4<i32>(0)) & (oh * st == th) & (ow * st == tw)
            & (oh < vec4<i32>(i32(p.h_out))) & (ow < vec4<i32>(i32(p.w_out)));
        let idx = min(dybase + vec4<u32>(dofs) + vec4<u32>(max(oh, vec4<i32>(0))) * p.w_out + vec4<u32>(max(ow, vec4<i32>(0))), last);
        let bv = select(vec4<f32>(0.0), vec4<f32>(b[idx.x], b[idx.y], b[idx.z], b[idx.w]), ok);
        mac(&acc, av, bv);
        t += 1u;
        wofs += 1u;
        if (t == p.kw) {
            t = 0u;
            r += 1u;
            if (r == p.kh) {
                r = 0u;
                wofs += (p.c_in - 1u) * khw;
                dofs += howo;
            }
        }
    }
    store_v1(BWD_INPUT, d, i0, j0, acc);
}

@compute @workgroup_size(TX, TY)
fn conv2d_bwd_weight_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>) {
    let d = dims(BWD_WEIGHT);
    let tj = wid.x + wid.z * nwg.x;
    if (tj * 4u * TX >= d.y) {
        return;
    }
    let sk = split_k(wid.y, d, TY * RM);
    c_base = sk.w * d.x * d.y;
    let i0 = sk.x * TY * RM + lid.y;
    let j0 = tj * 4u * TX + lid.x;
    let khw = p.kh * p.kw;
    let howo = p.h_out * p.w_out;
    let chw = p.c_in * p.h * p.w;
    // Column j = (ci, r, t): channel offset and kernel tap.
    let jc = cols4(j0, d.y);
    let ci = jc / vec4<u32>(khw);
    let rt = jc - ci * khw;
    let rr = rt / vec4<u32>(p.kw);
    let tt = rt - rr * p.kw;
    let cofs = ci * (p.h * p.w);
    let rpad = vec4<i32>(rr) - vec4<i32>(i32(p.pad));
    let tpad = vec4<i32>(tt) - vec4<i32>(i32(p.pad));
    // Row i (output channel): dy[b, i, oh, ow] = dy[i*howo + dofs], dofs = b*c_out*howo + oh*w_out + ow.
    let ia = rows4(i0, d.x) * howo;
    var acc: array<vec4<f32>, 4>;
    // kk = (b, oh, ow) walked incrementally from the split's first kk.
    let b0 = sk.y / howo;
    let px0 = sk.y - b0 * howo;
    var oh = px0 / p.w_out;
    var ow = px0 - oh * p.w_out;
    var xb = b0 * chw;
    var dofs = b0 * p.c_out * howo + px0;
    for (var kk = sk.y; kk < sk.z; kk++) {
        let av = vec4<f32>(a[ia.x + dofs], a[ia.y + dofs], a[ia.z + dofs], a[ia.w + dofs]);
        let bv = gather_x(vec4<u32>(xb) + cofs, vec4<i32>(i32(oh * p.stride)) + rpad, vec4<i32>(i32(ow * p.stride)) + tpad);
        mac(&acc, av, bv);
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
    store_v1(BWD_WEIGHT, d, i0, j0, acc);
}

// ---- v2: workgroup tiles ----------------------------------------------------------------

const BM: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

fn conv_v2(mode: u32, wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, li: u32) {
    let d = dims(mode);
    let tj = (wid.x + wid.z * nwg.x) * BM;
    if (tj >= d.y) {
        return;
    }
    // splits is 0 except for bwd_weight, so the other modes get (wid.y, 0, K, 0).
    let sk = split_k(wid.y, d, BM);
    c_base = sk.w * d.x * d.y;
    let ti = sk.x * BM;
    // A is contiguous along kk in every mode; B along j except in bwd_weight (along kk).
    let b_j_contig = mode != BWD_WEIGHT;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = sk.y; k0 < sk.z; k0 += BK) {
        for (var q = 0u; q < 4u; q++) {
            let e = li + 256u * q;
            let ka = e % BK;
            let ia = e / BK;
            let gi = ti + ia;
            let gka = k0 + ka;
            As[ka * BM + ia] = select(0.0, load_a_raw(mode, min(gi, d.x - 1u), min(gka, d.z - 1u)), gi < d.x && gka < sk.z);
            var jb: u32;
            var kb: u32;
            if (b_j_contig) {
                jb = e % BM;
                kb = e / BM;
            } else {
                kb = e % BK;
                jb = e / BK;
            }
            let gj = tj + jb;
            let gkb = k0 + kb;
            Bs[kb * BM + jb] = select(0.0, load_b_raw(mode, min(gkb, d.z - 1u), min(gj, d.y - 1u)), gj < d.y && gkb < sk.z);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ar = kk * BM + lid.y;
            let br = kk * BM + lid.x;
            let av = vec4<f32>(As[ar], As[ar + 16u], As[ar + 32u], As[ar + 48u]);
            let bv = vec4<f32>(Bs[br], Bs[br + 16u], Bs[br + 32u], Bs[br + 48u]);
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
        }
        workgroupBarrier();
    }
    let i0 = ti + lid.y;
    let j0 = tj + lid.x;
    store4(mode, d, i0, j0, 16u, acc0);
    store4(mode, d, i0 + 16u, j0, 16u, acc1);
    store4(mode, d, i0 + 32u, j0, 16u, acc2);
    store4(mode, d, i0 + 48u, j0, 16u, acc3);
}

@compute @workgroup_size(16, 16)
fn conv2d_fwd_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    conv_v2(FWD, wid, nwg, lid, li);
}

@compute @workgroup_size(16, 16)
fn conv2d_bwd_input_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    conv_v2(BWD_INPUT, wid, nwg, lid, li);
}

@compute @workgroup_size(16, 16)
fn conv2d_bwd_weight_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    conv_v2(BWD_WEIGHT, wid, nwg, lid, li);
}

// ---- split-K reduction ------------------------------------------------------------------

// dw = sum over splits s (in order) of the partials written by a split bwd_weight.
// Bindings: 1 a = partials [splits, c_out, c_in*kh*kw], 3 c = dw.
@compute @workgroup_size(256)
fn conv2d_bwd_weight_sum_splits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) li: u32) {
    let len = p.c_out * p.c_in * p.kh * p.kw;
    let e = (wid.x + wid.y * nwg.x) * 256u + li;
    if (e >= len) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += a[s * len + e];
    }
    c[e] = acc;
}
