//! Host references the bench checks every kernel against before it times it: plain loops,
//! independent of every backend. Reductions are summed in f64 and rounded once; exact ops
//! (relu, pooling, argmax, the sign and L-inf steps, the RNG) follow the CPU backend's
//! documented rules bit for bit.
//!
//! Convolutions and linear layers are checked on a sample of output elements (all of them
//! when there are few): the first and last elements and a spread of pseudo-random ones, so a
//! check of the 128-image conv layer costs milliseconds rather than seconds.

use perturb_core::ops::{
    AdamParams, BiasParams, Conv2dParams, Dist, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use perturb_core::{Op, rng};

/// What one output of an op must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Every element.
    Full(Vec<f32>),
    /// (index, value) of a sample of elements.
    Sampled(Vec<(usize, f32)>),
}

/// Indices to check of an output of `len` elements: all up to `max`, else the first and last
/// 32 and a pseudo-random spread.
pub fn sample_indices(len: usize, max: usize) -> Vec<usize> {
    if len <= max {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..32).chain(len - 32..len).collect();
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    while v.len() < max {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        v.push((h % len as u64) as usize);
    }
    v
}

/// Unflattens `i` over `dims` (row-major).
fn coords<const N: usize>(mut i: usize, dims: [usize; N]) -> [usize; N] {
    let mut c = [0; N];
    for d in (0..N).rev() {
        c[d] = i % dims[d];
        i /= dims[d];
    }
    c
}

/// One element of a conv op: `op` picks the direction; `a`, `b` are the op's two inputs in
/// the Backend method's order.
pub fn conv_element(op: Op, p: &Conv2dParams, a: &[f32], b: &[f32], i: usize) -> f64 {
    let [n, ci, h, w] = p.input_dims();
    let [co, _, kh, kw] = p.weight_dims();
    let [_, _, ho, wo] = p.output_dims();
    let (s, pad) = (p.stride as usize, p.pad as usize);
    let xi = |b_: usize, c: usize, y: usize, x: usize| ((b_ * ci + c) * h + y) * w + x;
    let wi = |o: usize, c: usize, y: usize, x: usize| ((o * ci + c) * kh + y) * kw + x;
    let yi = |b_: usize, o: usize, y: usize, x: usize| ((b_ * co + o) * ho + y) * wo + x;
    // Input row/col of output (oy, ox) and tap (ky, kx), if inside the unpadded image.
    let at = |o: usize, k: usize, lim: usize| (o * s + k).checked_sub(pad).filter(|&v| v < lim);
    let mut acc = 0.0f64;
    match op {
        Op::Conv2dFwd => {
            let [bn, o, oy, ox] = coords(i, [n, co, ho, wo]);
            for c in 0..ci {
                for ky in 0..kh {
                    for kx in 0..kw {
                        if let (Some(y), Some(x)) = (at(oy, ky, h), at(ox, kx, w)) {
                            acc += a[xi(bn, c, y, x)] as f64 * b[wi(o, c, ky, kx)] as f64;
                        }
                    }
                }
            }
        }
        Op::Conv2dBwdInput => {
            let [bn, c, y, x] = coords(i, [n, ci, h, w]);
            for o in 0..co {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let (ty, tx) = (y + pad, x + pad);
                        if ty < ky || tx < kx || (ty - ky) % s != 0 || (tx - kx) % s != 0 {
                            continue;
                        }
                        let (oy, ox) = ((ty - ky) / s, (tx - kx) / s);
                        if oy < ho && ox < wo {
                            acc += a[yi(bn, o, oy, ox)] as f64 * b[wi(o, c, ky, kx)] as f64;
                        }
                    }
                }
            }
        }
        Op::Conv2dBwdWeight => {
            let [o, c, ky, kx] = coords(i, [co, ci, kh, kw]);
            for bn in 0..n {
                for oy in 0..ho {
                    let Some(y) = at(oy, ky, h) else { continue };
                    for ox in 0..wo {
                        if let Some(x) = at(ox, kx, w) {
                            acc += a[xi(bn, c, y, x)] as f64 * b[yi(bn, o, oy, ox)] as f64;
                        }
                    }
                }
            }
        }
        _ => {}
    }
    acc
}

/// One element of a linear op (inputs in the Backend method's order).
pub fn linear_element(op: Op, p: &LinearParams, a: &[f32], b: &[f32], i: usize) -> f64 {
    let (m, k, n) = (p.m as usize, p.k as usize, p.n as usize);
    match op {
        // y[r, j] = sum_q x[r, q] w[j, q]
        Op::LinearFwd => {
            let (r, j) = (i / n, i % n);
            (0..k).map(|q| a[r * k + q] as f64 * b[j * k + q] as f64).sum()
        }
        // dx[r, q] = sum_j dy[r, j] w[j, q]
        Op::LinearBwdInput => {
            let (r, q) = (i / k, i % k);
            (0..n).map(|j| a[r * n + j] as f64 * b[j * k + q] as f64).sum()
        }
        // dw[j, q] = sum_r dy[r, j] x[r, q]   (a = x, b = dy)
        Op::LinearBwdWeight => {
            let (j, q) = (i / k, i % k);
            (0..m).map(|r| b[r * n + j] as f64 * a[r * k + q] as f64).sum()
        }
        _ => 0.0,
    }
}

/// A sampled expectation from an element function over an output of `len` elements.
pub fn sampled(len: usize, max: usize, f: impl Fn(usize) -> f64) -> Expect {
    Expect::Sampled(sample_indices(len, max).into_iter().map(|i| (i, f(i) as f32)).collect())
}

pub fn bias_add(p: &BiasParams, y: &[f32], b: &[f32]) -> Vec<f32> {
    let inner = p.inner as usize;
    let c = p.channels as usize;
    y.iter().enumerate().map(|(i, &v)| v + b[(i / inner) % c]).collect()
}

pub fn bias_grad(p: &BiasParams, dy: &[f32]) -> Vec<f32> {
    let (outer, c, inner) = (p.outer as usize, p.channels as usize, p.inner as usize);
    (0..c)
        .map(|ch| {
            let mut s = 0.0f64;
            for o in 0..outer {
                let base = (o * c + ch) * inner;
                s += dy[base..base + inner].iter().map(|&v| v as f64).sum::<f64>();
            }
            s as f32
        })
        .collect()
}

pub fn relu_fwd(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()
}

pub fn relu_bwd(dy: &[f32], x: &[f32]) -> Vec<f32> {
    dy.iter().zip(x).map(|(&g, &v)| if v > 0.0 { g } else { 0.0 }).collect()
}

/// Index (into x) of the first maximum of output element `i`'s window.
fn window_argmax(p: &Pool2dParams, x: &[f32], i: usize) -> usize {
    let [_, _, h, w] = p.input_dims();
    let [n, c, ho, wo] = p.output_dims();
    let [b, ch, oy, ox] = coords(i, [n, c, ho, wo]);
    let (k, s) = (p.k as usize, p.stride as usize);
    let base = (b * c + ch) * h * w;
    let mut best = base + oy * s * w + ox * s;
    for ky in 0..k {
        for kx in 0..k {
            let j = base + (oy * s + ky) * w + ox * s + kx;
            if x[j] > x[best] {
                best = j;
            }
        }
    }
    best
}

pub fn maxpool_fwd(p: &Pool2dParams, x: &[f32]) -> Vec<f32> {
    let len: usize = p.output_dims().iter().product();
    (0..len).map(|i| x[window_argmax(p, x, i)]).collect()
}

pub fn maxpool_bwd(p: &Pool2dParams, dy: &[f32], x: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f64; x.len()];
    for (i, &g) in dy.iter().enumerate() {
        dx[window_argmax(p, x, i)] += g as f64;
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// (per-example losses, dlogits * grad_scale).
pub fn softmax_xent(p: &XentParams, z: &[f32], labels: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let c = p.classes as usize;
    let mut losses = Vec::with_capacity(p.n as usize);
    let mut d = Vec::with_capacity(z.len());
    for (row, &y) in z.chunks_exact(c).zip(labels) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let lse = max + sum.ln();
        losses.push((lse - row[y as usize] as f64) as f32);
        for (j, &v) in row.iter().enumerate() {
            let sm = (v as f64 - lse).exp() - if j == y as usize { 1.0 } else { 0.0 };
            d.push((sm * p.grad_scale as f64) as f32);
        }
    }
    (losses, d)
}

pub fn axpby(p: &EltParams, x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&a, &b)| (p.a as f64 * a as f64 + p.b as f64 * b as f64) as f32).collect()
}

pub fn mul(x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&a, &b)| a * b).collect()
}

pub fn sum_rows(p: &RowParams, x: &[f32]) -> Vec<f32> {
    x.chunks_exact(p.cols as usize).map(|r| r.iter().map(|&v| v as f64).sum::<f64>() as f32).collect()
}

pub fn argmax_rows(p: &RowParams, x: &[f32]) -> Vec<f32> {
    x.chunks_exact(p.cols as usize)
        .map(|r| {
            let mut best = 0;
            for (j, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = j;
                }
            }
            best as f32
        })
        .collect()
}

fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The new x of an attack step (`op`: sign_step, step_project_linf or step_project_l2).
pub fn step(op: Op, p: &StepParams, x: &[f32], g: &[f32], x0: &[f32]) -> Vec<f32> {
    let (alpha, eps, lo, hi) = (p.alpha, p.eps, p.lo, p.hi);
    match op {
        Op::SignStep => x.iter().zip(g).map(|(&x, &g)| (x + alpha * sign(g)).max(lo).min(hi)).collect(),
        Op::StepProjectLinf => x
            .iter()
            .zip(g)
            .zip(x0)
            .map(|((&x, &g), &c)| (x + alpha * sign(g)).max(c - eps).min(c + eps).max(lo).min(hi))
            .collect(),
        _ => {
            let d = p.d as usize;
            let mut out = Vec::with_capacity(x.len());
            for ((xs, gs), cs) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(x0.chunks_exact(d)) {
                let gn = gs.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                let st = if gn > 0.0 { alpha as f64 / gn } else { 0.0 };
                let delta: Vec<f64> =
                    xs.iter().zip(gs).zip(cs).map(|((&x, &g), &c)| x as f64 + st * g as f64 - c as f64).collect();
                let dn = delta.iter().map(|v| v * v).sum::<f64>().sqrt();
                let f = if dn > eps as f64 { eps as f64 / dn } else { 1.0 };
                out.extend(delta.iter().zip(cs).map(|(&dl, &c)| ((c as f64 + dl * f) as f32).max(lo).min(hi)));
            }
            out
        }
    }
}

/// (w, m) after one SGD update.
pub fn sgd(p: &SgdParams, w: &[f32], g: &[f32], m: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (lr, mom, wd) = (p.lr, p.momentum, p.weight_decay);
    let (mut wo, mut mo) = (w.to_vec(), m.to_vec());
    for ((w, m), &g) in wo.iter_mut().zip(mo.iter_mut()).zip(g) {
        let g = g + wd * *w;
        *m = mom * *m + g;
        let d = if p.nesterov != 0 { g + mom * *m } else { *m };
        *w -= lr * d;
    }
    (wo, mo)
}

/// (w, m, v) after one Adam / AdamW update.
pub fn adam(p: &AdamParams, w: &[f32], g: &[f32], m: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (lr, b1, b2, eps, wd) = (p.lr, p.beta1, p.beta2, p.eps, p.weight_decay);
    let (mut wo, mut mo, mut vo) = (w.to_vec(), m.to_vec(), v.to_vec());
    for (((w, m), v), &g) in wo.iter_mut().zip(mo.iter_mut()).zip(vo.iter_mut()).zip(g) {
        let g = if p.decoupled != 0 {
            *w *= 1.0 - lr * wd;
            g
        } else {
            g + wd * *w
        };
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *w -= lr * (*m / p.bc1) / ((*v / p.bc2).sqrt() + eps);
    }
    (wo, mo, vo)
}

/// The fill of `p` from the shared Philox definition.
pub fn rng_fill(p: &RngParams) -> Vec<f32> {
    let dist = p.dist().unwrap_or(Dist::Uniform);
    (0..p.len as u64).map(|i| rng::sample(p, dist, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_elements_agree_with_a_direct_loop_on_a_strided_padded_case() {
        let p = Conv2dParams::new([2, 3, 5, 4], [4, 3, 3, 2], 2, 1).unwrap();
        let x: Vec<f32> = (0..2 * 3 * 5 * 4).map(|i| (i % 7) as f32 - 3.0).collect();
        let w: Vec<f32> = (0..4 * 3 * 3 * 2).map(|i| (i % 5) as f32 - 2.0).collect();
        let yl: usize = p.output_dims().iter().product();
        let y: Vec<f64> = (0..yl).map(|i| conv_element(Op::Conv2dFwd, &p, &x, &w, i)).collect();
        // <dy, conv(x)> = <x, conv_bwd_input(dy)> = <w, conv_bwd_weight(x, dy)> (adjoints).
        let dy: Vec<f32> = (0..yl).map(|i| ((i * 3) % 11) as f32 - 5.0).collect();
        let lhs: f64 = y.iter().zip(&dy).map(|(a, &b)| a * b as f64).sum();
        let dx: f64 = (0..x.len()).map(|i| conv_element(Op::Conv2dBwdInput, &p, &dy, &w, i) * x[i] as f64).sum();
        let dw: f64 = (0..w.len()).map(|i| conv_element(Op::Conv2dBwdWeight, &p, &x, &dy, i) * w[i] as f64).sum();
        assert_eq!(lhs, dx);
        assert_eq!(lhs, dw);
    }

    #[test]
    fn linear_elements_are_adjoint() {
        let p = LinearParams::new(3, 4, 5).unwrap();
        let x: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
        let w: Vec<f32> = (0..20).map(|i| (i % 3) as f32 - 1.0).collect();
        let dy: Vec<f32> = (0..15).map(|i| (i % 4) as f32).collect();
        let lhs: f64 = (0..15).map(|i| linear_element(Op::LinearFwd, &p, &x, &w, i) * dy[i] as f64).sum();
        let dx: f64 = (0..12).map(|i| linear_element(Op::LinearBwdInput, &p, &dy, &w, i) * x[i] as f64).sum();
        let dw: f64 = (0..20).map(|i| linear_element(Op::LinearBwdWeight, &p, &x, &dy, i) * w[i] as f64).sum();
        assert_eq!(lhs, dx);
        assert_eq!(lhs, dw);
    }

    #[test]
    fn samples_cover_both_ends() {
        let s = sample_indices(10_000, 100);
        assert_eq!(s.len(), 100);
        assert!(s.contains(&0) && s.contains(&9_999));
        assert_eq!(sample_indices(5, 100), vec![0, 1, 2, 3, 4]);
    }
}
