//! Wall time of a CPU training step (forward, backward, SGD update) and of an attack's
//! input-gradient step at batch 128. Ignored by default (timing on a shared machine is
//! noisy); run with `cargo test -p perturb-nn --release --test step_time -- --ignored --nocapture`.

use std::time::Instant;

use perturb_autograd::{Graph, Reduction};
use perturb_core::ops::{Dist, RngParams};
use perturb_core::{Backend, DType, Shape};
use perturb_cpu::CpuBackend;
use perturb_nn::{Optimizer, Sgd, SgdConfig, build_model};

#[test]
#[ignore = "timing; run explicitly"]
fn training_step_time_at_batch_128() {
    let b = CpuBackend::new();
    let n = 128;
    let x = b.zeros(&Shape::from([n, 1, 28, 28]), DType::F32).unwrap();
    b.rng_fill_(&x, &RngParams::new(n * 784, 1, 0, Dist::Uniform, 0.0, 1.0).unwrap()).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let y = b.upload_u32(&labels, &Shape::from([n])).unwrap();
    for name in ["cnn-small", "cnn-madry", "mlp"] {
        let m = build_model(&b, name, [1, 28, 28], 10, 0).unwrap();
        let mut opt = Sgd::new(&b, m.params(), SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() }).unwrap();
        let mut train = Vec::new();
        let mut attack = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let g = Graph::new(&b);
            let bound = m.bind(&g, true);
            let xv = g.input(&x, false);
            let loss = g.softmax_xent(m.forward(&g, &bound, xv).unwrap(), &y, Reduction::Mean).unwrap().loss;
            let grads = bound.grads(&g.backward(loss).unwrap()).unwrap();
            opt.step(&b, m.params(), &grads).unwrap();
            b.synchronize().unwrap();
            train.push(t.elapsed().as_secs_f64() * 1e3);

            let t = Instant::now();
            let g = Graph::new(&b);
            let bound = m.bind(&g, false);
            let xv = g.input(&x, true);
            let loss = g.softmax_xent(m.forward(&g, &bound, xv).unwrap(), &y, Reduction::Sum).unwrap().loss;
            let grads = g.backward(loss).unwrap();
            assert_eq!(grads.wrt(xv).unwrap().dims(), &[n, 1, 28, 28]);
            b.synchronize().unwrap();
            attack.push(t.elapsed().as_secs_f64() * 1e3);
        }
        train.sort_by(f64::total_cmp);
        attack.sort_by(f64::total_cmp);
        eprintln!(
            "{name}: training step median {:.1} ms, input-gradient step median {:.1} ms ({} threads)",
            train[3],
            attack[3],
            b.threads()
        );
    }
}
