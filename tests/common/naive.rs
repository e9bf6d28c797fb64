//! The oracle: every op as plain f64 loops written straight from its definition, with no
//! blocking, no im2col and no parallelism. Inputs are f32 (as the backends see them); results
//! are rounded to f32 once at the end.
#![allow(clippy::needless_range_loop)]

use perturb::core::ops::{AdamParams, Conv2dParams, Pool2dParams, SgdParams, StepParams};

fn to_f32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}

/// y[b, co, oy, ox] = Σ_{ci, ky, kx} x[b, ci, oy*s + ky - pad, ox*s + kx - pad] * w[co, ci, ky, kx].
pub fn conv2d_fwd(x: &[f32], w: &[f32], p: &Conv2dParams) -> Vec<f32> {
    let [n, ci_n, h, wd] = p.input_dims();
    let [co_n, _, kh, kw] = p.weight_dims();
    let [_, _, ho, wo] = p.output_dims();
    let (s, pad) = (p.stride as i64, p.pad as i64);
    let mut y = vec![0.0f64; n * co_n * ho * wo];
    for b in 0..n {
        for co in 0..co_n {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0.0f64;
                    for ci in 0..ci_n {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = oy as i64 * s + ky as i64 - pad;
                                let ix = ox as i64 * s + kx as i64 - pad;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let xv = x[((b * ci_n + ci) * h + iy as usize) * wd + ix as usize] as f64;
                                let wv = w[((co * ci_n + ci) * kh + ky) * kw + kx] as f64;
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((b * co_n + co) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    to_f32(y)
}

/// dx[b, ci, iy, ix] = Σ over every (co, oy, ox, ky, kx) whose tap lands on (iy, ix) of
/// dy[b, co, oy, ox] * w[co, ci, ky, kx].
pub fn conv2d_bwd_input(dy: &[f32], w: &[f32], p: &Conv2dParams) -> Vec<f32> {
    let [n, ci_n, h, wd] = p.input_dims();
    let [co_n, _, kh, kw] = p.weight_dims();
    let [_, _, ho, wo] = p.output_dims();
    let (s, pad) = (p.stride as i64, p.pad as i64);
    let mut dx = vec![0.0f64; n * ci_n * h * wd];
    for b in 0..n {
        for co in 0..co_n {
            for oy in 0..ho {
                for ox in 0..wo {
                    let g = dy[((b * co_n + co) * ho + oy) * wo + ox] as f64;
                    for ci in 0..ci_n {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = oy as i64 * s + ky as i64 - pad;
                                let ix = ox as i64 * s + kx as i64 - pad;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let wv = w[((co * ci_n + ci) * kh + ky) * kw + kx] as f64;
                                dx[((b * ci_n + ci) * h + iy as usize) * wd + ix as usize] += g * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    to_f32(dx)
}

/// dw[co, ci, ky, kx] = Σ_{b, oy, ox} dy[b, co, oy, ox] * x[b, ci, oy*s + ky - pad, ox*s + kx - pad].
pub fn conv2d_bwd_weight(x: &[f32], dy: &[f32], p: &Conv2dParams) -> Vec<f32> {
    let [n, ci_n, h, wd] = p.input_dims();
    let [co_n, _, kh, kw] = p.weight_dims();
    let [_, _, ho, wo] = p.output_dims();
    let (s, pad) = (p.stride as i64, p.pad as i64);
    let mut dw = vec![0.0f64; co_n * ci_n * kh * kw];
    for co in 0..co_n {
        for ci in 0..ci_n {
            for ky in 0..kh {
                for kx in 0..kw {
                    let mut acc = 0.0f64;
                    for b in 0..n {
                        for oy in 0..ho {
                            for ox in 0..wo {
                                let iy = oy as i64 * s + ky as i64 - pad;
                                let ix = ox as i64 * s + kx as i64 - pad;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let xv = x[((b * ci_n + ci) * h + iy as usize) * wd + ix as usize] as f64;
                                acc += dy[((b * co_n + co) * ho + oy) * wo + ox] as f64 * xv;
                            }
                        }
                    }
                    dw[((co * ci_n + ci) * kh + ky) * kw + kx] = acc;
                }
            }
        }
    }
    to_f32(dw)
}

/// y[i, j] = Σ_l x[i, l] * w[j, l].
pub fn linear_fwd(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|l| x[i * k + l] as f64 * w[j * k + l] as f64).sum();
        }
    }
    to_f32(y)
}

/// dx[i, l] = Σ_j dy[i, j] * w[j, l].
pub fn linear_bwd_input(dy: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut dx = vec![0.0f64; m * k];
    for i in 0..m {
        for l in 0..k {
            dx[i * k + l] = (0..n).map(|j| dy[i * n + j] as f64 * w[j * k + l] as f64).sum();
        }
    }
    to_f32(dx)
}

/// dw[j, l] = Σ_i dy[i, j] * x[i, l].
pub fn linear_bwd_weight(x: &[f32], dy: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut dw = vec![0.0f64; n * k];
    for j in 0..n {
        for l in 0..k {
            dw[j * k + l] = (0..m).map(|i| dy[i * n + j] as f64 * x[i * k + l] as f64).sum();
        }
    }
    to_f32(dw)
}

/// y[o, c, i] + b[c].
pub fn bias_add(y: &[f32], b: &[f32], outer: usize, ch: usize, inner: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; outer * ch * inner];
    for o in 0..outer {
        for c in 0..ch {
            for i in 0..inner {
                let at = (o * ch + c) * inner + i;
                out[at] = (y[at] as f64 + b[c] as f64) as f32;
            }
        }
    }
    out
}

/// db[c] = Σ_{o, i} dy[o, c, i].
pub fn bias_grad(dy: &[f32], outer: usize, ch: usize, inner: usize) -> Vec<f32> {
    let mut db = vec![0.0f64; ch];
    for o in 0..outer {
        for (c, d) in db.iter_mut().enumerate() {
            for i in 0..inner {
                *d += dy[(o * ch + c) * inner + i] as f64;
            }
        }
    }
    to_f32(db)
}

pub fn relu_fwd(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()
}

pub fn relu_bwd(dy: &[f32], x: &[f32]) -> Vec<f32> {
    dy.iter().zip(x).map(|(&g, &v)| if v > 0.0 { g } else { 0.0 }).collect()
}

/// Index (within the plane) of the first maximum of window (oy, ox), row-major.
fn first_max(x: &[f32], p: &Pool2dParams, plane: usize, oy: usize, ox: usize) -> usize {
    let (h, w, k, s) = (p.h as usize, p.w as usize, p.k as usize, p.stride as usize);
    let base = plane * h * w;
    let mut best: Option<(f32, usize)> = None;
    for dy in 0..k {
        for dx in 0..k {
            let at = (oy * s + dy) * w + ox * s + dx;
            let v = x[base + at];
            match best {
                Some((b, _)) if v <= b => {}
                _ => best = Some((v, at)),
            }
        }
    }
    best.map(|(_, at)| at).unwrap_or(0)
}

pub fn maxpool2d_fwd(x: &[f32], p: &Pool2dParams) -> Vec<f32> {
    let [n, c, h, w] = p.input_dims();
    let [_, _, ho, wo] = p.output_dims();
    let mut y = vec![0.0f32; n * c * ho * wo];
    for plane in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                y[(plane * ho + oy) * wo + ox] = x[plane * h * w + first_max(x, p, plane, oy, ox)];
            }
        }
    }
    y
}

/// Scatter: each dy goes to the first maximum of its window.
pub fn maxpool2d_bwd(dy: &[f32], x: &[f32], p: &Pool2dParams) -> Vec<f32> {
    let [n, c, h, w] = p.input_dims();
    let [_, _, ho, wo] = p.output_dims();
    let mut dx = vec![0.0f64; n * c * h * w];
    for plane in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let at = first_max(x, p, plane, oy, ox);
                dx[plane * h * w + at] += dy[(plane * ho + oy) * wo + ox] as f64;
            }
        }
    }
    to_f32(dx)
}

/// (losses, dlogits): loss = logsumexp(z) - z[y]; dz = (softmax(z) - onehot(y)) * scale.
pub fn softmax_xent(z: &[f32], labels: &[u32], n: usize, c: usize, scale: f32) -> (Vec<f32>, Vec<f32>) {
    let mut losses = vec![0.0f64; n];
    let mut dz = vec![0.0f64; n * c];
    for i in 0..n {
        let row = &z[i * c..(i + 1) * c];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let y = labels[i] as usize;
        losses[i] = s.ln() + m - row[y] as f64;
        for j in 0..c {
            let pj = (row[j] as f64 - m).exp() / s;
            dz[i * c + j] = (pj - if j == y { 1.0 } else { 0.0 }) * scale as f64;
        }
    }
    (to_f32(losses), to_f32(dz))
}

pub fn axpby(x: &[f32], y: &[f32], a: f32, b: f32) -> Vec<f32> {
    x.iter().zip(y).map(|(&u, &v)| (a as f64 * u as f64 + b as f64 * v as f64) as f32).collect()
}

pub fn mul(x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&u, &v)| (u as f64 * v as f64) as f32).collect()
}

pub fn sum_rows(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows).map(|r| x[r * cols..(r + 1) * cols].iter().map(|&v| v as f64).sum::<f64>() as f32).collect()
}

pub fn argmax_rows(x: &[f32], rows: usize, cols: usize) -> Vec<u32> {
    (0..rows)
        .map(|r| {
            let row = &x[r * cols..(r + 1) * cols];
            let mut at = 0;
            for j in 1..cols {
                if row[j] > row[at] {
                    at = j;
                }
            }
            at as u32
        })
        .collect()
}

fn sign(v: f32) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn clip(v: f64, lo: f32, hi: f32) -> f64 {
    v.max(lo as f64).min(hi as f64)
}

pub fn sign_step(x: &[f32], g: &[f32], p: &StepParams) -> Vec<f32> {
    x.iter().zip(g).map(|(&x, &g)| clip(x as f64 + p.alpha as f64 * sign(g), p.lo, p.hi) as f32).collect()
}

pub fn step_project_linf(x: &[f32], g: &[f32], x0: &[f32], p: &StepParams) -> Vec<f32> {
    let eps = p.eps as f64;
    x.iter()
        .zip(g)
        .zip(x0)
        .map(|((&x, &g), &c)| {
            let s = x as f64 + p.alpha as f64 * sign(g);
            let s = s.max(c as f64 - eps).min(c as f64 + eps);
            clip(s, p.lo, p.hi) as f32
        })
        .collect()
}

pub fn step_project_l2(x: &[f32], g: &[f32], x0: &[f32], p: &StepParams) -> Vec<f32> {
    let (n, d) = (p.n as usize, p.d as usize);
    let mut out = vec![0.0f32; n * d];
    for i in 0..n {
        let r = i * d..(i + 1) * d;
        let gn = g[r.clone()].iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        let s: Vec<f64> = if gn > 0.0 {
            x[r.clone()].iter().zip(&g[r.clone()]).map(|(&x, &g)| x as f64 + p.alpha as f64 * g as f64 / gn).collect()
        } else {
            x[r.clone()].iter().map(|&x| x as f64).collect()
        };
        let delta: Vec<f64> = s.iter().zip(&x0[r.clone()]).map(|(s, &c)| s - c as f64).collect();
        let dn = delta.iter().map(|v| v * v).sum::<f64>().sqrt();
        let f = if dn > p.eps as f64 { p.eps as f64 / dn } else { 1.0 };
        for j in 0..d {
            out[i * d + j] = clip(x0[i * d + j] as f64 + delta[j] * f, p.lo, p.hi) as f32;
        }
    }
    out
}

/// (w, m) after one SGD step.
pub fn sgd(w: &[f32], g: &[f32], m: &[f32], p: &SgdParams) -> (Vec<f32>, Vec<f32>) {
    let (lr, mom, wd) = (p.lr as f64, p.momentum as f64, p.weight_decay as f64);
    let mut wo = Vec::new();
    let mut mo = Vec::new();
    for i in 0..w.len() {
        let gp = g[i] as f64 + wd * w[i] as f64;
        let mn = mom * m[i] as f64 + gp;
        let d = if p.nesterov != 0 { gp + mom * mn } else { mn };
        wo.push((w[i] as f64 - lr * d) as f32);
        mo.push(mn as f32);
    }
    (wo, mo)
}

/// (w, m, v) after one Adam / AdamW step.
pub fn adam(w: &[f32], g: &[f32], m: &[f32], v: &[f32], p: &AdamParams) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (lr, b1, b2, eps, wd) = (p.lr as f64, p.beta1 as f64, p.beta2 as f64, p.eps as f64, p.weight_decay as f64);
    let (bc1, bc2) = (p.bc1 as f64, p.bc2 as f64);
    let (mut wo, mut mo, mut vo) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..w.len() {
        let mut wi = w[i] as f64;
        let gi = if p.decoupled != 0 {
            wi *= 1.0 - lr * wd;
            g[i] as f64
        } else {
            g[i] as f64 + wd * wi
        };
        let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
        wi -= lr * (mi / bc1) / ((vi / bc2).sqrt() + eps);
        wo.push(wi as f32);
        mo.push(mi as f32);
        vo.push(vi as f32);
    }
    (wo, mo, vo)
}
