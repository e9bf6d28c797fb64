//! Optimisers against PyTorch's update rules computed on the host, state export/import, and
//! no device allocation per step.

use perturb_autograd::CountingBackend;
use perturb_core::ops::{Dist, RngParams};
use perturb_core::rng::sample;
use perturb_core::{Backend, Shape, Tensor, Tolerance, assert_close};
use perturb_cpu::CpuBackend;
use perturb_nn::{Adam, AdamConfig, OptimState, Optimizer, Param, Sgd, SgdConfig, build_model};

fn vals(seed: u64, n: usize) -> Vec<f32> {
    let p = RngParams::new(n, seed, 0, Dist::Uniform, -1.0, 1.0).unwrap();
    (0..n as u64).map(|i| sample(&p, Dist::Uniform, i)).collect()
}

fn params<B: Backend>(b: &B) -> (Vec<Param<B>>, Vec<Vec<f32>>) {
    let w = vals(1, 12);
    let bias = vals(2, 3);
    let ps = vec![
        Param { name: "0.weight".into(), tensor: b.upload_f32(&w, &Shape::from([3, 4])).unwrap() },
        Param { name: "0.bias".into(), tensor: b.upload_f32(&bias, &Shape::from([3])).unwrap() },
    ];
    (ps, vec![w, bias])
}

fn grads<B: Backend>(b: &B, step: u64) -> (Vec<Tensor<B>>, Vec<Vec<f32>>) {
    let g0 = vals(10 + step, 12);
    let g1 = vals(20 + step, 3);
    (
        vec![b.upload_f32(&g0, &Shape::from([3, 4])).unwrap(), b.upload_f32(&g1, &Shape::from([3])).unwrap()],
        vec![g0, g1],
    )
}

const TOL: Tolerance = Tolerance { abs: 1e-6, rel: 1e-5 };

#[test]
fn sgd_matches_pytorch_rule() {
    let b = CpuBackend::new();
    for (momentum, wd, nesterov) in [(0.0, 0.0, false), (0.9, 5e-4, false), (0.9, 1e-2, true)] {
        let (ps, mut w) = params(&b);
        let cfg = SgdConfig { lr: 0.1, momentum, weight_decay: wd, nesterov };
        let mut opt = Sgd::new(&b, &ps, cfg).unwrap();
        let mut m: Vec<Vec<f32>> = w.iter().map(|v| vec![0.0; v.len()]).collect();
        for step in 0..4 {
            let lr = 0.1 / (step + 1) as f32;
            opt.set_lr(lr);
            let (gt, gh) = grads(&b, step);
            opt.step(&b, &ps, &gt).unwrap();
            // torch.optim.SGD: g += wd w; buf = momentum buf + g (buf = g first); w -= lr (nesterov ? g + momentum buf : buf)
            for k in 0..2 {
                for i in 0..w[k].len() {
                    let g = gh[k][i] + wd * w[k][i];
                    m[k][i] = if step == 0 { g } else { momentum * m[k][i] + g };
                    let d = if nesterov { g + momentum * m[k][i] } else { m[k][i] };
                    w[k][i] -= lr * d;
                }
            }
        }
        assert_eq!(opt.steps(), 4);
        for k in 0..2 {
            assert_close(&b.download_f32(&ps[k].tensor).unwrap(), &w[k], TOL);
        }
    }
    let (ps, _) = params(&b);
    assert!(Sgd::new(&b, &ps, SgdConfig { momentum: 0.0, nesterov: true, ..Default::default() }).is_err());
    assert!(Sgd::new(&b, &ps, SgdConfig { lr: -1.0, ..Default::default() }).is_err());
}

#[test]
fn adam_and_adamw_match_pytorch_rule() {
    let b = CpuBackend::new();
    for cfg in [
        AdamConfig { lr: 0.01, ..Default::default() },
        AdamConfig { lr: 0.01, weight_decay: 0.1, ..Default::default() },
        AdamConfig { lr: 0.01, ..AdamConfig::adamw() },
    ] {
        let (ps, mut w) = params(&b);
        let mut opt = Adam::new(&b, &ps, cfg).unwrap();
        let mut m: Vec<Vec<f64>> = w.iter().map(|v| vec![0.0; v.len()]).collect();
        let mut v = m.clone();
        for step in 0..5u64 {
            let (gt, gh) = grads(&b, step);
            opt.step(&b, &ps, &gt).unwrap();
            let t = step as i32 + 1;
            let (b1, b2) = (cfg.beta1 as f64, cfg.beta2 as f64);
            for k in 0..2 {
                for i in 0..w[k].len() {
                    let mut wi = w[k][i] as f64;
                    let mut g = gh[k][i] as f64;
                    if cfg.decoupled {
                        wi *= 1.0 - cfg.lr as f64 * cfg.weight_decay as f64;
                    } else {
                        g += cfg.weight_decay as f64 * wi;
                    }
                    m[k][i] = b1 * m[k][i] + (1.0 - b1) * g;
                    v[k][i] = b2 * v[k][i] + (1.0 - b2) * g * g;
                    let mh = m[k][i] / (1.0 - b1.powi(t));
                    let vh = v[k][i] / (1.0 - b2.powi(t));
                    wi -= cfg.lr as f64 * mh / (vh.sqrt() + cfg.eps as f64);
                    w[k][i] = wi as f32;
                }
            }
        }
        for k in 0..2 {
            assert_close(&b.download_f32(&ps[k].tensor).unwrap(), &w[k], Tolerance { abs: 1e-5, rel: 1e-4 });
        }
    }
}

/// Runs `total` steps, exporting the state after `split` and continuing on a fresh optimiser
/// loaded from the host copy: the result equals the uninterrupted run.
fn resume_equals_uninterrupted<O: Optimizer<CpuBackend>>(make: &dyn Fn(&CpuBackend, &[Param<CpuBackend>]) -> O) {
    let b = CpuBackend::new();
    let (ps_a, _) = params(&b);
    let mut a = make(&b, &ps_a);
    for s in 0..6 {
        a.step(&b, &ps_a, &grads(&b, s).0).unwrap();
    }
    let (ps_b, _) = params(&b);
    let mut first = make(&b, &ps_b);
    for s in 0..3 {
        first.step(&b, &ps_b, &grads(&b, s).0).unwrap();
    }
    let st = first.state();
    let host = st.to_host(&b).unwrap();
    let (kind, step) = (st.kind.clone(), st.step);
    drop(first);
    let mut second = make(&b, &ps_b);
    second.load_state(&b, &OptimState::from_host(&b, &kind, step, &host).unwrap()).unwrap();
    assert_eq!(second.steps(), 3);
    for s in 3..6 {
        second.step(&b, &ps_b, &grads(&b, s).0).unwrap();
    }
    for (x, y) in ps_a.iter().zip(&ps_b) {
        assert_eq!(b.download_f32(&x.tensor).unwrap(), b.download_f32(&y.tensor).unwrap());
    }
}

#[test]
fn state_export_and_import_resume_exactly() {
    resume_equals_uninterrupted(&|b, p| {
        Sgd::new(b, p, SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-3, nesterov: true }).unwrap()
    });
    resume_equals_uninterrupted(&|b, p| Adam::new(b, p, AdamConfig { lr: 0.01, ..AdamConfig::adamw() }).unwrap());
    let b = CpuBackend::new();
    let (ps, _) = params(&b);
    let sgd = Sgd::new(&b, &ps, SgdConfig::default()).unwrap();
    let names: Vec<String> = sgd.state().tensors.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, ["momentum_buffer.0.weight", "momentum_buffer.0.bias"]);
    let mut adam = Adam::new(&b, &ps, AdamConfig::default()).unwrap();
    let names: Vec<String> = adam.state().tensors.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, ["exp_avg.0.weight", "exp_avg.0.bias", "exp_avg_sq.0.weight", "exp_avg_sq.0.bias"]);
    // Mismatched state: wrong kind, wrong shapes.
    assert!(adam.load_state(&b, &sgd.state()).is_err());
    let mut st = adam.state();
    st.tensors[0].1 = b.zeros(&Shape::from([4, 3, 1]), perturb_core::DType::F32).unwrap();
    assert!(adam.load_state(&b, &st).unwrap_err().to_string().contains("exp_avg.0.weight"));
}

#[test]
fn a_step_allocates_nothing_and_checks_its_arguments() {
    let b = CountingBackend::new(CpuBackend::new());
    let m = build_model(&b, "cnn-small", [1, 28, 28], 10, 0).unwrap();
    let gs: Vec<_> = m.params().iter().map(|p| b.zeros(p.tensor.shape(), perturb_core::DType::F32).unwrap()).collect();
    let mut sgd = Sgd::new(&b, m.params(), SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() }).unwrap();
    let mut adam = Adam::new(&b, m.params(), AdamConfig::default()).unwrap();
    b.reset();
    for _ in 0..3 {
        sgd.step(&b, m.params(), &gs).unwrap();
        adam.step(&b, m.params(), &gs).unwrap();
    }
    let c = b.counts();
    assert_eq!(c.get("sgd_update"), Some(&24));
    assert_eq!(c.get("adam_update"), Some(&24));
    assert_eq!(c.len(), 2, "a step did more than its updates: {c:?}");
    // Wrong number of gradients, wrong shapes.
    assert!(sgd.step(&b, m.params(), &gs[..3]).is_err());
    let mut bad = gs.clone();
    bad.swap(0, 1);
    let e = sgd.step(&b, m.params(), &bad).unwrap_err().to_string();
    assert!(e.contains("0.weight"), "{e}");
    let other = build_model(&b, "mlp", [1, 28, 28], 10, 0).unwrap();
    assert!(sgd.step(&b, other.params(), &gs).is_err());
}
