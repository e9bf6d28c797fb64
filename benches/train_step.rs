//! One full training step on the CPU backend, the foundation issue's target workload:
//! conv(1->32, 3x3) - relu - conv(32->64, 3x3) - relu - maxpool 2 - flatten - fc(9216->128) - relu -
//! fc(128->10) at batch 128 on real digits: forward, softmax cross-entropy, backward (no input
//! gradient of the first layer, as in training), SGD with momentum.
//!
//! Before timing, it checks that the step learns: the loss on a fixed batch must fall over a
//! few steps, and the step's weight gradient of the first conv must match a central finite
//! difference of the loss, so a broken kernel is never timed. Then warm-up, REPS timed steps,
//! and one row: median/min/max ms, GFLOP/s (FLOPs from the op registry's `work()`), % of the
//! 233 GFLOP/s peak of these 2-core machines (shared/PLATFORM.md).
//!
//! `cargo bench --no-default-features --bench train_step` (env PERTURB_BENCH_REPS,
//! PERTURB_BENCH_THREADS).

use perturb::autograd::{Graph, Reduction};
use perturb::core::ops::{BiasParams, Conv2dParams, LinearParams, Pool2dParams, XentParams};
use perturb::core::{Backend, Shape, Tensor};
use perturb::cpu::CpuBackend;
use perturb::nn::{Layer, Model, Optimizer, Sgd, SgdConfig};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const PEAK_GFLOPS: f64 = 233.0;
const BATCH: usize = 128;

fn layers() -> Vec<Layer> {
    vec![
        Layer::conv2d(1, 32, 3, 1, 0),
        Layer::Relu,
        Layer::conv2d(32, 64, 3, 1, 0),
        Layer::Relu,
        Layer::maxpool2d(2, 2),
        Layer::Flatten,
        Layer::linear(9216, 128),
        Layer::Relu,
        Layer::linear(128, 10),
    ]
}

/// FLOPs of one step, summed from the registry: every forward op, every backward op that runs.
fn step_flops() -> Res<f64> {
    let c1 = Conv2dParams::new([BATCH, 1, 28, 28], [32, 1, 3, 3], 1, 0)?;
    let c2 = Conv2dParams::new([BATCH, 32, 26, 26], [64, 32, 3, 3], 1, 0)?;
    let pool = Pool2dParams::new([BATCH, 64, 24, 24], 2, 2)?;
    let f1 = LinearParams::new(BATCH, 9216, 128)?;
    let f2 = LinearParams::new(BATCH, 128, 10)?;
    let b = |c: usize, inner: usize| BiasParams::new(BATCH, c, inner);
    let mut w = c1.work().flops * 2.0 // fwd + bwd_weight (the image needs no gradient)
        + c2.work().flops * 3.0
        + f1.work().flops * 3.0
        + f2.work().flops * 3.0
        + pool.work().flops
        + pool.bwd_work().flops
        + XentParams::new(BATCH, 10, 1.0)?.work().flops;
    for bp in [b(32, 676)?, b(64, 576)?, b(128, 1)?, b(10, 1)?] {
        w += bp.work().flops + bp.grad_work().flops;
    }
    Ok(w)
}

struct Step<'a> {
    b: &'a CpuBackend,
    model: Model<CpuBackend>,
    opt: Sgd<CpuBackend>,
    x: Tensor<CpuBackend>,
    y: Tensor<CpuBackend>,
}

impl Step<'_> {
    fn loss_and_grads(&self) -> Res<(f32, Vec<Tensor<CpuBackend>>)> {
        let g = Graph::new(self.b);
        let bound = self.model.bind(&g, true);
        let xv = g.input(&self.x, false);
        let logits = self.model.forward(&g, &bound, xv)?;
        let loss = g.softmax_xent(logits, &self.y, Reduction::Mean)?.loss;
        let grads = bound.grads(&g.backward(loss)?)?;
        let l = self.b.download_f32(&g.value(loss)?)?[0];
        Ok((l, grads))
    }
    fn run(&mut self) -> Res<()> {
        let g = Graph::new(self.b);
        let bound = self.model.bind(&g, true);
        let xv = g.input(&self.x, false);
        let logits = self.model.forward(&g, &bound, xv)?;
        let loss = g.softmax_xent(logits, &self.y, Reduction::Mean)?.loss;
        let grads = bound.grads(&g.backward(loss)?)?;
        self.opt.step(self.b, self.model.params(), &grads)?;
        Ok(())
    }
}

fn main() -> Res<()> {
    let threads: usize = std::env::var("PERTURB_BENCH_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let reps: usize = std::env::var("PERTURB_BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let b = CpuBackend::with_threads(threads)?;
    let (train, _) = perturb::data::embedded_mnist10k()?;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    train.gather(&(0..BATCH).collect::<Vec<_>>(), &mut xs, &mut ys)?;
    let x = b.upload_f32(&xs, &Shape::from([BATCH, 1, 28, 28]))?;
    let y = b.upload_u32(&ys, &Shape::from([BATCH]))?;
    let model = Model::new(&b, "bench-cnn", [1, 28, 28], layers(), 0)?;
    let opt = Sgd::new(&b, model.params(), SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.0, nesterov: false })?;
    let mut step = Step { b: &b, model, opt, x, y };

    // Check 1: the first conv's weight gradient against a central difference of the loss.
    let (l0, grads) = step.loss_and_grads()?;
    let g0 = b.download_f32(&grads[0])?;
    let w0 = &step.model.params()[0].tensor;
    let host = b.download_f32(w0)?;
    let (k, h) =
        (g0.iter().enumerate().max_by(|a, c| a.1.abs().total_cmp(&c.1.abs())).map(|(i, _)| i).unwrap_or(0), 1e-2f32);
    let probe = |delta: f32| -> Res<f32> {
        let mut v = host.clone();
        v[k] += delta;
        b.copy_(w0, &b.upload_f32(&v, w0.shape())?)?;
        Ok(step.loss_and_grads()?.0)
    };
    let fd = (probe(h)? - probe(-h)?) / (2.0 * h);
    b.copy_(w0, &b.upload_f32(&host, w0.shape())?)?;
    let rel = (fd - g0[k]).abs() / g0[k].abs().max(1e-6);
    if rel > 0.05 {
        return Err(format!(
            "refusing to time: conv1 weight gradient {} vs finite difference {fd} (rel err {rel:.3})",
            g0[k]
        )
        .into());
    }
    // Check 2: ten steps on this batch must lower its loss by 30%.
    for _ in 0..10 {
        step.run()?;
    }
    let (l10, _) = step.loss_and_grads()?;
    if l10.is_nan() || l10 >= 0.7 * l0 {
        return Err(format!("refusing to time: loss went {l0} -> {l10} over 10 steps").into());
    }
    println!("checked: conv1 dW vs finite difference rel err {rel:.2e}; loss {l0:.3} -> {l10:.3} in 10 steps");

    for _ in 0..3 {
        step.run()?;
    }
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        step.run()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let med = ms[ms.len() / 2];
    let gflops = step_flops()? / (med * 1e-3) / 1e9;
    println!("op | backend | threads | shape | median ms | min ms | max ms | GFLOP/s | % of peak");
    println!(
        "train_step | cpu | {threads} | batch {BATCH}, conv32-conv64-pool-fc128-fc10 | {med:.1} | {:.1} | {:.1} | {gflops:.1} | {:.1}%",
        ms[0],
        ms[ms.len() - 1],
        100.0 * gflops / PEAK_GFLOPS
    );
    Ok(())
}
