// attack.wgsl: the attack steps, in place on x [n, d] with gradient g and clean input x0.
//
// Variants:
//   sign_step, step_project_linf
//     v1 one element per invocation: x = clip(x + alpha * sign(g)) (L-inf: first clamped to
//        [x0 - eps, x0 + eps]). sign(0) = 0. alpha * sign(g) is exact, so the result matches the
//        reference bit for bit even where the compiler fuses the multiply-add.
//   step_project_l2
//     v1 one workgroup of 256 invocations per example, fused in one dispatch: tree-reduce
//        ||g||, form s = x + alpha * g / ||g|| (no step for g = 0), tree-reduce ||s - x0||,
//        write x = clip(x0 + (s - x0) * min(1, eps / ||s - x0||)). Each invocation writes only
//        the elements it alone reads in the final phase, so updating x in place is safe.
//
// Bindings: 0 StepParams, 1 g, 2 x0 (projections only), 3 x (read_write).

struct StepParams {
    n: u32,
    d: u32,
    alpha: f32,
    eps: f32,
    lo: f32,
    hi: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: StepParams;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> x0: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

// Invocations per workgroup: a power of two, set by the host (the default is its value).
override WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn sign_step_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i < p.n * p.d) {
        x[i] = clamp(x[i] + p.alpha * sign(g[i]), p.lo, p.hi);
    }
}

@compute @workgroup_size(WG)
fn step_project_linf_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i < p.n * p.d) {
        let c = x0[i];
        let s = clamp(x[i] + p.alpha * sign(g[i]), c - p.eps, c + p.eps);
        x[i] = clamp(s, p.lo, p.hi);
    }
}

fn wg_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn step_project_l2_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) {
        return;
    }
    let base = row * p.d;
    var ss = 0.0;
    for (var j = li; j < p.d; j += WG) {
        let v = g[base + j];
        ss += v * v;
    }
    let gn = sqrt(wg_sum(li, ss));
    // Zero gradient: no step (scale 0), as the reference.
    let scale = select(0.0, p.alpha / gn, gn > 0.0);
    var dd = 0.0;
    for (var j = li; j < p.d; j += WG) {
        let s = x[base + j] + g[base + j] * scale;
        let e = s - x0[base + j];
        dd += e * e;
    }
    let dn = sqrt(wg_sum(li, dd));
    let factor = select(1.0, p.eps / dn, dn > p.eps);
    for (var j = li; j < p.d; j += WG) {
        let c = x0[base + j];
        let s = x[base + j] + g[base + j] * scale;
        x[base + j] = clamp(c + (s - c) * factor, p.lo, p.hi);
    }
}
