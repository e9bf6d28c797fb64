// xent.wgsl: fused softmax cross-entropy, forward and backward in one pass over the logits.
//
// Variants:
//   v1 one invocation per example (row of `classes` logits): max, sum of exp(l - max), loss,
//      then dlogits = (softmax - onehot) * grad_scale. Three sweeps over one row that stays in
//      cache; classification has few classes, so a row per invocation is the right grain.
//
// A label >= classes sets bit 0 of `status` (read back and reported as an error by the host)
// and writes NaN to that row's loss and gradient.
//
// Bindings: 0 XentParams, 1 logits [n, classes], 2 labels u32 [n], 3 losses [n],
//           4 dlogits [n, classes], 5 status (atomic flags).

struct XentParams {
    n: u32,
    classes: u32,
    grad_scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: XentParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> status: array<atomic<u32>>;

// Invocations per workgroup: a power of two, set by the host (the default is its value).
override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn softmax_xent_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + li;
    if (row >= p.n) {
        return;
    }
    let base = row * p.classes;
    let label = labels[row];
    if (label >= p.classes) {
        atomicOr(&status[0], 1u);
        let nan = bitcast<f32>(0x7fc00000u);
        losses[row] = nan;
        for (var j = 0u; j < p.classes; j++) {
            dlogits[base + j] = nan;
        }
        return;
    }
    var m = logits[base];
    for (var j = 1u; j < p.classes; j++) {
        m = max(m, logits[base + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < p.classes; j++) {
        s += exp(logits[base + j] - m);
    }
    // loss = log(sum exp(l)) - l[label] = log(s) + m - l[label]
    losses[row] = log(s) - (logits[base + label] - m);
    let inv = 1.0 / s;
    for (var j = 0u; j < p.classes; j++) {
        let sm = exp(logits[base + j] - m) * inv;
        dlogits[base + j] = (sm - select(0.0, 1.0, j == label)) * p.grad_scale;
    }
}
