//! Conv2d: forward, backward to input, backward to weight, and the three back to back as the
//! foundation issue's conv layer (`conv2d_layer`, [128,32,26,26] x [64,32,3,3]).
//!
//! Correctness first, twice: the CPU backend against the f64 oracle (`perturb::core::naive`)
//! on small awkward shapes (padding, stride 2, 1x1, odd sizes); then the shared harness checks
//! the backend under test on every timed shape (a sample of elements against the same oracle
//! and, off the CPU, the full output against the CPU reference backend) and refuses
//! to time a wrong kernel. Then one row per variant, plus the vendor GEMM of the implicit-GEMM
//! product: median/min/max ms, GFLOP/s and GB/s from `Conv2dParams::work()`, % of peak,
//! x vs reference and vendor (see docs/bench.md). The same rows as `perturb bench --op conv2d`.
//!
//! `cargo bench --no-default-features --bench conv`; environment: PERTURB_BENCH_BACKEND
//! (cpu|cuda|wgpu, default cpu), PERTURB_BENCH_THREADS (default 2), PERTURB_BENCH_REPS,
//! PERTURB_BENCH_SHAPES, PERTURB_BENCH_VARIANT, PERTURB_BENCH_JSON (file for the rows).

use perturb::cli::bench::spec::uniform;
use perturb::core::ops::Conv2dParams;
use perturb::core::{Backend, Op, Shape, check_close, naive};
use perturb::cpu::CpuBackend;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The three ops of `b` on one shape against the f64 oracle, every element.
fn check(b: &CpuBackend, xd: [usize; 4], wd: [usize; 4], s: usize, pad: usize) -> Res<()> {
    let p = Conv2dParams::new(xd, wd, s, pad)?;
    let yd = p.output_dims();
    let x = uniform(1, xd.iter().product(), -1.0, 1.0);
    let w = uniform(2, wd.iter().product(), -1.0, 1.0);
    let dy = uniform(3, yd.iter().product(), -1.0, 1.0);
    let xt = b.upload_f32(&x, &Shape::from(xd))?;
    let wt = b.upload_f32(&w, &Shape::from(wd))?;
    let dyt = b.upload_f32(&dy, &Shape::from(yd))?;
    let cases = [
        (Op::Conv2dFwd, b.conv2d_fwd(&xt, &wt, &p)?, naive::conv2d_fwd(&x, &w, &p), p.patch_len()),
        (
            Op::Conv2dBwdInput,
            b.conv2d_bwd_input(&dyt, &wt, &p)?,
            naive::conv2d_bwd_input(&dy, &w, &p),
            wd[0] * wd[2] * wd[3],
        ),
        (
            Op::Conv2dBwdWeight,
            b.conv2d_bwd_weight(&xt, &dyt, &p)?,
            naive::conv2d_bwd_weight(&x, &dy, &p),
            xd[0] * yd[2] * yd[3],
        ),
    ];
    for (op, got, want, k) in cases {
        check_close(&b.download_f32(&got)?, &want, op.tolerance(k))
            .map_err(|e| format!("{} {xd:?} {wd:?}: {e}", op.name()))?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let pre = || -> Res<()> {
        let b = CpuBackend::with_threads(2)?;
        for &(sx, sw, ss, sp) in &[
            ([3, 5, 13, 11], [7, 5, 3, 3], 1, 1),
            ([9, 3, 16, 17], [6, 3, 5, 4], 2, 2),
            ([17, 4, 7, 9], [5, 4, 1, 1], 1, 0),
            ([1, 2, 6, 6], [3, 2, 6, 6], 1, 0),
        ] {
            check(&b, sx, sw, ss, sp)?;
        }
        Ok(())
    };
    if let Err(e) = pre() {
        eprintln!("refusing to time: the CPU conv disagrees with the f64 oracle: {e}");
        return std::process::ExitCode::FAILURE;
    }
    println!("check: CPU conv2d fwd / bwd_input / bwd_weight match the f64 oracle on small awkward shapes");
    perturb::cli::bench::bench_main("conv2d")
}
