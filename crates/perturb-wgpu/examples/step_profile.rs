//! Per-op wall-clock profile of one cnn-small training step (batch 32 unless `PROFILE_BATCH`
//! says otherwise) on the wgpu backend: every op of the forward pass, the backward pass and
//! the SGD updates, each synchronised on its own (median of 5 after a warm-up), then the
//! whole step unsynchronised with its submission count. Used to find where lavapipe spends
//! its time; on a CPU adapter these are not GPU numbers.
//!
//! `cargo run -p perturb-wgpu --release --example step_profile`

use perturb_core::ops::{BiasParams, Conv2dParams, LinearParams, SgdParams, XentParams};
use perturb_core::{Backend, Result, Shape, Tensor};
use perturb_wgpu::WgpuBackend;
use std::time::Instant;

type T = Tensor<WgpuBackend>;

/// CPU seconds (user + system) of this process: lavapipe's worker threads run in it, so
/// this is the work done whatever else the shared machine runs.
fn cpu_seconds() -> f64 {
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = [0i64; 2];
    // SAFETY: clock_gettime writes one timespec (two i64 on x86-64 Linux) into `ts`.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts[0] as f64 + ts[1] as f64 * 1e-9
}

/// (median wall ms, CPU ms per call over all reps).
fn median_ms(b: &WgpuBackend, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    b.synchronize()?;
    let mut t = Vec::new();
    let c0 = cpu_seconds();
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        b.synchronize()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let cpu = (cpu_seconds() - c0) * 1e3 / reps as f64;
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], cpu))
}

fn main() -> Result<()> {
    let b = WgpuBackend::new()?;
    let n: usize = std::env::var("PROFILE_BATCH").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
    println!("adapter: {}, batch {n}", b.adapter());
    let up = |d: &[usize], seed: u32| -> Result<T> {
        let len: usize = d.iter().product();
        let v: Vec<f32> = (0..len)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        b.upload_f32(&v, &Shape::from(d))
    };
    let c1 = Conv2dParams::new([n, 1, 28, 28], [16, 1, 4, 4], 2, 1)?;
    let c2 = Conv2dParams::new([n, 16, 14, 14], [32, 16, 4, 4], 2, 1)?;
    let l1 = LinearParams::new(n, 32 * 7 * 7, 100)?;
    let l2 = LinearParams::new(n, 100, 10)?;
    let x = up(&[n, 1, 28, 28], 1)?;
    let w1 = up(&[16, 1, 4, 4], 2)?;
    let w2 = up(&[32, 16, 4, 4], 3)?;
    let fw1 = up(&[100, 1568], 4)?;
    let fw2 = up(&[10, 100], 5)?;
    let bb1 = up(&[16], 6)?;
    let bb2 = up(&[32], 7)?;
    let bf1 = up(&[100], 8)?;
    let _bf2 = up(&[10], 9)?;
    let labels = b.upload_u32(&(0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), &Shape::from([n]))?;
    let h1 = up(&[n, 16, 14, 14], 10)?;
    let h2 = up(&[n, 32, 7, 7], 11)?;
    let f1 = up(&[n, 1568], 12)?;
    let z1 = up(&[n, 100], 13)?;
    let logits = up(&[n, 10], 14)?;
    let dlog = up(&[n, 10], 15)?;
    let dz1 = up(&[n, 100], 16)?;
    let dh2 = up(&[n, 32, 7, 7], 17)?;
    let dh1 = up(&[n, 16, 14, 14], 18)?;
    let mom = up(&[100, 1568], 19)?;
    let g = up(&[100, 1568], 20)?;
    let bp = |o: usize, c: usize, i: usize| BiasParams::new(o, c, i);
    let xp = XentParams::new(n, 10, 1.0 / n as f32)?;
    let sgd = SgdParams::new(100 * 1568, 0.01, 0.9, 0.0, true)?;

    let reps: usize = std::env::var("PROFILE_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
    macro_rules! prof {
        ($name:expr, $e:expr) => {{
            let ms = median_ms(&b, reps, || {
                let _ = $e;
                Ok(())
            })?;
            rows.push(($name, ms));
        }};
    }
    prof!("conv1 fwd", b.conv2d_fwd(&x, &w1, &c1)?);
    prof!("bias_add conv1", b.bias_add(&h1, &bb1, &bp(n, 16, 196)?)?);
    prof!("relu conv1", b.relu_fwd(&h1)?);
    prof!("conv2 fwd", b.conv2d_fwd(&h1, &w2, &c2)?);
    prof!("bias_add conv2", b.bias_add(&h2, &bb2, &bp(n, 32, 49)?)?);
    prof!("relu conv2", b.relu_fwd(&h2)?);
    prof!("fc1 fwd", b.linear_fwd(&f1, &fw1, &l1)?);
    prof!("bias_add fc1", b.bias_add(&z1, &bf1, &bp(n, 100, 1)?)?);
    prof!("fc2 fwd", b.linear_fwd(&z1, &fw2, &l2)?);
    prof!("softmax_xent", b.softmax_xent(&logits, &labels, &xp)?);
    prof!("fc2 bwd_input", b.linear_bwd_input(&dlog, &fw2, &l2)?);
    prof!("fc2 bwd_weight", b.linear_bwd_weight(&z1, &dlog, &l2)?);
    prof!("bias_grad fc2", b.bias_grad(&dlog, &bp(n, 10, 1)?)?);
    prof!("relu_bwd fc1", b.relu_bwd(&dz1, &z1)?);
    prof!("fc1 bwd_input", b.linear_bwd_input(&dz1, &fw1, &l1)?);
    prof!("fc1 bwd_weight", b.linear_bwd_weight(&f1, &dz1, &l1)?);
    prof!("bias_grad fc1", b.bias_grad(&dz1, &bp(n, 100, 1)?)?);
    prof!("conv2 bwd_input", b.conv2d_bwd_input(&dh2, &w2, &c2)?);
    prof!("conv2 bwd_weight", b.conv2d_bwd_weight(&h1, &dh2, &c2)?);
    prof!("bias_grad conv2", b.bias_grad(&dh2, &bp(n, 32, 49)?)?);
    prof!("relu_bwd conv1", b.relu_bwd(&dh1, &h1)?);
    prof!("conv1 bwd_input", b.conv2d_bwd_input(&dh1, &w1, &c1)?);
    prof!("conv1 bwd_weight", b.conv2d_bwd_weight(&x, &dh1, &c1)?);
    prof!("bias_grad conv1", b.bias_grad(&dh1, &bp(n, 16, 196)?)?);
    prof!("sgd fc1 (156800)", b.sgd_update_(&fw1, &g, &mom, &sgd)?);
    prof!("empty sync", ());

    // The whole step recorded without a sync in between (as a training step runs): how long
    // the host takes to record it, then how long the device takes to run it.
    let step = || -> Result<()> {
        let y1 = b.relu_fwd(&b.bias_add(&b.conv2d_fwd(&x, &w1, &c1)?, &bb1, &bp(n, 16, 196)?)?)?;
        let y2 = b.relu_fwd(&b.bias_add(&b.conv2d_fwd(&y1, &w2, &c2)?, &bb2, &bp(n, 32, 49)?)?)?;
        let z =
            b.relu_fwd(&b.bias_add(&b.linear_fwd(&y2.reshape([n, 1568])?, &fw1, &l1)?, &bf1, &bp(n, 100, 1)?)?)?;
        let lg = b.linear_fwd(&z, &fw2, &l2)?;
        let (_loss, dl) = b.softmax_xent(&lg, &labels, &xp)?;
        let dz = b.relu_bwd(&b.linear_bwd_input(&dl, &fw2, &l2)?, &z)?;
        let _ = (b.linear_bwd_weight(&z, &dl, &l2)?, b.bias_grad(&dl, &bp(n, 10, 1)?)?);
        let dy2 = b.relu_bwd(&b.linear_bwd_input(&dz, &fw1, &l1)?.reshape([n, 32, 7, 7])?, &y2)?;
        let _ = (b.linear_bwd_weight(&y2.reshape([n, 1568])?, &dz, &l1)?, b.bias_grad(&dz, &bp(n, 100, 1)?)?);
        let dy1 = b.relu_bwd(&b.conv2d_bwd_input(&dy2, &w2, &c2)?, &y1)?;
        let _ = (b.conv2d_bwd_weight(&y1, &dy2, &c2)?, b.bias_grad(&dy2, &bp(n, 32, 49)?)?);
        let _ = (b.conv2d_bwd_weight(&x, &dy1, &c1)?, b.bias_grad(&dy1, &bp(n, 16, 196)?)?);
        b.sgd_update_(&fw1, &g, &mom, &sgd)?;
        Ok(())
    };
    step()?;
    b.synchronize()?;
    let subs = b.submissions();
    let (mut rec, mut run, mut rec_cpu, mut all_cpu) = (Vec::new(), Vec::new(), 0.0, 0.0);
    for _ in 0..reps {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        step()?;
        let (t1, c1) = (Instant::now(), cpu_seconds());
        b.synchronize()?;
        rec.push((t1 - t0).as_secs_f64() * 1e3);
        run.push(t1.elapsed().as_secs_f64() * 1e3);
        rec_cpu += (c1 - c0) * 1e3;
        all_cpu += (cpu_seconds() - c0) * 1e3;
    }
    rec.sort_by(f64::total_cmp);
    run.sort_by(f64::total_cmp);
    println!(
        "whole step: record {:.2} ms wall ({:.2} ms CPU), run {:.2} ms wall, {:.2} ms CPU in all, {} submissions per step",
        rec[reps / 2],
        rec_cpu / reps as f64,
        run[reps / 2],
        all_cpu / reps as f64,
        (b.submissions() - subs) as f64 / reps as f64
    );
    let total: f64 = rows.iter().map(|r| r.1.0).sum();
    let total_cpu: f64 = rows.iter().map(|r| r.1.1).sum();
    println!("{:20} {:>9} {:>9} {:>6}", "op", "wall ms", "cpu ms", "cpu %");
    for (name, (ms, cpu)) in &rows {
        println!("{name:20} {ms:9.3} {cpu:9.2} {:5.1} %", 100.0 * cpu / total_cpu);
    }
    println!("{:20} {total:9.3} {total_cpu:9.2}", "sum (each synced)");
    Ok(())
}
