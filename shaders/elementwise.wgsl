// elementwise.wgsl: bandwidth-bound elementwise ops over `len` f32 elements.
//
// Variants (these ops move memory, there is nothing to tile):
//   v1 one element per invocation, 256 invocations per workgroup, the workgroup grid folded
//      into 2-D (x, y) so more than 65535 workgroups fit.
//   v2 (entries `<name>_v2`) for CPU adapters: 4 elements per invocation, the inputs read as
//      one rgba32float texel each from texture copies the host makes and the output written
//      as one vec4. On llvmpipe a storage-buffer load or scalar store is a per-lane loop
//      (about 6-10 ns a float on a 2-core EPYC) while a texel fetch of 4 floats and a vec4
//      store cost about 1-3 ns; the last vec4 may run past `len` into the buffer's padding
//      (buffers hold whole 16-byte texels), which no tensor reads.
//
// Entries and bindings (0 is always the EltParams uniform):
//   fill      out[i] = a                                  (3 out)
//   relu_fwd  out[i] = x[i] > 0 ? x[i] : 0                (1 x, 3 out)
//   relu_bwd  out[i] = y[i] if x[i] > 0 else 0            (1 x, 2 y = dy, 3 out)
//   axpby     out[i] = a * x[i] + b * y[i]                (1 x, 2 y, 3 out)
//   mul       out[i] = x[i] * y[i]                        (1 x, 2 y, 3 out)
// v2 reads 4 tx and 5 ty (texture copies of x and y) and writes 3 out4 (out as vec4).

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

// ---- v2: texel in, vec4 out (CPU adapters) -------------------------------------------------

@group(0) @binding(4) var tx: texture_2d<f32>;
@group(0) @binding(5) var ty: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;

const TEX_W: u32 = 1024u;

fn tx4(q: u32) -> vec4<f32> {
    return textureLoad(tx, vec2<u32>(q % TEX_W, q / TEX_W), 0);
}

fn ty4(q: u32) -> vec4<f32> {
    return textureLoad(ty, vec2<u32>(q % TEX_W, q / TEX_W), 0);
}

@compute @workgroup_size(WG)
fn relu_fwd_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let q = flat(wid, nwg, li);
    if (q < (p.len + 3u) / 4u) {
        let v = tx4(q);
        out4[q] = select(vec4<f32>(0.0), v, v > vec4<f32>(0.0));
    }
}

@compute @workgroup_size(WG)
fn relu_bwd_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let q = flat(wid, nwg, li);
    if (q < (p.len + 3u) / 4u) {
        out4[q] = select(vec4<f32>(0.0), ty4(q), tx4(q) > vec4<f32>(0.0));
    }
}

@compute @workgroup_size(WG)
fn axpby_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let q = flat(wid, nwg, li);
    if (q < (p.len + 3u) / 4u) {
        out4[q] = p.a * tx4(q) + p.b * ty4(q);
    }
}

@compute @workgroup_size(WG)
fn mul_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let q = flat(wid, nwg, li);
    if (q < (p.len + 3u) / 4u) {
        out4[q] = tx4(q) * ty4(q);
    }
}
