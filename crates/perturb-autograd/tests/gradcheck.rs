//! Finite-difference checks of every derivative rule on the CPU backend.
//!
//! Each check builds `out = f(inputs)` on a graph and compares the tape's gradient of a scalar
//! against central differences `(F(x + eps) - F(x - eps)) / 2 eps`, elementwise, with F reduced
//! on the host in f64. Two scalars are checked, so both kinds of upstream gradient reach the
//! rule under test: `sum(r * out)` with seeded r (a tensor gradient) and `sum(out)` (a uniform
//! one). The forward runs in f32: with outputs of order 1, rounding moves F by about
//! sqrt(len) * 6e-8, i.e. ~1e-5 in the difference quotient at eps = 1e-2, and the truncation
//! error of smooth ops is O(eps^2); hence |tape - fd| <= 1e-3 + 1e-2 |fd|. Relu inputs are kept
//! away from 0 and pooling windows have distinct values, so no perturbation crosses a kink.

use perturb_autograd::{Graph, Reduction, Result, Var};
use perturb_core::ops::{Dist, RngParams};
use perturb_core::rng::sample;
use perturb_core::{Backend, Shape, Tensor};
use perturb_cpu::CpuBackend;

const ATOL: f64 = 1e-3;
const RTOL: f64 = 1e-2;

/// Seeded values in [lo, hi).
fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let p = RngParams::new(n, seed, 0, Dist::Uniform, lo, hi).unwrap();
    (0..n as u64).map(|i| sample(&p, Dist::Uniform, i)).collect()
}

/// Seeded values with |v| in [0.1, 1): away from the relu kink by more than eps.
fn away_from_zero(seed: u64, n: usize) -> Vec<f32> {
    uniform(seed, n, -0.9, 0.9).into_iter().map(|v| v + 0.1 * v.signum()).collect()
}

/// A seeded permutation of 0.05 * (k - n/2): every pair differs by >= 0.05 > 2 eps.
fn distinct(seed: u64, n: usize) -> Vec<f32> {
    let keys = uniform(seed, n, 0.0, 1.0);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut out = vec![0.0; n];
    for (rank, &i) in idx.iter().enumerate() {
        out[i] = 0.05 * (rank as f32 - n as f32 / 2.0);
    }
    out
}

struct Input {
    data: Vec<f32>,
    shape: Vec<usize>,
}

fn inp(data: Vec<f32>, shape: &[usize]) -> Input {
    assert_eq!(data.len(), shape.iter().product::<usize>());
    Input { data, shape: shape.to_vec() }
}

/// Runs `f` with all inputs as constants and returns the output on the host.
fn forward<F>(b: &CpuBackend, inputs: &[Input], f: &F) -> Vec<f32>
where
    F: Fn(&Graph<CpuBackend>, &[Var]) -> Result<Var>,
{
    let g = Graph::new(b);
    let vars: Vec<Var> =
        inputs.iter().map(|i| g.constant(&b.upload_f32(&i.data, &Shape::from(i.shape.clone())).unwrap())).collect();
    let out = f(&g, &vars).unwrap();
    b.download_f32(&g.value(out).unwrap()).unwrap()
}

fn dot(r: Option<&[f32]>, out: &[f32]) -> f64 {
    match r {
        Some(r) => r.iter().zip(out).map(|(&a, &b)| a as f64 * b as f64).sum(),
        None => out.iter().map(|&v| v as f64).sum(),
    }
}

/// Checks the gradients of `f` with respect to every input against central differences.
fn gradcheck<F>(name: &str, inputs: Vec<Input>, eps: f32, f: F)
where
    F: Fn(&Graph<CpuBackend>, &[Var]) -> Result<Var>,
{
    let b = CpuBackend::new();
    let out_len = forward(&b, &inputs, &f).len();
    let r = uniform(999, out_len, -1.0, 1.0);
    for weighted in [true, false] {
        let rw = weighted.then_some(r.as_slice());
        // Tape gradient.
        let g = Graph::new(&b);
        let tensors: Vec<Tensor<CpuBackend>> =
            inputs.iter().map(|i| b.upload_f32(&i.data, &Shape::from(i.shape.clone())).unwrap()).collect();
        let vars: Vec<Var> = tensors.iter().map(|t| g.input(t, true)).collect();
        let out = f(&g, &vars).unwrap();
        let loss = if weighted {
            let rt = g.constant(&b.upload_f32(&r, &g.shape(out).unwrap()).unwrap());
            let m = g.mul(out, rt).unwrap();
            g.sum_all(m).unwrap()
        } else {
            g.sum_all(out).unwrap()
        };
        let grads = g.backward(loss).unwrap();
        for (k, input) in inputs.iter().enumerate() {
            let analytic = b.download_f32(grads.wrt(vars[k]).unwrap()).unwrap();
            assert_eq!(analytic.len(), input.data.len(), "{name}: gradient length of input {k}");
            let mut worst = 0.0f64;
            for (j, &tape) in analytic.iter().enumerate() {
                let mut probe: Vec<Input> = inputs.iter().map(|i| inp(i.data.clone(), &i.shape)).collect();
                probe[k].data[j] = input.data[j] + eps;
                let fp = dot(rw, &forward(&b, &probe, &f));
                probe[k].data[j] = input.data[j] - eps;
                let fm = dot(rw, &forward(&b, &probe, &f));
                let numeric = (fp - fm) / (2.0 * eps as f64);
                let err = (tape as f64 - numeric).abs();
                let bound = ATOL + RTOL * numeric.abs();
                assert!(
                    err <= bound,
                    "{name} (weighted = {weighted}): d/d input {k}[{j}]: tape {} vs finite difference {numeric} (err {err:.2e} > {bound:.2e})",
                    tape
                );
                worst = worst.max(err / bound);
            }
            eprintln!("{name} (weighted = {weighted}) input {k}: {:.0}% of tolerance used", worst * 100.0);
        }
    }
}

#[test]
fn conv2d_rule() {
    // Awkward: odd sizes, non-square kernel, stride 2, padding 1, batch 2.
    let x = inp(uniform(1, 2 * 3 * 7 * 6, -1.0, 1.0), &[2, 3, 7, 6]);
    let w = inp(uniform(2, 4 * 3 * 3 * 2, -0.5, 0.5), &[4, 3, 3, 2]);
    gradcheck("conv2d s2 p1", vec![x, w], 1e-2, |g, v| g.conv2d(v[0], v[1], 2, 1));
    let x = inp(uniform(3, 5 * 5 * 2, -1.0, 1.0), &[1, 2, 5, 5]);
    let w = inp(uniform(4, 3 * 2 * 3 * 3, -0.5, 0.5), &[3, 2, 3, 3]);
    gradcheck("conv2d s1 p0", vec![x, w], 1e-2, |g, v| g.conv2d(v[0], v[1], 1, 0));
}

#[test]
fn linear_rule() {
    let x = inp(uniform(5, 3 * 5, -1.0, 1.0), &[3, 5]);
    let w = inp(uniform(6, 4 * 5, -1.0, 1.0), &[4, 5]);
    gradcheck("linear", vec![x, w], 1e-2, |g, v| g.linear(v[0], v[1]));
}

#[test]
fn bias_add_rule() {
    let y = inp(uniform(7, 2 * 3 * 4 * 5, -1.0, 1.0), &[2, 3, 4, 5]);
    let b = inp(uniform(8, 3, -1.0, 1.0), &[3]);
    gradcheck("bias_add nchw", vec![y, b], 1e-2, |g, v| g.bias_add(v[0], v[1]));
    let y = inp(uniform(9, 3 * 4, -1.0, 1.0), &[3, 4]);
    let b = inp(uniform(10, 4, -1.0, 1.0), &[4]);
    gradcheck("bias_add linear", vec![y, b], 1e-2, |g, v| g.bias_add(v[0], v[1]));
}

#[test]
fn relu_rule() {
    let x = inp(away_from_zero(11, 2 * 3 * 5), &[2, 3, 5]);
    gradcheck("relu", vec![x], 1e-2, |g, v| g.relu(v[0]));
}

#[test]
fn maxpool2d_rule() {
    let x = inp(distinct(12, 2 * 2 * 6 * 6), &[2, 2, 6, 6]);
    gradcheck("maxpool k2 s2", vec![x], 1e-2, |g, v| g.maxpool2d(v[0], 2, 2));
    // Overlapping windows on an odd size: one input can be the max of several windows.
    let x = inp(distinct(13, 3 * 7 * 7), &[1, 3, 7, 7]);
    gradcheck("maxpool k3 s2", vec![x], 1e-2, |g, v| g.maxpool2d(v[0], 3, 2));
}

#[test]
fn reshape_and_flatten_rules() {
    let x = inp(uniform(14, 2 * 3 * 2 * 2, -1.0, 1.0), &[2, 3, 2, 2]);
    let w = inp(uniform(15, 5 * 12, -1.0, 1.0), &[5, 12]);
    // A linear layer after the view, so a non-trivial gradient passes back through it.
    gradcheck("flatten", vec![x, w], 1e-2, |g, v| {
        let f = g.flatten(v[0])?;
        g.linear(f, v[1])
    });
    let x = inp(uniform(16, 24, -1.0, 1.0), &[4, 6]);
    gradcheck("reshape", vec![x], 1e-2, |g, v| {
        let r = g.reshape(v[0], [2, 3, 4])?;
        g.mul(r, r)
    });
}

fn labels(b: &CpuBackend, l: &[u32]) -> Tensor<CpuBackend> {
    b.upload_u32(l, &Shape::from([l.len()])).unwrap()
}

#[test]
fn softmax_xent_rules() {
    let lab = [2u32, 0, 4, 1, 3];
    let logits = || inp(uniform(17, 5 * 5, -2.0, 2.0), &[5, 5]);
    for (name, red) in [("xent mean", Reduction::Mean), ("xent sum", Reduction::Sum)] {
        gradcheck(name, vec![logits()], 1e-2, move |g, v| {
            let l = labels(g.backend(), &lab);
            Ok(g.softmax_xent(v[0], &l, red)?.loss)
        });
        // The per-example losses as the output: a tensor gradient [n] reaches the fused rule.
        gradcheck(name, vec![logits()], 1e-2, move |g, v| {
            let l = labels(g.backend(), &lab);
            Ok(g.softmax_xent(v[0], &l, red)?.per_example)
        });
    }
    // Both outputs used at once: the contributions add.
    gradcheck("xent both", vec![logits()], 1e-2, move |g, v| {
        let l = labels(g.backend(), &lab);
        let x = g.softmax_xent(v[0], &l, Reduction::Mean)?;
        let s = g.sum_all(x.per_example)?;
        g.axpby(x.loss, s, 3.0, 0.5)
    });
}

#[test]
fn elementwise_rules() {
    let x = || inp(uniform(18, 12, -1.0, 1.0), &[3, 4]);
    let y = || inp(uniform(19, 12, -1.0, 1.0), &[3, 4]);
    gradcheck("axpby", vec![x(), y()], 1e-2, |g, v| g.axpby(v[0], v[1], 0.7, -1.3));
    gradcheck("add", vec![x(), y()], 1e-2, |g, v| g.add(v[0], v[1]));
    gradcheck("sub", vec![x(), y()], 1e-2, |g, v| g.sub(v[0], v[1]));
    gradcheck("scale", vec![x()], 1e-2, |g, v| g.scale(v[0], -2.5));
    gradcheck("mul", vec![x(), y()], 1e-2, |g, v| g.mul(v[0], v[1]));
    gradcheck("square", vec![x()], 1e-2, |g, v| g.mul(v[0], v[0]));
    // Different shapes, same element count: the gradient of y comes back in y's shape.
    let y2 = inp(uniform(20, 12, -1.0, 1.0), &[12]);
    gradcheck("mul reshaped", vec![x(), y2], 1e-2, |g, v| g.mul(v[0], v[1]));
    let y3 = inp(uniform(21, 12, -1.0, 1.0), &[2, 6]);
    gradcheck("axpby reshaped", vec![x(), y3], 1e-2, |g, v| g.axpby(v[0], v[1], 1.5, 0.5));
}

#[test]
fn reduction_rules() {
    let x = || inp(uniform(22, 3 * 2 * 4, -1.0, 1.0), &[3, 2, 4]);
    gradcheck("sum_rows", vec![x()], 1e-2, |g, v| g.sum_rows(v[0]));
    gradcheck("sum_all", vec![x()], 1e-2, |g, v| g.sum_all(v[0]));
    gradcheck("mean_all", vec![x()], 1e-2, |g, v| g.mean_all(v[0]));
    let y = inp(uniform(23, 24, -1.0, 1.0), &[3, 2, 4]);
    gradcheck("sq_dist_rows", vec![x(), y], 1e-2, |g, v| g.sq_dist_rows(v[0], v[1]));
    // A column vector: rows of one element.
    let c = inp(uniform(24, 5, -1.0, 1.0), &[5, 1]);
    gradcheck("sum_rows cols=1", vec![c], 1e-2, |g, v| g.sum_rows(v[0]));
}

#[test]
fn accumulation_when_a_var_is_used_twice() {
    let x = || inp(uniform(25, 10, -1.0, 1.0), &[2, 5]);
    let y = || inp(uniform(26, 10, -1.0, 1.0), &[2, 5]);
    gradcheck("reuse", vec![x(), y()], 1e-2, |g, v| {
        let p = g.mul(v[0], v[1])?;
        let q = g.axpby(p, v[0], 0.5, 2.0)?;
        g.mul(q, v[1])
    });
    // x used in three places across two branches and a reduction.
    gradcheck("reuse 3", vec![x()], 1e-2, |g, v| {
        let s = g.sum_rows(v[0])?;
        let t = g.sum_rows(g.mul(v[0], v[0])?)?;
        let u = g.add(s, t)?;
        g.add(u, g.sum_rows(g.scale(v[0], 3.0)?)?)
    });
}

/// A small CNN end to end: conv -> bias -> maxpool -> relu -> flatten -> linear -> bias -> xent.
/// The seed is searched (deterministically) until no perturbation can cross a kink: pooled
/// values are further than `margin` from 0 and each window's top two are further than
/// 2 * margin apart, where margin bounds how far one eps-perturbation moves a conv output.
#[test]
fn small_cnn_end_to_end() {
    let b = CpuBackend::new();
    let eps = 2e-3f32;
    let lab = [1u32, 3, 0];
    let net = move |g: &Graph<CpuBackend>, v: &[Var]| -> Result<Var> {
        let c = g.conv2d(v[0], v[1], 1, 1)?;
        let c = g.bias_add(c, v[2])?;
        let p = g.maxpool2d(c, 2, 2)?;
        let r = g.relu(p)?;
        let f = g.flatten(r)?;
        let l = g.linear(f, v[3])?;
        let l = g.bias_add(l, v[4])?;
        let l_t = labels(g.backend(), &lab);
        Ok(g.softmax_xent(l, &l_t, Reduction::Mean)?.loss)
    };
    let make = |s: u64| {
        vec![
            inp(uniform(s, 3 * 2 * 6 * 6, 0.0, 1.0), &[3, 2, 6, 6]),
            inp(uniform(s + 1, 3 * 2 * 3 * 3, -0.5, 0.5), &[3, 2, 3, 3]),
            inp(uniform(s + 2, 3, -0.2, 0.2), &[3]),
            inp(uniform(s + 3, 4 * 27, -0.5, 0.5), &[4, 27]),
            inp(uniform(s + 4, 4, -0.2, 0.2), &[4]),
        ]
    };
    let safe = |ins: &[Input]| -> bool {
        let conv = forward(&b, ins, &|g: &Graph<CpuBackend>, v: &[Var]| {
            let c = g.conv2d(v[0], v[1], 1, 1)?;
            g.bias_add(c, v[2])
        });
        let max_abs = |d: &[f32]| d.iter().fold(1.0f32, |m, &x| m.max(x.abs()));
        // One input element moves a conv output by at most eps * max|w| (and similarly for
        // the weights, times the 18-long patch for the bias only once).
        let margin = 4.0 * eps * max_abs(&ins[0].data).max(max_abs(&ins[1].data));
        for n in 0..3 {
            for c in 0..3 {
                for py in 0..3 {
                    for px in 0..3 {
                        let mut w: Vec<f32> =
                            (0..4).map(|k| conv[((n * 3 + c) * 6 + 2 * py + k / 2) * 6 + 2 * px + k % 2]).collect();
                        w.sort_by(|a, b| b.total_cmp(a));
                        if w[0].abs() <= margin || w[0] - w[1] <= 2.0 * margin {
                            return false;
                        }
                    }
                }
            }
        }
        true
    };
    let seed = (100..400).step_by(5).find(|&s| safe(&make(s)));
    let seed = seed.expect("no kink-free seed found in 60 tries");
    eprintln!("small cnn: seed {seed}");
    gradcheck("small cnn", make(seed), eps, net);
}
