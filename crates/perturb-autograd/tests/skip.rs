//! Which kernels backward runs: counted through a backend wrapper around the CPU backend.

use perturb_autograd::{CountingBackend, Error, Graph, Reduction, Var};
use perturb_core::ops::{Dist, RngParams};
use perturb_core::rng::sample;
use perturb_core::{Backend, Op, Shape, Tensor};
use perturb_cpu::CpuBackend;

type Cb = CountingBackend<CpuBackend>;

fn seeded(b: &Cb, seed: u64, dims: &[usize], scale: f32) -> Tensor<Cb> {
    let n = dims.iter().product();
    let p = RngParams::new(n, seed, 0, Dist::Uniform, -scale, scale).unwrap();
    let v: Vec<f32> = (0..n as u64).map(|i| sample(&p, Dist::Uniform, i)).collect();
    b.upload_f32(&v, &Shape::from(dims)).unwrap()
}

struct Net {
    w1: Tensor<Cb>,
    b1: Tensor<Cb>,
    w2: Tensor<Cb>,
    b2: Tensor<Cb>,
}

impl Net {
    fn new(b: &Cb) -> Self {
        Net {
            w1: seeded(b, 1, &[4, 1, 3, 3], 0.3),
            b1: seeded(b, 2, &[4], 0.1),
            w2: seeded(b, 3, &[3, 4 * 4 * 4], 0.1),
            b2: seeded(b, 4, &[3], 0.1),
        }
    }
    /// conv -> bias -> relu -> maxpool -> flatten -> linear -> bias; the weights bound as
    /// params (training) or constants (an attack).
    fn logits(&self, g: &Graph<Cb>, x: Var, trainable: bool) -> (Var, [Var; 4]) {
        let bind = |t: &Tensor<Cb>| if trainable { g.param(t) } else { g.constant(t) };
        let ps = [bind(&self.w1), bind(&self.b1), bind(&self.w2), bind(&self.b2)];
        let c = g.conv2d(x, ps[0], 1, 1).unwrap();
        let c = g.bias_add(c, ps[1]).unwrap();
        let r = g.relu(c).unwrap();
        let p = g.maxpool2d(r, 2, 2).unwrap();
        let f = g.flatten(p).unwrap();
        let l = g.linear(f, ps[2]).unwrap();
        (g.bias_add(l, ps[3]).unwrap(), ps)
    }
}

const WEIGHT_GRAD_OPS: [Op; 3] = [Op::Conv2dBwdWeight, Op::LinearBwdWeight, Op::BiasGrad];

#[test]
fn attack_gradient_runs_no_weight_gradient_kernel() {
    let b = Cb::new(CpuBackend::new());
    let net = Net::new(&b);
    let x_t = seeded(&b, 5, &[2, 1, 8, 8], 1.0);
    let labels = b.upload_u32(&[0, 2], &Shape::from([2])).unwrap();
    let g = Graph::new(&b);
    let x = g.input(&x_t, true);
    let (logits, ps) = net.logits(&g, x, false);
    let loss = g.softmax_xent(logits, &labels, Reduction::Sum).unwrap().loss;
    b.reset();
    let grads = g.backward(loss).unwrap();
    let c = b.counts();
    for op in WEIGHT_GRAD_OPS {
        assert_eq!(b.op_count(op), 0, "{} ran during an input-gradient backward: {c:?}", op.name());
    }
    assert_eq!(b.op_count(Op::Conv2dBwdInput), 1, "{c:?}");
    assert_eq!(b.op_count(Op::LinearBwdInput), 1, "{c:?}");
    assert_eq!(b.op_count(Op::ReluBwd), 1, "{c:?}");
    assert_eq!(b.op_count(Op::MaxPool2dBwd), 1, "{c:?}");
    // The fused cross-entropy already holds d loss / d logits: no scaling or broadcast kernel.
    for op in [Op::Axpby, Op::Mul, Op::SumRows, Op::LinearFwd, Op::SoftmaxXent] {
        assert_eq!(b.op_count(op), 0, "{} ran in backward: {c:?}", op.name());
    }
    assert_eq!(b.count("download_f32") + b.count("upload_f32"), 0, "host round trip in backward: {c:?}");
    assert_eq!(grads.len(), 1, "only the input has a gradient");
    assert_eq!(grads.wrt(x).unwrap().dims(), &[2, 1, 8, 8]);
    for p in ps {
        assert!(grads.get(p).is_none());
        assert!(matches!(grads.wrt(p), Err(Error::MissingGrad { .. })));
    }
}

#[test]
fn training_gradient_skips_the_input_gradient() {
    let b = Cb::new(CpuBackend::new());
    let net = Net::new(&b);
    let x_t = seeded(&b, 5, &[2, 1, 8, 8], 1.0);
    let labels = b.upload_u32(&[1, 2], &Shape::from([2])).unwrap();
    let g = Graph::new(&b);
    let x = g.input(&x_t, false);
    let (logits, ps) = net.logits(&g, x, true);
    let loss = g.softmax_xent(logits, &labels, Reduction::Mean).unwrap().loss;
    b.reset();
    let grads = g.backward(loss).unwrap();
    let c = b.counts();
    assert_eq!(b.op_count(Op::Conv2dBwdInput), 0, "first layer's input gradient computed: {c:?}");
    assert_eq!(b.op_count(Op::Conv2dBwdWeight), 1, "{c:?}");
    assert_eq!(b.op_count(Op::LinearBwdWeight), 1, "{c:?}");
    assert_eq!(b.op_count(Op::LinearBwdInput), 1, "{c:?}");
    assert_eq!(b.op_count(Op::BiasGrad), 2, "{c:?}");
    // The mean's 1/n is folded into the fused kernel's grad_scale: no axpby either.
    assert_eq!(b.op_count(Op::Axpby), 0, "{c:?}");
    assert_eq!(b.count("download_f32"), 0, "{c:?}");
    assert!(grads.get(x).is_none());
    for (p, t) in ps.iter().zip([&net.w1, &net.b1, &net.w2, &net.b2]) {
        assert_eq!(grads.wrt(*p).unwrap().dims(), t.dims());
    }
}

#[test]
fn branch_without_grad_leaf_runs_no_backward() {
    let b = Cb::new(CpuBackend::new());
    let net = Net::new(&b);
    let x_t = seeded(&b, 6, &[2, 1, 8, 8], 1.0);
    let a_t = seeded(&b, 7, &[2, 3], 1.0);
    let c_t = seeded(&b, 8, &[2, 3], 1.0);
    let labels = b.upload_u32(&[0, 1], &Shape::from([2])).unwrap();
    let g = Graph::new(&b);
    let x = g.input(&x_t, true);
    let (logits, _) = net.logits(&g, x, false);
    let xent = g.softmax_xent(logits, &labels, Reduction::Sum).unwrap().loss;
    // A constant branch: squared distance between two constants.
    let (a, c) = (g.constant(&a_t), g.constant(&c_t));
    let d = g.sq_dist_rows(a, c).unwrap();
    assert!(!d.requires_grad());
    let d = g.sum_all(d).unwrap();
    let loss = g.add(xent, d).unwrap();
    b.reset();
    let grads = g.backward(loss).unwrap();
    let cnt = b.counts();
    // The constant branch's sub, mul and sum have no rule; add's uniform gradient costs nothing.
    for op in [Op::Mul, Op::Axpby, Op::SumRows, Op::LinearFwd] {
        assert_eq!(b.op_count(op), 0, "{} ran in backward: {cnt:?}", op.name());
    }
    for op in WEIGHT_GRAD_OPS {
        assert_eq!(b.op_count(op), 0, "{cnt:?}");
    }
    assert_eq!(grads.len(), 1);

    // Nothing requires grad: backward runs no kernel at all and returns no gradient.
    let g = Graph::new(&b);
    let x = g.input(&x_t, false);
    let (logits, _) = net.logits(&g, x, false);
    let loss = g.softmax_xent(logits, &labels, Reduction::Mean).unwrap().loss;
    b.reset();
    let grads = g.backward(loss).unwrap();
    assert!(b.counts().is_empty(), "{:?}", b.counts());
    assert!(grads.is_empty());
}

#[test]
fn forward_has_no_host_round_trip() {
    let b = Cb::new(CpuBackend::new());
    let net = Net::new(&b);
    let x_t = seeded(&b, 9, &[3, 1, 8, 8], 1.0);
    let labels = b.upload_u32(&[0, 1, 2], &Shape::from([3])).unwrap();
    b.reset();
    let g = Graph::new(&b);
    let x = g.input(&x_t, false);
    let (logits, _) = net.logits(&g, x, true);
    let loss = g.softmax_xent(logits, &labels, Reduction::Mean).unwrap().loss;
    let _ = g.backward(loss).unwrap();
    let c = b.counts();
    for k in ["download_f32", "download_u32", "upload_f32", "upload_u32", "copy_", "duplicate"] {
        assert_eq!(b.count(k), 0, "{k} in a training step: {c:?}");
    }
}

#[test]
fn errors_are_typed() {
    let b = Cb::new(CpuBackend::new());
    let t = seeded(&b, 1, &[2, 3], 1.0);
    let g = Graph::new(&b);
    let x = g.input(&t, true);
    let r = g.relu(x).unwrap();
    assert!(matches!(g.backward(r), Err(Error::NotScalar { numel: 6, .. })));
    // A var from another graph.
    let other = Graph::new(&b);
    let y = other.input(&t, true);
    assert!(matches!(g.relu(y), Err(Error::ForeignVar { .. })));
    // Rank and shape problems name the op and the shapes.
    let e = g.conv2d(x, x, 1, 0).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("[2, 3]"), "{e}");
    let e = g.linear(x, g.constant(&seeded(&b, 2, &[4, 5], 1.0))).unwrap_err().to_string();
    assert!(e.contains("linear") && e.contains("[4, 5]"), "{e}");
    let bad = b.upload_u32(&[0, 7], &Shape::from([2])).unwrap();
    assert!(g.softmax_xent(x, &bad, Reduction::Mean).is_err(), "label 7 of 3 classes accepted");
}

#[test]
fn seeded_backward_and_retained_grad() {
    let b = Cb::new(CpuBackend::new());
    let t = seeded(&b, 3, &[2, 3], 1.0);
    let g = Graph::new(&b);
    let x = g.input(&t, true);
    let y = g.scale(x, 3.0).unwrap();
    g.retain_grad(y).unwrap();
    let z = g.mul(y, x).unwrap(); // z = 3 x^2
    let seed_v = [1.0f32, -1.0, 2.0, 0.5, 0.0, 1.0];
    let seed = b.upload_f32(&seed_v, &Shape::from([6])).unwrap();
    let grads = g.backward_with_seed(z, &seed).unwrap();
    let xv = b.download_f32(&t).unwrap();
    let gx = b.download_f32(grads.wrt(x).unwrap()).unwrap();
    let gy = b.download_f32(grads.wrt(y).unwrap()).unwrap();
    for i in 0..6 {
        assert!((gx[i] - 6.0 * xv[i] * seed_v[i]).abs() < 1e-5, "{i}: {} vs {}", gx[i], 6.0 * xv[i] * seed_v[i]);
        assert!((gy[i] - xv[i] * seed_v[i]).abs() < 1e-6);
    }
    let wrong = b.upload_f32(&[1.0; 5], &Shape::from([5])).unwrap();
    assert!(g.backward_with_seed(z, &wrong).is_err());
}
