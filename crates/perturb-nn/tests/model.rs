//! Models by name, their geometry, PyTorch-default initialisation, and forward paths.

use perturb_autograd::{CountingBackend, Graph, Reduction};
use perturb_core::ops::{Dist, RngParams};
use perturb_core::rng::sample;
use perturb_core::{Backend, Op, Shape, Tensor, Tolerance, assert_close};
use perturb_cpu::CpuBackend;
use perturb_nn::{Error, Layer, MODEL_NAMES, Model, build_model, model_layers};

fn seeded<B: Backend>(b: &B, seed: u64, dims: &[usize]) -> Tensor<B> {
    let n = dims.iter().product();
    let p = RngParams::new(n, seed, 0, Dist::Uniform, 0.0, 1.0).unwrap();
    let v: Vec<f32> = (0..n as u64).map(|i| sample(&p, Dist::Uniform, i)).collect();
    b.upload_f32(&v, &Shape::from(dims)).unwrap()
}

#[test]
fn named_models_match_pytorch_parameter_names_and_counts() {
    let b = CpuBackend::new();
    // (name, state_dict names, parameter count of the PyTorch model on MNIST)
    let expected: [(&str, &[&str], usize); 3] = [
        (
            "cnn-small",
            &["0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias", "7.weight", "7.bias"],
            166_406,
        ),
        (
            "cnn-madry",
            &["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias"],
            3_274_634,
        ),
        ("mlp", &["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"], 269_322),
    ];
    for (name, names, count) in expected {
        let m = build_model(&b, name, [1, 28, 28], 10, 0).unwrap();
        let got: Vec<&str> = m.params().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(got, names, "{name}");
        assert_eq!(m.param_count(), count, "{name}");
        assert_eq!(m.classes(), 10);
        assert_eq!(m.name(), name);
    }
    let m = build_model(&b, "cnn-small", [1, 28, 28], 10, 0).unwrap();
    let shapes: Vec<Vec<usize>> = m.params().iter().map(|p| p.tensor.dims().to_vec()).collect();
    assert_eq!(shapes[0], [16, 1, 4, 4]);
    assert_eq!(shapes[2], [32, 16, 4, 4]);
    assert_eq!(shapes[4], [100, 32 * 7 * 7]);
    assert_eq!(shapes[6], [10, 100]);
    let m = build_model(&b, "cnn-madry", [1, 28, 28], 10, 0).unwrap();
    assert_eq!(m.params()[4].tensor.dims(), &[1024, 7 * 7 * 64]);
}

#[test]
fn other_geometries_compute_the_flatten_size() {
    let b = CpuBackend::new();
    let m = build_model(&b, "cnn-small", [3, 32, 32], 2, 1).unwrap();
    assert_eq!(m.params()[0].tensor.dims(), &[16, 3, 4, 4]);
    assert_eq!(m.params()[4].tensor.dims(), &[100, 32 * 8 * 8]);
    assert_eq!(m.classes(), 2);
    let m = build_model(&b, "cnn-madry", [3, 32, 32], 10, 1).unwrap();
    assert_eq!(m.params()[4].tensor.dims(), &[1024, 64 * 8 * 8]);
    let m = build_model(&b, "mlp", [3, 32, 32], 2, 1).unwrap();
    assert_eq!(m.params()[0].tensor.dims(), &[256, 3 * 32 * 32]);
    let logits = m.infer(&b, &seeded(&b, 3, &[5, 3, 32, 32])).unwrap();
    assert_eq!(logits.dims(), &[5, 2]);
}

#[test]
fn unknown_model_and_impossible_geometry_are_errors() {
    let b = CpuBackend::new();
    let e = build_model(&b, "resnet", [1, 28, 28], 10, 0).unwrap_err();
    assert!(matches!(e, Error::UnknownModel { .. }));
    let msg = e.to_string();
    assert!(msg.contains("resnet"), "{msg}");
    for n in MODEL_NAMES {
        assert!(msg.contains(n), "{msg}");
    }
    // Two 5x5 convs with pooling cannot shrink a 2x2 input.
    assert!(build_model(&b, "cnn-madry", [1, 2, 2], 10, 0).is_err());
    assert!(build_model(&b, "mlp", [1, 28, 28], 0, 0).is_err());
    // Layers that do not chain.
    let e = Model::new(&b, "x", [1, 4, 4], vec![Layer::Flatten, Layer::linear(15, 2)], 0).unwrap_err();
    assert!(e.to_string().contains("16"), "{e}");
}

#[test]
fn initialisation_is_pytorch_default_and_seeded() {
    let b = CpuBackend::new();
    let m = build_model(&b, "cnn-small", [1, 28, 28], 10, 42).unwrap();
    for (p, fan_in) in m.params().iter().zip([16, 16, 256, 256, 1568, 1568, 100, 100]) {
        let v = b.download_f32(&p.tensor).unwrap();
        let bound = 1.0 / (fan_in as f32).sqrt();
        assert!(v.iter().all(|x| x.abs() <= bound), "{}: outside U(-{bound}, {bound})", p.name);
        if v.len() >= 1000 {
            // U(-b, b): mean 0, variance b^2 / 3.
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
            let want = (bound as f64).powi(2) / 3.0;
            assert!(mean.abs() < 0.05 * bound as f64, "{}: mean {mean}", p.name);
            assert!((var / want - 1.0).abs() < 0.05, "{}: variance {var} vs {want}", p.name);
        }
    }
    // The same seed gives the same model; another seed another one; parameters differ from
    // each other (per-parameter counter offsets).
    let same = build_model(&b, "cnn-small", [1, 28, 28], 10, 42).unwrap();
    let other = build_model(&b, "cnn-small", [1, 28, 28], 10, 43).unwrap();
    for i in 0..m.params().len() {
        let a = b.download_f32(&m.params()[i].tensor).unwrap();
        assert_eq!(a, b.download_f32(&same.params()[i].tensor).unwrap());
        assert_ne!(a, b.download_f32(&other.params()[i].tensor).unwrap());
    }
    let w0 = b.download_f32(&m.params()[1].tensor).unwrap();
    let w1 = b.download_f32(&m.params()[3].tensor).unwrap();
    assert_ne!(w0[..16], w1[..16]);
    // Element 0 of parameter 1 is Philox element 0 at counter offset 1 << 32.
    let p = RngParams::new(16, 42, 1 << 32, Dist::Uniform, -0.25, 0.25).unwrap();
    assert_eq!(w0[0], sample(&p, Dist::Uniform, 0));
}

#[test]
fn graph_forward_matches_inference_for_every_model() {
    let b = CpuBackend::new();
    for name in MODEL_NAMES {
        let m = build_model(&b, name, [1, 28, 28], 10, 7).unwrap();
        let x = seeded(&b, 8, &[3, 1, 28, 28]);
        let g = Graph::new(&b);
        let bound = m.bind(&g, true);
        let xv = g.input(&x, false);
        let logits = m.forward(&g, &bound, xv).unwrap();
        let a = b.download_f32(&g.value(logits).unwrap()).unwrap();
        let e = b.download_f32(&m.infer(&b, &x).unwrap()).unwrap();
        assert_close(&a, &e, Tolerance::EXACT);
        assert_eq!(g.shape(logits).unwrap().dims(), &[3, 10]);
        // A flat [n, 784] input is viewed as [n, 1, 28, 28].
        let flat = x.reshape([3, 784]).unwrap();
        let e2 = b.download_f32(&m.infer(&b, &flat).unwrap()).unwrap();
        assert_eq!(e, e2);
        // Predictions are the argmax of the logits.
        let pred = b.download_u32(&m.predict(&b, &x).unwrap()).unwrap();
        for (i, &p) in pred.iter().enumerate() {
            let row = &e[i * 10..i * 10 + 10];
            let best = row.iter().cloned().fold(f32::MIN, f32::max);
            assert_eq!(row[p as usize], best);
        }
    }
    let m = build_model(&b, "mlp", [1, 28, 28], 10, 7).unwrap();
    let e = m.infer(&b, &seeded(&b, 1, &[2, 1, 27, 28])).unwrap_err();
    assert!(e.to_string().contains("784"), "{e}");
}

#[test]
fn model_level_attack_and_training_gradients_run_the_right_kernels() {
    let b = CountingBackend::new(CpuBackend::new());
    let m = build_model(&b, "cnn-madry", [1, 28, 28], 10, 3).unwrap();
    let x = seeded(&b, 4, &[4, 1, 28, 28]);
    let labels = b.upload_u32(&[1, 2, 3, 4], &Shape::from([4])).unwrap();

    // Attack: d loss / d input only.
    let g = Graph::new(&b);
    let bound = m.bind(&g, false);
    let xv = g.input(&x, true);
    let loss = g.softmax_xent(m.forward(&g, &bound, xv).unwrap(), &labels, Reduction::Sum).unwrap().loss;
    b.reset();
    let grads = g.backward(loss).unwrap();
    for op in [Op::Conv2dBwdWeight, Op::LinearBwdWeight, Op::BiasGrad] {
        assert_eq!(b.op_count(op), 0, "{}: {:?}", op.name(), b.counts());
    }
    assert_eq!(b.op_count(Op::Conv2dBwdInput), 2);
    assert_eq!(b.op_count(Op::LinearBwdInput), 2);
    assert_eq!(grads.wrt(xv).unwrap().dims(), &[4, 1, 28, 28]);
    assert!(bound.grads(&grads).is_err(), "constants have no gradient");

    // Training: every weight gradient, and no input gradient of the first conv.
    let g = Graph::new(&b);
    let bound = m.bind(&g, true);
    let xv = g.input(&x, false);
    let loss = g.softmax_xent(m.forward(&g, &bound, xv).unwrap(), &labels, Reduction::Mean).unwrap().loss;
    b.reset();
    let grads = bound.grads(&g.backward(loss).unwrap()).unwrap();
    assert_eq!(b.op_count(Op::Conv2dBwdWeight), 2);
    assert_eq!(b.op_count(Op::LinearBwdWeight), 2);
    assert_eq!(b.op_count(Op::BiasGrad), 4);
    assert_eq!(b.op_count(Op::Conv2dBwdInput), 1, "the first conv's input gradient ran");
    assert_eq!(b.count("download_f32"), 0);
    for (gr, p) in grads.iter().zip(m.params()) {
        assert_eq!(gr.dims(), p.tensor.dims(), "{}", p.name);
    }
}

#[test]
fn model_layers_are_the_documented_architectures() {
    let l = model_layers("cnn-small", [1, 28, 28], 10).unwrap();
    assert_eq!(
        l,
        vec![
            Layer::conv2d(1, 16, 4, 2, 1),
            Layer::Relu,
            Layer::conv2d(16, 32, 4, 2, 1),
            Layer::Relu,
            Layer::Flatten,
            Layer::linear(32 * 7 * 7, 100),
            Layer::Relu,
            Layer::linear(100, 10),
        ]
    );
    let l = model_layers("mlp", [1, 28, 28], 10).unwrap();
    assert_eq!(l[0], Layer::Flatten);
    assert_eq!(l[1], Layer::linear(784, 256));
}

#[test]
fn infer_from_a_layer_continues_the_forward_pass() {
    let b = perturb_cpu::CpuBackend::new();
    let model = perturb_nn::build_model(&b, "cnn-small", [1, 28, 28], 10, 4).unwrap();
    let xs: Vec<f32> = (0..3 * 784).map(|i| ((i * 31) % 97) as f32 / 97.0).collect();
    let x = b.upload_f32(&xs, &perturb_core::Shape::from([3, 1, 28, 28])).unwrap();
    let full = b.download_f32(&model.infer(&b, &x).unwrap()).unwrap();
    assert_eq!(b.download_f32(&model.infer_from(&b, 0, &x).unwrap()).unwrap(), full);
    // The first two layers (conv, relu) by hand, then the rest from layer 2.
    let p = model.params();
    let cp = perturb_core::ops::Conv2dParams::new([3, 1, 28, 28], [16, 1, 4, 4], 2, 1).unwrap();
    let y = b.conv2d_fwd(&x, &p[0].tensor, &cp).unwrap();
    let y = b.bias_add(&y, &p[1].tensor, &perturb_core::ops::BiasParams::new(3, 16, 196).unwrap()).unwrap();
    let y = b.relu_fwd(&y).unwrap();
    assert_eq!(b.download_f32(&model.infer_from(&b, 2, &y).unwrap()).unwrap(), full);
    // Past the last layer: the input itself.
    let z = model.infer_from(&b, 99, &y).unwrap();
    assert_eq!(z.dims(), y.dims());
}
