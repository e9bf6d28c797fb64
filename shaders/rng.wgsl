// rng.wgsl: Philox4x32-10 fills, bit for bit the streams of perturb_core::rng.
//
// Variants:
//   v1 one invocation per Philox block (4 words): uniform and sign write 4 consecutive
//      elements (block offset + i / 4, word i % 4); normal writes 2 (block offset + i / 2,
//      words (0, 1) for even i and (2, 3) for odd i, Box-Muller).
//
// WGSL has no 32x32 -> 64-bit multiply, so the high word of each Philox product is built
// from 16-bit halves. The uniform output a + (b - a) * u must round twice, as the reference
// does; the product passes through a select on a runtime value so the compiler cannot fuse it
// into an fma (which rounds once and would change the last bit).
//
// Normal samples use log and cos written out here (Cephes' single-precision polynomials with
// Cody-Waite reduction) instead of the built-ins, whose accuracy WGSL leaves loose (cos may
// be off by 2^-11 absolute); these stay within a few ulp of the reference's libm, also near
// the zeros of cos.
//
// Bindings: 0 RngParams, 3 out (f32).

struct RngParams {
    len: u32,
    key_lo: u32,
    key_hi: u32,
    ctr_lo: u32,
    ctr_hi: u32,
    dist: u32,
    a: f32,
    b: f32,
}

@group(0) @binding(0) var<uniform> p: RngParams;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Invocations per workgroup: a power of two, set by the host (the default is its value).
override WG: u32 = 256u;
const M0: u32 = 0xD2511F53u;
const M1: u32 = 0xCD9E8D57u;
const W0: u32 = 0x9E3779B9u;
const W1: u32 = 0xBB67AE85u;

// High 32 bits of the 64-bit product a * b.
fn mulhi(a: u32, b: u32) -> u32 {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    return hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}

fn philox(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = ctr;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(W0, W1);
        }
        let hi0 = mulhi(M0, c.x);
        let lo0 = M0 * c.x;
        let hi1 = mulhi(M1, c.z);
        let lo1 = M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

// Block `offset + index` (64-bit counter add with carry).
fn block(index: u32) -> vec4<u32> {
    let lo = p.ctr_lo + index;
    let hi = p.ctr_hi + select(0u, 1u, lo < index);
    return philox(vec4<u32>(lo, hi, 0u, 0u), vec2<u32>(p.key_lo, p.key_hi));
}

fn unit(w: u32) -> f32 {
    return f32(w >> 8u) * (1.0 / 16777216.0);
}

fn uniform_out(w: u32) -> f32 {
    let prod = (p.b - p.a) * unit(w);
    // p.len is never 0xffffffff (no buffer holds that many f32), but the compiler cannot know.
    return p.a + select(prod, 0.0, p.len == 0xffffffffu);
}

// ln(v) for v > 0 (Cephes logf).
fn ln_acc(v: f32) -> f32 {
    let fe = frexp(v);
    var x = fe.fract;
    var e = f32(fe.exp);
    if (x < 0.70710678118654752440) {
        e -= 1.0;
        x = x + x - 1.0;
    } else {
        x = x - 1.0;
    }
    let z = x * x;
    var y = ((((((((7.0376836292e-2 * x - 1.1514610310e-1) * x + 1.1676998740e-1) * x - 1.2420140846e-1) * x
        + 1.4249322787e-1) * x - 1.6668057665e-1) * x + 2.0000714765e-1) * x - 2.4999993993e-1) * x
        + 3.3333331174e-1) * x * z;
    y += -2.12194440e-4 * e;
    y += -0.5 * z;
    let r = x + y;
    return r + 0.693359375 * e;
}

// cos(x) for 0 <= x < 2 pi: x = k pi/2 + r with |r| <= pi/4 (pi/2 split in three parts so
// k * part is exact), then Cephes' sinf/cosf polynomials on r.
fn cos_acc(x: f32) -> f32 {
    let k = round(x * 0.63661977236758134308);
    let r = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.54978995489188216e-8;
    let z = r * r;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    switch (u32(k) & 3u) {
        case 0u: { return c; }
        case 1u: { return -s; }
        case 2u: { return -c; }
        default: { return s; }
    }
}

@compute @workgroup_size(WG)
fn rng_fill_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let blk = (wid.x + wid.y * nwg.x) * WG + li;
    if (p.dist == 1u) {
        // Normal: 2 elements per block.
        let i0 = blk * 2u;
        if (i0 >= p.len) {
            return;
        }
        let r = block(blk);
        for (var h = 0u; h < 2u; h++) {
            let i = i0 + h;
            if (i < p.len) {
                let w0 = select(r.x, r.z, h == 1u);
                let w1 = select(r.y, r.w, h == 1u);
                let u1 = f32((w0 >> 8u) + 1u) * (1.0 / 16777216.0);
                let u2 = unit(w1);
                let z = sqrt(-2.0 * ln_acc(u1)) * cos_acc(6.2831853071795864769 * u2);
                out[i] = p.a + p.b * z;
            }
        }
        return;
    }
    let i0 = blk * 4u;
    if (i0 >= p.len) {
        return;
    }
    let r = block(blk);
    for (var q = 0u; q < 4u; q++) {
        let i = i0 + q;
        if (i < p.len) {
            let w = r[q];
            if (p.dist == 2u) {
                out[i] = select(-p.a, p.a, (w >> 31u) == 0u);
            } else {
                out[i] = uniform_out(w);
            }
        }
    }
}
