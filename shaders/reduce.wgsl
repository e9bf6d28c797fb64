// reduce.wgsl: row reductions over a [rows, cols] view.
//
// Variants:
//   sum_rows    v1 one workgroup of 64 invocations per row: strided partial sums, then a
//               shared-memory tree (deterministic, no atomics).
//   argmax_rows v1 one workgroup of 64 invocations per row: each invocation keeps the first
//               maximum of its strided slice, the tree keeps the larger value and, on ties, the
//               smaller index, so the result is the first index of the row maximum. NaN is
//               ranked as the reference's sequential scan sees it: a NaN in column 0 wins (no
//               later value is greater), a NaN elsewhere never does.
//
// Bindings: 0 RowParams, 1 x; sum_rows: 2 out (f32); argmax_rows: 3 out (u32).

struct RowParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: RowParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;
@group(0) @binding(3) var<storage, read_write> idx: array<u32>;

// Invocations per workgroup: a power of two, set by the host (the default is its value).
override WG: u32 = 64u;
var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

@compute @workgroup_size(WG)
fn sum_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var acc = 0.0;
    for (var j = li; j < p.cols; j += WG) {
        acc += x[base + j];
    }
    red_v[li] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red_v[li] += red_v[li + s];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        sums[row] = red_v[0];
    }
}

// The value a column competes with: NaN becomes +inf in column 0 and -inf elsewhere
// (tested on the bits: the compiler may assume floats are never NaN).
fn rank_key(v: f32, j: u32) -> f32 {
    let is_nan = (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
    let inf = bitcast<f32>(select(0xff800000u, 0x7f800000u, j == 0u));
    return select(v, inf, is_nan);
}

@compute @workgroup_size(WG)
fn argmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    // Invocations past the row's end start from column 0, which never beats a real candidate
    // with a smaller or equal index.
    var best_i = select(0u, li, li < p.cols);
    var best_v = rank_key(x[base + best_i], best_i);
    for (var j = li + WG; j < p.cols; j += WG) {
        let v = rank_key(x[base + j], j);
        if (v > best_v) {
            best_v = v;
            best_i = j;
        }
    }
    red_v[li] = best_v;
    red_i[li] = best_i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            let v = red_v[li + s];
            let i = red_i[li + s];
            if (v > red_v[li] || (v == red_v[li] && i < red_i[li])) {
                red_v[li] = v;
                red_i[li] = i;
            }
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        idx[row] = red_i[0];
    }
}
