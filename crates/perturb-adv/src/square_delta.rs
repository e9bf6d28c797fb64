//! Square's forward passes evaluated only where a window reaches.
//!
//! A Square proposal differs from the example's current point in one window of `side` x `side`
//! pixels (all channels), and for most of the budget the window is 1-4 pixels wide. Through
//! the model's leading convolutions (each optionally followed by a ReLU) the change spreads to
//! a small window of each activation map only, so per query this module recomputes, for every
//! leading convolution, just the output window the change can reach, from a crop of that
//! layer's input (taken from the example's cached activations with the new window laid over
//! them; zeros where the crop covers the padding), and runs the rest of the model (from the
//! first layer that is not a convolution or ReLU) on the full activations. The crop is
//! convolved without padding, so every recomputed output sums exactly the products the full
//! layer sums. Output windows have one size per layer and query (the largest the input window
//! can reach), so each layer is one batched backend call for all examples.
//!
//! When a flatten and a fully connected layer follow the leading convolutions (cnn-small), that
//! layer is taken incrementally too: the change of its input is the last window, so its output
//! moves by the window's weight columns times the change (288 of 1,568 columns for cnn-small's
//! usual 3x3x32 window), summed on the host from a transposed copy of the weight; the rest of
//! the model runs on those pre-activations. The sums are re-done in full for an example after
//! every `RESYNC` (32) accepted proposals, so rounding cannot drift.
//!
//! The cache holds each leading layer's activations (and the dense layer's pre-activation) at
//! each example's current point; a proposal the search keeps is committed with
//! [`Delta::accept`].

use perturb_core::ops::{BiasParams, Conv2dParams};
use perturb_core::{Backend, Shape, Tensor};
use perturb_nn::{Layer, Model};

use rayon::prelude::*;

use crate::{Error, Result};

/// A square window of the input: rows `r0..r0 + side`, columns `c0..c0 + side`, every channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// First row.
    pub r0: usize,
    /// First column.
    pub c0: usize,
    /// Side in pixels.
    pub side: usize,
}

/// One leading convolution (and whether a ReLU follows it).
#[derive(Clone, Copy, Debug)]
struct Stage {
    /// Index of its weight in the model's parameters (its bias follows).
    param: usize,
    c_in: usize,
    c_out: usize,
    k: usize,
    s: usize,
    p: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    relu: bool,
}

impl Stage {
    fn out_len(&self) -> usize {
        self.c_out * self.ho * self.wo
    }
    /// The output rows (or columns) a change of input rows `a..a + span` reaches: the first of
    /// `n` outputs, `n` being the same for every `a` (the most `span` rows can reach).
    fn reach(&self, a: usize, span: usize, out: usize) -> (usize, usize) {
        let n = ((span + self.k - 2) / self.s + 1).min(out);
        let lo = (a as isize + self.p as isize - self.k as isize + 1).max(0) as usize;
        let lo = lo.div_ceil(self.s);
        (lo.min(out - n), n)
    }
}

/// The new activations of one query's proposals, to commit with [`Delta::accept`].
pub struct Pending {
    /// Per stage: per proposal the output window's origin (row, column) and size.
    origin: Vec<Vec<(usize, usize)>>,
    size: Vec<(usize, usize)>,
    /// Per stage: the window values, [m, c_out, rows, cols].
    values: Vec<Vec<f32>>,
    /// With a [`Dense`] layer: its new pre-activations, [m, out].
    dense: Vec<f32>,
}

/// The fully connected layer that follows the leading convolutions (after a flatten), kept on
/// the host: a proposal changes a few of its inputs, so its output moves by those inputs'
/// columns of the weight times their change (a few hundred columns instead of all of them).
/// Each example's pre-activation is cached and updated this way; after [`RESYNC`] accepted
/// proposals it is recomputed from the example's activations, so rounding cannot drift.
struct Dense {
    /// The transposed weight, [in][out].
    wt: Vec<f32>,
    bias: Vec<f32>,
    out: usize,
    /// Per example: the pre-activation at its current point, [n, out].
    z: Vec<f32>,
    /// Per example: proposals accepted since its pre-activation was last recomputed.
    since: Vec<usize>,
}

/// Accepted proposals after which an example's cached pre-activation is recomputed in full.
const RESYNC: usize = 32;

impl Dense {
    /// b + W a, summed over the non-zero entries of `a` (most are zero after a ReLU).
    fn full(&self, a: &[f32], z: &mut [f32]) {
        z.copy_from_slice(&self.bias);
        let wide = wide_fma();
        for (q, &v) in a.iter().enumerate() {
            if v != 0.0 {
                axpy(wide, v, &self.wt[q * self.out..(q + 1) * self.out], z);
            }
        }
    }
}

/// Whether this CPU has AVX-512F with FMA (the window sums then run 16 lanes wide).
fn wide_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// z += a x; `wide` (from [`wide_fma`]) takes the AVX-512 build of the loop.
#[inline]
fn axpy(wide: bool, a: f32, x: &[f32], z: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if wide {
        #[target_feature(enable = "avx512f,fma")]
        fn k(a: f32, x: &[f32], z: &mut [f32]) {
            for (zi, &xi) in z.iter_mut().zip(x) {
                *zi = a.mul_add(xi, *zi);
            }
        }
        // SAFETY: `wide` is true only where the CPU has AVX-512F and FMA.
        return unsafe { k(a, x, z) };
    }
    let _ = wide;
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi += a * xi;
    }
}

/// The incremental evaluator of one batch: the model's leading convolutions and a cache of
/// their activations per example.
pub struct Delta<'m, B: Backend> {
    model: &'m Model<B>,
    stages: Vec<Stage>,
    /// The first layer after the leading convolutions and ReLUs.
    rest: usize,
    /// Per stage, [n, c_out, ho, wo]: the activations at every example's current point.
    acts: Vec<Vec<f32>>,
    /// The fully connected layer after them, when the model has one there (`rest` then
    /// points past it).
    dense: Option<Dense>,
}

impl<'m, B: Backend> Delta<'m, B> {
    /// The evaluator for `model`, or `None` when it does not start with a convolution.
    pub fn new(b: &B, model: &'m Model<B>) -> Result<Option<Self>> {
        let [mut c, mut h, mut w] = model.input_shape();
        let (layers, mut stages, mut param, mut i) = (model.layers(), Vec::new(), 0, 0);
        while let Some(&Layer::Conv2d { in_channels, out_channels, kernel, stride, padding }) = layers.get(i) {
            let Ok(prm) = Conv2dParams::new([1, c, h, w], [out_channels, in_channels, kernel, kernel], stride, padding)
            else {
                return Ok(None);
            };
            let [_, _, ho, wo] = prm.output_dims();
            let relu = matches!(layers.get(i + 1), Some(Layer::Relu));
            stages.push(Stage {
                param,
                c_in: c,
                c_out: out_channels,
                k: kernel,
                s: stride,
                p: padding,
                h,
                w,
                ho,
                wo,
                relu,
            });
            (c, h, w) = (out_channels, ho, wo);
            param += 2;
            i += 1 + relu as usize;
        }
        if stages.is_empty() {
            return Ok(None);
        }
        let flat = stages.last().map_or(0, Stage::out_len);
        let dense = match (layers.get(i), layers.get(i + 1)) {
            (Some(Layer::Flatten), Some(&Layer::Linear { in_features, out_features })) if in_features == flat => {
                let params = model.params();
                let (w, bias) = (b.download_f32(&params[param].tensor)?, b.download_f32(&params[param + 1].tensor)?);
                let mut wt = vec![0f32; w.len()];
                for o in 0..out_features {
                    for q in 0..in_features {
                        wt[q * out_features + o] = w[o * in_features + q];
                    }
                }
                Some(Dense { wt, bias, out: out_features, z: Vec::new(), since: Vec::new() })
            }
            _ => None,
        };
        let rest = if dense.is_some() { i + 2 } else { i };
        Ok(Some(Delta { model, stages, rest, acts: Vec::new(), dense }))
    }

    /// Full forward of every example's point `x` [n, d]: fills the cache, returns the logits.
    pub fn init(&mut self, b: &B, x: &[f32]) -> Result<Vec<f32>> {
        let [c, h, w] = self.model.input_shape();
        let n = x.len() / (c * h * w);
        let mut cur = x.to_vec();
        self.acts.clear();
        for st in &self.stages {
            let t = b.upload_f32(&cur, &Shape::from([n, st.c_in, st.h, st.w]))?;
            let y = self.layer(b, st, &t, n, st.p, st.ho, st.wo)?;
            cur = b.download_f32(&y)?;
            self.acts.push(cur.clone());
        }
        if let Some(dn) = self.dense.as_mut() {
            let mut z = vec![0f32; n * dn.out];
            let flat = cur.len() / n.max(1);
            z.par_chunks_mut(dn.out).zip(cur.par_chunks(flat)).for_each(|(zi, a)| dn.full(a, zi));
            dn.z = z.clone();
            dn.since = vec![0; n];
            return self.finish(b, z, n);
        }
        self.finish(b, cur, n)
    }

    /// Logits of the proposals `cand` [m, d]: proposal j is example `which[j]`'s current point
    /// with `windows[j]` changed (every window of one call has the same side).
    pub fn query(&self, b: &B, cand: &[f32], which: &[usize], windows: &[Window]) -> Result<(Vec<f32>, Pending)> {
        let m = which.len();
        let side = windows.first().map_or(1, |w| w.side);
        let [c, h, w] = self.model.input_shape();
        let n = self.acts.first().map_or(0, |a| a.len() / self.stages[0].out_len());
        if cand.len() != m * c * h * w || windows.len() != m {
            return Err(Error::Mismatch(format!(
                "square query: {} values and {} windows for {m} proposals of {}",
                cand.len(),
                windows.len(),
                c * h * w
            )));
        }
        if let Some(&i) = which.iter().find(|&&i| i >= n) {
            return Err(Error::Mismatch(format!("square query: example {i} of a batch of {n} (call init first)")));
        }
        if let Some(bad) =
            windows.iter().find(|v| v.side != side || v.side == 0 || v.r0 + v.side > h || v.c0 + v.side > w)
        {
            return Err(Error::invalid(
                "window",
                format!("{bad:?}: windows of one query share one side and lie inside {h}x{w}"),
            ));
        }
        // The changed window of the current layer's input, per proposal, and its size.
        let mut region: Vec<(usize, usize)> = windows.iter().map(|w| (w.r0, w.c0)).collect();
        let mut span = (side, side);
        let mut pending = Pending { origin: Vec::new(), size: Vec::new(), values: Vec::new(), dense: Vec::new() };
        for (l, st) in self.stages.iter().enumerate() {
            let mut origin = Vec::with_capacity(m);
            let (mut rh, mut rw) = (0, 0);
            for &(a, c) in &region {
                let (y0, nh) = st.reach(a, span.0, st.ho);
                let (x0, nw) = st.reach(c, span.1, st.wo);
                origin.push((y0, x0));
                (rh, rw) = (nh, nw);
            }
            let (hc, wc) = ((rh - 1) * st.s + st.k, (rw - 1) * st.s + st.k);
            let mut crops = vec![0f32; m * st.c_in * hc * wc];
            let prev = l.checked_sub(1).map(|q| (&self.stages[q], &pending, q));
            crops.par_chunks_mut(st.c_in * hc * wc).enumerate().for_each(|(j, crop)| {
                let (y0, x0) = origin[j];
                let (top, left) = ((y0 * st.s) as isize - st.p as isize, (x0 * st.s) as isize - st.p as isize);
                // The crop's columns inside the layer's input: [cx0, cx1) of the crop, from
                // input column left + cx0.
                let cx0 = (-left).max(0) as usize;
                let cx1 = ((st.w as isize - left).max(0) as usize).min(wc);
                if cx0 >= cx1 {
                    return;
                }
                let sx = (left + cx0 as isize) as usize;
                for ch in 0..st.c_in {
                    for yy in 0..hc {
                        let y = top + yy as isize;
                        if y < 0 || y >= st.h as isize {
                            continue;
                        }
                        let y = y as usize;
                        let dst = &mut crop[(ch * hc + yy) * wc + cx0..(ch * hc + yy) * wc + cx1];
                        match prev {
                            None => {
                                let row = j * st.c_in * st.h * st.w + (ch * st.h + y) * st.w;
                                dst.copy_from_slice(&cand[row + sx..row + sx + dst.len()]);
                            }
                            Some((ps, pend, q)) => {
                                let row = which[j] * ps.out_len() + (ch * ps.ho + y) * ps.wo;
                                dst.copy_from_slice(&self.acts[q][row + sx..row + sx + dst.len()]);
                                // The previous layer's new window over it.
                                let (py0, px0) = pend.origin[q][j];
                                let (prh, prw) = pend.size[q];
                                if y >= py0 && y < py0 + prh {
                                    let (a0, a1) = (px0.max(sx), (px0 + prw).min(sx + dst.len()));
                                    if a0 < a1 {
                                        let v = ((j * ps.c_out + ch) * prh + (y - py0)) * prw;
                                        dst[a0 - sx..a1 - sx]
                                            .copy_from_slice(&pend.values[q][v + a0 - px0..v + a1 - px0]);
                                    }
                                }
                            }
                        }
                    }
                }
            });
            let t = b.upload_f32(&crops, &Shape::from([m, st.c_in, hc, wc]))?;
            let y = self.layer(b, st, &t, m, 0, rh, rw)?;
            pending.values.push(b.download_f32(&y)?);
            pending.origin.push(origin.clone());
            pending.size.push((rh, rw));
            region = origin;
            span = (rh, rw);
        }
        let last = self.stages.len() - 1;
        let st = &self.stages[last];
        if let Some(dn) = &self.dense {
            // The dense layer's pre-activation moved by the changed window's columns.
            let (rh, rw) = pending.size[last];
            let mut z = vec![0f32; m * dn.out];
            let (vals, origin, acts) = (&pending.values[last], &pending.origin[last], &self.acts[last]);
            let wide = wide_fma();
            z.par_chunks_mut(dn.out).enumerate().for_each(|(j, zj)| {
                let i = which[j];
                zj.copy_from_slice(&dn.z[i * dn.out..(i + 1) * dn.out]);
                let (y0, x0) = origin[j];
                for ch in 0..st.c_out {
                    for y in 0..rh {
                        let q0 = (ch * st.ho + y0 + y) * st.wo + x0;
                        let v0 = ((j * st.c_out + ch) * rh + y) * rw;
                        for x in 0..rw {
                            let q = q0 + x;
                            let dv = vals[v0 + x] - acts[i * st.out_len() + q];
                            if dv != 0.0 {
                                axpy(wide, dv, &dn.wt[q * dn.out..(q + 1) * dn.out], zj);
                            }
                        }
                    }
                }
            });
            pending.dense = z.clone();
            return Ok((self.finish(b, z, m)?, pending));
        }
        // The last leading layer's full activations with the new windows, then the rest.
        let mut full = Vec::with_capacity(m * st.out_len());
        for (j, &i) in which.iter().enumerate() {
            full.extend_from_slice(&self.acts[last][i * st.out_len()..(i + 1) * st.out_len()]);
            paste(&mut full[j * st.out_len()..], st, &pending, last, j);
        }
        Ok((self.finish(b, full, m)?, pending))
    }

    /// Commits proposal `j` of `pending` as example `i`'s current point.
    pub fn accept(&mut self, pending: &Pending, j: usize, i: usize) {
        for (l, st) in self.stages.iter().enumerate() {
            let len = st.out_len();
            paste(&mut self.acts[l][i * len..(i + 1) * len], st, pending, l, j);
        }
        if let Some(dn) = self.dense.as_mut() {
            let out = dn.out;
            dn.since[i] += 1;
            if dn.since[i] >= RESYNC {
                let len = self.stages.last().map_or(0, Stage::out_len);
                let mut z = vec![0f32; out];
                dn.full(&self.acts[self.stages.len() - 1][i * len..(i + 1) * len], &mut z);
                dn.z[i * out..(i + 1) * out].copy_from_slice(&z);
                dn.since[i] = 0;
            } else {
                dn.z[i * out..(i + 1) * out].copy_from_slice(&pending.dense[j * out..(j + 1) * out]);
            }
        }
    }

    /// Convolution (with `pad`), bias and the optional ReLU of one stage on `n` inputs.
    #[allow(clippy::too_many_arguments)]
    fn layer(&self, b: &B, st: &Stage, x: &Tensor<B>, n: usize, pad: usize, ho: usize, wo: usize) -> Result<Tensor<B>> {
        let params = self.model.params();
        let (wt, bt) = (&params[st.param].tensor, &params[st.param + 1].tensor);
        let dims = x.dims().to_vec();
        let cp = Conv2dParams::new([n, st.c_in, dims[2], dims[3]], [st.c_out, st.c_in, st.k, st.k], st.s, pad)?;
        debug_assert_eq!(cp.output_dims(), [n, st.c_out, ho, wo]);
        let y = b.conv2d_fwd(x, wt, &cp)?;
        let y = b.bias_add(&y, bt, &BiasParams::new(n, st.c_out, ho * wo)?)?;
        Ok(if st.relu { b.relu_fwd(&y)? } else { y })
    }

    /// The layers from `rest` on: the logits. `act` is the last stage's output [n, c_out, ho,
    /// wo], or with a dense layer its pre-activation [n, out].
    fn finish(&self, b: &B, act: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let st = self.stages.last().expect("at least one stage");
        let shape = match &self.dense {
            Some(dn) => Shape::from([n, dn.out]),
            None => Shape::from([n, st.c_out, st.ho, st.wo]),
        };
        let t = b.upload_f32(&act, &shape)?;
        Ok(b.download_f32(&self.model.infer_from(b, self.rest, &t)?)?)
    }
}

/// Lays proposal j's window of stage `l` over `dst` (one example's [c_out, ho, wo]).
fn paste(dst: &mut [f32], st: &Stage, pending: &Pending, l: usize, j: usize) {
    let (y0, x0) = pending.origin[l][j];
    let (rh, rw) = pending.size[l];
    let v = &pending.values[l][j * st.c_out * rh * rw..(j + 1) * st.c_out * rh * rw];
    for ch in 0..st.c_out {
        for y in 0..rh {
            let d = (ch * st.ho + y0 + y) * st.wo + x0;
            dst[d..d + rw].copy_from_slice(&v[(ch * rh + y) * rw..(ch * rh + y + 1) * rw]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perturb_cpu::CpuBackend;
    use perturb_data::SplitMix64;

    /// Through the dense layer's cached pre-activations (updated by window sums, recomputed
    /// every RESYNC accepts), a long chain of accepted proposals stays on the full forward.
    #[test]
    fn a_long_chain_of_accepts_stays_exact() {
        let b = CpuBackend::new();
        let model = perturb_nn::build_model(&b, "cnn-small", [1, 28, 28], 10, 5).unwrap();
        let (d, n) = (784, 3);
        let mut rng = SplitMix64::for_epoch(3, 0);
        let mut x: Vec<f32> = (0..n * d).map(|_| rng.below(1000) as f32 / 1000.0).collect();
        let mut delta = Delta::new(&b, &model).unwrap().expect("a leading convolution");
        assert!(delta.dense.is_some(), "cnn-small's first linear layer is taken incrementally");
        delta.init(&b, &x).unwrap();
        let which: Vec<usize> = (0..n).collect();
        for round in 0..3 * RESYNC + 5 {
            let side = 1 + round % 4;
            let mut cand = x.clone();
            let windows: Vec<Window> = (0..n)
                .map(|i| {
                    let (r0, c0) = (rng.below(28 - side + 1), rng.below(28 - side + 1));
                    for r in r0..r0 + side {
                        for col in c0..c0 + side {
                            cand[i * d + r * 28 + col] = rng.below(1000) as f32 / 1000.0;
                        }
                    }
                    Window { r0, c0, side }
                })
                .collect();
            let (z, pending) = delta.query(&b, &cand, &which, &windows).unwrap();
            let full = crate::run::logits(&b, &model, &cand).unwrap();
            for (p, q) in z.iter().zip(&full) {
                assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "round {round}: {p} vs {q}");
            }
            for i in 0..n {
                delta.accept(&pending, i, i);
            }
            x = cand;
        }
    }

    /// Proposals evaluated through the cache give the logits of a full forward pass, for
    /// windows of every side at every position (borders included), through strided and
    /// padded convolutions, with and without ReLU, and after accepted proposals.
    #[test]
    fn windows_give_the_full_forward_logits() {
        let b = CpuBackend::new();
        let models = [
            perturb_nn::build_model(&b, "cnn-small", [1, 28, 28], 10, 3).unwrap(),
            Model::new(
                &b,
                "toy",
                [3, 11, 9],
                vec![
                    Layer::conv2d(3, 5, 3, 1, 2),
                    Layer::conv2d(5, 6, 2, 2, 0),
                    Layer::Relu,
                    Layer::maxpool2d(2, 2),
                    Layer::Flatten,
                    Layer::linear(6 * 3 * 2, 4),
                ],
                7,
            )
            .unwrap(),
        ];
        for model in &models {
            let [c, h, w] = model.input_shape();
            let d = c * h * w;
            let n = 6;
            let mut rng = SplitMix64::for_epoch(11, 0);
            let mut x: Vec<f32> = (0..n * d).map(|_| rng.below(1000) as f32 / 1000.0).collect();
            let mut delta = Delta::new(&b, model).unwrap().expect("a leading convolution");
            let full = |x: &[f32]| crate::run::logits(&b, model, x).unwrap();
            let close = |a: &[f32], z: &[f32], what: &str| {
                for (p, q) in a.iter().zip(z) {
                    assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{}: {what}: {p} vs {q}", model.name());
                }
            };
            close(&delta.init(&b, &x).unwrap(), &full(&x), "init");
            for round in 0..12 {
                let side = 1 + round % h.min(w);
                let mut cand = x.clone();
                let windows: Vec<Window> = (0..n)
                    .map(|i| {
                        let (r0, c0) = (rng.below(h - side + 1), rng.below(w - side + 1));
                        for ch in 0..c {
                            for r in r0..r0 + side {
                                for col in c0..c0 + side {
                                    cand[i * d + (ch * h + r) * w + col] = rng.below(1000) as f32 / 1000.0;
                                }
                            }
                        }
                        Window { r0, c0, side }
                    })
                    .collect();
                let which: Vec<usize> = (0..n).collect();
                let (z, pending) = delta.query(&b, &cand, &which, &windows).unwrap();
                close(&z, &full(&cand), &format!("side {side}"));
                // Keep every other proposal; the cache must follow.
                for i in (0..n).filter(|i| (i + round) % 2 == 0) {
                    delta.accept(&pending, i, i);
                    x[i * d..(i + 1) * d].copy_from_slice(&cand[i * d..(i + 1) * d]);
                }
                // A subset of the examples, in another order.
                let which = [4usize, 1];
                let sub: Vec<f32> = which.iter().flat_map(|&i| x[i * d..(i + 1) * d].to_vec()).collect();
                let wins = vec![Window { r0: 0, c0: w - side, side }; 2];
                let (z, _) = delta.query(&b, &sub, &which, &wins).unwrap();
                close(&z, &full(&sub), "unchanged points");
                let outside = [Window { r0: h - side + 1, c0: 0, side }; 2];
                assert!(delta.query(&b, &sub, &which, &outside).is_err(), "a window past the border");
                assert!(delta.query(&b, &sub[..d], &which, &wins).is_err(), "too few values");
            }
        }
    }
}
