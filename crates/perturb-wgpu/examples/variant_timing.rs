//! Times each GEMM-family variant on the current adapter for a few CNN-shaped problems, to
//! choose per-adapter defaults. Median of 5 runs after a warm-up, synchronised per run. On a
//! CPU adapter (lavapipe) these are not GPU numbers; docs must not quote them as such.
//!
//! `cargo run -p perturb-wgpu --release --example variant_timing`

use perturb_core::ops::{Conv2dParams, LinearParams};
use perturb_core::{Backend, Op, Result, Shape};
use perturb_wgpu::{WgpuBackend, variants};
use std::time::Instant;

fn median_ms(b: &WgpuBackend, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    b.synchronize()?;
    let mut t = Vec::new();
    for _ in 0..5 {
        let s = Instant::now();
        f()?;
        b.synchronize()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[2])
}

fn main() -> Result<()> {
    let b = WgpuBackend::new()?;
    println!("adapter: {}", b.adapter());
    let z = |d: &[usize]| b.upload_f32(&vec![0.5; d.iter().product()], &Shape::from(d));
    for (xd, wd, s, pad) in [([64, 1, 28, 28], [16, 1, 5, 5], 1, 2), ([64, 16, 14, 14], [32, 16, 5, 5], 1, 2)] {
        let p = Conv2dParams::new(xd, wd, s, pad)?;
        let (x, w, dy) = (z(&xd)?, z(&wd)?, z(&p.output_dims())?);
        let gflop = p.work().flops / 1e9;
        for op in [Op::Conv2dFwd, Op::Conv2dBwdInput, Op::Conv2dBwdWeight] {
            for &v in variants(op) {
                b.set_variant(op, Some(v))?;
                let ms = median_ms(&b, || {
                    match op {
                        Op::Conv2dFwd => b.conv2d_fwd(&x, &w, &p)?,
                        Op::Conv2dBwdInput => b.conv2d_bwd_input(&dy, &w, &p)?,
                        _ => b.conv2d_bwd_weight(&x, &dy, &p)?,
                    };
                    Ok(())
                })?;
                println!("{:18} v{v} x={xd:?} w={wd:?}: {ms:8.2} ms, {:6.2} GFLOP/s", op.name(), gflop / ms * 1e3);
            }
        }
    }
    for (m, k, n) in [(64, 1568, 128), (256, 512, 512)] {
        let p = LinearParams::new(m, k, n)?;
        let (x, w) = (z(&[m, k])?, z(&[n, k])?);
        for &v in variants(Op::LinearFwd) {
            b.set_variant(Op::LinearFwd, Some(v))?;
            let ms = median_ms(&b, || b.linear_fwd(&x, &w, &p).map(|_| ()))?;
            println!(
                "linear_fwd         v{v} {m}x{k}x{n}: {ms:8.2} ms, {:6.2} GFLOP/s",
                p.work().flops / 1e9 / ms * 1e3
            );
        }
    }
    Ok(())
}
