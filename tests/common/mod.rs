//! Parity tests written once, generic over `B: Backend`, instantiated per backend with
//! [`parity_suite!`]: `parity_suite!(cpu, Some(perturb::cpu::CpuBackend::new()));` expands to
//! `mod cpu { #[test] fn conv2d_fwd() { .. } .. }`, one test per body below. A backend that
//! cannot run here makes `$make` evaluate to `None` (after printing one line saying why) and
//! its tests pass as skipped.
//!
//! Every body compares the backend's result, downloaded, with the f64 loops of the oracle [`naive`] (`perturb::core::naive`) using
//! `assert_close` and `Op::tolerance(reduction_len)`: |a - e| <= abs + rel |e| with, for the
//! reductions (conv, linear, bias_grad, sum_rows, maxpool backward), abs = 1e-5 sqrt(k) and
//! rel = 2e-5 sqrt(k) for a reduction of length k; 1e-6 (axpby, mul, bias_add, sgd), 1e-5 (adam,
//! L2 step, softmax xent), exact (relu, maxpool forward, argmax, sign and L-inf steps, uniform
//! and sign fills). [`tolerance_catches_wrong_kernels`] checks that these bounds reject a
//! transposed weight, a flipped kernel and an off-by-one pad. Inputs are seeded and awkward:
//! sizes that are not multiples of 16, padding, stride 2 and 3, batch 1, odd channel counts,
//! quantised values that make ties and exact zeros.
#![allow(dead_code)]

pub use perturb::core::naive;

use perturb::core::ops::{
    AdamParams, BiasParams, Conv2dParams, Dist, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use perturb::core::{Backend, DType, Op, Shape, Tensor, Tolerance, assert_close, rng};

/// The list of test bodies, in one place: the suite macro and [`BODY_NAMES`] both read it.
/// Bodies named after an op (`Op::name()`) are that op's parity test.
macro_rules! with_body_list {
    ($mac:ident ! ( $($args:tt)* )) => {
        $mac! { ($($args)*)
            conv2d_fwd conv2d_bwd_input conv2d_bwd_weight
            linear_fwd linear_bwd_input linear_bwd_weight
            bias_add bias_grad relu_fwd relu_bwd maxpool2d_fwd maxpool2d_bwd
            softmax_xent axpby mul sum_rows argmax_rows
            sign_step step_project_linf step_project_l2
            sgd_update adam_update rng_fill
            memory_ops aliases_share_memory shape_errors_are_err xent_bad_label_is_err
        }
    };
}

/// `parity_suite!(suite_name, make_expr)`: one `#[test]` per body, for the backend that
/// `make_expr: Option<B>` builds (`None` = skipped).
macro_rules! parity_suite {
    ($suite:ident, $make:expr) => {
        with_body_list!(parity_suite_impl!($suite, $make));
    };
}

macro_rules! parity_suite_impl {
    (($suite:ident, $make:expr) $($body:ident)*) => {
        mod $suite {
            $(
                #[test]
                fn $body() {
                    if let Some(b) = $make {
                        crate::common::$body(&b)
                    }
                }
            )*
        }
    };
}

macro_rules! body_names {
    (() $($body:ident)*) => {
        /// Names of every test body the suite macro instantiates.
        pub const BODY_NAMES: &[&str] = &[$(stringify!($body)),*];
    };
}
with_body_list!(body_names!());

/// Bodies that test something other than one op (memory, aliasing, error paths).
pub const NON_OP_BODIES: &[&str] =
    &["memory_ops", "aliases_share_memory", "shape_errors_are_err", "xent_bad_label_is_err"];

/// The ops of `Op::ALL` that have no body named `op.name()` in `bodies`, and the bodies that
/// name neither an op nor one of [`NON_OP_BODIES`] (a typo would leave an op untested).
pub fn coverage_gaps(bodies: &[&str]) -> (Vec<Op>, Vec<String>) {
    let missing = Op::ALL.iter().copied().filter(|op| !bodies.contains(&op.name())).collect();
    let stray = bodies
        .iter()
        .filter(|b| !Op::ALL.iter().any(|op| op.name() == **b) && !NON_OP_BODIES.contains(b))
        .map(|b| b.to_string())
        .collect();
    (missing, stray)
}

/// The coverage test: every op in `Op::ALL` has a parity body of its name in the list the
/// suite macro instantiates, and every body is an op's or a listed non-op body. Also checks
/// that the check itself notices a dropped body and a misnamed one.
pub fn check_coverage() {
    let (missing, stray) = coverage_gaps(BODY_NAMES);
    assert!(missing.is_empty(), "ops without a parity body (add one named op.name() to with_body_list!): {missing:?}");
    assert!(stray.is_empty(), "bodies that name no op: {stray:?}");
    let without_mul: Vec<&str> = BODY_NAMES.iter().copied().filter(|b| *b != "mul").collect();
    assert_eq!(coverage_gaps(&without_mul).0, vec![Op::Mul]);
    let misnamed: Vec<&str> = BODY_NAMES.iter().map(|b| if *b == "sign_step" { "sign_step_" } else { b }).collect();
    assert_eq!(coverage_gaps(&misnamed), (vec![Op::SignStep], vec!["sign_step_".to_string()]));
}

/// For a suite's `make_expr`: `Some(backend)`, or `None` after printing one line saying why
/// it is skipped; when the environment variable `require_env` (`PERTURB_REQUIRE_WGPU`,
/// `PERTURB_REQUIRE_CUDA`) is `1`, a missing backend fails the test instead.
/// `parity_suite!(wgpu, common::available("wgpu", "PERTURB_REQUIRE_WGPU", WgpuBackend::new()));`
pub fn available<B, E: std::fmt::Display>(name: &str, require_env: &str, made: Result<B, E>) -> Option<B> {
    match made {
        Ok(b) => Some(b),
        Err(e) if std::env::var(require_env).is_ok_and(|v| v == "1") => {
            panic!("{name} backend required ({require_env}=1) but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {name} backend unavailable: {e}");
            None
        }
    }
}

// ---- inputs --------------------------------------------------------------------------------

/// `len` seeded uniform values in [lo, hi) from the Philox stream.
pub fn data(seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    let p = RngParams::new(len, seed, 0, Dist::Uniform, lo, hi).unwrap();
    (0..len).map(|i| rng::sample(&p, Dist::Uniform, i as u64)).collect()
}

/// Multiples of 1/4 in [-2, 2]: ties for max/argmax, exact zeros for relu and sign.
pub fn ties(seed: u64, len: usize) -> Vec<f32> {
    data(seed, len, -2.0, 2.0).into_iter().map(|v| (v * 4.0).round() / 4.0).collect()
}

pub fn up<B: Backend>(b: &B, v: &[f32], dims: &[usize]) -> Tensor<B> {
    b.upload_f32(v, &Shape::from(dims)).unwrap()
}

pub fn down<B: Backend>(b: &B, t: &Tensor<B>) -> Vec<f32> {
    b.download_f32(t).unwrap()
}

fn numel(d: &[usize]) -> usize {
    d.iter().product()
}

/// (input, weight, stride, pad): padding, stride 2 and 3, batch 1, non-square kernels,
/// a 1x1 kernel, batches large enough for several weight-gradient chunks.
pub const CONV_CASES: &[([usize; 4], [usize; 4], usize, usize)] = &[
    ([2, 3, 11, 13], [5, 3, 3, 3], 1, 1),
    ([1, 4, 9, 10], [6, 4, 4, 3], 2, 1),
    ([3, 7, 17, 15], [9, 7, 5, 5], 2, 2),
    ([5, 6, 8, 9], [4, 6, 1, 1], 1, 0),
    ([9, 2, 12, 12], [3, 2, 3, 3], 1, 0),
    ([17, 3, 6, 7], [4, 3, 3, 2], 1, 1),
    ([2, 3, 5, 6], [4, 3, 3, 3], 3, 2),
    ([1, 1, 28, 28], [16, 1, 4, 4], 2, 1),
];

// ---- convolution ---------------------------------------------------------------------------

pub fn conv2d_fwd<B: Backend>(b: &B) {
    for (i, &(xd, wd, s, pad)) in CONV_CASES.iter().enumerate() {
        let p = Conv2dParams::new(xd, wd, s, pad).unwrap();
        let x = data(100 + i as u64, numel(&xd), -1.0, 1.0);
        let w = data(200 + i as u64, numel(&wd), -1.0, 1.0);
        let y = b.conv2d_fwd(&up(b, &x, &xd), &up(b, &w, &wd), &p).unwrap();
        assert_eq!(y.dims(), p.output_dims());
        assert_close(&down(b, &y), &naive::conv2d_fwd(&x, &w, &p), Op::Conv2dFwd.tolerance(p.patch_len()));
    }
}

pub fn conv2d_bwd_input<B: Backend>(b: &B) {
    for (i, &(xd, wd, s, pad)) in CONV_CASES.iter().enumerate() {
        let p = Conv2dParams::new(xd, wd, s, pad).unwrap();
        let yd = p.output_dims();
        let dy = data(300 + i as u64, numel(&yd), -1.0, 1.0);
        let w = data(400 + i as u64, numel(&wd), -1.0, 1.0);
        let dx = b.conv2d_bwd_input(&up(b, &dy, &yd), &up(b, &w, &wd), &p).unwrap();
        assert_eq!(dx.dims(), xd);
        let k = wd[0] * wd[2] * wd[3];
        assert_close(&down(b, &dx), &naive::conv2d_bwd_input(&dy, &w, &p), Op::Conv2dBwdInput.tolerance(k));
    }
}

pub fn conv2d_bwd_weight<B: Backend>(b: &B) {
    for (i, &(xd, wd, s, pad)) in CONV_CASES.iter().enumerate() {
        let p = Conv2dParams::new(xd, wd, s, pad).unwrap();
        let yd = p.output_dims();
        let x = data(500 + i as u64, numel(&xd), -1.0, 1.0);
        let dy = data(600 + i as u64, numel(&yd), -1.0, 1.0);
        let dw = b.conv2d_bwd_weight(&up(b, &x, &xd), &up(b, &dy, &yd), &p).unwrap();
        assert_eq!(dw.dims(), wd);
        let k = yd[0] * yd[2] * yd[3];
        assert_close(&down(b, &dw), &naive::conv2d_bwd_weight(&x, &dy, &p), Op::Conv2dBwdWeight.tolerance(k));
    }
}

// ---- linear --------------------------------------------------------------------------------

/// (m, k, n): batch 1, odd sizes, batches spanning several weight-gradient chunks.
pub const LINEAR_CASES: &[(usize, usize, usize)] = &[(1, 5, 3), (7, 33, 17), (300, 20, 9), (1030, 7, 3), (64, 100, 10)];

pub fn linear_fwd<B: Backend>(b: &B) {
    for (i, &(m, k, n)) in LINEAR_CASES.iter().enumerate() {
        let p = LinearParams::new(m, k, n).unwrap();
        let x = data(700 + i as u64, m * k, -1.0, 1.0);
        let w = data(800 + i as u64, n * k, -1.0, 1.0);
        let y = b.linear_fwd(&up(b, &x, &[m, k]), &up(b, &w, &[n, k]), &p).unwrap();
        assert_eq!(y.dims(), [m, n]);
        assert_close(&down(b, &y), &naive::linear_fwd(&x, &w, &p), Op::LinearFwd.tolerance(k));
    }
}

pub fn linear_bwd_input<B: Backend>(b: &B) {
    for (i, &(m, k, n)) in LINEAR_CASES.iter().enumerate() {
        let p = LinearParams::new(m, k, n).unwrap();
        let dy = data(900 + i as u64, m * n, -1.0, 1.0);
        let w = data(1000 + i as u64, n * k, -1.0, 1.0);
        let dx = b.linear_bwd_input(&up(b, &dy, &[m, n]), &up(b, &w, &[n, k]), &p).unwrap();
        assert_eq!(dx.dims(), [m, k]);
        assert_close(&down(b, &dx), &naive::linear_bwd_input(&dy, &w, &p), Op::LinearBwdInput.tolerance(n));
    }
}

pub fn linear_bwd_weight<B: Backend>(b: &B) {
    for (i, &(m, k, n)) in LINEAR_CASES.iter().enumerate() {
        let p = LinearParams::new(m, k, n).unwrap();
        let x = data(1100 + i as u64, m * k, -1.0, 1.0);
        let dy = data(1200 + i as u64, m * n, -1.0, 1.0);
        let dw = b.linear_bwd_weight(&up(b, &x, &[m, k]), &up(b, &dy, &[m, n]), &p).unwrap();
        assert_eq!(dw.dims(), [n, k]);
        assert_close(&down(b, &dw), &naive::linear_bwd_weight(&x, &dy, &p), Op::LinearBwdWeight.tolerance(m));
    }
}

// ---- bias, activations, pooling ------------------------------------------------------------

/// (outer, channels, inner).
pub const BIAS_CASES: &[(usize, usize, usize)] = &[(3, 5, 7), (1, 4, 1), (20, 3, 11), (70, 2, 5), (2, 16, 576)];

pub fn bias_add<B: Backend>(b: &B) {
    for (i, &(o, c, n)) in BIAS_CASES.iter().enumerate() {
        let p = BiasParams::new(o, c, n).unwrap();
        let y = data(1300 + i as u64, o * c * n, -1.0, 1.0);
        let bias = data(1400 + i as u64, c, -1.0, 1.0);
        let out = b.bias_add(&up(b, &y, &[o, c, n]), &up(b, &bias, &[c]), &p).unwrap();
        assert_eq!(out.dims(), [o, c, n]);
        assert_close(&down(b, &out), &naive::bias_add(&y, &bias, &p), Op::BiasAdd.tolerance(1));
    }
}

pub fn bias_grad<B: Backend>(b: &B) {
    for (i, &(o, c, n)) in BIAS_CASES.iter().enumerate() {
        let p = BiasParams::new(o, c, n).unwrap();
        let dy = data(1500 + i as u64, o * c * n, -1.0, 1.0);
        let db = b.bias_grad(&up(b, &dy, &[o, c, n]), &p).unwrap();
        assert_eq!(db.dims(), [c]);
        assert_close(&down(b, &db), &naive::bias_grad(&dy, &p), Op::BiasGrad.tolerance(o * n));
    }
}

pub const ELT_LENS: &[usize] = &[1, 37, 1000, 70_001];

pub fn relu_fwd<B: Backend>(b: &B) {
    for (i, &n) in ELT_LENS.iter().enumerate() {
        let x = ties(1600 + i as u64, n);
        let y = b.relu_fwd(&up(b, &x, &[n])).unwrap();
        assert_close(&down(b, &y), &naive::relu_fwd(&x), Op::ReluFwd.tolerance(1));
    }
    // Shape is kept.
    let y = b.relu_fwd(&up(b, &ties(1, 30), &[2, 3, 5])).unwrap();
    assert_eq!(y.dims(), [2, 3, 5]);
}

pub fn relu_bwd<B: Backend>(b: &B) {
    for (i, &n) in ELT_LENS.iter().enumerate() {
        let x = ties(1700 + i as u64, n);
        let dy = data(1800 + i as u64, n, -1.0, 1.0);
        let dx = b.relu_bwd(&up(b, &dy, &[n]), &up(b, &x, &[n])).unwrap();
        assert_close(&down(b, &dx), &naive::relu_bwd(&dy, &x), Op::ReluBwd.tolerance(1));
    }
}

/// (input, window, stride): non-overlapping, overlapping, stride 1, gaps between windows.
pub const POOL_CASES: &[([usize; 4], usize, usize)] =
    &[([2, 3, 9, 9], 2, 2), ([1, 2, 7, 8], 3, 2), ([2, 1, 6, 5], 3, 1), ([3, 2, 11, 10], 2, 3), ([1, 1, 4, 4], 4, 1)];

pub fn maxpool2d_fwd<B: Backend>(b: &B) {
    for (i, &(xd, k, s)) in POOL_CASES.iter().enumerate() {
        let p = Pool2dParams::new(xd, k, s).unwrap();
        let x = ties(1900 + i as u64, numel(&xd));
        let y = b.maxpool2d_fwd(&up(b, &x, &xd), &p).unwrap();
        assert_eq!(y.dims(), p.output_dims());
        assert_close(&down(b, &y), &naive::maxpool2d_fwd(&x, &p), Op::MaxPool2dFwd.tolerance(k * k));
    }
}

pub fn maxpool2d_bwd<B: Backend>(b: &B) {
    for (i, &(xd, k, s)) in POOL_CASES.iter().enumerate() {
        let p = Pool2dParams::new(xd, k, s).unwrap();
        // Quantised x: many ties, so the first-maximum rule is exercised.
        let x = ties(2000 + i as u64, numel(&xd));
        let yd = p.output_dims();
        let dy = data(2100 + i as u64, numel(&yd), -1.0, 1.0);
        let dx = b.maxpool2d_bwd(&up(b, &dy, &yd), &up(b, &x, &xd), &p).unwrap();
        assert_eq!(dx.dims(), xd);
        let overlap = k.div_ceil(s).pow(2);
        assert_close(&down(b, &dx), &naive::maxpool2d_bwd(&dy, &x, &p), Op::MaxPool2dBwd.tolerance(overlap));
    }
}

// ---- loss ----------------------------------------------------------------------------------

pub fn softmax_xent<B: Backend>(b: &B) {
    // (n, classes, logit range): large logits check the max-subtraction.
    for (i, &(n, c, r)) in [(1usize, 10usize, 3.0f32), (17, 10, 5.0), (5, 1000, 2.0), (33, 7, 60.0)].iter().enumerate()
    {
        let z = data(2200 + i as u64, n * c, -r, r);
        let labels: Vec<u32> =
            data(2300 + i as u64, n, 0.0, c as f32).iter().map(|&v| (v as u32).min(c as u32 - 1)).collect();
        let p = XentParams::new(n, c, 1.0 / n as f32).unwrap();
        let lt = b.upload_u32(&labels, &Shape::from([n])).unwrap();
        let (loss, dz) = b.softmax_xent(&up(b, &z, &[n, c]), &lt, &p).unwrap();
        assert_eq!(loss.dims(), [n]);
        assert_eq!(dz.dims(), [n, c]);
        let (el, ed) = naive::softmax_xent(&z, &labels, &p);
        let tol = Op::SoftmaxXent.tolerance(c);
        assert_close(&down(b, &loss), &el, tol);
        assert_close(&down(b, &dz), &ed, tol);
    }
}

pub fn xent_bad_label_is_err<B: Backend>(b: &B) {
    let z = up(b, &data(1, 12, -1.0, 1.0), &[3, 4]);
    let lt = b.upload_u32(&[0, 4, 1], &Shape::from([3])).unwrap();
    let err =
        b.softmax_xent(&z, &lt, &XentParams::new(3, 4, 1.0).unwrap()).expect_err("label 4 of 4 classes must fail");
    let msg = err.to_string();
    assert!(msg.contains('4') && msg.contains('1'), "error should name the label and its index: {msg}");
}

// ---- elementwise and reductions ------------------------------------------------------------

pub fn axpby<B: Backend>(b: &B) {
    for (i, &n) in ELT_LENS.iter().enumerate() {
        let x = data(2400 + i as u64, n, -1.0, 1.0);
        let y = data(2500 + i as u64, n, -1.0, 1.0);
        let p = EltParams::new(n, 0.75, -1.5).unwrap();
        let out = b.axpby(&up(b, &x, &[n]), &up(b, &y, &[n]), &p).unwrap();
        assert_close(&down(b, &out), &naive::axpby(&x, &y, &p), Op::Axpby.tolerance(1));
    }
}

pub fn mul<B: Backend>(b: &B) {
    for (i, &n) in ELT_LENS.iter().enumerate() {
        let x = data(2600 + i as u64, n, -2.0, 2.0);
        let y = data(2700 + i as u64, n, -2.0, 2.0);
        let out = b.mul(&up(b, &x, &[n]), &up(b, &y, &[n])).unwrap();
        assert_close(&down(b, &out), &naive::mul(&x, &y), Op::Mul.tolerance(1));
    }
}

pub const ROW_CASES: &[(usize, usize)] = &[(1, 1), (5, 3), (300, 70), (2, 9000), (1, 100_003), (64, 10)];

pub fn sum_rows<B: Backend>(b: &B) {
    for (i, &(r, c)) in ROW_CASES.iter().enumerate() {
        let x = data(2800 + i as u64, r * c, -1.0, 1.0);
        let p = RowParams::new(r, c).unwrap();
        let out = b.sum_rows(&up(b, &x, &[r, c]), &p).unwrap();
        assert_eq!(out.dims(), [r]);
        assert_close(&down(b, &out), &naive::sum_rows(&x, &p), Op::SumRows.tolerance(c));
    }
}

pub fn argmax_rows<B: Backend>(b: &B) {
    for (i, &(r, c)) in ROW_CASES.iter().enumerate() {
        let x = ties(2900 + i as u64, r * c);
        let p = RowParams::new(r, c).unwrap();
        let out = b.argmax_rows(&up(b, &x, &[r, c]), &p).unwrap();
        assert_eq!(out.dtype(), DType::U32);
        assert_eq!(b.download_u32(&out).unwrap(), naive::argmax_rows(&x, &p), "argmax {r}x{c}");
    }
}

// ---- attack steps --------------------------------------------------------------------------

/// (n, d): batch 1, odd feature counts, one example large enough for several chunks.
pub const STEP_CASES: &[(usize, usize)] = &[(1, 37), (4, 300), (3, 784), (2, 40_000)];

fn step_inputs(seed: u64, n: usize, d: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x0 = data(seed, n * d, 0.0, 1.0);
    let x: Vec<f32> = x0.iter().zip(data(seed + 1, n * d, -0.05, 0.05)).map(|(a, b)| a + b).collect();
    let g = ties(seed + 2, n * d);
    (x, g, x0)
}

pub fn sign_step<B: Backend>(b: &B) {
    for (i, &(n, d)) in STEP_CASES.iter().enumerate() {
        let (x, g, _) = step_inputs(3000 + 10 * i as u64, n, d);
        let p = StepParams::new(n, d, 0.03, 0.0, 0.0, 1.0).unwrap();
        let xt = up(b, &x, &[n, d]);
        b.sign_step_(&xt, &up(b, &g, &[n, d]), &p).unwrap();
        assert_close(&down(b, &xt), &naive::sign_step(&x, &g, &p), Op::SignStep.tolerance(1));
    }
}

pub fn step_project_linf<B: Backend>(b: &B) {
    for (i, &(n, d)) in STEP_CASES.iter().enumerate() {
        let (x, g, x0) = step_inputs(3100 + 10 * i as u64, n, d);
        let p = StepParams::new(n, d, 0.02, 0.03, 0.0, 1.0).unwrap();
        let xt = up(b, &x, &[n, d]);
        b.step_project_linf_(&xt, &up(b, &g, &[n, d]), &up(b, &x0, &[n, d]), &p).unwrap();
        assert_close(&down(b, &xt), &naive::step_project_linf(&x, &g, &x0, &p), Op::StepProjectLinf.tolerance(1));
    }
}

pub fn step_project_l2<B: Backend>(b: &B) {
    for (i, &(n, d)) in STEP_CASES.iter().enumerate() {
        let (x, mut g, x0) = step_inputs(3200 + 10 * i as u64, n, d);
        if n > 1 {
            // A zero gradient: that example takes no step (but is still projected and clipped).
            g[..d].fill(0.0);
        }
        // eps between the norms of the examples' offsets, so some are projected and some not.
        for eps in [0.1f32, 2.0] {
            let p = StepParams::new(n, d, 0.5, eps, 0.0, 1.0).unwrap();
            let xt = up(b, &x, &[n, d]);
            b.step_project_l2_(&xt, &up(b, &g, &[n, d]), &up(b, &x0, &[n, d]), &p).unwrap();
            assert_close(&down(b, &xt), &naive::step_project_l2(&x, &g, &x0, &p), Op::StepProjectL2.tolerance(d));
        }
    }
}

// ---- optimisers ----------------------------------------------------------------------------

pub fn sgd_update<B: Backend>(b: &B) {
    for (i, &n) in ELT_LENS.iter().enumerate() {
        for (j, (mom, wd, nest)) in
            [(0.9f32, 5e-4f32, false), (0.9, 0.0, true), (0.0, 1e-2, false)].into_iter().enumerate()
        {
            let seed = 3300 + 10 * i as u64 + j as u64;
            let (w, g, m) = (data(seed, n, -1.0, 1.0), data(seed + 100, n, -1.0, 1.0), data(seed + 200, n, -0.5, 0.5));
            let p = SgdParams::new(n, 0.05, mom, wd, nest).unwrap();
            let (wt, mt) = (up(b, &w, &[n]), up(b, &m, &[n]));
            b.sgd_update_(&wt, &up(b, &g, &[n]), &mt, &p).unwrap();
            let (ew, em) = naive::sgd(&w, &g, &m, &p);
            assert_close(&down(b, &wt), &ew, Op::SgdUpdate.tolerance(1));
            assert_close(&down(b, &mt), &em, Op::SgdUpdate.tolerance(1));
        }
    }
}

pub fn adam_update<B: Backend>(b: &B) {
    for (i, &n) in ELT_LENS.iter().enumerate() {
        for (j, (wd, step, decoupled)) in
            [(0.0f32, 1u64, false), (1e-2, 5, false), (1e-2, 3, true)].into_iter().enumerate()
        {
            let seed = 3600 + 10 * i as u64 + j as u64;
            let w = data(seed, n, -1.0, 1.0);
            let g = data(seed + 100, n, -1.0, 1.0);
            let m = data(seed + 200, n, -0.1, 0.1);
            let v = data(seed + 300, n, 0.0, 0.01);
            let p = AdamParams::new(n, 1e-3, 0.9, 0.999, 1e-8, wd, step, decoupled).unwrap();
            let (wt, mt, vt) = (up(b, &w, &[n]), up(b, &m, &[n]), up(b, &v, &[n]));
            b.adam_update_(&wt, &up(b, &g, &[n]), &mt, &vt, &p).unwrap();
            let (ew, em, ev) = naive::adam(&w, &g, &m, &v, &p);
            let tol = Op::AdamUpdate.tolerance(1);
            assert_close(&down(b, &wt), &ew, tol);
            assert_close(&down(b, &mt), &em, tol);
            assert_close(&down(b, &vt), &ev, tol);
        }
    }
}

// ---- random numbers ------------------------------------------------------------------------

pub fn rng_fill<B: Backend>(b: &B) {
    for &(len, seed, offset) in &[(1usize, 1u64, 0u64), (1001, 42, 7), (70_001, 0xDEAD_BEEF_0123, 1 << 33)] {
        for (dist, a, bb) in [(Dist::Uniform, -1.0f32, 3.0f32), (Dist::Sign, 0.25, 0.0), (Dist::Normal, 0.5, 2.0)] {
            let p = RngParams::new(len, seed, offset, dist, a, bb).unwrap();
            let t = b.zeros(&Shape::from([len]), DType::F32).unwrap();
            b.rng_fill_(&t, &p).unwrap();
            let expect: Vec<f32> = (0..len as u64).map(|i| rng::sample(&p, dist, i)).collect();
            let tol = if dist == Dist::Normal { Op::RngFill.tolerance(1) } else { Tolerance::EXACT };
            assert_close(&down(b, &t), &expect, tol);
        }
    }
}

// ---- memory, aliasing, errors --------------------------------------------------------------

pub fn memory_ops<B: Backend>(b: &B) {
    let v = data(1, 60, -1.0, 1.0);
    let t = up(b, &v, &[3, 4, 5]);
    assert_eq!(down(b, &t), v);
    let z = b.zeros(&Shape::from([3, 4, 5]), DType::F32).unwrap();
    assert!(down(b, &z).iter().all(|&x| x == 0.0));
    b.copy_(&z, &t).unwrap();
    assert_eq!(down(b, &z), v);
    b.fill_(&z, 0.5).unwrap();
    assert!(down(b, &z).iter().all(|&x| x == 0.5));
    let d = b.duplicate(&t).unwrap();
    b.fill_(&t, -1.0).unwrap();
    assert_eq!(down(b, &d), v, "duplicate must be a deep copy");
    let u = b.upload_u32(&[3, 1, 4, 1, 5], &Shape::from([5])).unwrap();
    assert_eq!(b.download_u32(&u).unwrap(), [3, 1, 4, 1, 5]);
    assert!(b.upload_f32(&v, &Shape::from([7, 7])).is_err(), "60 values for a 49-element shape");
    assert!(b.copy_(&z, &up(b, &v[..30], &[30])).is_err(), "copy between different sizes");
    b.synchronize().unwrap();
}

/// Clones and reshapes alias: an in-place op through one handle is seen through the others.
pub fn aliases_share_memory<B: Backend>(b: &B) {
    let n = 24;
    let x = up(b, &vec![0.5f32; n], &[2, 12]);
    let view = x.reshape([4, 6]).unwrap();
    let alias = x.clone();
    let g = up(b, &ties(7, n), &[2, 12]);
    b.sign_step_(&view, &g.reshape([4, 6]).unwrap(), &StepParams::new(4, 6, 0.25, 0.0, 0.0, 1.0).unwrap()).unwrap();
    let expect = naive::sign_step(&vec![0.5f32; n], &down(b, &g), &StepParams::new(4, 6, 0.25, 0.0, 0.0, 1.0).unwrap());
    assert_eq!(down(b, &alias), expect);
    assert_eq!(down(b, &x), expect);
    b.fill_(&alias, 0.0).unwrap();
    assert!(down(b, &view).iter().all(|&v| v == 0.0));
}

/// Mismatched shapes are Err with the shapes in the message, never a panic.
pub fn shape_errors_are_err<B: Backend>(b: &B) {
    let p = Conv2dParams::new([2, 3, 8, 8], [4, 3, 3, 3], 1, 1).unwrap();
    let x = up(b, &data(1, 2 * 3 * 8 * 8, -1.0, 1.0), &[2, 3, 8, 8]);
    let w = up(b, &data(2, 4 * 3 * 9, -1.0, 1.0), &[4, 3, 3, 3]);
    let bad_x = up(b, &data(1, 2 * 3 * 8 * 7, -1.0, 1.0), &[2, 3, 8, 7]);
    let bad_w = up(b, &data(2, 4 * 3 * 9, -1.0, 1.0), &[3, 4, 3, 3]);
    let msg = b.conv2d_fwd(&bad_x, &w, &p).expect_err("conv2d_fwd with a wrong input").to_string();
    assert!(msg.contains("[2, 3, 8, 7]"), "message should name the shape: {msg}");
    assert!(b.conv2d_fwd(&x, &bad_w, &p).is_err());
    let y = b.conv2d_fwd(&x, &w, &p).unwrap();
    assert!(b.conv2d_bwd_input(&x, &w, &p).is_err(), "dy with the input's shape");
    assert!(b.conv2d_bwd_weight(&x, &w, &p).is_err(), "dy with the weight's shape");
    assert!(b.conv2d_bwd_weight(&x, &y, &p).is_ok());
    // A hand-made params struct whose output size does not follow from the geometry.
    let mut forged = p;
    forged.h_out += 1;
    assert!(b.conv2d_fwd(&x, &w, &forged).is_err(), "inconsistent Conv2dParams");

    let lp = LinearParams::new(4, 5, 3).unwrap();
    let lx = up(b, &data(3, 20, -1.0, 1.0), &[4, 5]);
    let lw_t = up(b, &data(4, 15, -1.0, 1.0), &[5, 3]);
    let msg = b.linear_fwd(&lx, &lw_t, &lp).expect_err("transposed linear weight").to_string();
    assert!(msg.contains("[5, 3]"), "{msg}");
    assert!(b.linear_bwd_input(&lx, &lw_t, &lp).is_err());
    assert!(b.linear_bwd_weight(&lx, &lx, &lp).is_err());

    let e = EltParams::new(20, 1.0, 1.0).unwrap();
    let short = up(b, &data(5, 19, -1.0, 1.0), &[19]);
    assert!(b.axpby(&lx, &short, &e).is_err());
    assert!(b.mul(&lx, &short).is_err());
    assert!(b.relu_bwd(&lx, &short).is_err());
    assert!(b.bias_add(&lx, &short, &BiasParams::new(4, 5, 1).unwrap()).is_err());
    assert!(b.bias_grad(&short, &BiasParams::new(4, 5, 1).unwrap()).is_err());
    assert!(b.sum_rows(&short, &RowParams::new(4, 5).unwrap()).is_err());
    assert!(b.argmax_rows(&short, &RowParams::new(4, 5).unwrap()).is_err());

    let pp = Pool2dParams::new([2, 3, 8, 8], 2, 2).unwrap();
    assert!(b.maxpool2d_fwd(&bad_x, &pp).is_err());
    let py = b.maxpool2d_fwd(&x, &pp).unwrap();
    assert!(b.maxpool2d_bwd(&x, &x, &pp).is_err(), "dy with the input's shape");
    assert!(b.maxpool2d_bwd(&py, &bad_x, &pp).is_err());

    let sp = StepParams::new(4, 5, 0.1, 0.1, 0.0, 1.0).unwrap();
    assert!(b.sign_step_(&lx, &short, &sp).is_err());
    assert!(b.step_project_linf_(&lx, &lx, &short, &sp).is_err());
    assert!(b.step_project_l2_(&lx, &short, &lx, &sp).is_err());
    assert!(b.sgd_update_(&lx, &lx, &short, &SgdParams::new(20, 0.1, 0.9, 0.0, false).unwrap()).is_err());
    let ap = AdamParams::new(20, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, false).unwrap();
    assert!(b.adam_update_(&lx, &short, &lx, &lx, &ap).is_err());
    assert!(b.rng_fill_(&short, &RngParams::new(20, 1, 0, Dist::Uniform, 0.0, 1.0).unwrap()).is_err());

    let z = up(b, &data(6, 12, -1.0, 1.0), &[3, 4]);
    let labels = b.upload_u32(&[0, 1], &Shape::from([2])).unwrap();
    assert!(b.softmax_xent(&z, &labels, &XentParams::new(3, 4, 1.0).unwrap()).is_err(), "2 labels for 3 rows");
    let f_labels = up(b, &[0.0, 1.0, 2.0], &[3]);
    assert!(b.softmax_xent(&z, &f_labels, &XentParams::new(3, 4, 1.0).unwrap()).is_err(), "f32 labels");
}

// ---- checks of the checks and of determinism -----------------------------------------------

/// The conv and linear tolerances reject the classic wrong kernels: a transposed weight, a
/// flipped kernel (convolution instead of cross-correlation) and an input shifted by one pixel
/// (an off-by-one pad).
pub fn tolerance_catches_wrong_kernels() {
    use perturb::core::check_close;
    let (xd, wd) = ([2, 4, 9, 11], [4, 4, 3, 3]);
    let p = Conv2dParams::new(xd, wd, 1, 1).unwrap();
    let x = data(1, numel(&xd), -1.0, 1.0);
    let w = data(2, numel(&wd), -1.0, 1.0);
    let right = naive::conv2d_fwd(&x, &w, &p);
    let tol = Op::Conv2dFwd.tolerance(p.patch_len());
    let mut transposed = w.clone();
    let mut flipped = w.clone();
    for co in 0..4 {
        for ci in 0..4 {
            for t in 0..9 {
                transposed[(co * 4 + ci) * 9 + t] = w[(ci * 4 + co) * 9 + t];
                flipped[(co * 4 + ci) * 9 + t] = w[(co * 4 + ci) * 9 + 8 - t];
            }
        }
    }
    let mut shifted = vec![0.0f32; x.len()];
    for (row, src) in shifted.chunks_mut(11).zip(x.chunks(11)) {
        row[1..].copy_from_slice(&src[..10]);
    }
    for (what, wrong) in [
        ("transposed weight", naive::conv2d_fwd(&x, &transposed, &p)),
        ("flipped kernel", naive::conv2d_fwd(&x, &flipped, &p)),
        ("off-by-one pad", naive::conv2d_fwd(&shifted, &w, &p)),
    ] {
        assert!(check_close(&wrong, &right, tol).is_err(), "tolerance {tol:?} accepts a {what}");
    }
    // A wrong kernel that is right almost everywhere: one output element off by 1e-3.
    let mut nudged = right.clone();
    nudged[17] += 1e-3 * (1.0 + nudged[17].abs());
    assert!(check_close(&nudged, &right, tol).is_err(), "tolerance {tol:?} accepts a 1e-3 relative error");
    let (m, k) = (6, 6);
    let lx = data(3, m * k, -1.0, 1.0);
    let lw = data(4, k * k, -1.0, 1.0);
    let lwt: Vec<f32> = (0..k * k).map(|i| lw[(i % k) * k + i / k]).collect();
    let lp = LinearParams::new(m, k, k).unwrap();
    let (wrong, right) = (naive::linear_fwd(&lx, &lwt, &lp), naive::linear_fwd(&lx, &lw, &lp));
    assert!(check_close(&wrong, &right, Op::LinearFwd.tolerance(k)).is_err(), "tolerance accepts a transposed weight");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs every batch reduction on two backends (the CPU with 1 and with 2 threads) and asserts
/// bit-identical results.
pub fn deterministic_across<A: Backend, B: Backend>(a: &A, b: &B) {
    fn runs<B: Backend>(b: &B) -> Vec<(String, Vec<f32>)> {
        let mut out = Vec::new();
        for (i, &(xd, wd, s, pad)) in CONV_CASES.iter().chain(&[([37, 8, 14, 13], [16, 8, 3, 3], 1, 1)]).enumerate() {
            let p = Conv2dParams::new(xd, wd, s, pad).unwrap();
            let yd = p.output_dims();
            let x = up(b, &data(10 + i as u64, numel(&xd), -1.0, 1.0), &xd);
            let w = up(b, &data(20 + i as u64, numel(&wd), -1.0, 1.0), &wd);
            let dy = up(b, &data(30 + i as u64, numel(&yd), -1.0, 1.0), &yd);
            out.push((format!("conv2d_fwd {xd:?}"), down(b, &b.conv2d_fwd(&x, &w, &p).unwrap())));
            out.push((format!("conv2d_bwd_input {xd:?}"), down(b, &b.conv2d_bwd_input(&dy, &w, &p).unwrap())));
            out.push((format!("conv2d_bwd_weight {xd:?}"), down(b, &b.conv2d_bwd_weight(&x, &dy, &p).unwrap())));
        }
        for (i, &(m, k, n)) in LINEAR_CASES.iter().chain(&[(3000, 33, 17)]).enumerate() {
            let p = LinearParams::new(m, k, n).unwrap();
            let x = up(b, &data(40 + i as u64, m * k, -1.0, 1.0), &[m, k]);
            let dy = up(b, &data(50 + i as u64, m * n, -1.0, 1.0), &[m, n]);
            out.push((format!("linear_bwd_weight {m}x{k}x{n}"), down(b, &b.linear_bwd_weight(&x, &dy, &p).unwrap())));
        }
        for (i, &(o, c, n)) in BIAS_CASES.iter().chain(&[(129, 7, 100)]).enumerate() {
            let p = BiasParams::new(o, c, n).unwrap();
            let dy = up(b, &data(60 + i as u64, o * c * n, -1.0, 1.0), &[o, c, n]);
            out.push((format!("bias_grad {o}x{c}x{n}"), down(b, &b.bias_grad(&dy, &p).unwrap())));
        }
        for (i, &(r, c)) in ROW_CASES.iter().enumerate() {
            let x = up(b, &data(70 + i as u64, r * c, -1.0, 1.0), &[r, c]);
            out.push((format!("sum_rows {r}x{c}"), down(b, &b.sum_rows(&x, &RowParams::new(r, c).unwrap()).unwrap())));
        }
        out
    }
    for ((name, x), (_, y)) in runs(a).iter().zip(runs(b)) {
        assert_eq!(bits(x), bits(&y), "{name}: {} and {} differ", a.device_name(), b.device_name());
    }
}
