// bias.wgsl: per-channel bias over a tensor viewed as [outer, channels, inner]
// (linear: inner = 1; conv NCHW: outer = N, inner = H*W).
//
// Variants:
//   bias_add  v1 one element per invocation (256 per workgroup, 2-D folded grid).
//   bias_grad v1 one workgroup of 256 invocations per channel: each invocation sums a strided
//             slice of the channel's outer*inner elements, then a shared-memory tree adds the
//             256 partial sums (deterministic order, no atomics).
//
// Bindings: 0 BiasParams; bias_add: 1 y, 2 b, 3 out; bias_grad: 1 dy, 3 db.

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
