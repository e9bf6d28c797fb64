// optim.wgsl: optimiser updates, in place, one parameter per invocation (PyTorch's rules).
//
// Variants:
//   sgd_update  v1 g' = g + wd * w; m = momentum * m + g'; w -= lr * (nesterov ? g' + momentum * m : m)
//   adam_update v1 Adam (decoupled = 0: g += wd * w) or AdamW (decoupled = 1: w *= 1 - lr * wd);
//               m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//               w -= lr * (m / bc1) / (sqrt(v / bc2) + eps), bc1/bc2 computed on the host.
//
//   sgd_update, adam_update v2 (CPU adapters) 4 parameters per invocation: g, w, m (and v)
//               read as texels of texture copies made before the dispatch, w, m (and v)
//               written as vec4 (see elementwise.wgsl v2); the same arithmetic per element.
//
// Bindings: 0 params, 1 g, 2 w (rw), 3 m (rw), 4 v (rw, Adam only); v2 reads 6 tg, 7 tw,
// 8 tm, 9 tv and writes 2 w4, 3 m4, 4 v4 (the same buffers as vec4).

struct SgdParams {
    len: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    nesterov: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct AdamParams {
    len: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
    decoupled: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> sp: SgdParams;
@group(0) @binding(5) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

// Invocations per workgroup: a power of two, set by the host (the default is its value).
override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn sgd_update_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= sp.len) {
        return;
    }
    let wi = w[i];
    let gd = g[i] + sp.weight_decay * wi;
    let mi = sp.momentum * m[i] + gd;
    m[i] = mi;
    let step = select(mi, gd + sp.momentum * mi, sp.nesterov != 0u);
    w[i] = wi - sp.lr * step;
}

@compute @workgroup_size(WG)
fn adam_update_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= ap.len) {
        return;
    }
    var wi = w[i];
    var gi = g[i];
    if (ap.decoupled != 0u) {
        wi = wi * (1.0 - ap.lr * ap.weight_decay);
    } else {
        gi = gi + ap.weight_decay * wi;
    }
    let mi = ap.beta1 * m[i] + (1.0 - ap.beta1) * gi;
    let vi = ap.beta2 * v[i] + (1.0 - ap.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    let mhat = mi / ap.bc1;
    let vhat = vi / ap.bc2;
    w[i] = wi - ap.lr * mhat / (sqrt(vhat) + ap.eps);
}

// ---- v2: texels in, vec4 out (CPU adapters) ------------------------------------------------

@group(0) @binding(6) var tg: texture_2d<f32>;
@group(0) @binding(7) var tw: texture_2d<f32>;
@group(0) @binding(8) var tm: texture_2d<f32>;
@group(0) @binding(9) var tv: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> w4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v4: array<vec4<f32>>;

const TEX_W: u32 = 1024u;

fn texel(q: u32) -> vec2<u32> {
    return vec2<u32>(q % TEX_W, q / TEX_W);
}

@compute @workgroup_size(WG)
fn sgd_update_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let q = (wid.x + wid.y * nwg.x) * WG + li;
    if (q >= (sp.len + 3u) / 4u) {
        return;
    }
    let wi = textureLoad(tw, texel(q), 0);
    let gd = textureLoad(tg, texel(q), 0) + sp.weight_decay * wi;
    let mi = sp.momentum * textureLoad(tm, texel(q), 0) + gd;
    m4[q] = mi;
    let step = select(mi, gd + sp.momentum * mi, sp.nesterov != 0u);
    w4[q] = wi - sp.lr * step;
}

@compute @workgroup_size(WG)
fn adam_update_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let q = (wid.x + wid.y * nwg.x) * WG + li;
    if (q >= (ap.len + 3u) / 4u) {
        return;
    }
    var wi = textureLoad(tw, texel(q), 0);
    var gi = textureLoad(tg, texel(q), 0);
    if (ap.decoupled != 0u) {
        wi = wi * (1.0 - ap.lr * ap.weight_decay);
    } else {
        gi = gi + ap.weight_decay * wi;
    }
    let mi = ap.beta1 * textureLoad(tm, texel(q), 0) + (1.0 - ap.beta1) * gi;
    let vi = ap.beta2 * textureLoad(tv, texel(q), 0) + (1.0 - ap.beta2) * gi * gi;
    m4[q] = mi;
    v4[q] = vi;
    let mhat = mi / ap.bc1;
    let vhat = vi / ap.bc2;
    w4[q] = wi - ap.lr * mhat / (sqrt(vhat) + ap.eps);
}
