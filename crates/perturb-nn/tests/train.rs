//! Training actually learns: loss falls and accuracy rises, on a synthetic separable problem
//! and on real MNIST digits from the embedded set.

use perturb_autograd::{Graph, Reduction};
use perturb_core::ops::{Dist, RngParams};
use perturb_core::rng::sample;
use perturb_core::{Backend, Shape, Tensor};
use perturb_cpu::CpuBackend;
use perturb_nn::{LrSchedule, Model, Optimizer, Sgd, SgdConfig, build_model};

/// One SGD step on a batch; returns the mean loss (downloaded only for the test's record).
fn train_step(
    b: &CpuBackend,
    m: &Model<CpuBackend>,
    opt: &mut Sgd<CpuBackend>,
    x: &Tensor<CpuBackend>,
    y: &Tensor<CpuBackend>,
) -> f32 {
    let g = Graph::new(b);
    let bound = m.bind(&g, true);
    let xv = g.input(x, false);
    let logits = m.forward(&g, &bound, xv).unwrap();
    let loss = g.softmax_xent(logits, y, Reduction::Mean).unwrap().loss;
    let grads = bound.grads(&g.backward(loss).unwrap()).unwrap();
    opt.step(b, m.params(), &grads).unwrap();
    b.download_f32(&g.value(loss).unwrap()).unwrap()[0]
}

fn accuracy(b: &CpuBackend, m: &Model<CpuBackend>, x: &Tensor<CpuBackend>, y: &[u32]) -> f64 {
    let pred = b.download_u32(&m.predict(b, x).unwrap()).unwrap();
    pred.iter().zip(y).filter(|(p, l)| p == l).count() as f64 / y.len() as f64
}

/// 4 classes of 1 x 8 x 8 images: class k has a bright 4 x 4 quadrant k, plus noise everywhere.
fn quadrants(seed: u64, n: usize) -> (Vec<f32>, Vec<u32>) {
    let p = RngParams::new(0, seed, 0, Dist::Uniform, 0.0, 0.6).unwrap();
    let mut x = Vec::with_capacity(n * 64);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let k = (i * 7 + 3) % 4;
        for r in 0..8 {
            for c in 0..8 {
                let noise = sample(&p, Dist::Uniform, (i * 64 + r * 8 + c) as u64);
                let on = (r / 4) * 2 + c / 4 == k;
                x.push(noise + if on { 0.4 } else { 0.0 });
            }
        }
        y.push(k as u32);
    }
    (x, y)
}

#[test]
fn cnn_small_learns_a_synthetic_separable_problem() {
    let b = CpuBackend::new();
    let m = build_model(&b, "cnn-small", [1, 8, 8], 4, 1).unwrap();
    let mut opt = Sgd::new(&b, m.params(), SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() }).unwrap();
    let (tx, ty) = quadrants(11, 256);
    let (vx, vy) = quadrants(12, 256);
    let vxt = b.upload_f32(&vx, &Shape::from([256, 1, 8, 8])).unwrap();
    let acc0 = accuracy(&b, &m, &vxt, &vy);
    let mut losses = Vec::new();
    for step in 0..100 {
        let s = (step * 32) % 256;
        let x = b.upload_f32(&tx[s * 64..(s + 32) * 64], &Shape::from([32, 1, 8, 8])).unwrap();
        let y = b.upload_u32(&ty[s..s + 32], &Shape::from([32])).unwrap();
        losses.push(train_step(&b, &m, &mut opt, &x, &y));
    }
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[95..].iter().sum::<f32>() / 5.0;
    let acc = accuracy(&b, &m, &vxt, &vy);
    eprintln!("synthetic: loss {first:.3} -> {last:.3}, held-out accuracy {acc0:.3} -> {acc:.3}");
    assert!(first > 1.2, "initial loss {first} should be near ln 4");
    assert!(last < 0.2 * first, "loss fell only from {first} to {last}");
    assert!(acc >= 0.95, "held-out accuracy {acc} (from {acc0})");
}

#[test]
fn cnn_small_learns_real_digits() {
    let b = CpuBackend::new();
    let (train, test) = perturb_data::embedded_mnist10k().unwrap();
    let (n_train, n_test, batch) = (2048usize, 1000usize, 64usize);
    let px = 28 * 28;
    let labels = |d: &perturb_data::Dataset, r: std::ops::Range<usize>| -> Vec<u32> {
        d.labels[r].iter().map(|&l| l as u32).collect()
    };
    let test_x = b.upload_f32(&test.images[..n_test * px], &Shape::from([n_test, 1, 28, 28])).unwrap();
    let test_y = labels(&test, 0..n_test);

    let m = build_model(&b, "cnn-small", [1, 28, 28], 10, 3).unwrap();
    let steps = 100u64;
    let sched = LrSchedule::one_cycle(0.1, steps);
    let mut opt =
        Sgd::new(&b, m.params(), SgdConfig { lr: 0.0, momentum: 0.9, weight_decay: 5e-4, nesterov: false }).unwrap();
    let acc0 = accuracy(&b, &m, &test_x, &test_y);
    let mut losses = Vec::new();
    for step in 0..steps {
        let s = (step as usize * batch) % n_train;
        let x = b.upload_f32(&train.images[s * px..(s + batch) * px], &Shape::from([batch, 1, 28, 28])).unwrap();
        let y = b.upload_u32(&labels(&train, s..s + batch), &Shape::from([batch])).unwrap();
        opt.set_lr(sched.lr_at(step));
        losses.push(train_step(&b, &m, &mut opt, &x, &y));
    }
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[90..].iter().sum::<f32>() / 10.0;
    let acc = accuracy(&b, &m, &test_x, &test_y);
    eprintln!("mnist: loss {first:.3} -> {last:.3}, test accuracy {acc0:.3} -> {acc:.3}");
    assert!(first > 2.0, "initial loss {first} should be near ln 10");
    assert!(last < 0.3 * first, "loss fell only from {first} to {last}");
    assert!(acc >= 0.85, "test accuracy {acc} after {steps} steps (from {acc0})");
    assert!(acc0 < 0.3);
}
