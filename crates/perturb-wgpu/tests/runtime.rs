//! Memory ops, buffer pooling, batching and limits.

mod util;

use perturb_core::ops::{StepParams, XentParams};
use perturb_core::{Backend, DType, Error, Op, Shape};
use util::*;

#[test]
fn upload_download_copy_fill() {
    let Some(g) = gpu() else { return };
    let v = data(1, 1001, -5.0, 5.0);
    let t = up(&g, &v, &[7, 11, 13]).unwrap();
    assert_eq!(down(&g, &t), v);
    let z = g.zeros(&[3, 5].into(), DType::F32).unwrap();
    assert_eq!(down(&g, &z), vec![0.0; 15]);
    let zu = g.zeros(&[6].into(), DType::U32).unwrap();
    assert_eq!(g.download_u32(&zu).unwrap(), vec![0; 6]);
    let l = g.upload_u32(&[3, 1, 4, 1, 5], &[5].into()).unwrap();
    assert_eq!(g.download_u32(&l).unwrap(), vec![3, 1, 4, 1, 5]);
    // copy_ and duplicate make deep copies; clones alias.
    let d = g.duplicate(&t).unwrap();
    g.fill_(&t, 2.5).unwrap();
    assert_eq!(down(&g, &d), v);
    assert_eq!(down(&g, &t.clone()), vec![2.5; 1001]);
    g.copy_(&t, &d).unwrap();
    assert_eq!(down(&g, &t), v);
    g.fill_(&t, 0.0).unwrap();
    assert_eq!(down(&g, &t), vec![0.0; 1001]);
    // A reshaped handle aliases the same memory.
    let r = t.reshape([1001]).unwrap();
    g.fill_(&r, -1.0).unwrap();
    assert_eq!(down(&g, &t)[1000], -1.0);
    g.synchronize().unwrap();
}

#[test]
fn memory_errors() {
    let Some(g) = gpu() else { return };
    let e = g.upload_f32(&[1.0; 5], &[2, 3].into()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let f = up(&g, &[1.0; 6], &[6]).unwrap();
    let u = g.upload_u32(&[1; 6], &[6].into()).unwrap();
    assert!(matches!(g.download_u32(&f).unwrap_err(), Error::DType { .. }));
    assert!(matches!(g.download_f32(&u).unwrap_err(), Error::DType { .. }));
    assert!(matches!(g.copy_(&f, &u).unwrap_err(), Error::DType { .. }));
    assert!(g.fill_(&u, 1.0).is_err());
    let f5 = up(&g, &[1.0; 5], &[5]).unwrap();
    assert!(g.copy_(&f, &f5).unwrap_err().to_string().contains("element count"));
}

#[test]
fn tensors_beyond_the_binding_limit_are_refused_by_name() {
    let Some(g) = gpu() else { return };
    let limit = g.adapter().max_storage_buffer_binding_size.min(g.adapter().max_buffer_size);
    let n = (limit / 4 + 1) as usize;
    let e = g.zeros(&Shape::from([n]), DType::F32).unwrap_err().to_string();
    assert!(e.contains("max_storage_buffer_binding_size"), "{e}");
    assert!(
        e.contains(&limit.to_string()) || e.contains(&g.adapter().max_storage_buffer_binding_size.to_string()),
        "{e}"
    );
}

type T = perturb_core::Tensor<perturb_wgpu::WgpuBackend>;

/// One PGD-style step on x [4, 30] viewed as 12 rows of 10 logits: forward, fused loss and
/// gradient, backward through relu, projected step. Nothing is read back.
fn attack_step(g: &perturb_wgpu::WgpuBackend, x: &T, x0: &T, lab: &T) {
    let rows = x.reshape([12, 10]).unwrap();
    let z = g.relu_fwd(&rows).unwrap();
    let (_loss, dz) = g.softmax_xent(&z, lab, &XentParams::new(12, 10, 1.0 / 12.0).unwrap()).unwrap();
    let dx = g.relu_bwd(&dz, &rows).unwrap();
    let p = StepParams::new(4, 30, 0.01, 0.03, 0.0, 1.0).unwrap();
    g.step_project_linf_(x, &dx.reshape([4, 30]).unwrap(), x0, &p).unwrap();
}

#[test]
fn attack_loop_allocates_nothing_and_submits_nothing_per_step() {
    let Some(g) = gpu() else { return };
    let x0 = up(&g, &data(3, 120, 0.0, 1.0), &[4, 30]).unwrap();
    let x = g.duplicate(&x0).unwrap();
    let lab = g.upload_u32(&labels(4, 12, 10), &[12].into()).unwrap();
    attack_step(&g, &x, &x0, &lab);
    g.synchronize().unwrap();
    let (created, subs, pipes) = (g.pool_stats().created, g.submissions(), g.pipelines_built());
    for _ in 0..20 {
        attack_step(&g, &x, &x0, &lab);
    }
    let st = g.pool_stats();
    assert_eq!(st.created, created, "buffers created during the loop: {st:?}");
    assert_eq!(g.pipelines_built(), pipes, "pipelines built during the loop");
    assert!(g.submissions() <= subs + 1, "{} submissions for 20 steps", g.submissions() - subs);
    // Reading back submits once more and the result is sane.
    let xs = down(&g, &x);
    let x0s = down(&g, &x0);
    assert!(xs.iter().zip(&x0s).all(|(a, b)| (a - b).abs() <= 0.03 + 1e-6 && (0.0..=1.0).contains(a)));
    assert!(g.pool_stats().reused > 0);
}

#[test]
fn forced_variants_are_validated() {
    let Some(g) = gpu() else { return };
    assert!(g.set_variant(Op::LinearFwd, Some(7)).is_err());
    assert!(g.set_variant(Op::SoftmaxXent, Some(2)).is_err());
    assert!(g.set_variant(Op::Mul, Some(3)).is_err());
    g.set_variant(Op::Conv2dFwd, Some(2)).unwrap();
    assert_eq!(g.variant(Op::Conv2dFwd), 2);
    g.set_variant(Op::Conv2dFwd, None).unwrap();
    assert!(perturb_wgpu::variants(Op::Conv2dFwd).contains(&g.variant(Op::Conv2dFwd)));
}

#[test]
fn trim_pool_releases_free_buffers() {
    let Some(g) = gpu() else { return };
    {
        let _a = g.zeros(&[100_000].into(), DType::F32).unwrap();
    }
    g.synchronize().unwrap();
    assert!(g.pool_stats().bytes_free >= 400_000);
    g.trim_pool().unwrap();
    assert_eq!(g.pool_stats().bytes_free, 0);
}
