//! Device-only checks of what the shared parity suite (tests/parity_cuda.rs at the repository
//! root) does not cover: the TF32 GEMM with its own tolerance, the buffer pool in an attack
//! loop, labels checked on the device, variant selection. Each test needs a CUDA device and
//! prints one `skipped:` line without one (PERTURB_REQUIRE_CUDA=1 makes that a failure).

use perturb_core::ops::{EltParams, LinearParams, RowParams, StepParams, XentParams};
use perturb_core::{Backend, DType, Error, Op, Shape, assert_close};
use perturb_cuda::{CudaBackend, kernels, test_backend};

fn data(seed: u32, n: usize) -> Vec<f32> {
    // A small LCG: deterministic, no dependency; values in [-1, 1).
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn up(b: &CudaBackend, v: &[f32], dims: &[usize]) -> perturb_core::Tensor<CudaBackend> {
    b.upload_f32(v, &Shape::from(dims)).expect("upload")
}

/// y = x · wᵀ, dx = dy · w, dw = dyᵀ · x in f64.
fn gemm_refs(x: &[f32], w: &[f32], dy: &[f32], m: usize, k: usize, n: usize) -> [Vec<f32>; 3] {
    let mut y = vec![0f32; m * n];
    let mut dx = vec![0f32; m * k];
    let mut dw = vec![0f32; n * k];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum::<f64>() as f32;
        }
        for j in 0..k {
            dx[i * k + j] = (0..n).map(|p| dy[i * n + p] as f64 * w[p * k + j] as f64).sum::<f64>() as f32;
        }
    }
    for i in 0..n {
        for j in 0..k {
            dw[i * k + j] = (0..m).map(|p| dy[p * n + i] as f64 * x[p * k + j] as f64).sum::<f64>() as f32;
        }
    }
    [y, dx, dw]
}

#[test]
fn tf32_gemm_matches_within_its_tolerance() {
    let Some(b) = test_backend() else { return };
    if b.summary().sm() < 80 {
        println!("skipped: TF32 GEMM needs sm_80, device is sm_{}", b.summary().sm());
        return;
    }
    for (m, k, n) in [(1, 5, 3), (7, 33, 17), (300, 20, 9), (130, 260, 70), (256, 512, 128)] {
        let b = b.with_variant(Op::LinearFwd, 3).and_then(|b| b.with_variant(Op::LinearBwdInput, 3)).expect("v3");
        let b = b.with_variant(Op::LinearBwdWeight, 3).expect("v3");
        let (x, w, dy) = (data(1, m * k), data(2, n * k), data(3, m * n));
        let p = LinearParams::new(m, k, n).expect("params");
        let [ey, edx, edw] = gemm_refs(&x, &w, &dy, m, k, n);
        let (xt, wt, dyt) = (up(&b, &x, &[m, k]), up(&b, &w, &[n, k]), up(&b, &dy, &[m, n]));
        let y = b.download_f32(&b.linear_fwd(&xt, &wt, &p).expect("fwd")).expect("down");
        let dx = b.download_f32(&b.linear_bwd_input(&dyt, &wt, &p).expect("bwd_input")).expect("down");
        let dw = b.download_f32(&b.linear_bwd_weight(&xt, &dyt, &p).expect("bwd_weight")).expect("down");
        assert_close(&y, &ey, kernels::tf32_tolerance(Op::LinearFwd, k));
        assert_close(&dx, &edx, kernels::tf32_tolerance(Op::LinearBwdInput, n));
        assert_close(&dw, &edw, kernels::tf32_tolerance(Op::LinearBwdWeight, m));
    }
}

/// A PGD-style loop (forward, loss, input gradient, projected step) allocates from the driver
/// only in its first iteration; later iterations reuse pooled blocks.
#[test]
fn attack_loop_reuses_pooled_memory() {
    let Some(b) = test_backend() else { return };
    let (n, d, c) = (32, 784, 10);
    let p = LinearParams::new(n, d, c).expect("params");
    let w = up(&b, &data(4, c * d), &[c, d]);
    let x0 = up(&b, &data(5, n * d).iter().map(|v| 0.5 + 0.5 * v).collect::<Vec<_>>(), &[n, d]);
    let labels =
        b.upload_u32(&(0..n as u32).map(|i| i % c as u32).collect::<Vec<_>>(), &Shape::from([n])).expect("labels");
    let x = b.duplicate(&x0).expect("dup");
    let step = StepParams::new(n, d, 0.01, 0.03, 0.0, 1.0).expect("step");
    let xent = XentParams::new(n, c, 1.0 / n as f32).expect("xent");
    let mut after_first = 0;
    for it in 0..5 {
        let logits = b.linear_fwd(&x, &w, &p).expect("fwd");
        let (_loss, dlogits) = b.softmax_xent(&logits, &labels, &xent).expect("xent");
        let g = b.linear_bwd_input(&dlogits, &w, &p).expect("grad");
        b.step_project_linf_(&x, &g, &x0, &step).expect("step");
        if it == 0 {
            after_first = b.driver_allocations();
        }
    }
    b.synchronize().expect("sync");
    assert_eq!(b.driver_allocations(), after_first, "steps after the first allocated from the driver");
    let (xs, x0s) = (b.download_f32(&x).expect("x"), b.download_f32(&x0).expect("x0"));
    assert!(xs.iter().zip(&x0s).all(|(a, o)| (a - o).abs() <= 0.03 + 1e-6 && (0.0..=1.0).contains(a)));
}

/// Labels produced on the device (argmax) are checked by the loss kernel; an out-of-range one
/// is reported at the next sync, naming softmax_xent.
#[test]
fn device_labels_out_of_range_are_reported_at_sync() {
    let Some(b) = test_backend() else { return };
    let (n, wide, classes) = (4, 6, 4);
    // Row 2's maximum is in column 5, past the 4 classes.
    let mut scores = vec![0f32; n * wide];
    for (r, col) in [(0, 1), (1, 3), (2, 5), (3, 0)] {
        scores[r * wide + col] = 1.0;
    }
    let labels = b.argmax_rows(&up(&b, &scores, &[n, wide]), &RowParams::new(n, wide).expect("rows")).expect("argmax");
    let logits = up(&b, &data(6, n * classes), &[n, classes]);
    let r = b.softmax_xent(&logits, &labels, &XentParams::new(n, classes, 1.0).expect("xent"));
    let err = match r {
        Ok(_) => b.synchronize().expect_err("the bad label must surface at the sync"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("softmax_xent"), "{err}");
    // The flag is cleared: the next sync is clean.
    b.synchronize().expect("clean after the report");
    // Host-uploaded labels are rejected at once, naming the label and its index.
    let bad = b.upload_u32(&[0, 1, 7, 2], &Shape::from([n])).expect("labels");
    let msg = b
        .softmax_xent(&logits, &bad, &XentParams::new(n, classes, 1.0).expect("xent"))
        .expect_err("label 7")
        .to_string();
    assert!(msg.contains("label 7 at index 2"), "{msg}");
}

#[test]
fn variants_are_selectable_and_checked() {
    let Some(b) = test_backend() else { return };
    for op in Op::ALL {
        assert_eq!(b.variant(op), kernels::promoted(op), "{op:?} starts promoted");
    }
    assert!(matches!(b.with_variant(Op::Conv2dFwd, 9), Err(Error::InvalidArgument { .. })));
    let v1 = b.with_variant_everywhere(1).expect("v1");
    assert_eq!(v1.variant(Op::Conv2dBwdWeight), 1);
    assert_eq!(v1.variant(Op::LinearFwd), 1);
    assert_eq!(b.variant(Op::LinearFwd), kernels::PROMOTED_GEMM, "the original handle keeps its choice");
    b.compile_all().expect("every module compiles and loads on this device");
}

#[test]
fn memory_helpers_round_trip() {
    let Some(b) = test_backend() else { return };
    let z = b.zeros(&Shape::from([3, 5]), DType::U32).expect("zeros");
    assert_eq!(b.download_u32(&z).expect("down"), vec![0; 15]);
    let v = data(7, 1000);
    let t = up(&b, &v, &[1000]);
    let out = b.axpby(&t, &t, &EltParams::new(1000, 1.0, 0.0).expect("elt")).expect("axpby");
    assert_eq!(b.download_f32(&out).expect("down"), v);
    assert!(b.download_u32(&t).is_err(), "f32 tensor read as u32");
}
