//! Model-level rows: the foundation issue's training step (`train_step`) and, per demo model,
//! the attack rows: FGSM and PGD-10 (`perturb-adv`'s attacks, images/s), one fast
//! adversarial-training step (FGSM with a random start, Wong et al. 2020), and d loss / d input
//! with the weights as constants (`backward_input_only`) against the full backward that also
//! computes every weight gradient (`backward_full`).
//!
//! FLOPs are the sum of the registry's `work()` over the kernels each pass launches
//! ([`model_work`]). Every row is checked before it is timed: a finite-difference check of a
//! gradient, the loss falling under training, the attack staying in its eps-box and raising
//! the loss, and, off the CPU, agreement with the CPU reference backend.

use super::kernel::{Env, make_row, refuse};
use super::row::{Row, stats};
use super::timing::BenchBackend;
use crate::{Error, Result};
use perturb_adv::{AttackConfig, GradientAttack};
use perturb_autograd::{Graph, Reduction};
use perturb_core::ops::{
    BiasParams, Conv2dParams, Dist, EltParams, LinearParams, Pool2dParams, RngParams, SgdParams, StepParams, XentParams,
};
use perturb_core::{Backend, Shape, Tensor, Tolerance, Work, check_close};
use perturb_nn::{Layer, Model, Optimizer, Sgd, SgdConfig, build_model};

/// The demo models the attack rows cover.
pub const DEMO_MODELS: [&str; 3] = ["cnn-small", "cnn-madry", "mlp"];
const EPS: f32 = 0.3;

fn ag(e: perturb_autograd::Error) -> Error {
    Error::Nn(e.into())
}

/// conv(1->32, 3x3) - relu - conv(32->64, 3x3) - relu - maxpool 2 - fc(9216->128) - relu - fc(128->10).
pub fn train_step_layers() -> Vec<Layer> {
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

/// Which gradients a pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Forward only.
    Forward,
    /// Forward, loss, d loss / d input only (weights constant).
    InputGrad,
    /// Forward, loss, every weight gradient; no gradient for the input (training).
    Train,
    /// Forward, loss, every weight gradient and d loss / d input.
    Full,
}

/// The work of one pass of `layers` over a batch of `n` inputs [c, h, w], summed from the
/// registry's `work()` of each kernel the pass launches (loss included unless `Forward`).
pub fn model_work(layers: &[Layer], input: [usize; 3], n: usize, pass: Pass) -> Result<Work> {
    let mut w = Work::default();
    let mut shape = input.to_vec();
    let mut seen_param = false;
    let (dw, always_dx) = match pass {
        Pass::Forward => (false, false),
        Pass::InputGrad => (false, true),
        Pass::Train => (true, false),
        Pass::Full => (true, true),
    };
    let bwd = pass != Pass::Forward;
    for layer in layers {
        let out = layer.output_shape(&shape)?;
        // An input gradient is needed when the input wants one or a parameter lies below.
        let dx = bwd && (always_dx || seen_param);
        let len = |s: &[usize]| n * s.iter().product::<usize>();
        match *layer {
            Layer::Conv2d { in_channels, out_channels, kernel, stride, padding } => {
                let p = Conv2dParams::new(
                    [n, shape[0], shape[1], shape[2]],
                    [out_channels, in_channels, kernel, kernel],
                    stride,
                    padding,
                )?;
                let b = BiasParams::new(n, out_channels, out[1] * out[2])?;
                w = w + p.work() + b.work();
                if dx {
                    w = w + p.work();
                }
                if bwd && dw {
                    w = w + p.work() + b.grad_work();
                }
                seen_param = true;
            }
            Layer::Linear { in_features, out_features } => {
                let p = LinearParams::new(n, in_features, out_features)?;
                let b = BiasParams::new(n, out_features, 1)?;
                w = w + p.work() + b.work();
                if dx {
                    w = w + p.work();
                }
                if bwd && dw {
                    w = w + p.work() + b.grad_work();
                }
                seen_param = true;
            }
            Layer::Relu => {
                let e = EltParams::new(len(&shape), 0.0, 0.0)?;
                w = w + e.work(1, 1.0);
                if dx {
                    w = w + e.work(2, 1.0);
                }
            }
            Layer::MaxPool2d { kernel, stride } => {
                let p = Pool2dParams::new([n, shape[0], shape[1], shape[2]], kernel, stride)?;
                w = w + p.work();
                if dx {
                    w = w + p.bwd_work();
                }
            }
            Layer::Flatten => {}
        }
        shape = out;
    }
    if bwd {
        w = w + XentParams::new(n, shape.iter().product(), 1.0)?.work();
    }
    Ok(w)
}

/// The work of an SGD update of every parameter of `model`.
fn sgd_work<B: Backend>(model: &Model<B>) -> Result<Work> {
    let mut w = Work::default();
    for p in model.params() {
        w = w + SgdParams::new(p.tensor.numel(), 0.01, 0.9, 0.0, false)?.work();
    }
    Ok(w)
}

/// A batch of the embedded digits: `n` images from the held-out test digits.
fn batch<B: Backend>(b: &B, n: usize) -> Result<(Tensor<B>, Tensor<B>, Vec<u32>)> {
    let (train, test) = perturb_data::embedded_mnist10k()?;
    let src = if n <= test.len() { test } else { train };
    if n > src.len() {
        return Err(Error::flag("--shapes", format!("batch {n} is larger than the embedded data ({})", src.len())));
    }
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    src.gather(&(0..n).collect::<Vec<_>>(), &mut xs, &mut ys)?;
    let x = b.upload_f32(&xs, &Shape::from([n, 1, 28, 28]))?;
    let y = b.upload_u32(&ys, &Shape::from([n]))?;
    Ok((x, y, ys))
}

/// (loss, gradients of every parameter) of a mean cross-entropy training pass.
fn train_grads<B: Backend>(b: &B, m: &Model<B>, x: &Tensor<B>, y: &Tensor<B>) -> Result<(f32, Vec<Tensor<B>>)> {
    let g = Graph::new(b);
    let bound = m.bind(&g, true);
    let xv = g.input(x, false);
    let z = m.forward(&g, &bound, xv)?;
    let loss = g.softmax_xent(z, y, Reduction::Mean).map_err(ag)?.loss;
    let grads = bound.grads(&g.backward(loss).map_err(ag)?)?;
    Ok((b.download_f32(&g.value(loss).map_err(ag)?)?[0], grads))
}

/// One training step: forward, loss, backward, SGD.
fn train_step<B: Backend>(b: &B, m: &Model<B>, opt: &mut Sgd<B>, x: &Tensor<B>, y: &Tensor<B>) -> Result<()> {
    let g = Graph::new(b);
    let bound = m.bind(&g, true);
    let xv = g.input(x, false);
    let z = m.forward(&g, &bound, xv)?;
    let loss = g.softmax_xent(z, y, Reduction::Mean).map_err(ag)?.loss;
    let grads = bound.grads(&g.backward(loss).map_err(ag)?)?;
    opt.step(b, m.params(), &grads)?;
    Ok(())
}

fn sgd<B: Backend>(b: &B, m: &Model<B>) -> Result<Sgd<B>> {
    Ok(Sgd::new(b, m.params(), SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.0, nesterov: false })?)
}

/// The work a finished row did (its rates times its median).
fn work_of(r: &Row) -> Work {
    let s = r.median_ms * 1e-3;
    Work { flops: r.gflops * 1e9 * s, bytes: r.gbs * 1e9 * s }
}

fn median(ms: &[f64]) -> f64 {
    let mut v = ms.to_vec();
    stats(&mut v).0
}

/// The `train_step` row at batch `n` (the foundation issue's workload), checked first.
pub fn bench_train_step<B: BenchBackend>(b: &B, n: usize, env: &mut Env<'_>) -> Result<Vec<Row>> {
    let (x, y, ..) = batch(b, n)?;
    let model = Model::new(b, "bench-cnn", [1, 28, 28], train_step_layers(), 0)?;
    let mut opt = sgd(b, &model)?;
    let name = b.name();

    // Check 1: the largest conv1 weight gradient against a central difference of the loss.
    let (l0, grads) = train_grads(b, &model, &x, &y)?;
    let g0 = b.download_f32(&grads[0])?;
    let w0 = &model.params()[0].tensor;
    let host = b.download_f32(w0)?;
    let k = g0.iter().enumerate().max_by(|a, c| a.1.abs().total_cmp(&c.1.abs())).map(|(i, _)| i).unwrap_or(0);
    let h = 1e-2f32;
    let probe = |delta: f32| -> Result<f32> {
        let mut v = host.clone();
        v[k] += delta;
        b.copy_(w0, &b.upload_f32(&v, w0.shape())?)?;
        Ok(train_grads(b, &model, &x, &y)?.0)
    };
    let fd = (probe(h)? - probe(-h)?) / (2.0 * h);
    b.copy_(w0, &b.upload_f32(&host, w0.shape())?)?;
    let rel = (fd - g0[k]).abs() / g0[k].abs().max(1e-6);
    if rel.is_nan() || rel > 0.05 {
        return Err(refuse(
            name,
            format!("train_step: conv1 weight gradient {} vs finite difference {fd} (rel {rel:.3})", g0[k]),
        ));
    }
    // Check 2: off the CPU, the first loss matches the CPU reference's (same seeded weights).
    if let (false, Some(cpu)) = (b.is_reference(), env.reference.as_ref()) {
        let (cx, cy, ..) = batch(cpu, n)?;
        let cm = Model::new(cpu, "bench-cnn", [1, 28, 28], train_step_layers(), 0)?;
        let cl = train_grads(cpu, &cm, &cx, &cy)?.0;
        if (cl - l0).abs() > 1e-3 * cl.abs().max(1.0) {
            return Err(refuse(name, format!("train_step: initial loss {l0} vs the CPU reference's {cl}")));
        }
    }
    // Check 3: ten steps on this batch lower its loss by 30%.
    for _ in 0..10 {
        train_step(b, &model, &mut opt, &x, &y)?;
    }
    let l10 = train_grads(b, &model, &x, &y)?.0;
    if l10.is_nan() || l10 >= 0.7 * l0 {
        return Err(refuse(name, format!("train_step: loss went {l0} -> {l10} over 10 steps")));
    }
    let check = format!("ok (fd {rel:.0e}, loss {l0:.2}->{l10:.2})");

    let timed = b.time_ms(env.warmup, env.reps, &mut || train_step(b, &model, &mut opt, &x, &y))?;
    let layers = train_step_layers();
    let work = model_work(&layers, [1, 28, 28], n, Pass::Train)? + sgd_work(&model)?;
    let shape = format!("batch {n}, conv32-conv64-pool-fc128-fc10");
    let mut row = make_row(b, &env.peaks, "train_step", "default", &shape, work, &timed, check);
    row.images_per_s = Some(n as f64 / (row.median_ms * 1e-3));
    row.note = "forward + xent + backward + SGD momentum".into();
    row.x_vs_reference = if b.is_reference() { Some(1.0) } else { None };
    if let (false, Some(cpu)) = (b.is_reference(), env.reference.as_ref()) {
        let (cx, cy, ..) = batch(cpu, n)?;
        let cm = Model::new(cpu, "bench-cnn", [1, 28, 28], train_step_layers(), 0)?;
        let mut copt = sgd(cpu, &cm)?;
        let t = cpu.time_ms(1, 3, &mut || train_step(cpu, &cm, &mut copt, &cx, &cy))?;
        row.x_vs_reference = Some(median(&t.ms) / row.median_ms);
    }
    let mut rows = vec![row];
    if let Some((ms, version)) = env.torch.get(&("train_step".to_string(), shape.clone())) {
        let t = super::timing::Timed { ms: vec![*ms], ..Default::default() };
        let mut v = make_row(b, &env.peaks, "train_step", "pytorch", &shape, work, &t, "baseline".into());
        v.note = format!("torch {version}, same model and step, {}", super::vendor::torch_libs(b.name()));
        let best = *ms;
        for r in rows.iter_mut().chain(std::iter::once(&mut v)) {
            r.x_vs_vendor = Some(best / r.median_ms);
            r.vendor = Some("pytorch".into());
        }
        rows.push(v);
    }
    Ok(rows)
}

/// d (sum of losses) / d x, with the weights as constants (`full` = false) or as trainable
/// leaves, so that backward also computes every weight gradient (`full` = true).
fn input_grad<B: Backend>(b: &B, m: &Model<B>, x: &Tensor<B>, y: &Tensor<B>, full: bool) -> Result<Tensor<B>> {
    let g = Graph::new(b);
    let bound = m.bind(&g, full);
    let xv = g.input(x, true);
    let z = m.forward(&g, &bound, xv)?;
    let loss = g.softmax_xent(z, y, Reduction::Sum).map_err(ag)?.loss;
    let grads = g.backward(loss).map_err(ag)?;
    Ok(grads.wrt(xv).map_err(ag)?.clone())
}

/// Summed cross-entropy of `x` (forward only).
fn loss_of<B: Backend>(b: &B, m: &Model<B>, x: &Tensor<B>, y: &Tensor<B>) -> Result<f64> {
    let z = m.infer(b, x)?;
    let n = z.dims()[0];
    let (l, _) = b.softmax_xent(&z, y, &XentParams::new(n, m.classes(), 1.0)?)?;
    Ok(b.download_f32(&l)?.iter().map(|&v| v as f64).sum())
}

/// One adversarial-training step: a uniform random start in the eps-box, `steps` projected
/// sign steps of `alpha` (d loss / d input only), then a training step on the adversarial
/// batch. FGSM-RS (Wong et al. 2020) is 1 step of 1.25 eps; PGD-10 (Madry et al.) 10 steps.
#[allow(clippy::too_many_arguments)]
fn adv_train_step<B: Backend>(
    b: &B,
    m: &Model<B>,
    opt: &mut Sgd<B>,
    (x0, y): (&Tensor<B>, &Tensor<B>),
    (x, noise): (&Tensor<B>, &Tensor<B>),
    steps: usize,
    alpha: f32,
    seed: u64,
) -> Result<()> {
    let (n, len) = (x0.dims()[0], x0.numel());
    b.rng_fill_(noise, &RngParams::new(len, seed, 0, Dist::Uniform, -EPS, EPS)?)?;
    b.copy_(x, &b.axpby(x0, noise, &EltParams::new(len, 1.0, 1.0)?)?)?;
    b.step_project_linf_(x, noise, x0, &StepParams::new(n, len / n, 0.0, EPS, 0.0, 1.0)?)?;
    let p = StepParams::new(n, len / n, alpha, EPS, 0.0, 1.0)?;
    for _ in 0..steps {
        let g = input_grad(b, m, x, y, false)?;
        b.step_project_linf_(x, &g, x0, &p)?;
    }
    train_step(b, m, opt, x, y)
}

/// The attack rows of demo model `name` at batch `n`.
pub fn bench_attacks<B: BenchBackend>(b: &B, name: &str, n: usize, env: &mut Env<'_>) -> Result<Vec<Row>> {
    let bname = b.name();
    let model = build_model(b, name, [1, 28, 28], 10, 0)?;
    let (x0, y, ys) = batch(b, n)?;
    // The checks run on the digits blended with 10% noise: MNIST's flat background makes exact
    // ties inside max-pool windows, where the loss has no derivative for a difference to match.
    let xs: Vec<f32> = {
        let clean = b.download_f32(&x0)?;
        let u = super::spec::uniform(11, clean.len(), 0.0, 1.0);
        clean.iter().zip(&u).map(|(&c, &r)| 0.9 * c + 0.1 * r).collect()
    };
    let xc = b.upload_f32(&xs, x0.shape())?;
    let layers = model.layers().to_vec();
    let feat = 784;

    // Check 1: the input-only gradient equals the full backward's input gradient.
    let gi = b.download_f32(&input_grad(b, &model, &xc, &y, false)?)?;
    let gf = b.download_f32(&input_grad(b, &model, &xc, &y, true)?)?;
    let gmax = gi.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let tol = Tolerance::new(1e-5 * gmax + 1e-12, 1e-4);
    check_close(&gi, &gf, tol)
        .map_err(|m| refuse(bname, format!("{name}: input-only vs full-backward input gradient: {m}")))?;
    // Check 2: the directional derivative along sign(g) against a central difference.
    let h = 1e-3f32;
    let dir: Vec<f32> = gi.iter().map(|&v| if v == 0.0 { 0.0 } else { v.signum() }).collect();
    let shifted = |s: f32| -> Result<Tensor<B>> {
        let v: Vec<f32> = xs.iter().zip(&dir).map(|(&a, &d)| a + s * d).collect();
        Ok(b.upload_f32(&v, x0.shape())?)
    };
    let fd = (loss_of(b, &model, &shifted(h)?, &y)? - loss_of(b, &model, &shifted(-h)?, &y)?) / (2.0 * h as f64);
    let an: f64 = gi.iter().map(|&v| v.abs() as f64).sum();
    let rel = (fd - an).abs() / an.max(1e-12);
    if rel.is_nan() || rel > 0.05 {
        return Err(refuse(bname, format!("{name}: directional derivative {an:.4e} vs finite difference {fd:.4e}")));
    }
    // Check 3: off the CPU, the input gradient matches the CPU reference backend's.
    if let (false, Some(cpu)) = (b.is_reference(), env.reference.as_ref()) {
        let cm = build_model(cpu, name, [1, 28, 28], 10, 0)?;
        let (cx, cy) = (cpu.upload_f32(&xs, x0.shape())?, cpu.upload_u32(&ys, y.shape())?);
        let cg = cpu.download_f32(&input_grad(cpu, &cm, &cx, &cy, false)?)?;
        check_close(&gi, &cg, Tolerance::new(1e-4 * gmax + 1e-12, 1e-3))
            .map_err(|m| refuse(bname, format!("{name}: input gradient vs the CPU reference: {m}")))?;
    }
    // Check 4: FGSM stays in the eps-box and [0, 1] and raises the loss.
    let mut fgsm = GradientAttack::new(b, &model, AttackConfig::fgsm(EPS))?;
    let out = fgsm.run_batch(&xc, &ys, 0)?;
    let in_box = out.adv.iter().zip(&xs).all(|(&a, &c)| (a - c).abs() <= EPS + 1e-6 && (0.0..=1.0).contains(&a));
    let adv = b.upload_f32(&out.adv, x0.shape())?;
    let (lc, la) = (loss_of(b, &model, &xc, &y)?, loss_of(b, &model, &adv, &y)?);
    if !in_box || la.is_nan() || la <= lc {
        return Err(refuse(bname, format!("{name}: FGSM in box: {in_box}, loss {lc:.3} -> {la:.3}")));
    }
    let check = format!("ok (fd {rel:.0e}, fgsm loss +{:.2})", (la - lc) / n as f64);

    // Timed rows.
    let fwd = model_work(&layers, [1, 28, 28], n, Pass::Forward)?;
    let igrad = model_work(&layers, [1, 28, 28], n, Pass::InputGrad)?;
    let step = |reads| -> Result<Work> { Ok(StepParams::new(n, feat, 0.01, EPS, 0.0, 1.0)?.work(reads)) };
    let elt = EltParams::new(n * feat, 1.0, 1.0)?;
    let rng = RngParams::new(n * feat, 0, 0, Dist::Uniform, 0.0, 1.0)?.work();
    let shape = format!("{name} [{n}, 1, 28, 28]");
    let (warmup, reps) = (env.warmup.min(1), env.reps.clamp(1, 5));
    let mut rows = Vec::new();
    let mut push = |op: &str, work: Work, t: super::timing::Timed, note: String| {
        let mut r = make_row(b, &env.peaks, op, "default", &shape, work, &t, check.clone());
        r.images_per_s = Some(n as f64 / (r.median_ms * 1e-3));
        r.note = note;
        rows.push(r);
    };

    let t = b.time_ms(warmup, reps, &mut || fgsm.run_batch(&x0, &ys, 0).map(drop).map_err(Into::into))?;
    push("attack_fgsm", fwd + igrad + step(2)? + fwd, t, format!("eps {EPS}; includes the final prediction"));

    let mut pgd = GradientAttack::new(b, &model, AttackConfig::pgd(EPS, 10, 0.075).with_seed(1))?;
    let t = b.time_ms(warmup, reps, &mut || pgd.run_batch(&x0, &ys, 0).map(drop).map_err(Into::into))?;
    let pgd_work = rng + elt.work(2, 1.0) + step(3)? + fwd;
    let pgd_work = (0..10).try_fold(pgd_work, |w, _| -> Result<Work> { Ok(w + igrad + step(3)?) })?;
    push("attack_pgd10", pgd_work, t, format!("eps {EPS}, step 0.075, random start"));

    let train_model = build_model(b, name, [1, 28, 28], 10, 0)?;
    let mut opt = sgd(b, &train_model)?;
    let (xa, noise) = (b.duplicate(&x0)?, b.duplicate(&x0)?);
    let train = model_work(&layers, [1, 28, 28], n, Pass::Train)? + sgd_work(&train_model)?;
    let start = rng + elt.work(2, 1.0) + step(3)?;
    let mut seed = 0u64;
    for (op, steps, alpha, note) in [
        ("adv_train_step", 1, 1.25 * EPS, format!("FGSM-RS (eps {EPS}, step 1.25 eps) + SGD step")),
        ("adv_train_pgd10", 10, 0.075, format!("PGD-10 (eps {EPS}, step 0.075, random start) + SGD step")),
    ] {
        let t = b.time_ms(warmup, reps, &mut || {
            seed += 1;
            adv_train_step(b, &train_model, &mut opt, (&x0, &y), (&xa, &noise), steps, alpha, seed)
        })?;
        let w = (0..steps).try_fold(start + train, |w, _| -> Result<Work> { Ok(w + igrad + step(3)?) })?;
        push(op, w, t, note);
    }

    let t_in = b.time_ms(warmup, reps, &mut || input_grad(b, &model, &x0, &y, false).map(drop))?;
    let t_full = b.time_ms(warmup, reps, &mut || input_grad(b, &model, &x0, &y, true).map(drop))?;
    let (mi, mf) = (median(&t_in.ms), median(&t_full.ms));
    push(
        "backward_input_only",
        igrad,
        t_in,
        format!("fwd + xent + d/dx only: {:.0}% less time than backward_full", 100.0 * (1.0 - mi / mf)),
    );
    push(
        "backward_full",
        model_work(&layers, [1, 28, 28], n, Pass::Full)?,
        t_full,
        "fwd + xent + d/dx + every d/dW".into(),
    );
    for r in rows.iter_mut() {
        r.x_vs_reference = if b.is_reference() { Some(1.0) } else { None };
    }
    // Off the CPU: the same rows on the CPU reference backend (checked there too), 3 reps.
    if let (false, Some(cpu)) = (b.is_reference(), env.reference.clone()) {
        let mut cenv = Env {
            warmup: 1,
            reps: 3,
            variant: None,
            peaks: env.peaks.clone(),
            reference: None,
            vendor: None,
            torch: Default::default(),
        };
        let cpu_rows = bench_attacks(&cpu, name, n, &mut cenv)?;
        for r in rows.iter_mut() {
            if let Some(c) = cpu_rows.iter().find(|c| c.op == r.op) {
                r.x_vs_reference = Some(c.median_ms / r.median_ms);
            }
        }
    }
    let mut torch_rows = Vec::new();
    for (op, _) in torch_attack_cases(name, n) {
        let (Some((ms, version)), Some(i)) =
            (env.torch.get(&(op.to_string(), shape.clone())), rows.iter().position(|r| r.op == op))
        else {
            continue;
        };
        let t = super::timing::Timed { ms: vec![*ms], ..Default::default() };
        let mut v = make_row(b, &env.peaks, op, "pytorch", &shape, work_of(&rows[i]), &t, "baseline".into());
        v.images_per_s = Some(n as f64 / (ms * 1e-3));
        v.note = format!("torch {version} eager, same model and step, {}", super::vendor::torch_libs(b.name()));
        for r in [&mut rows[i], &mut v] {
            r.x_vs_vendor = Some(ms / r.median_ms);
            r.vendor = Some("pytorch".into());
        }
        torch_rows.push(v);
    }
    rows.extend(torch_rows);
    Ok(rows)
}

/// The PyTorch cases (torch_bench.py) that time the same work as [`bench_attacks`]' rows of
/// model `name` at batch `n`: (row op, case).
pub fn torch_attack_cases(name: &str, n: usize) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let attack = |steps: usize, alpha: f32, random_start: bool| {
        json!({ "kind": "attack", "model": name, "batch": n, "eps": EPS, "alpha": alpha, "steps": steps,
                "random_start": random_start })
    };
    let train = |steps: usize, alpha: f32| json!({ "kind": "adv_train", "model": name, "batch": n, "eps": EPS, "alpha": alpha, "steps": steps });
    vec![
        ("attack_fgsm", attack(1, EPS, false)),
        ("attack_pgd10", attack(10, 0.075, true)),
        ("adv_train_step", train(1, 1.25 * EPS)),
        ("adv_train_pgd10", train(10, 0.075)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_work_skips_the_first_layers_input_gradient() {
        let l = train_step_layers();
        let f = model_work(&l, [1, 28, 28], 128, Pass::Forward).unwrap();
        let t = model_work(&l, [1, 28, 28], 128, Pass::Train).unwrap();
        let full = model_work(&l, [1, 28, 28], 128, Pass::Full).unwrap();
        let c1 = Conv2dParams::new([128, 1, 28, 28], [32, 1, 3, 3], 1, 0).unwrap().work();
        // Full = Train + the first conv's input gradient (its relu has none below it).
        assert!((full.flops - t.flops - c1.flops).abs() < 1.0);
        assert!(t.flops > 2.5 * f.flops && t.flops < 3.0 * f.flops, "{} vs {}", t.flops, f.flops);
        let i = model_work(&l, [1, 28, 28], 128, Pass::InputGrad).unwrap();
        assert!(i.flops < t.flops);
    }
}
