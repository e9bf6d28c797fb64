//! Conv2d on the CPU backend: forward, backward to input, backward to weight.
//!
//! First checks all three ops against the f64 loops of tests/common/naive.rs, on small awkward
//! shapes and on slices of the timed shape, and refuses to time if any is wrong. Then times the
//! timed shape on 2 threads (warm-up, then REPS runs) and prints one row per op:
//! `op | shape | median ms | min ms | max ms | GFLOP/s | % of peak`, plus the combined rate
//! (FLOPs from `Conv2dParams::work()`; peak 233 GFLOP/s = 2 Zen 4 cores x 32 FLOP/cycle x
//! 3.64 GHz, see shared/PLATFORM.md). The machine is shared, so quote medians.
//!
//! `cargo bench --no-default-features --bench conv` (env PERTURB_BENCH_REPS, PERTURB_BENCH_THREADS).

#[allow(dead_code)]
#[path = "../tests/common/naive.rs"]
mod naive;

use perturb::core::ops::Conv2dParams;
use perturb::core::{Backend, Op, Shape, check_close, rng};
use perturb::cpu::CpuBackend;
use std::time::Instant;

const PEAK_GFLOPS: f64 = 233.0;

fn data(seed: u64, len: usize) -> Vec<f32> {
    let p = perturb::core::ops::RngParams::new(len, seed, 0, perturb::core::ops::Dist::Uniform, -1.0, 1.0)
        .expect("rng params");
    (0..len).map(|i| rng::sample(&p, perturb::core::ops::Dist::Uniform, i as u64)).collect()
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;
/// A named op to time.
type Job<'a> = (&'a str, Box<dyn Fn() -> Res<()> + 'a>);

/// Runs the three ops on `b` and compares with the oracle; `images` restricts the forward and
/// input-gradient comparison to those images (the oracle is slow), weight gradient to a batch
/// prefix of `wgrad_batch` images.
fn check(
    b: &CpuBackend,
    xd: [usize; 4],
    wd: [usize; 4],
    s: usize,
    pad: usize,
    images: &[usize],
    wgrad_batch: usize,
) -> Res<()> {
    let p = Conv2dParams::new(xd, wd, s, pad)?;
    let yd = p.output_dims();
    let (x, w, dy) = (data(1, xd.iter().product()), data(2, wd.iter().product()), data(3, yd.iter().product()));
    let xt = b.upload_f32(&x, &Shape::from(xd))?;
    let wt = b.upload_f32(&w, &Shape::from(wd))?;
    let dyt = b.upload_f32(&dy, &Shape::from(yd))?;
    let y = b.download_f32(&b.conv2d_fwd(&xt, &wt, &p)?)?;
    let dx = b.download_f32(&b.conv2d_bwd_input(&dyt, &wt, &p)?)?;
    let (xi, yi) = (xd[1] * xd[2] * xd[3], yd[1] * yd[2] * yd[3]);
    let p1 = Conv2dParams::new([1, xd[1], xd[2], xd[3]], wd, s, pad)?;
    for &i in images {
        let ey = naive::conv2d_fwd(&x[i * xi..(i + 1) * xi], &w, &p1);
        check_close(&y[i * yi..(i + 1) * yi], &ey, Op::Conv2dFwd.tolerance(p.patch_len()))
            .map_err(|e| format!("conv2d_fwd {xd:?} image {i}: {e}"))?;
        let edx = naive::conv2d_bwd_input(&dy[i * yi..(i + 1) * yi], &w, &p1);
        check_close(&dx[i * xi..(i + 1) * xi], &edx, Op::Conv2dBwdInput.tolerance(wd[0] * wd[2] * wd[3]))
            .map_err(|e| format!("conv2d_bwd_input {xd:?} image {i}: {e}"))?;
    }
    let nb = wgrad_batch.min(xd[0]);
    let pb = Conv2dParams::new([nb, xd[1], xd[2], xd[3]], wd, s, pad)?;
    let xb = b.upload_f32(&x[..nb * xi], &Shape::from(pb.input_dims()))?;
    let dyb = b.upload_f32(&dy[..nb * yi], &Shape::from(pb.output_dims()))?;
    let dw = b.download_f32(&b.conv2d_bwd_weight(&xb, &dyb, &pb)?)?;
    let edw = naive::conv2d_bwd_weight(&x[..nb * xi], &dy[..nb * yi], &pb);
    check_close(&dw, &edw, Op::Conv2dBwdWeight.tolerance(nb * yd[2] * yd[3]))
        .map_err(|e| format!("conv2d_bwd_weight {:?}: {e}", pb.input_dims()))?;
    Ok(())
}

/// CPU time used so far by all threads of this process, in ns (Linux schedstat), if readable.
fn cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Median, min and max ms over `reps` runs after a warm-up, and the share of `threads` cores
/// the process received while they ran (None where schedstat is unreadable).
fn time(reps: usize, threads: usize, mut f: impl FnMut() -> Res<()>) -> Res<(f64, f64, f64, Option<f64>)> {
    for _ in 0..3 {
        f()?;
    }
    let mut ms = Vec::with_capacity(reps);
    let (cpu0, wall0) = (cpu_ns(), Instant::now());
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let wall = wall0.elapsed().as_secs_f64() * 1e9;
    let share = match (cpu0, cpu_ns()) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / (wall * threads as f64)),
        _ => None,
    };
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], ms[0], ms[ms.len() - 1], share))
}

fn main() -> Res<()> {
    let reps: usize = std::env::var("PERTURB_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(15).max(1);
    let threads: usize = std::env::var("PERTURB_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let b = CpuBackend::with_threads(threads)?;
    let (xd, wd, s, pad) = ([128, 32, 26, 26], [64, 32, 3, 3], 1, 0);

    // Correctness first: small awkward shapes, then slices of the timed shape.
    for &(sx, sw, ss, sp) in &[
        ([3, 5, 13, 11], [7, 5, 3, 3], 1, 1),
        ([9, 3, 16, 17], [6, 3, 5, 4], 2, 2),
        ([17, 4, 7, 9], [5, 4, 1, 1], 1, 0),
    ] {
        check(&b, sx, sw, ss, sp, &[0, sx[0] - 1], sx[0])?;
    }
    check(&b, xd, wd, s, pad, &[0, 77, 127], 8)?;
    println!(
        "check: conv2d fwd / bwd_input / bwd_weight match the f64 reference (small shapes and slices of the timed shape)"
    );

    let p = Conv2dParams::new(xd, wd, s, pad)?;
    let yd = p.output_dims();
    let x = b.upload_f32(&data(4, xd.iter().product()), &Shape::from(xd))?;
    let w = b.upload_f32(&data(5, wd.iter().product()), &Shape::from(wd))?;
    let dy = b.upload_f32(&data(6, yd.iter().product()), &Shape::from(yd))?;
    let flops = p.work().flops;
    println!("device: {}; {reps} reps after 3 warm-up runs; peak {PEAK_GFLOPS} GFLOP/s", b.device_name());
    println!(
        "CPU share = CPU time the process got / (wall time x {threads} threads); GF/s / share estimates the rate on an idle machine"
    );
    println!(
        "{:<18} | {:<40} | {:>9} | {:>8} | {:>8} | {:>8} | {:>8} | {:>6} | {:>9} | {:>12}",
        "op", "shape", "median ms", "min ms", "max ms", "GFLOP/s", "best GF/s", "% peak", "CPU share", "GF/s / share"
    );
    let shape = format!("x{xd:?} w{wd:?} s{s} p{pad}");
    let (mut total_ms, mut shares) = (0.0, Vec::new());
    let rows: [Job<'_>; 3] = [
        ("conv2d_fwd", Box::new(|| b.conv2d_fwd(&x, &w, &p).map(drop).map_err(Into::into))),
        ("conv2d_bwd_input", Box::new(|| b.conv2d_bwd_input(&dy, &w, &p).map(drop).map_err(Into::into))),
        ("conv2d_bwd_weight", Box::new(|| b.conv2d_bwd_weight(&x, &dy, &p).map(drop).map_err(Into::into))),
    ];
    let fmt_share = |s: Option<f64>, gf: f64| match s {
        Some(s) if s > 0.0 => (format!("{:.0}%", 100.0 * s), format!("{:.1}", gf / s.min(1.0))),
        _ => ("n/a".to_string(), "n/a".to_string()),
    };
    for (name, f) in &rows {
        let (med, min, max, share) = time(reps, threads, f)?;
        total_ms += med;
        shares.extend(share);
        let (gf, best) = (flops / med / 1e6, flops / min / 1e6);
        let (sh, est) = fmt_share(share, gf);
        println!(
            "{name:<18} | {shape:<40} | {med:>9.2} | {min:>8.2} | {max:>8.2} | {gf:>8.1} | {best:>9.1} | {:>5.1}% | {sh:>9} | {est:>12}",
            100.0 * gf / PEAK_GFLOPS
        );
    }
    let gf = 3.0 * flops / total_ms / 1e6;
    let share = (shares.len() == 3).then(|| shares.iter().sum::<f64>() / 3.0);
    let (sh, est) = fmt_share(share, gf);
    println!(
        "{:<18} | {shape:<40} | {total_ms:>9.2} | {:>8} | {:>8} | {gf:>8.1} | {:>9} | {:>5.1}% | {sh:>9} | {est:>12}",
        "fwd+bwd (sum)",
        "",
        "",
        "",
        100.0 * gf / PEAK_GFLOPS
    );
    Ok(())
}
