// f16.wgsl: f16 storage with f32 accumulation for the forward GEMMs, and the casts between
// f32 and f16. Needs the adapter's SHADER_F16 feature; the host refuses f16 tensors before
// building these pipelines when the feature is missing.
//
// Variants (one each; the register-blocked layout of linear.wgsl / conv2d.wgsl v1, loads
// widened from f16, products summed in f32, the output stored as f32):
//   cast_f32_to_f16 v1, cast_f16_to_f32 v1   one element per invocation (IEEE round to nearest)
//   linear_fwd_f16_v1                         y[m, n] = x[m, k] . w[n, k]^T, x and w in f16
//   conv2d_fwd_f16_v1                         implicit-GEMM convolution, x and w in f16
//
// Bindings: 0 EltParams (casts), 6 LinearParams, 7 Conv2dParams; casts: 1 src32 / 2 src16,
//           3 out32 / 4 out16; GEMMs: 8 a (w for conv, x for linear), 9 b, 3 out32.

enable f16;

struct EltParams {
    len: u32,
    a: f32,
    b: f32,
    _pad0: u32,
}

struct LinearParams {
    m: u32,
    k: u32,
    n: u32,
    _pad0: u32,
}

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
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> ep: EltParams;
@group(0) @binding(6) var<uniform> lp: LinearParams;
@group(0) @binding(7) var<uniform> cp: Conv2dParams;
@group(0) @binding(1) var<storage, read> src32: array<f32>;
@group(0) @binding(2) var<storage, read> src16: array<f16>;
@group(0) @binding(3) var<storage, read_write> out32: array<f32>;
@group(0) @binding(4) var<storage, read_write> out16: array<f16>;
@group(0) @binding(8) var<storage, read> a16: array<f16>;
@group(0) @binding(9) var<storage, read> b16: array<f16>;

// Invocations per workgroup of the casts, set by the host.
override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn cast_f32_to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i < ep.len) {
        out16[i] = f16(src32[i]);
    }
}

@compute @workgroup_size(WG)
fn cast_f16_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i < ep.len) {
        out32[i] = f32(src16[i]);
    }
}

// Stores row i, columns j0 + 8s (s = 0..3), of y [m, n] where in range.
fn store_linear(i: u32, j0: u32, v: vec4<f32>) {
    if (i >= lp.m) {
        return;
    }
    for (var s = 0u; s < 4u; s++) {
        let j = j0 + 8u * s;
        if (j < lp.n) {
            out32[i * lp.n + j] = v[s];
        }
    }
}

// Stores output channel i at output pixels j0 + 8s (j = (b, oh, ow)) of y [n, c_out, h_out, w_out].
fn store_conv(i: u32, j0: u32, v: vec4<f32>) {
    let hw = cp.h_out * cp.w_out;
    if (i >= cp.c_out) {
        return;
    }
    for (var s = 0u; s < 4u; s++) {
        let j = j0 + 8u * s;
        if (j < cp.n * hw) {
            let bb = j / hw;
            out32[(bb * cp.c_out + i) * hw + (j - bb * hw)] = v[s];
        }
    }
}

// ---- linear: C[m, n] = sum_k x[i, k] w[j, k] -------------------------------------------

@compute @workgroup_size(8, 8)
fn linear_fwd_f16_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    let tj = wid.x + wid.z * nwg.x;
    if (tj * 32u >= lp.n) {
        return;
    }
    let i0 = wid.y * 32u + lid.y;
    let j0 = tj * 32u + lid.x;
    let ia = vec4<u32>(min(i0, lp.m - 1u), min(i0 + 8u, lp.m - 1u), min(i0 + 16u, lp.m - 1u), min(i0 + 24u, lp.m - 1u)) * lp.k;
    let jb = vec4<u32>(min(j0, lp.n - 1u), min(j0 + 8u, lp.n - 1u), min(j0 + 16u, lp.n - 1u), min(j0 + 24u, lp.n - 1u)) * lp.k;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < lp.k; kk++) {
        let av = vec4<f32>(f32(a16[ia.x + kk]), f32(a16[ia.y + kk]), f32(a16[ia.z + kk]), f32(a16[ia.w + kk]));
        let bv = vec4<f32>(f32(b16[jb.x + kk]), f32(b16[jb.y + kk]), f32(b16[jb.z + kk]), f32(b16[jb.w + kk]));
        acc0 += av.x * bv;
        acc1 += av.y * bv;
        acc2 += av.z * bv;
        acc3 += av.w * bv;
    }
    store_linear(i0, j0, acc0);
    store_linear(i0 + 8u, j0, acc1);
    store_linear(i0 + 16u, j0, acc2);
    store_linear(i0 + 24u, j0, acc3);
}

// ---- conv2d: C[c_out, n*h_out*w_out] = w[c_out, K] . patches(x)[K, n*h_out*w_out] -----------

fn x_patch(kk: u32, j: u32) -> f32 {
    let khw = cp.kh * cp.kw;
    let ci = kk / khw;
    let rt = kk - ci * khw;
    let r = rt / cp.kw;
    let t = rt - r * cp.kw;
    let hw = cp.h_out * cp.w_out;
    let bb = j / hw;
    let px = j - bb * hw;
    let oh = px / cp.w_out;
    let ow = px - oh * cp.w_out;
    let ih = i32(oh * cp.stride + r) - i32(cp.pad);
    let iw = i32(ow * cp.stride + t) - i32(cp.pad);
    let inside = ih >= 0 && ih < i32(cp.h) && iw >= 0 && iw < i32(cp.w);
    let idx = ((bb * cp.c_in + ci) * cp.h + u32(max(ih, 0))) * cp.w + u32(max(iw, 0));
    return select(0.0, f32(b16[min(idx, arrayLength(&b16) - 1u)]), inside);
}

@compute @workgroup_size(8, 8)
fn conv2d_fwd_f16_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = cp.c_out;
    let n = cp.n * cp.h_out * cp.w_out;
    let k = cp.c_in * cp.kh * cp.kw;
    let tj = wid.x + wid.z * nwg.x;
    if (tj * 32u >= n) {
        return;
    }
    let i0 = wid.y * 32u + lid.y;
    let j0 = tj * 32u + lid.x;
    let ia = vec4<u32>(min(i0, m - 1u), min(i0 + 8u, m - 1u), min(i0 + 16u, m - 1u), min(i0 + 24u, m - 1u)) * k;
    let jb = vec4<u32>(min(j0, n - 1u), min(j0 + 8u, n - 1u), min(j0 + 16u, n - 1u), min(j0 + 24u, n - 1u));
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < k; kk++) {
        let av = vec4<f32>(f32(a16[ia.x + kk]), f32(a16[ia.y + kk]), f32(a16[ia.z + kk]), f32(a16[ia.w + kk]));
        let bv = vec4<f32>(x_patch(kk, jb.x), x_patch(kk, jb.y), x_patch(kk, jb.z), x_patch(kk, jb.w));
        acc0 += av.x * bv;
        acc1 += av.y * bv;
        acc2 += av.z * bv;
        acc3 += av.w * bv;
    }
    store_conv(i0, j0, acc0);
    store_conv(i0 + 8u, j0, acc1);
    store_conv(i0 + 16u, j0, acc2);
    store_conv(i0 + 24u, j0, acc3);
}
