//! Every non-GEMM op against the CPU reference on seeded awkward shapes.

mod util;

use perturb_core::ops::{
    AdamParams, BiasParams, EltParams, Pool2dParams, RowParams, SgdParams, StepParams, XentParams,
};
use perturb_core::{Backend, Op, Result, Tolerance};
use util::*;

fn bias_case<B: Backend>(b: &B, outer: usize, ch: usize, inner: usize, seed: u64) -> Result<[Vec<f32>; 2]> {
    let p = BiasParams::new(outer, ch, inner)?;
    let len = outer * ch * inner;
    let y = up(b, &data(seed, len, -1.0, 1.0), &[outer, ch, inner])?;
    let bias = up(b, &data(seed + 1, ch, -1.0, 1.0), &[ch])?;
    let out = b.bias_add(&y, &bias, &p)?;
    let db = b.bias_grad(&y, &p)?;
    Ok([b.download_f32(&out)?, b.download_f32(&db)?])
}

#[test]
fn bias_add_and_grad() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, &(o, ch, inn)) in [(1, 1, 1), (3, 5, 7), (1, 13, 1), (130, 3, 1), (2, 4, 600)].iter().enumerate() {
        let want = bias_case(&c, o, ch, inn, i as u64).unwrap();
        let got = bias_case(&g, o, ch, inn, i as u64).unwrap();
        close(&format!("bias_add {o}x{ch}x{inn}"), &got[0], &want[0], Op::BiasAdd.tolerance(1));
        close(&format!("bias_grad {o}x{ch}x{inn}"), &got[1], &want[1], Op::BiasGrad.tolerance(o * inn));
    }
}

fn elementwise_case<B: Backend>(b: &B, n: usize, seed: u64) -> Result<Vec<Vec<f32>>> {
    let mut xv = data(seed, n, -1.0, 1.0);
    // Edge values for relu: zeros of both signs and NaN.
    for (i, v) in [0.0, -0.0, f32::NAN].into_iter().enumerate() {
        if i < n {
            xv[i] = v;
        }
    }
    let x = up(b, &xv, &[n])?;
    let y = up(b, &data(seed + 1, n, -2.0, 2.0), &[n])?;
    let relu = b.relu_fwd(&x)?;
    let relu_b = b.relu_bwd(&y, &x)?;
    let ax = b.axpby(&x, &y, &EltParams::new(n, 0.75, -1.5)?)?;
    let m = b.mul(&y, &y)?;
    Ok(vec![b.download_f32(&relu)?, b.download_f32(&relu_b)?, b.download_f32(&ax)?, b.download_f32(&m)?])
}

#[test]
fn relu_axpby_mul() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, n) in [1usize, 3, 257, 70_001].into_iter().enumerate() {
        let want = elementwise_case(&c, n, i as u64).unwrap();
        let got = elementwise_case(&g, n, i as u64).unwrap();
        for (j, op) in [Op::ReluFwd, Op::ReluBwd, Op::Axpby, Op::Mul].iter().enumerate() {
            close(&format!("{} n={n}", op.name()), &got[j], &want[j], op.tolerance(1));
        }
    }
}

fn rows_case<B: Backend>(b: &B, rows: usize, cols: usize, v: &[f32]) -> Result<(Vec<f32>, Vec<u32>)> {
    let p = RowParams::new(rows, cols)?;
    let x = up(b, v, &[rows, cols])?;
    let s = b.sum_rows(&x, &p)?;
    let a = b.argmax_rows(&x, &p)?;
    Ok((b.download_f32(&s)?, b.download_u32(&a)?))
}

#[test]
fn sum_rows_and_argmax_rows() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, &(r, cl)) in [(1, 1), (5, 300), (70, 3), (3, 10), (2, 1000)].iter().enumerate() {
        for v in [data(i as u64, r * cl, -3.0, 3.0), ties(i as u64, r * cl)] {
            let want = rows_case(&c, r, cl, &v).unwrap();
            let got = rows_case(&g, r, cl, &v).unwrap();
            close(&format!("sum_rows {r}x{cl}"), &got.0, &want.0, Op::SumRows.tolerance(cl));
            assert_eq!(got.1, want.1, "argmax_rows {r}x{cl}");
        }
    }
    // NaN: in column 0 it wins (nothing is greater), elsewhere it never does.
    let nan = f32::NAN;
    let v = [nan, 1.0, 2.0, 1.0, nan, 3.0, 5.0, nan, 5.0, -1.0, -2.0, nan];
    let want = rows_case(&c, 4, 3, &v).unwrap();
    let got = rows_case(&g, 4, 3, &v).unwrap();
    assert_eq!(got.1, want.1);
    assert_eq!(got.1, vec![0, 2, 0, 0]);
}

fn xent_case<B: Backend>(b: &B, n: usize, c: usize, seed: u64) -> Result<[Vec<f32>; 2]> {
    let p = XentParams::new(n, c, 1.0 / n as f32)?;
    let logits = up(b, &data(seed, n * c, -8.0, 8.0), &[n, c])?;
    let lab = b.upload_u32(&labels(seed + 1, n, c), &[n].into())?;
    let (l, d) = b.softmax_xent(&logits, &lab, &p)?;
    Ok([b.download_f32(&l)?, b.download_f32(&d)?])
}

#[test]
fn softmax_xent_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, &(n, cl)) in [(1, 10), (37, 13), (3, 1), (130, 100)].iter().enumerate() {
        let want = xent_case(&c, n, cl, i as u64).unwrap();
        let got = xent_case(&g, n, cl, i as u64).unwrap();
        close(&format!("xent loss {n}x{cl}"), &got[0], &want[0], Op::SoftmaxXent.tolerance(cl));
        close(&format!("xent dlogits {n}x{cl}"), &got[1], &want[1], Op::SoftmaxXent.tolerance(cl));
    }
}

#[test]
fn softmax_xent_rejects_bad_labels() {
    let Some(g) = gpu() else { return };
    let p = XentParams::new(2, 3, 1.0).unwrap();
    let logits = up(&g, &[0.0; 6], &[2, 3]).unwrap();
    // Uploaded labels: rejected up front.
    let lab = g.upload_u32(&[0, 3], &[2].into()).unwrap();
    let e = g.softmax_xent(&logits, &lab, &p).unwrap_err().to_string();
    assert!(e.contains("label 3") && e.contains("3 classes"), "{e}");
    // Labels computed on the device (argmax over 5 columns): caught by the kernel and reported
    // at the next download; the backend stays usable afterwards.
    let scores = up(&g, &[0.0, 0.0, 0.0, 0.0, 9.0, 9.0, 0.0, 0.0, 0.0, 0.0], &[2, 5]).unwrap();
    let lab = g.argmax_rows(&scores, &RowParams::new(2, 5).unwrap()).unwrap();
    let (loss, _) = g.softmax_xent(&logits, &lab, &p).unwrap();
    let e = g.download_f32(&loss).unwrap_err().to_string();
    assert!(e.contains("label") && e.contains("softmax_xent"), "{e}");
    let ok = g.upload_u32(&[2, 0], &[2].into()).unwrap();
    let (loss, _) = g.softmax_xent(&logits, &ok, &p).unwrap();
    let l = g.download_f32(&loss).unwrap();
    close("xent after error", &l, &[3f32.ln(), 3f32.ln()], Tolerance::new(1e-6, 1e-6));
}

fn pool_case<B: Backend>(b: &B, x_dims: [usize; 4], k: usize, s: usize, v: &[f32], seed: u64) -> Result<[Vec<f32>; 2]> {
    let p = Pool2dParams::new(x_dims, k, s)?;
    let x = up(b, v, &x_dims)?;
    let y = b.maxpool2d_fwd(&x, &p)?;
    let od = p.output_dims();
    let dy = up(b, &data(seed, od.iter().product(), -1.0, 1.0), &od)?;
    let dx = b.maxpool2d_bwd(&dy, &x, &p)?;
    Ok([b.download_f32(&y)?, b.download_f32(&dx)?])
}

#[test]
fn maxpool_fwd_bwd_with_ties_and_overlap() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let cases = [
        ([2, 3, 7, 9], 2, 2),
        ([1, 2, 6, 6], 3, 1),
        ([3, 1, 5, 8], 3, 2),
        ([1, 1, 2, 2], 2, 2),
        ([2, 4, 13, 11], 2, 1),
    ];
    for (i, &(xd, k, s)) in cases.iter().enumerate() {
        let n: usize = xd.iter().product();
        for v in [data(i as u64, n, -1.0, 1.0), ties(i as u64, n)] {
            let want = pool_case(&c, xd, k, s, &v, 50 + i as u64).unwrap();
            let got = pool_case(&g, xd, k, s, &v, 50 + i as u64).unwrap();
            close(&format!("maxpool fwd {xd:?} k={k} s={s}"), &got[0], &want[0], Op::MaxPool2dFwd.tolerance(1));
            close(&format!("maxpool bwd {xd:?} k={k} s={s}"), &got[1], &want[1], Op::MaxPool2dBwd.tolerance(k * k));
        }
    }
}

fn step_case<B: Backend>(b: &B, n: usize, d: usize, eps: f32, seed: u64) -> Result<[Vec<f32>; 3]> {
    let x0v = data(seed, n * d, 0.0, 1.0);
    let mut gv = data(seed + 1, n * d, -1.0, 1.0);
    // Example 0 gets a zero gradient (no step) and some exact zeros elsewhere (sign 0).
    for v in gv.iter_mut().take(d) {
        *v = 0.0;
    }
    for v in gv.iter_mut().step_by(7) {
        *v = 0.0;
    }
    let x0 = up(b, &x0v, &[n, d])?;
    let gt = up(b, &gv, &[n, d])?;
    let p = StepParams::new(n, d, 0.05, eps, 0.0, 1.0)?;
    let x1 = b.duplicate(&x0)?;
    b.sign_step_(&x1, &gt, &p)?;
    // Several steps, so the projection binds.
    let x2 = b.duplicate(&x0)?;
    let x3 = b.duplicate(&x0)?;
    for _ in 0..4 {
        b.step_project_linf_(&x2, &gt, &x0, &p)?;
        b.step_project_l2_(&x3, &gt, &x0, &p)?;
    }
    Ok([b.download_f32(&x1)?, b.download_f32(&x2)?, b.download_f32(&x3)?])
}

#[test]
fn attack_steps_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, &(n, d, eps)) in
        [(1, 1, 0.1), (3, 77, 0.08), (5, 784, 0.5), (2, 3000, 2.0), (4, 10, 0.0)].iter().enumerate()
    {
        let want = step_case(&c, n, d, eps, i as u64).unwrap();
        let got = step_case(&g, n, d, eps, i as u64).unwrap();
        close(&format!("sign_step {n}x{d}"), &got[0], &want[0], Op::SignStep.tolerance(1));
        close(&format!("step_project_linf {n}x{d} eps={eps}"), &got[1], &want[1], Op::StepProjectLinf.tolerance(1));
        close(&format!("step_project_l2 {n}x{d} eps={eps}"), &got[2], &want[2], Op::StepProjectL2.tolerance(d));
    }
}

#[test]
fn in_place_step_with_aliased_gradient() {
    let Some(g) = gpu() else { return };
    // x is its own gradient: x = clip(x + 0.5 * sign(x)) must read the old values.
    let x = up(&g, &[0.25, -0.25, 0.0, 0.9], &[1, 4]).unwrap();
    g.sign_step_(&x, &x.clone(), &StepParams::new(1, 4, 0.5, 0.0, -1.0, 1.0).unwrap()).unwrap();
    assert_eq!(down(&g, &x), vec![0.75, -0.75, 0.0, 1.0]);
}

fn optim_case<B: Backend>(b: &B, len: usize, nesterov: bool, decoupled: bool, seed: u64) -> Result<[Vec<f32>; 5]> {
    let w = up(b, &data(seed, len, -1.0, 1.0), &[len])?;
    let m = b.zeros(&[len].into(), perturb_core::DType::F32)?;
    let w2 = b.duplicate(&w)?;
    let m2 = b.zeros(&[len].into(), perturb_core::DType::F32)?;
    let v2 = b.zeros(&[len].into(), perturb_core::DType::F32)?;
    for step in 1..=3u64 {
        let gr = up(b, &data(seed + step, len, -1.0, 1.0), &[len])?;
        b.sgd_update_(&w, &gr, &m, &SgdParams::new(len, 0.1, 0.9, 1e-2, nesterov)?)?;
        b.adam_update_(&w2, &gr, &m2, &v2, &AdamParams::new(len, 1e-2, 0.9, 0.999, 1e-8, 1e-2, step, decoupled)?)?;
    }
    Ok([b.download_f32(&w)?, b.download_f32(&m)?, b.download_f32(&w2)?, b.download_f32(&m2)?, b.download_f32(&v2)?])
}

#[test]
fn sgd_and_adam_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, &len) in [1usize, 300, 4099].iter().enumerate() {
        for (nesterov, decoupled) in [(false, false), (true, true)] {
            let want = optim_case(&c, len, nesterov, decoupled, i as u64).unwrap();
            let got = optim_case(&g, len, nesterov, decoupled, i as u64).unwrap();
            let tol_sgd = Op::SgdUpdate.tolerance(1).scaled(3.0);
            let tol_adam = Op::AdamUpdate.tolerance(1).scaled(3.0);
            close(&format!("sgd w len={len} nesterov={nesterov}"), &got[0], &want[0], tol_sgd);
            close("sgd m", &got[1], &want[1], tol_sgd);
            close(&format!("adam w len={len} decoupled={decoupled}"), &got[2], &want[2], tol_adam);
            close("adam m", &got[3], &want[3], tol_adam);
            close("adam v", &got[4], &want[4], tol_adam);
        }
    }
}

#[test]
fn elementwise_shape_errors() {
    let Some(g) = gpu() else { return };
    let a = up(&g, &[1.0; 6], &[2, 3]).unwrap();
    let b = up(&g, &[1.0; 5], &[5]).unwrap();
    assert!(g.mul(&a, &b).unwrap_err().to_string().contains("mul"));
    assert!(g.axpby(&a, &a, &EltParams::new(5, 1.0, 1.0).unwrap()).is_err());
    assert!(g.relu_bwd(&a, &a.reshape([3, 2]).unwrap()).is_err());
    let e = g.sum_rows(&a, &RowParams::new(4, 2).unwrap()).unwrap_err().to_string();
    assert!(e.contains("rows 4") && e.contains("cols 2"), "{e}");
    let s = StepParams::new(2, 3, 0.1, 0.1, 0.0, 1.0).unwrap();
    assert!(g.step_project_l2_(&a, &a, &b, &s).is_err());
    let m = g.zeros(&[6].into(), perturb_core::DType::F32).unwrap();
    let e = g.sgd_update_(&m, &a, &m, &SgdParams::new(6, 0.1, 0.0, 0.0, false).unwrap()).unwrap_err().to_string();
    assert!(e.contains("same tensor"), "{e}");
}
