// elementwise.wgsl: bandwidth-bound elementwise ops over `len` f32 elements.
//
// Variants (one per entry; these ops move memory, there is nothing to tile):
//   v1 one element per invocation, 256 invocations per workgroup, the workgroup grid folded
//      into 2-D (x, y) so more than 65535 workgroups fit.
//
// Entries and bindings (0 is always the EltParams uniform):
//   fill      out[i] = a                                  (3 out)
//   relu_fwd  out[i] = x[i] > 0 ? x[i] : 0                (1 x, 3 out)
//   relu_bwd  out[i] = y[i] if x[i] > 0 else 0            (1 x, 2 y = dy, 3 out)
//   axpby     out[i] = a * x[i] + b * y[i]                (1 x, 2 y, 3 out)
//   mul       out[i] = x[i] * y[i]                        (1 x, 2 y, 3 out)

struct EltParams {
    len: u32,
    a: f32,
    b: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: EltParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Invocations per workgroup: a power of two, set by the host (the default is its value).
override WG: u32 = 256u;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + li;
}

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat(wid, nwg, li);
    if (i < p.len) {
        out[i] = p.a;
    }
}

@compute @workgroup_size(WG)
fn relu_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = flat(wid, nwg, li);
    if (i < p.len) {
        let v = x[i];
        // select, not max: NaN and -0.0 map to +0.0 exactly as the reference's `v > 0` test.
        out[i] = select(0.0, v, v > 0.0);
    }
}

@compute @workgroup_size(WG)
fn relu_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = flat(wid, nwg, li);
    if (i < p.len) {
        out[i] = select(0.0, y[i], x[i] > 0.0);
    }
}

@compute @workgroup_size(WG)
fn axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = flat(wid, nwg, li);
    if (i < p.len) {
        out[i] = p.a * x[i] + p.b * y[i];
    }
}

@compute @workgroup_size(WG)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let i = flat(wid, nwg, li);
    if (i < p.len) {
        out[i] = x[i] * y[i];
    }
}
