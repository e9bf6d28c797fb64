//! Behaviour specific to the CPU backend: dtypes, aliasing in-place ops, zero-copy access,
//! threads. The op-by-op parity tests live in the workspace's tests/ops_parity.rs.

use half::f16;
use perturb_core::ops::{AdamParams, Conv2dParams, EltParams, RowParams, SgdParams, StepParams};
use perturb_core::{Backend, DType, Error, Shape};
use perturb_cpu::{CpuBackend, CpuData};

fn cpu() -> CpuBackend {
    CpuBackend::new()
}

#[test]
fn half_precision_is_storage_only() {
    let b = cpu();
    let t = b.from_data(CpuData::F16(vec![f16::from_f32(1.5), f16::from_f32(-2.0)]), [2]).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(b.download_f32(&t).unwrap(), [1.5, -2.0]);
    let e = b.relu_fwd(&t).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("f16"), "{e}");
    let z = b.zeros(&Shape::from([3]), DType::BF16).unwrap();
    b.fill_(&z, 0.5).unwrap();
    assert_eq!(b.download_f32(&z).unwrap(), [0.5; 3]);
    let e = b.mul(&z, &z).unwrap_err();
    assert!(e.to_string().contains("bf16"), "{e}");
    let u = b.zeros(&Shape::from([3]), DType::U32).unwrap();
    assert!(matches!(b.relu_fwd(&u).unwrap_err(), Error::DType { .. }));
    assert!(b.download_f32(&u).is_err());
    assert!(b.download_u32(&z).is_err());
}

#[test]
fn in_place_ops_with_aliased_inputs() {
    let b = cpu();
    // g is x itself: x = x + alpha * sign(x).
    let x = b.upload_f32(&[0.5, -0.25, 0.0, 0.9], &Shape::from([1, 4])).unwrap();
    let p = StepParams::new(1, 4, 0.25, 0.0, -1.0, 1.0).unwrap();
    b.sign_step_(&x, &x.clone(), &p).unwrap();
    assert_eq!(b.download_f32(&x).unwrap(), [0.75, -0.5, 0.0, 1.0]);
    // x0 is x: the L-inf ball around the current point.
    let g = b.upload_f32(&[1.0, 1.0, -1.0, 0.0], &Shape::from([1, 4])).unwrap();
    let p = StepParams::new(1, 4, 0.5, 0.1, -1.0, 1.0).unwrap();
    b.step_project_linf_(&x, &g, &x, &p).unwrap();
    let got = b.download_f32(&x).unwrap();
    assert_eq!(got, [0.85, -0.4, -0.1, 1.0]);
    // The gradient is the weight: w = w - lr * (w + 0) with no momentum.
    let w = b.upload_f32(&[1.0, -2.0], &Shape::from([2])).unwrap();
    let m = b.zeros(&Shape::from([2]), DType::F32).unwrap();
    b.sgd_update_(&w, &w, &m, &SgdParams::new(2, 0.5, 0.0, 0.0, false).unwrap()).unwrap();
    assert_eq!(b.download_f32(&w).unwrap(), [0.5, -1.0]);
    // Two destinations sharing memory are refused, not deadlocked.
    let e = b.sgd_update_(&w, &m, &w, &SgdParams::new(2, 0.5, 0.9, 0.0, false).unwrap()).unwrap_err();
    assert!(e.to_string().contains("share"), "{e}");
    let ap = AdamParams::new(2, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, false).unwrap();
    assert!(b.adam_update_(&w, &m, &m, &m.clone(), &ap).is_err());
    // Same-tensor inputs of a pure op.
    let sq = b.mul(&w, &w).unwrap();
    assert_eq!(b.download_f32(&sq).unwrap(), [0.25, 1.0]);
    let s = b.axpby(&w, &w, &EltParams::new(2, 1.0, 2.0).unwrap()).unwrap();
    assert_eq!(b.download_f32(&s).unwrap(), [1.5, -3.0]);
    // copy_ onto itself is a no-op.
    b.copy_(&w, &w.clone()).unwrap();
    assert_eq!(b.download_f32(&w).unwrap(), [0.5, -1.0]);
}

#[test]
fn zero_copy_access() {
    let b = cpu();
    let t = b.from_vec_f32(vec![1.0, 2.0, 3.0], [3]).unwrap();
    {
        let mut w = CpuBackend::write_f32(&t).unwrap();
        w[1] = 5.0;
    }
    assert_eq!(&*CpuBackend::read_f32(&t).unwrap(), &[1.0, 5.0, 3.0]);
    let r = b.sum_rows(&t, &RowParams::new(1, 3).unwrap()).unwrap();
    assert_eq!(b.download_f32(&r).unwrap(), [9.0]);
    assert!(b.from_vec_f32(vec![1.0; 4], [3]).is_err());
    let u = b.from_vec_u32(vec![1, 2], [2]).unwrap();
    assert!(CpuBackend::read_f32(&u).is_err());
}

#[test]
fn threads_and_names() {
    let b = CpuBackend::with_threads(2).unwrap();
    assert_eq!(b.threads(), 2);
    assert!(b.device_name().contains("2 threads"), "{}", b.device_name());
    assert_eq!(b.name(), "cpu");
    assert!(CpuBackend::with_threads(0).is_err());
    // An op runs inside the backend's own pool.
    let p = Conv2dParams::new([4, 2, 6, 6], [3, 2, 3, 3], 1, 1).unwrap();
    let x = b.upload_f32(&[1.0; 288], &Shape::from([4, 2, 6, 6])).unwrap();
    let w = b.upload_f32(&[1.0; 54], &Shape::from([3, 2, 3, 3])).unwrap();
    let y = b.download_f32(&b.conv2d_fwd(&x, &w, &p).unwrap()).unwrap();
    // Interior outputs see all 18 taps, corners 8.
    assert_eq!(y[7], 18.0);
    assert_eq!(y[0], 8.0);
}

/// Small outputs are convolved a group of images at a time (the last group padded), so an
/// image's forward output and input gradient must not depend on the batch it sits in: the
/// first 5 images alone and inside a batch of 23 give the same bits, at 1 and 2 threads.
#[test]
fn conv_results_do_not_depend_on_the_batch_size() {
    let (c_in, h, w, c_out) = (3, 9, 8, 5);
    let full = 23;
    let vals = |n: usize, seed: u32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0 - 0.5)
            .collect()
    };
    let x = vals(full * c_in * h * w, 1);
    let wt = vals(c_out * c_in * 9, 2);
    for threads in [1, 2] {
        let b = CpuBackend::with_threads(threads).unwrap();
        let run = |n: usize| -> (Vec<f32>, Vec<f32>) {
            let p = Conv2dParams::new([n, c_in, h, w], [c_out, c_in, 3, 3], 1, 1).unwrap();
            let xs = b.upload_f32(&x[..n * c_in * h * w], &Shape::from(p.input_dims())).unwrap();
            let ws = b.upload_f32(&wt, &Shape::from(p.weight_dims())).unwrap();
            let y = b.conv2d_fwd(&xs, &ws, &p).unwrap();
            let dy = b.upload_f32(&vals(n * c_out * h * w, 3)[..], &Shape::from(p.output_dims())).unwrap();
            let dx = b.conv2d_bwd_input(&dy, &ws, &p).unwrap();
            (b.download_f32(&y).unwrap(), b.download_f32(&dx).unwrap())
        };
        let (y5, dx5) = run(5);
        let (y23, dx23) = run(full);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y5), bits(&y23[..y5.len()]), "forward, {threads} thread(s)");
        assert_eq!(bits(&dx5), bits(&dx23[..dx5.len()]), "backward input, {threads} thread(s)");
    }
}
