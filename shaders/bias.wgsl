// bias.wgsl: per-channel bias over a tensor viewed as [outer, channels, inner]
// (linear: inner = 1; conv NCHW: outer = N, inner = H*W).
//
// Variants:
//   bias_add  v1 one element per invocation (256 per workgroup, 2-D folded grid).
//   bias_grad v1 one workgroup of 256 invocations per channel: each invocation sums a strided
//             slice of the channel's outer*inner elements, then a shared-memory tree adds the
//             256 partial sums (deterministic order, no atomics).
//   bias_add  v2 (CPU adapters) 4 elements per invocation: y as one texel of a texture copy,
//             the 4 channels' biases as texels of a copy of b, one vec4 store (see
//             elementwise.wgsl v2); channel indices by a float-reciprocal division with an
//             exact correction (llvmpipe runs integer division one lane at a time).
//   pack_channels_last4, pack_channels_first4 v1 layout copies for the texture-operand conv
//             kernels (CPU adapters), zero padding: [outer, channels, inner] to [outer, inner,
//             C4] and to [channels, L4], where C4 and L4 round channels and outer*inner up to
//             a multiple of 4 (whole texels). One output texel per invocation: 4 scalar reads
//             from a texture copy of src, one vec4 store.
//
// Bindings: 0 BiasParams; bias_add: 1 y, 2 b, 3 out; bias_add_v2: 4 ty, 5 tb, 3 out4;
// bias_grad: 1 dy, 3 db; pack_*: 4 ty (src), 3 out4.

struct BiasParams {
    outer: u32,
    channels: u32,
    inner: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: BiasParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Invocations per workgroup: a power of two, set by the host (the default is its value).
override WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn bias_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i < p.outer * p.channels * p.inner) {
        out[i] = src[i] + bias[(i / p.inner) % p.channels];
    }
}

@compute @workgroup_size(WG)
fn bias_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= p.channels) {
        return;
    }
    let per = p.outer * p.inner;
    var acc = 0.0;
    for (var e = li; e < per; e += WG) {
        let o = e / p.inner;
        let r = e - o * p.inner;
        acc += src[(o * p.channels + c) * p.inner + r];
    }
    red[li] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        out[c] = red[0];
    }
}

// ---- bias_add v2 (CPU adapters) -------------------------------------------------------------

@group(0) @binding(4) var ty: texture_2d<f32>;
@group(0) @binding(5) var tbias: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;

const TEX_W: u32 = 1024u;

// i / d, exact for i < 2^28: a float estimate, refined once from its remainder (leaving it
// off by at most one), then corrected.
fn div4(i: vec4<u32>, d: u32, rcp: f32) -> vec4<u32> {
    var q = vec4<u32>(vec4<f32>(i) * rcp);
    let r = vec4<i32>(i) - vec4<i32>(q * d);
    q = vec4<u32>(max(vec4<i32>(q) + vec4<i32>(floor(vec4<f32>(r) * rcp)), vec4<i32>(0)));
    q = select(q, q - vec4<u32>(1u), q * d > i);
    q = select(q, q + vec4<u32>(1u), (q + vec4<u32>(1u)) * d <= i);
    return q;
}

fn pick4(v: vec4<f32>, c: u32) -> f32 {
    return select(select(v.x, v.y, c == 1u), select(v.z, v.w, c == 3u), c >= 2u);
}

@compute @workgroup_size(WG)
fn bias_add_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let q = (wid.x + wid.y * nwg.x) * WG + li;
    let len = p.outer * p.channels * p.inner;
    if (q >= (len + 3u) / 4u) {
        return;
    }
    let i = vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u);
    let oc = div4(i, p.inner, 1.0 / f32(p.inner));
    let o = div4(oc, p.channels, 1.0 / f32(p.channels));
    let c = min(oc - o * p.channels, vec4<u32>(p.channels - 1u));
    let b = vec4<f32>(pick4(textureLoad(tbias, vec2<u32>((c.x >> 2u) % TEX_W, (c.x >> 2u) / TEX_W), 0), c.x & 3u),
                      pick4(textureLoad(tbias, vec2<u32>((c.y >> 2u) % TEX_W, (c.y >> 2u) / TEX_W), 0), c.y & 3u),
                      pick4(textureLoad(tbias, vec2<u32>((c.z >> 2u) % TEX_W, (c.z >> 2u) / TEX_W), 0), c.z & 3u),
                      pick4(textureLoad(tbias, vec2<u32>((c.w >> 2u) % TEX_W, (c.w >> 2u) / TEX_W), 0), c.w & 3u));
    out4[q] = textureLoad(ty, vec2<u32>(q % TEX_W, q / TEX_W), 0) + b;
}

// src[i] from the texture copy ty.
fn src1(i: u32) -> f32 {
    let q = i >> 2u;
    return pick4(textureLoad(ty, vec2<u32>(q % TEX_W, q / TEX_W), 0), i & 3u);
}

// out texel e = (o * inner + i) * (C4 / 4) + cq holds channels 4 cq .. 4 cq + 3 of pixel
// (o, i): src[(o * channels + c) * inner + i], zero for c >= channels.
@compute @workgroup_size(WG)
fn pack_channels_last4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let cq4 = (p.channels + 3u) / 4u;
    let e = (wid.x + wid.y * nwg.x) * WG + li;
    if (e >= p.outer * p.inner * cq4) {
        return;
    }
    let oi = e / cq4;
    let c = vec4<u32>(4u * (e - oi * cq4)) + vec4<u32>(0u, 1u, 2u, 3u);
    let o = oi / p.inner;
    let i = oi - o * p.inner;
    let idx = (vec4<u32>(o * p.channels) + min(c, vec4<u32>(p.channels - 1u))) * p.inner + vec4<u32>(i);
    let v = vec4<f32>(src1(idx.x), src1(idx.y), src1(idx.z), src1(idx.w));
    out4[e] = select(vec4<f32>(0.0), v, c < vec4<u32>(p.channels));
}

// out texel e = c * (L4 / 4) + kq holds reduction steps k = 4 kq .. 4 kq + 3 of channel c:
// src[(o * channels + c) * inner + i] with (o, i) = (k / inner, k % inner), zero for
// k >= outer * inner.
@compute @workgroup_size(WG)
fn pack_channels_first4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
    let l = p.outer * p.inner;
    let lq = (l + 3u) / 4u;
    let e = (wid.x + wid.y * nwg.x) * WG + li;
    if (e >= p.channels * lq) {
        return;
    }
    let c = e / lq;
    let k = vec4<u32>(4u * (e - c * lq)) + vec4<u32>(0u, 1u, 2u, 3u);
    let kc = min(k, vec4<u32>(l - 1u));
    let o = div4(kc, p.inner, 1.0 / f32(p.inner));
    let idx = (o * p.channels + vec4<u32>(c)) * p.inner + (kc - o * p.inner);
    let v = vec4<f32>(src1(idx.x), src1(idx.y), src1(idx.z), src1(idx.w));
    out4[e] = select(vec4<f32>(0.0), v, k < vec4<u32>(l));
}
