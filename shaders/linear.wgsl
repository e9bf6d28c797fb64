// linear.wgsl: the fully connected layer as GEMM, y[m, n] = x[m, k] . w[n, k]^T, and its two
// backward products. Each entry is C[M, N] = sum_kk A(i, kk) * B(kk, j), C row-major:
//   linear_fwd_*        A = x [m, k],   B = w^T (w [n, k]),  C = y [m, n]     M=m N=n K=k
//   linear_bwd_input_*  A = dy [m, n],  B = w [n, k],        C = dx [m, k]    M=m N=k K=n
//   linear_bwd_weight_* A = dy^T,       B = x [m, k],        C = dw [n, k]    M=n N=k K=m
//
// Variants:
//   v1 register-blocked, no workgroup memory and no barriers: TX x TY invocations, each
//      computes an RM x 4 block of C (rows ly + TY*r, cols lx + TX*s) straight from global
//      memory; TX, TY, RM are overrides the host sets from M (32x32 tiles for M > 16, down to
//      M x 256 for M <= 4). Out-of-range rows/cols are clamped for loading and skipped when
//      storing. Fast where barriers are expensive (llvmpipe) and a good baseline elsewhere.
//   v2 workgroup tiles: 16x16 invocations, a 64x64 tile of C, K in steps of 16 staged through
//      workgroup memory (As[kk][i], Bs[kk][j], 8 KiB), each invocation a 4x4 block (rows
//      ly + 16r, cols lx + 16s: conflict-free reads, coalesced stores). Loads are ordered along
//      whichever of the operand's dimensions is contiguous in memory.
//   v3 v2 with vectorised (vec4) global loads along the contiguous dimension; needs that
//      dimension to be a multiple of 4 (the host falls back to v2 otherwise).
//   v4 texture operands, for CPU adapters: a and b are read as rgba32float texels (4 floats
//      per fetch) from texture copies the host makes, never from storage buffers, because
//      llvmpipe turns each storage load into a per-lane scalar loop (about 8 ns a float on
//      a 2-core EPYC, a texel fetch about 3 ns for 4 floats). 8x8 invocations, each a 4x4
//      block of C with 8 texel fetches per 4 steps of K (64 multiply-adds); the backward
//      products store whole vec4s. No workgroup memory, no barriers. Needs the same
//      multiples of 4 as v3 (the host falls back to v1).
//
// The workgroup grid is (tiles along N folded into x and z, tiles along M in y).
// Bindings: 0 LinearParams, 1 a, 2 b, 3 c; v3 reads 4 a4 and 5 b4 (same buffers as vec4);
// v4 reads 6 ta and 7 tb (texture copies of a and b) and writes 3 c (or c4, c as vec4).

struct LinearParams {
    m: u32,
    k: u32,
    n: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: LinearParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<f32>>;

const FWD: u32 = 0u;
const BWD_INPUT: u32 = 1u;
const BWD_WEIGHT: u32 = 2u;

// (M, N, K) of the product each mode computes.
fn dims(mode: u32) -> vec3<u32> {
    switch mode {
        case 0u: { return vec3<u32>(p.m, p.n, p.k); }
        case 1u: { return vec3<u32>(p.m, p.k, p.n); }
        default: { return vec3<u32>(p.n, p.k, p.m); }
    }
}

// Flat index of A(i, kk) and B(kk, j) in their buffers.
fn a_index(mode: u32, i: u32, kk: u32) -> u32 {
    switch mode {
        case 0u: { return i * p.k + kk; }
        case 1u: { return i * p.n + kk; }
        default: { return kk * p.n + i; }
    }
}

fn b_index(mode: u32, kk: u32, j: u32) -> u32 {
    switch mode {
        case 0u: { return j * p.k + kk; }
        default: { return kk * p.k + j; }
    }
}

// Whether consecutive kk are adjacent in A's memory (else consecutive i are).
fn a_k_contig(mode: u32) -> bool {
    return mode != BWD_WEIGHT;
}

// Whether consecutive j are adjacent in B's memory (else consecutive kk are).
fn b_j_contig(mode: u32) -> bool {
    return mode != FWD;
}

// ---- v1: register-blocked, barrier-free -------------------------------------------------
//
// Tile shape, set by the host from M: TX x TY invocations, each RM rows (stride TY) by 4
// columns (stride TX), a (TY*RM) x (4*TX) tile; a batch-1 forward (M = 1) runs 1 x 256 tiles.

override TX: u32 = 8u;
override TY: u32 = 8u;
override RM: u32 = 4u;

fn gemm_v1(mode: u32, wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) {
    let d = dims(mode);
    let tj = wid.x + wid.z * nwg.x;
    if (tj * 4u * TX >= d.y) {
        return;
    }
    let i0 = wid.y * TY * RM + lid.y;
    let j0 = tj * 4u * TX + lid.x;
    let ia = min(vec4<u32>(i0, i0 + TY, i0 + 2u * TY, i0 + 3u * TY), vec4<u32>(d.x - 1u));
    let jb = min(vec4<u32>(j0, j0 + TX, j0 + 2u * TX, j0 + 3u * TX), vec4<u32>(d.y - 1u));
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < d.z; kk++) {
        let av = vec4<f32>(a[a_index(mode, ia.x, kk)], a[a_index(mode, ia.y, kk)],
                           a[a_index(mode, ia.z, kk)], a[a_index(mode, ia.w, kk)]);
        let bv = vec4<f32>(b[b_index(mode, kk, jb.x)], b[b_index(mode, kk, jb.y)],
                           b[b_index(mode, kk, jb.z)], b[b_index(mode, kk, jb.w)]);
        acc0 += av.x * bv;
        if (RM > 1u) {
            acc1 += av.y * bv;
        }
        if (RM > 2u) {
            acc2 += av.z * bv;
        }
        if (RM > 3u) {
            acc3 += av.w * bv;
        }
    }
    store4(d, i0, j0, TX, acc0);
    if (RM > 1u) {
        store4(d, i0 + TY, j0, TX, acc1);
    }
    if (RM > 2u) {
        store4(d, i0 + 2u * TY, j0, TX, acc2);
    }
    if (RM > 3u) {
        store4(d, i0 + 3u * TY, j0, TX, acc3);
    }
}

// Stores row i, columns j0 + step * s (s = 0..3), of C where in range.
fn store4(d: vec3<u32>, i: u32, j0: u32, step: u32, v: vec4<f32>) {
    if (i >= d.x) {
        return;
    }
    for (var s = 0u; s < 4u; s++) {
        let j = j0 + step * s;
        if (j < d.y) {
            c[i * d.y + j] = v[s];
        }
    }
}

@compute @workgroup_size(TX, TY)
fn linear_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm_v1(FWD, wid, nwg, lid);
}

@compute @workgroup_size(TX, TY)
fn linear_bwd_input_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm_v1(BWD_INPUT, wid, nwg, lid);
}

@compute @workgroup_size(TX, TY)
fn linear_bwd_weight_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm_v1(BWD_WEIGHT, wid, nwg, lid);
}

// ---- v2 / v3: workgroup tiles ------------------------------------------------------------

const BM: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

fn load_a(mode: u32, d: vec3<u32>, i: u32, kk: u32) -> f32 {
    return select(0.0, a[a_index(mode, min(i, d.x - 1u), min(kk, d.z - 1u))], i < d.x && kk < d.z);
}

fn load_b(mode: u32, d: vec3<u32>, kk: u32, j: u32) -> f32 {
    return select(0.0, b[b_index(mode, min(kk, d.z - 1u), min(j, d.y - 1u))], kk < d.z && j < d.y);
}

// Stages the A and B tiles for k0 with scalar loads: 1024 elements each, 4 per invocation.
fn stage_scalar(mode: u32, d: vec3<u32>, ti: u32, tj: u32, k0: u32, li: u32) {
    for (var q = 0u; q < 4u; q++) {
        let e = li + 256u * q;
        var i: u32;
        var kk: u32;
        if (a_k_contig(mode)) {
            kk = e % BK;
            i = e / BK;
        } else {
            i = e % BM;
            kk = e / BM;
        }
        As[kk * BM + i] = load_a(mode, d, ti + i, k0 + kk);
        var j: u32;
        if (b_j_contig(mode)) {
            j = e % BM;
            kk = e / BM;
        } else {
            kk = e % BK;
            j = e / BK;
        }
        Bs[kk * BM + j] = load_b(mode, d, k0 + kk, tj + j);
    }
}

// vec4 loads: invocation li loads 4 adjacent elements of each operand along its contiguous
// dimension (the host guarantees that dimension's length is a multiple of 4, so a vec4
// never straddles a row).
fn stage_vec4(mode: u32, d: vec3<u32>, ti: u32, tj: u32, k0: u32, li: u32) {
    var ia: u32;
    var ka: u32;
    var va = vec4<f32>(0.0);
    if (a_k_contig(mode)) {
        ia = li / 4u;
        ka = (li % 4u) * 4u;
        let gi = ti + ia;
        let gk = k0 + ka;
        if (gi < d.x && gk < d.z) {
            va = a4[a_index(mode, gi, gk) / 4u];
        }
        for (var q = 0u; q < 4u; q++) {
            As[(ka + q) * BM + ia] = va[q];
        }
    } else {
        ia = (li % 16u) * 4u;
        ka = li / 16u;
        let gi = ti + ia;
        let gk = k0 + ka;
        if (gi < d.x && gk < d.z) {
            va = a4[a_index(mode, gi, gk) / 4u];
        }
        for (var q = 0u; q < 4u; q++) {
            As[ka * BM + ia + q] = va[q];
        }
    }
    var jb: u32;
    var kb: u32;
    var vb = vec4<f32>(0.0);
    if (b_j_contig(mode)) {
        jb = (li % 16u) * 4u;
        kb = li / 16u;
        let gj = tj + jb;
        let gk = k0 + kb;
        if (gj < d.y && gk < d.z) {
            vb = b4[b_index(mode, gk, gj) / 4u];
        }
        for (var q = 0u; q < 4u; q++) {
            Bs[kb * BM + jb + q] = vb[q];
        }
    } else {
        jb = li / 4u;
        kb = (li % 4u) * 4u;
        let gj = tj + jb;
        let gk = k0 + kb;
        if (gj < d.y && gk < d.z) {
            vb = b4[b_index(mode, gk, gj) / 4u];
        }
        for (var q = 0u; q < 4u; q++) {
            Bs[(kb + q) * BM + jb] = vb[q];
        }
    }
}

fn gemm_tiled(mode: u32, vec: bool, wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, li: u32) {
    let d = dims(mode);
    let tj = (wid.x + wid.z * nwg.x) * BM;
    if (tj >= d.y) {
        return;
    }
    let ti = wid.y * BM;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < d.z; k0 += BK) {
        if (vec) {
            stage_vec4(mode, d, ti, tj, k0, li);
        } else {
            stage_scalar(mode, d, ti, tj, k0, li);
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
    store4(d, i0, j0, 16u, acc0);
    store4(d, i0 + 16u, j0, 16u, acc1);
    store4(d, i0 + 32u, j0, 16u, acc2);
    store4(d, i0 + 48u, j0, 16u, acc3);
}

@compute @workgroup_size(16, 16)
fn linear_fwd_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    gemm_tiled(FWD, false, wid, nwg, lid, li);
}

@compute @workgroup_size(16, 16)
fn linear_bwd_input_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    gemm_tiled(BWD_INPUT, false, wid, nwg, lid, li);
}

@compute @workgroup_size(16, 16)
fn linear_bwd_weight_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    gemm_tiled(BWD_WEIGHT, false, wid, nwg, lid, li);
}

@compute @workgroup_size(16, 16)
fn linear_fwd_v3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    gemm_tiled(FWD, true, wid, nwg, lid, li);
}

@compute @workgroup_size(16, 16)
fn linear_bwd_input_v3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    gemm_tiled(BWD_INPUT, true, wid, nwg, lid, li);
}

@compute @workgroup_size(16, 16)
fn linear_bwd_weight_v3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    gemm_tiled(BWD_WEIGHT, true, wid, nwg, lid, li);
}

// ---- v4: texture operands (CPU adapters) --------------------------------------------------
//
// Float i of a tensor is component i % 4 of texel i / 4, texel q at (q % TEX_W, q / TEX_W).
// Each invocation owns a 4x4 block of C: rows 4 * (wid.y * 8 + ly) + r and, in the forward
// product, columns 4 * (tile * 8 + lx) + s; in the backward products the 4 columns are one
// texel of the operand that is contiguous along the output. Rows and columns past the edge
// are clamped for loading and skipped when storing.

@group(0) @binding(6) var ta: texture_2d<f32>;
@group(0) @binding(7) var tb: texture_2d<f32>;
// c as vec4: the backward products' rows (k floats, k a multiple of 4) are whole vec4s.
@group(0) @binding(3) var<storage, read_write> c4: array<vec4<f32>>;

const TEX_W: u32 = 1024u;

fn ta4(q: u32) -> vec4<f32> {
    return textureLoad(ta, vec2<u32>(q % TEX_W, q / TEX_W), 0);
}

fn tb4(q: u32) -> vec4<f32> {
    return textureLoad(tb, vec2<u32>(q % TEX_W, q / TEX_W), 0);
}

// Stores row i, columns j0 + s (s = 0..3), of an M x N row-major C where in range.
fn store_row4(m: u32, n: u32, i: u32, j0: u32, v: vec4<f32>) {
    if (i >= m) {
        return;
    }
    for (var s = 0u; s < 4u; s++) {
        if (j0 + s < n) {
            c[i * n + j0 + s] = v[s];
        }
    }
}

// Stores row i, columns 4 jq .. 4 jq + 3, of an M x N row-major C (N a multiple of 4) as one
// vec4 where in range (a vec4 store costs llvmpipe about a quarter of 4 scalar ones).
fn store_vec4(m: u32, n: u32, i: u32, jq: u32, v: vec4<f32>) {
    if (i < m && 4u * jq < n) {
        c4[(i * n) / 4u + jq] = v;
    }
}

fn quad(base: u32, last: u32) -> vec4<u32> {
    return min(vec4<u32>(base, base + 1u, base + 2u, base + 3u), vec4<u32>(last));
}

// y[m, n] = sum_k x[m, k] w[n, k]: ta = x, tb = w, both rows of k / 4 texels.
@compute @workgroup_size(8, 8)
fn linear_fwd_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let k4 = p.k / 4u;
    let i0 = 4u * (wid.y * 8u + lid.y);
    let j0 = 4u * ((wid.x + wid.z * nwg.x) * 8u + lid.x);
    let ra = quad(i0, p.m - 1u) * k4;
    let rb = quad(j0, p.n - 1u) * k4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var q = 0u; q < k4; q++) {
        let b0 = tb4(rb.x + q);
        let b1 = tb4(rb.y + q);
        let b2 = tb4(rb.z + q);
        let b3 = tb4(rb.w + q);
        let a0 = ta4(ra.x + q);
        acc0 += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
        let a1 = ta4(ra.y + q);
        acc1 += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
        let a2 = ta4(ra.z + q);
        acc2 += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
        let a3 = ta4(ra.w + q);
        acc3 += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
    }
    store_row4(p.m, p.n, i0, j0, acc0);
    store_row4(p.m, p.n, i0 + 1u, j0, acc1);
    store_row4(p.m, p.n, i0 + 2u, j0, acc2);
    store_row4(p.m, p.n, i0 + 3u, j0, acc3);
}

// dx[m, k] = sum_n dy[m, n] w[n, k]: ta = dy (rows of n / 4 texels), tb = w (rows of k / 4
// texels); each invocation's 4 columns are one texel of w's rows.
@compute @workgroup_size(8, 8)
fn linear_bwd_input_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let i0 = 4u * (wid.y * 8u + lid.y);
    let jq = min((wid.x + wid.z * nwg.x) * 8u + lid.x, k4 - 1u);
    let ra = quad(i0, p.m - 1u) * n4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var q = 0u; q < n4; q++) {
        let wq = 4u * q * k4 + jq;
        let w0 = tb4(wq);
        let w1 = tb4(wq + k4);
        let w2 = tb4(wq + 2u * k4);
        let w3 = tb4(wq + 3u * k4);
        let d0 = ta4(ra.x + q);
        acc0 += d0.x * w0 + d0.y * w1 + d0.z * w2 + d0.w * w3;
        let d1 = ta4(ra.y + q);
        acc1 += d1.x * w0 + d1.y * w1 + d1.z * w2 + d1.w * w3;
        let d2 = ta4(ra.z + q);
        acc2 += d2.x * w0 + d2.y * w1 + d2.z * w2 + d2.w * w3;
        let d3 = ta4(ra.w + q);
        acc3 += d3.x * w0 + d3.y * w1 + d3.z * w2 + d3.w * w3;
    }
    let jt = (wid.x + wid.z * nwg.x) * 8u + lid.x;
    store_vec4(p.m, p.k, i0, jt, acc0);
    store_vec4(p.m, p.k, i0 + 1u, jt, acc1);
    store_vec4(p.m, p.k, i0 + 2u, jt, acc2);
    store_vec4(p.m, p.k, i0 + 3u, jt, acc3);
}

// dw[n, k] = sum_m dy[m, n] x[m, k]: ta = dy, tb = x; each invocation owns one texel of dy's
// row (4 values of n) by one texel of x's row (4 values of k).
@compute @workgroup_size(8, 8)
fn linear_bwd_weight_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>) {
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let iq = min(wid.y * 8u + lid.y, n4 - 1u);
    let jq = min((wid.x + wid.z * nwg.x) * 8u + lid.x, k4 - 1u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var m = 0u; m < p.m; m++) {
        let d = ta4(m * n4 + iq);
        let xv = tb4(m * k4 + jq);
        acc0 += d.x * xv;
        acc1 += d.y * xv;
        acc2 += d.z * xv;
        acc3 += d.w * xv;
    }
    let i0 = 4u * (wid.y * 8u + lid.y);
    let jt = (wid.x + wid.z * nwg.x) * 8u + lid.x;
    store_vec4(p.n, p.k, i0, jt, acc0);
    store_vec4(p.n, p.k, i0 + 1u, jt, acc1);
    store_vec4(p.n, p.k, i0 + 2u, jt, acc2);
    store_vec4(p.n, p.k, i0 + 3u, jt, acc3);
}
