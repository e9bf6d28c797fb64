//! GPU faults on the wgpu backend: allocations past the adapter's limits, ops whose bindings
//! would exceed max_storage_buffer_binding_size, and a lost device (`destroy_device`, which
//! calls wgpu's `Device::destroy`). Each must come back as a typed `Err` naming the size,
//! the limit or the loss: never a panic, an abort or a silently truncated result.
//! docs/reliability.md (faults on the wgpu backend) records what was injected and what held.

mod util;

use perturb_core::ops::{Conv2dParams, EltParams, LinearParams};
use perturb_core::{Backend, DType, Error, Op, Shape};
use perturb_wgpu::WgpuBackend;
use util::*;

/// The largest tensor the backend binds: min(max_storage_buffer_binding_size, max_buffer_size).
fn binding_limit(g: &WgpuBackend) -> u64 {
    g.adapter().max_storage_buffer_binding_size.min(g.adapter().max_buffer_size)
}

fn assert_names_limit(e: &Error, bytes: u64, g: &WgpuBackend) {
    let s = e.to_string();
    assert!(matches!(e, Error::Unsupported { .. } | Error::OutOfMemory { .. }), "not a typed limit error: {e:?}");
    assert!(s.contains("max_storage_buffer_binding_size"), "limit not named: {s}");
    assert!(s.contains(&g.adapter().max_storage_buffer_binding_size.to_string()), "limit value missing: {s}");
    assert!(s.contains(&bytes.to_string()), "requested size {bytes} missing: {s}");
}

#[test]
fn allocations_past_the_limit_are_typed_errors_with_the_size() {
    let Some(g) = gpu() else { return };
    let limit = binding_limit(&g);
    // One float past the limit, for both dtypes of 4 bytes.
    let n = (limit / 4 + 1) as usize;
    for dt in [DType::F32, DType::U32] {
        let e = g.zeros(&Shape::from([n]), dt).unwrap_err();
        assert_names_limit(&e, n as u64 * 4, &g);
    }
    // Far past it (a 4 TiB request) and a shape whose byte count overflows 64 bits.
    let e = g.zeros(&Shape::from([1 << 20, 1 << 20]), DType::F32).unwrap_err();
    assert_names_limit(&e, 4u64 << 40, &g);
    let e = g.zeros(&Shape::from([usize::MAX / 2, 3]), DType::F32).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("overflow"), "{e}");
    // Nothing was allocated, and the backend still works.
    let x = up(&g, &[1.0, -2.0, 3.0], &[3]).unwrap();
    assert_eq!(down(&g, &g.relu_fwd(&x).unwrap()), vec![1.0, 0.0, 3.0]);
    assert!(g.pool_stats().bytes_held < limit, "{:?}", g.pool_stats());
}

#[test]
fn ops_whose_output_would_pass_the_binding_limit_are_refused_by_name() {
    let Some(g) = gpu() else { return };
    let limit = binding_limit(&g);
    // linear: x [m, 1] w [m, 1] -> y [m, m], just past the limit.
    let m = ((limit / 4) as f64).sqrt() as usize + 1;
    let x = up(&g, &vec![1.0; m], &[m, 1]).unwrap();
    let e = g.linear_fwd(&x, &x, &LinearParams::new(m, 1, m).unwrap()).unwrap_err();
    assert_names_limit(&e, (m * m * 4) as u64, &g);
    assert!(e.to_string().contains("linear_fwd"), "{e}");
    // conv2d: a 1-channel image to 1 + limit / image-bytes channels.
    let (h, w) = (512, 512);
    let c_out = (limit / (h * w * 4) as u64) as usize + 1;
    let img = up(&g, &vec![0.5; h * w], &[1, 1, h, w]).unwrap();
    let wt = up(&g, &vec![1.0; c_out], &[c_out, 1, 1, 1]).unwrap();
    let p = Conv2dParams::new([1, 1, h, w], [c_out, 1, 1, 1], 1, 0).unwrap();
    let e = g.conv2d_fwd(&img, &wt, &p).unwrap_err();
    assert_names_limit(&e, (c_out * h * w * 4) as u64, &g);
    assert!(e.to_string().contains("conv2d_fwd"), "{e}");
    // The refusals left the backend usable.
    let small = up(&g, &[2.0, 3.0], &[2, 1]).unwrap();
    let y = g.linear_fwd(&small, &small, &LinearParams::new(2, 1, 2).unwrap()).unwrap();
    assert_eq!(down(&g, &y), vec![4.0, 6.0, 6.0, 9.0]);
}

/// A tensor just under the binding limit is computed whole: its elementwise grid folds past
/// max_compute_workgroups_per_dimension and the last element is right (no truncation).
#[test]
fn tensors_just_under_the_limit_are_computed_whole() {
    let Some(g) = gpu() else { return };
    let limit = binding_limit(&g);
    let n = (limit / 4) as usize - 1000;
    let mut v = vec![0.0f32; n];
    for (i, e) in v.iter_mut().enumerate().step_by(9973) {
        *e = (i % 7) as f32 - 3.0;
    }
    v[n - 1] = 7.0;
    v[n - 2] = -7.0;
    let x = up(&g, &v, &[n]).unwrap();
    // Every variant: v1 (one element per invocation, 131072 workgroups folded into 2-D) and,
    // where the adapter has one, the texel variant (4 per invocation, an 8192-row texture).
    for &variant in perturb_wgpu::variants(Op::Axpby) {
        g.set_variant(Op::Axpby, Some(variant)).unwrap();
        let y = g.axpby(&x, &x, &EltParams::new(n, 2.0, 1.0).unwrap()).unwrap();
        let out = down(&g, &y);
        assert_eq!(out.len(), n);
        assert_eq!(out[n - 1], 21.0, "v{variant}");
        assert_eq!(out[n - 2], -21.0, "v{variant}");
        for i in (0..n).step_by(9973) {
            assert_eq!(out[i], 3.0 * v[i], "v{variant} element {i}");
        }
    }
}

#[test]
fn a_lost_device_turns_every_call_into_a_typed_error() {
    let Some(g) = gpu() else { return };
    let x = up(&g, &data(1, 1000, -1.0, 1.0), &[10, 100]).unwrap();
    // Work recorded but not yet submitted when the device goes.
    let y = g.relu_fwd(&x).unwrap();
    g.destroy_device();
    let lost = |what: &str, e: Error| {
        let s = e.to_string();
        println!("after destroy_device, {what}: {s}");
        assert!(matches!(e, Error::Device { .. }), "{what}: {e:?}");
        assert!(s.contains("lost") || s.contains("destroyed"), "{what}: {s}");
    };
    lost("download", g.download_f32(&y).unwrap_err());
    lost("synchronize", g.synchronize().unwrap_err());
    lost("relu_fwd", g.relu_fwd(&x).map(|_| ()).unwrap_err());
    lost("upload_f32", g.upload_f32(&[1.0; 4], &[4].into()).map(|_| ()).unwrap_err());
    lost("zeros", g.zeros(&[4].into(), DType::F32).map(|_| ()).unwrap_err());
    let w = up(&g, &[0.0; 4], &[4]);
    assert!(w.is_err());
    lost("linear_fwd", g.linear_fwd(&x, &x, &LinearParams::new(10, 100, 10).unwrap()).map(|_| ()).unwrap_err());
    lost("fill_", g.fill_(&x, 1.0).unwrap_err());
    let rows = perturb_core::ops::RowParams::new(10, 100).unwrap();
    lost("argmax_rows", g.argmax_rows(&x, &rows).map(|_| ()).unwrap_err());
    lost("trim_pool then synchronize", g.trim_pool().and_then(|_| g.synchronize()).unwrap_err());
    // Dropping the tensors and the backend after the loss is quiet.
    drop((x, y));
    drop(g);
}
