//! f16 storage: casts and the forward GEMMs with f16 inputs and f32 accumulation, against the
//! CPU reference run in f32 on the same f16-rounded values (so the f32 tolerances apply).

mod util;

use half::f16;
use perturb_core::ops::{Conv2dParams, LinearParams};
use perturb_core::{Backend, DType, Error, Op, Tensor};
use perturb_wgpu::WgpuBackend;
use util::*;

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// A wgpu backend with SHADER_F16, else None (printing why).
fn gpu_f16() -> Option<WgpuBackend> {
    let g = gpu()?;
    if !g.has_f16() {
        let x = up(&g, &[1.0], &[1]).unwrap();
        let e = g.cast(&x, DType::F16).unwrap_err();
        assert!(e.to_string().contains("SHADER_F16"), "{e}");
        println!("skipped: {} has no SHADER_F16", g.adapter().name);
        return None;
    }
    Some(g)
}

fn half_tensor(g: &WgpuBackend, v: &[f32], dims: &[usize]) -> Tensor<WgpuBackend> {
    g.cast(&up(g, v, dims).unwrap(), DType::F16).unwrap()
}

#[test]
fn casts_round_to_nearest_and_widen_exactly() {
    let Some(g) = gpu_f16() else { return };
    let mut v = data(1, 1001, -70_000.0, 70_000.0);
    v.extend(data(2, 1001, -1.0, 1.0));
    v.extend([0.0, -0.0, 1e-8, 65504.0, 65520.0, 1.0 / 3.0]);
    let h = half_tensor(&g, &v, &[v.len()]);
    assert_eq!(h.dtype(), DType::F16);
    let want = rounded(&v);
    let got = g.download_f32(&h).unwrap();
    let bad = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
    assert!(bad.is_none(), "element {bad:?}: {:?} vs {:?}", bad.map(|i| (v[i], got[i])), bad.map(|i| want[i]));
    let back = g.cast(&h, DType::F32).unwrap();
    assert_eq!(back.dtype(), DType::F32);
    assert_eq!(down(&g, &back), want);
}

#[test]
fn linear_and_conv_forward_in_f16() {
    let Some(g) = gpu_f16() else { return };
    let c = cpu();
    for (i, &(m, k, n)) in [(1usize, 7usize, 5usize), (33, 17, 19), (70, 68, 40)].iter().enumerate() {
        let p = LinearParams::new(m, k, n).unwrap();
        let xv = rounded(&data(i as u64, m * k, -2.0, 2.0));
        let wv = rounded(&data(i as u64 + 9, n * k, -2.0, 2.0));
        let want = down(&c, &c.linear_fwd(&up(&c, &xv, &[m, k]).unwrap(), &up(&c, &wv, &[n, k]).unwrap(), &p).unwrap());
        let y = g.linear_fwd(&half_tensor(&g, &xv, &[m, k]), &half_tensor(&g, &wv, &[n, k]), &p).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        close(&format!("linear_fwd f16 {m}x{k}x{n}"), &down(&g, &y), &want, Op::LinearFwd.tolerance(k));
    }
    for (i, &(xd, wd, s, pad)) in
        [([1, 1, 9, 9], [3, 1, 3, 3], 1, 0), ([2, 3, 11, 9], [5, 3, 3, 3], 2, 1), ([2, 4, 6, 6], [17, 4, 5, 5], 1, 2)]
            .iter()
            .enumerate()
    {
        let p = Conv2dParams::new(xd, wd, s, pad).unwrap();
        let xv = rounded(&data(30 + i as u64, xd.iter().product(), -1.0, 1.0));
        let wv = rounded(&data(40 + i as u64, wd.iter().product(), -1.0, 1.0));
        let want = down(&c, &c.conv2d_fwd(&up(&c, &xv, &xd).unwrap(), &up(&c, &wv, &wd).unwrap(), &p).unwrap());
        let y = g.conv2d_fwd(&half_tensor(&g, &xv, &xd), &half_tensor(&g, &wv, &wd), &p).unwrap();
        close(&format!("conv2d_fwd f16 {xd:?} {wd:?}"), &down(&g, &y), &want, Op::Conv2dFwd.tolerance(p.patch_len()));
    }
}

#[test]
fn mixed_or_unsupported_f16_is_an_error() {
    let Some(g) = gpu_f16() else { return };
    let p = LinearParams::new(2, 3, 4).unwrap();
    let x16 = half_tensor(&g, &[0.5; 6], &[2, 3]);
    let w32 = up(&g, &[0.5; 12], &[4, 3]).unwrap();
    let e = g.linear_fwd(&x16, &w32, &p).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
    // Backward ops and elementwise ops take f32 only.
    assert!(matches!(g.relu_fwd(&x16).unwrap_err(), Error::DType { .. }));
    let u = g.upload_u32(&[1, 2], &[2].into()).unwrap();
    assert!(matches!(g.cast(&u, DType::F16).unwrap_err(), Error::Unsupported { .. }));
}
