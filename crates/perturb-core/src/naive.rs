//! The oracle: every kernel-level op as plain loops written straight from its definition — no
//! blocking, no im2col, no parallelism, no backend. The parity tests check every backend
//! (the rayon CPU reference included) against these, and `perturb bench` checks each kernel
//! against them before timing it.
//!
//! Inputs are f32, as the backends see them; arithmetic is in f64 and each result is rounded
//! to f32 once. Where that single rounding cannot differ from an f32 computation (relu,
//! pooling, argmax, the sign and L-inf steps: sums of two f32, clamps to f32 bounds), the
//! result is bit-exact with any correct kernel. Layouts are the Backend trait's: NCHW
//! activations, conv weights [out, in, kh, kw], linear weights [out, in].
//!
//! Convolutions and linear layers are also given one output element at a time (`*_at`,
//! returning the f64 sum) so a large output can be checked on a sample of its elements.

use crate::ops::{
    AdamParams, BiasParams, Conv2dParams, Dist, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use crate::rng;

/// Every element `0..len` of an output from its f64 element function, rounded once.
fn full(len: usize, f: impl Fn(usize) -> f64) -> Vec<f32> {
    (0..len).map(|i| f(i) as f32).collect()
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

/// Geometry shared by the three conv directions: flat indices into x, w and y, and the input
/// row (or column) that output position `o` and tap `k` read, if inside the unpadded image.
struct ConvGeom {
    x: [usize; 4],
    w: [usize; 4],
    y: [usize; 4],
    s: usize,
    pad: usize,
}

impl ConvGeom {
    fn new(p: &Conv2dParams) -> Self {
        ConvGeom {
            x: p.input_dims(),
            w: p.weight_dims(),
            y: p.output_dims(),
            s: p.stride as usize,
            pad: p.pad as usize,
        }
    }
    fn xi(&self, b: usize, c: usize, y: usize, x: usize) -> usize {
        ((b * self.x[1] + c) * self.x[2] + y) * self.x[3] + x
    }
    fn wi(&self, o: usize, c: usize, y: usize, x: usize) -> usize {
        ((o * self.w[1] + c) * self.w[2] + y) * self.w[3] + x
    }
    fn yi(&self, b: usize, o: usize, y: usize, x: usize) -> usize {
        ((b * self.y[1] + o) * self.y[2] + y) * self.y[3] + x
    }
    fn tap(&self, o: usize, k: usize, lim: usize) -> Option<usize> {
        (o * self.s + k).checked_sub(self.pad).filter(|&v| v < lim)
    }
}

/// Element `i` of y = conv2d(x, w): y[b, co, oy, ox] = Σ_{ci, ky, kx} x[b, ci, oy·s + ky - pad,
/// ox·s + kx - pad] · w[co, ci, ky, kx] (taps in the padding contribute zero).
pub fn conv2d_fwd_at(x: &[f32], w: &[f32], p: &Conv2dParams, i: usize) -> f64 {
    let g = ConvGeom::new(p);
    let [bn, o, oy, ox] = coords(i, g.y);
    let [_, ci, kh, kw] = g.w;
    let mut acc = 0.0f64;
    for c in 0..ci {
        for ky in 0..kh {
            for kx in 0..kw {
                if let (Some(y), Some(xx)) = (g.tap(oy, ky, g.x[2]), g.tap(ox, kx, g.x[3])) {
                    acc += x[g.xi(bn, c, y, xx)] as f64 * w[g.wi(o, c, ky, kx)] as f64;
                }
            }
        }
    }
    acc
}

/// Element `i` of dx: dx[b, ci, iy, ix] = Σ over every (co, oy, ox, ky, kx) whose tap lands on
/// (iy, ix) of dy[b, co, oy, ox] · w[co, ci, ky, kx].
pub fn conv2d_bwd_input_at(dy: &[f32], w: &[f32], p: &Conv2dParams, i: usize) -> f64 {
    let g = ConvGeom::new(p);
    let [bn, c, y, x] = coords(i, g.x);
    let [co, _, kh, kw] = g.w;
    let (ty, tx) = (y + g.pad, x + g.pad);
    let mut acc = 0.0f64;
    for o in 0..co {
        for ky in 0..kh {
            for kx in 0..kw {
                if ty < ky || tx < kx || (ty - ky) % g.s != 0 || (tx - kx) % g.s != 0 {
                    continue;
                }
                let (oy, ox) = ((ty - ky) / g.s, (tx - kx) / g.s);
                if oy < g.y[2] && ox < g.y[3] {
                    acc += dy[g.yi(bn, o, oy, ox)] as f64 * w[g.wi(o, c, ky, kx)] as f64;
                }
            }
        }
    }
    acc
}

/// Element `i` of dw: dw[co, ci, ky, kx] = Σ_{b, oy, ox} dy[b, co, oy, ox] · x[b, ci,
/// oy·s + ky - pad, ox·s + kx - pad].
pub fn conv2d_bwd_weight_at(x: &[f32], dy: &[f32], p: &Conv2dParams, i: usize) -> f64 {
    let g = ConvGeom::new(p);
    let [o, c, ky, kx] = coords(i, g.w);
    let mut acc = 0.0f64;
    for bn in 0..g.x[0] {
        for oy in 0..g.y[2] {
            let Some(y) = g.tap(oy, ky, g.x[2]) else { continue };
            for ox in 0..g.y[3] {
                if let Some(xx) = g.tap(ox, kx, g.x[3]) {
                    acc += x[g.xi(bn, c, y, xx)] as f64 * dy[g.yi(bn, o, oy, ox)] as f64;
                }
            }
        }
    }
    acc
}

/// y [n, c_out, h_out, w_out] = conv2d(x [n, c_in, h, w], w [c_out, c_in, kh, kw]).
pub fn conv2d_fwd(x: &[f32], w: &[f32], p: &Conv2dParams) -> Vec<f32> {
    full(p.output_dims().iter().product(), |i| conv2d_fwd_at(x, w, p, i))
}

/// dx [n, c_in, h, w] from dy [n, c_out, h_out, w_out] and w.
pub fn conv2d_bwd_input(dy: &[f32], w: &[f32], p: &Conv2dParams) -> Vec<f32> {
    full(p.input_dims().iter().product(), |i| conv2d_bwd_input_at(dy, w, p, i))
}

/// dw [c_out, c_in, kh, kw] from x and dy.
pub fn conv2d_bwd_weight(x: &[f32], dy: &[f32], p: &Conv2dParams) -> Vec<f32> {
    full(p.weight_dims().iter().product(), |i| conv2d_bwd_weight_at(x, dy, p, i))
}

fn mkn(p: &LinearParams) -> (usize, usize, usize) {
    (p.m as usize, p.k as usize, p.n as usize)
}

/// Element `i` of y [m, n]: y[r, j] = Σ_q x[r, q] · w[j, q].
pub fn linear_fwd_at(x: &[f32], w: &[f32], p: &LinearParams, i: usize) -> f64 {
    let (_, k, n) = mkn(p);
    let (r, j) = (i / n, i % n);
    (0..k).map(|q| x[r * k + q] as f64 * w[j * k + q] as f64).sum()
}

/// Element `i` of dx [m, k]: dx[r, q] = Σ_j dy[r, j] · w[j, q].
pub fn linear_bwd_input_at(dy: &[f32], w: &[f32], p: &LinearParams, i: usize) -> f64 {
    let (_, k, n) = mkn(p);
    let (r, q) = (i / k, i % k);
    (0..n).map(|j| dy[r * n + j] as f64 * w[j * k + q] as f64).sum()
}

/// Element `i` of dw [n, k]: dw[j, q] = Σ_r dy[r, j] · x[r, q].
pub fn linear_bwd_weight_at(x: &[f32], dy: &[f32], p: &LinearParams, i: usize) -> f64 {
    let (m, k, n) = mkn(p);
    let (j, q) = (i / k, i % k);
    (0..m).map(|r| dy[r * n + j] as f64 * x[r * k + q] as f64).sum()
}

/// y [m, n] = x [m, k] · wᵀ (w [n, k]).
pub fn linear_fwd(x: &[f32], w: &[f32], p: &LinearParams) -> Vec<f32> {
    full((p.m * p.n) as usize, |i| linear_fwd_at(x, w, p, i))
}

/// dx [m, k] = dy [m, n] · w [n, k].
pub fn linear_bwd_input(dy: &[f32], w: &[f32], p: &LinearParams) -> Vec<f32> {
    full((p.m * p.k) as usize, |i| linear_bwd_input_at(dy, w, p, i))
}

/// dw [n, k] = dyᵀ · x.
pub fn linear_bwd_weight(x: &[f32], dy: &[f32], p: &LinearParams) -> Vec<f32> {
    full((p.n * p.k) as usize, |i| linear_bwd_weight_at(x, dy, p, i))
}

/// `y[o, c, i] + b[c]` over y `[outer, channels, inner]`.
pub fn bias_add(y: &[f32], b: &[f32], p: &BiasParams) -> Vec<f32> {
    let (c, inner) = (p.channels as usize, p.inner as usize);
    y.iter().enumerate().map(|(i, &v)| (v as f64 + b[(i / inner) % c] as f64) as f32).collect()
}

/// `db[c] = Σ_{o, i} dy[o, c, i]`.
pub fn bias_grad(dy: &[f32], p: &BiasParams) -> Vec<f32> {
    let (outer, c, inner) = (p.outer as usize, p.channels as usize, p.inner as usize);
    full(c, |ch| (0..outer).flat_map(|o| &dy[(o * c + ch) * inner..][..inner]).map(|&v| v as f64).sum())
}

/// max(x, 0) elementwise (NaN maps to 0: only x > 0 passes).
pub fn relu_fwd(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()
}

/// dy where x > 0, else 0.
pub fn relu_bwd(dy: &[f32], x: &[f32]) -> Vec<f32> {
    dy.iter().zip(x).map(|(&g, &v)| if v > 0.0 { g } else { 0.0 }).collect()
}

/// Index into x of the first maximum (row-major window order) of output element `i`'s window.
fn window_argmax(x: &[f32], p: &Pool2dParams, i: usize) -> usize {
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

/// The maximum of each k x k window.
pub fn maxpool2d_fwd(x: &[f32], p: &Pool2dParams) -> Vec<f32> {
    let len: usize = p.output_dims().iter().product();
    (0..len).map(|i| x[window_argmax(x, p, i)]).collect()
}

/// Scatter: each dy goes to the first maximum of its window (overlapping windows add).
pub fn maxpool2d_bwd(dy: &[f32], x: &[f32], p: &Pool2dParams) -> Vec<f32> {
    let mut dx = vec![0f64; x.len()];
    for (i, &g) in dy.iter().enumerate() {
        dx[window_argmax(x, p, i)] += g as f64;
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// (losses `[n]`, dlogits `[n, classes]`): loss = `logsumexp(z) - z[y]`;
/// dz = (softmax(z) - onehot(y)) · grad_scale.
pub fn softmax_xent(z: &[f32], labels: &[u32], p: &XentParams) -> (Vec<f32>, Vec<f32>) {
    let c = p.classes as usize;
    let mut losses = Vec::with_capacity(p.n as usize);
    let mut d = Vec::with_capacity(z.len());
    for (row, &y) in z.chunks_exact(c).zip(labels) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        losses.push((lse - row[y as usize] as f64) as f32);
        for (j, &v) in row.iter().enumerate() {
            let sm = (v as f64 - lse).exp() - if j == y as usize { 1.0 } else { 0.0 };
            d.push((sm * p.grad_scale as f64) as f32);
        }
    }
    (losses, d)
}

/// a·x + b·y.
pub fn axpby(x: &[f32], y: &[f32], p: &EltParams) -> Vec<f32> {
    x.iter().zip(y).map(|(&u, &v)| (p.a as f64 * u as f64 + p.b as f64 * v as f64) as f32).collect()
}

/// x · y elementwise.
pub fn mul(x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&u, &v)| (u as f64 * v as f64) as f32).collect()
}

/// Row sums of x [rows, cols].
pub fn sum_rows(x: &[f32], p: &RowParams) -> Vec<f32> {
    x.chunks_exact(p.cols as usize).map(|r| r.iter().map(|&v| v as f64).sum::<f64>() as f32).collect()
}

/// Index of the first maximum of each row of x [rows, cols].
pub fn argmax_rows(x: &[f32], p: &RowParams) -> Vec<u32> {
    x.chunks_exact(p.cols as usize)
        .map(|r| {
            let mut best = 0;
            for (j, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// +1, -1, or 0 for zero and NaN.
fn sign(v: f32) -> f64 {
    f64::from(i8::from(v > 0.0) - i8::from(v < 0.0))
}

fn clip(v: f64, p: &StepParams) -> f64 {
    v.max(p.lo as f64).min(p.hi as f64)
}

/// x' = clip(x + alpha · sign(g), lo, hi).
pub fn sign_step(x: &[f32], g: &[f32], p: &StepParams) -> Vec<f32> {
    x.iter().zip(g).map(|(&x, &g)| clip(x as f64 + p.alpha as f64 * sign(g), p) as f32).collect()
}

/// x' = clip(clamp(x + alpha · sign(g), x0 - eps, x0 + eps), lo, hi).
pub fn step_project_linf(x: &[f32], g: &[f32], x0: &[f32], p: &StepParams) -> Vec<f32> {
    let eps = p.eps as f64;
    x.iter()
        .zip(g)
        .zip(x0)
        .map(|((&x, &g), &c)| {
            let s = x as f64 + p.alpha as f64 * sign(g);
            clip(s.max(c as f64 - eps).min(c as f64 + eps), p) as f32
        })
        .collect()
}

/// Per example of x [n, d]: s = x + alpha · g / ||g|| (s = x for g = 0), δ = s - x0,
/// x' = clip(x0 + δ · min(1, eps / ||δ||), lo, hi).
pub fn step_project_l2(x: &[f32], g: &[f32], x0: &[f32], p: &StepParams) -> Vec<f32> {
    let d = p.d as usize;
    let mut out = Vec::with_capacity(x.len());
    for ((xs, gs), cs) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(x0.chunks_exact(d)) {
        let gn = gs.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        let st = if gn > 0.0 { p.alpha as f64 / gn } else { 0.0 };
        let delta: Vec<f64> =
            xs.iter().zip(gs).zip(cs).map(|((&x, &g), &c)| x as f64 + st * g as f64 - c as f64).collect();
        let dn = delta.iter().map(|v| v * v).sum::<f64>().sqrt();
        let f = if dn > p.eps as f64 { p.eps as f64 / dn } else { 1.0 };
        out.extend(delta.iter().zip(cs).map(|(&dl, &c)| clip(c as f64 + dl * f, p) as f32));
    }
    out
}

/// (w, m) after one SGD step: g' = g + wd·w, m = momentum·m + g', w -= lr·(nesterov ?
/// g' + momentum·m : m).
pub fn sgd(w: &[f32], g: &[f32], m: &[f32], p: &SgdParams) -> (Vec<f32>, Vec<f32>) {
    let (lr, mom, wd) = (p.lr as f64, p.momentum as f64, p.weight_decay as f64);
    let mut out = (Vec::with_capacity(w.len()), Vec::with_capacity(w.len()));
    for ((&w, &g), &m) in w.iter().zip(g).zip(m) {
        let gp = g as f64 + wd * w as f64;
        let mn = mom * m as f64 + gp;
        let d = if p.nesterov != 0 { gp + mom * mn } else { mn };
        out.0.push((w as f64 - lr * d) as f32);
        out.1.push(mn as f32);
    }
    out
}

/// (w, m, v) after one Adam step (AdamW when `decoupled`: the decay scales w, not g), with
/// the bias corrections bc1, bc2 of the params.
pub fn adam(w: &[f32], g: &[f32], m: &[f32], v: &[f32], p: &AdamParams) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (lr, b1, b2, eps, wd) = (p.lr as f64, p.beta1 as f64, p.beta2 as f64, p.eps as f64, p.weight_decay as f64);
    let (bc1, bc2) = (p.bc1 as f64, p.bc2 as f64);
    let (mut wo, mut mo, mut vo) = (Vec::new(), Vec::new(), Vec::new());
    for (((&w, &g), &m), &v) in w.iter().zip(g).zip(m).zip(v) {
        let mut wi = w as f64;
        let gi = if p.decoupled != 0 {
            wi *= 1.0 - lr * wd;
            g as f64
        } else {
            g as f64 + wd * wi
        };
        let mi = b1 * m as f64 + (1.0 - b1) * gi;
        let vi = b2 * v as f64 + (1.0 - b2) * gi * gi;
        wi -= lr * (mi / bc1) / ((vi / bc2).sqrt() + eps);
        wo.push(wi as f32);
        mo.push(mi as f32);
        vo.push(vi as f32);
    }
    (wo, mo, vo)
}

/// The fill of `p` from the shared Philox definition ([`rng::sample`]).
pub fn rng_fill(p: &RngParams) -> Vec<f32> {
    let dist = p.dist().unwrap_or(Dist::Uniform);
    (0..p.len as u64).map(|i| rng::sample(p, dist, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&u, &v)| u as f64 * v as f64).sum()
    }

    /// <dy, conv(x)> = <conv_bwd_input(dy), x> = <conv_bwd_weight(x, dy), w>: the three
    /// directions are adjoint, on a strided, padded, non-square case. Small integers keep every
    /// sum exact, so the equalities are exact.
    #[test]
    fn conv_directions_are_adjoint() {
        let p = Conv2dParams::new([2, 3, 5, 4], [4, 3, 3, 2], 2, 1).unwrap();
        let x: Vec<f32> = (0..2 * 3 * 5 * 4).map(|i| (i % 7) as f32 - 3.0).collect();
        let w: Vec<f32> = (0..4 * 3 * 3 * 2).map(|i| (i % 5) as f32 - 2.0).collect();
        let y = conv2d_fwd(&x, &w, &p);
        let dy: Vec<f32> = (0..y.len()).map(|i| ((i * 3) % 11) as f32 - 5.0).collect();
        let lhs = dot(&y, &dy);
        assert!(lhs != 0.0);
        assert_eq!(lhs, dot(&conv2d_bwd_input(&dy, &w, &p), &x));
        assert_eq!(lhs, dot(&conv2d_bwd_weight(&x, &dy, &p), &w));
    }

    /// One hand-computed case: a 3x3 ones kernel over a padded 3x3 image of ones counts the
    /// taps inside the image.
    #[test]
    fn conv_padding_counts_taps() {
        let p = Conv2dParams::new([1, 1, 3, 3], [1, 1, 3, 3], 1, 1).unwrap();
        let y = conv2d_fwd(&[1.0; 9], &[1.0; 9], &p);
        assert_eq!(y, [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]);
    }

    #[test]
    fn linear_directions_are_adjoint() {
        let p = LinearParams::new(3, 4, 5).unwrap();
        let x: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
        let w: Vec<f32> = (0..20).map(|i| (i % 3) as f32 - 1.0).collect();
        let dy: Vec<f32> = (0..15).map(|i| (i % 4) as f32).collect();
        let lhs = dot(&linear_fwd(&x, &w, &p), &dy);
        assert!(lhs != 0.0);
        assert_eq!(lhs, dot(&linear_bwd_input(&dy, &w, &p), &x));
        assert_eq!(lhs, dot(&linear_bwd_weight(&x, &dy, &p), &w));
    }

    #[test]
    fn pooling_takes_the_first_maximum() {
        let p = Pool2dParams::new([1, 1, 2, 4], 2, 2).unwrap();
        let x = [1.0, 3.0, 2.0, 2.0, 3.0, 0.0, 2.0, 1.0];
        assert_eq!(maxpool2d_fwd(&x, &p), [3.0, 2.0]);
        assert_eq!(maxpool2d_bwd(&[1.0, 5.0], &x, &p), [0.0, 1.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(argmax_rows(&x, &RowParams::new(2, 4).unwrap()), [1, 0]);
    }

    #[test]
    fn steps_project_and_clip() {
        let p = StepParams::new(1, 3, 0.5, 0.25, 0.0, 1.0).unwrap();
        let (x, g, x0) = ([0.5f32, 0.9, 0.1], [1.0f32, 1.0, 0.0], [0.5f32, 0.9, 0.1]);
        assert_eq!(sign_step(&x, &g, &p), [1.0, 1.0, 0.1]);
        assert_eq!(step_project_linf(&x, &g, &x0, &p), [0.75, 1.0, 0.1]);
        // ||alpha g / ||g|| || = 0.5 > eps: the step is scaled to length 0.25, then clipped.
        let l2 = step_project_l2(&x, &g, &x0, &p);
        let r = 0.25 / 2f64.sqrt();
        assert_eq!(l2, [(0.5 + r) as f32, 1.0, 0.1]);
    }
}
