// pool.wgsl: max pooling, NCHW, square window k, stride s, no padding.
//
// Variants:
//   maxpool2d_fwd v1 one output per invocation; the first maximum of the window wins (strict >).
//   maxpool2d_bwd v1 one input element per invocation, a gather: for every window that covers
//                 the element (in output row-major order) recompute that window's first maximum
//                 and add the window's dy when it is this element. No index tensor, no atomics,
//                 and the same summation order as a scatter over outputs in row-major order.
//
// Bindings: 0 Pool2dParams, 1 x, 2 dy (bwd), 3 out (y or dx).

struct Pool2dParams {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    stride: u32,
    h_out: u32,
    w_out: u32,
}

@group(0) @binding(0) var<uniform> p: Pool2dParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Invocations per workgroup: a power of two, set by the host (the default is its value).
override WG: u32 = 256u;

// Flat index (within the plane starting at `plane`) of the first maximum of window (oh, ow).
fn window_argmax(plane: u32, oh: u32, ow: u32) -> u32 {
    let h0 = oh * p.stride;
    let w0 = ow * p.stride;
    var best_i = h0 * p.w + w0;
    var best_v = x[plane + best_i];
    for (var r = 0u; r < p.k; r++) {
        for (var s = 0u; s < p.k; s++) {
            let i = (h0 + r) * p.w + (w0 + s);
            let v = x[plane + i];
            if (v > best_v) {
                best_v = v;
                best_i = i;
            }
        }
    }
    return best_i;
}

@compute @workgroup_size(WG)
fn maxpool2d_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let o = (wid.x + wid.y * nwg.x) * WG + li;
    let per = p.h_out * p.w_out;
    if (o >= p.n * p.c * per) {
        return;
    }
    let nc = o / per;
    let rem = o - nc * per;
    let oh = rem / p.w_out;
    let ow = rem - oh * p.w_out;
    let plane = nc * p.h * p.w;
    out[o] = x[plane + window_argmax(plane, oh, ow)];
}

@compute @workgroup_size(WG)
fn maxpool2d_bwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let e = (wid.x + wid.y * nwg.x) * WG + li;
    let hw = p.h * p.w;
    if (e >= p.n * p.c * hw) {
        return;
    }
    let nc = e / hw;
    let i = e - nc * hw;
    let ih = i / p.w;
    let iw = i - ih * p.w;
    let plane = nc * hw;
    // Windows covering ih: oh * s <= ih < oh * s + k, 0 <= oh < h_out.
    let oh_lo = select(0u, (ih + 1u - p.k + p.stride - 1u) / p.stride, ih + 1u > p.k);
    let oh_hi = min(ih / p.stride, p.h_out - 1u);
    let ow_lo = select(0u, (iw + 1u - p.k + p.stride - 1u) / p.stride, iw + 1u > p.k);
    let ow_hi = min(iw / p.stride, p.w_out - 1u);
    var acc = 0.0;
    for (var oh = oh_lo; oh <= oh_hi; oh++) {
        for (var ow = ow_lo; ow <= ow_hi; ow++) {
            if (window_argmax(plane, oh, ow) == i) {
                acc += dy[nc * p.h_out * p.w_out + oh * p.w_out + ow];
            }
        }
    }
    out[e] = acc;
}
