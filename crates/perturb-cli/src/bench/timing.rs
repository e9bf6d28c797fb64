//! How each backend is timed, which kernel variants it offers, and its peaks and vendor
//! baseline: the [`BenchBackend`] trait, implemented for the CPU, CUDA and wgpu backends.
//!
//! - CPU: wall clock per call on the backend's own fixed-size thread pool (the row names the
//!   thread count), with the share of CPU time the process got while timing (schedstat), so a
//!   loaded machine is visible in the row.
//! - CUDA: CUDA events with timing enabled, recorded around each repetition on the backend's one
//!   stream, read after the last one (no host sync between repetitions).
//! - wgpu: timestamp queries where the adapter has `TIMESTAMP_QUERY`
//!   (`WgpuBackend::time_gpu`: GPU time between a stamp before and a stamp after each
//!   repetition); otherwise wall clock around each repetition followed by `synchronize()`
//!   (submit and wait). The row's `timing` says which method was used.

use super::peaks::{self, SpecPeaks};
use super::vendor::GemmVendor;
use crate::{Error, Result};
use perturb_core::{Backend, DType, Op, Shape};
use std::time::Instant;

/// Times of the repetitions and, on the CPU, the share of the cores the process got.
#[derive(Debug, Clone, Default)]
pub struct Timed {
    pub ms: Vec<f64>,
    pub cpu_share: Option<f64>,
    /// How these times were taken, where that differs from the backend's
    /// [`BenchBackend::timing`] (the row's `timing` field).
    pub timing: Option<String>,
}

/// A backend the bench can time. Every method has a default, so a wrapper backend (a test's
/// deliberately wrong kernel) needs only `impl BenchBackend for Wrapper {}`.
pub trait BenchBackend: Backend {
    /// How the rows of this backend are timed, in words.
    fn timing(&self) -> String {
        "wall clock + synchronize".into()
    }
    /// CPU threads the ops run on (None for a GPU).
    fn bench_threads(&self) -> Option<usize> {
        None
    }
    /// `warmup` untimed calls of `f`, then `reps` timed ones.
    fn time_ms(&self, warmup: usize, reps: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<Timed> {
        wall_ms(self, warmup, reps, self.bench_threads(), f)
    }
    /// The kernel variants of `op` on this backend.
    fn variants(&self, _op: Op) -> Vec<u32> {
        vec![1]
    }
    /// The variant `op` runs when none is forced.
    fn default_variant(&self, _op: Op) -> u32 {
        1
    }
    /// Runs `f` with every op of `ops` forced to variant `v`.
    fn run_with_variant(&self, ops: &[Op], v: u32, f: &mut dyn FnMut(&Self) -> Result<()>) -> Result<()> {
        if ops.iter().all(|&op| self.variants(op).contains(&v)) {
            f(self)
        } else {
            Err(Error::flag("--variant", format!("{} has no variant {v} of {ops:?}", self.name())))
        }
    }
    /// How much wider than the op's f32 tolerance variant `v` may be (TF32 variants).
    fn tolerance_scale(&self, _op: Op, _v: u32) -> f64 {
        1.0
    }
    /// Elements of each buffer of the copy-bandwidth measurement.
    fn copy_elems(&self) -> usize {
        1 << 24
    }
    /// Measured device-to-device copy bandwidth, GB/s (bytes read + bytes written; best of 10).
    fn copy_gbs(&self) -> Result<f64> {
        let n = self.copy_elems();
        let src = self.zeros(&Shape::from([n]), DType::F32)?;
        let dst = self.zeros(&Shape::from([n]), DType::F32)?;
        let t = self.time_ms(2, 10, &mut || Ok(self.copy_(&dst, &src)?))?;
        let mut ms = t.ms;
        let (_, best, _) = super::row::stats(&mut ms);
        Ok(2.0 * 4.0 * n as f64 / (best * 1e-3) / 1e9)
    }
    /// Measured FMA throughput, GFLOP/s (None where this backend cannot run a custom kernel).
    fn fma_gflops(&self) -> Option<Result<peaks::FmaRate>> {
        None
    }
    /// The device's peaks from the table of known devices.
    fn spec_peaks(&self) -> SpecPeaks {
        peaks::lookup(&self.device_name(), self.bench_threads())
    }
    /// The vendor GEMM on this device (gemm crate, cuBLAS), or None.
    fn gemm_vendor(&self) -> Option<Result<Box<dyn GemmVendor + '_>>> {
        None
    }
    /// Whether this backend is the CPU reference itself.
    fn is_reference(&self) -> bool {
        false
    }
}

/// CPU time used so far by all threads of this process, in ns (Linux schedstat), if readable.
pub fn cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Wall-clock timing with a `synchronize()` after each call (a no-op on the CPU).
pub fn wall_ms<B: Backend>(
    b: &B,
    warmup: usize,
    reps: usize,
    threads: Option<usize>,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<Timed> {
    for _ in 0..warmup {
        f()?;
    }
    b.synchronize()?;
    let mut ms = Vec::with_capacity(reps);
    let (cpu0, wall0) = (cpu_ns(), Instant::now());
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        b.synchronize()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let wall_ns = wall0.elapsed().as_secs_f64() * 1e9;
    let cpu_share = match (threads, cpu0, cpu_ns()) {
        (Some(t), Some(a), Some(z)) if wall_ns > 0.0 => Some(z.saturating_sub(a) as f64 / (wall_ns * t as f64)),
        _ => None,
    };
    Ok(Timed { ms, cpu_share, timing: None })
}

impl BenchBackend for perturb_cpu::CpuBackend {
    fn timing(&self) -> String {
        let t = self.threads();
        format!("wall clock, {t} thread{}", if t == 1 { "" } else { "s" })
    }
    fn bench_threads(&self) -> Option<usize> {
        Some(self.threads())
    }
    fn copy_gbs(&self) -> Result<f64> {
        peaks::cpu_copy_gbs(self)
    }
    fn fma_gflops(&self) -> Option<Result<peaks::FmaRate>> {
        Some(peaks::cpu_fma_gflops(self))
    }
    fn gemm_vendor(&self) -> Option<Result<Box<dyn GemmVendor + '_>>> {
        Some(Ok(Box::new(super::vendor::GemmCrate::new(self.clone()))))
    }
    fn is_reference(&self) -> bool {
        true
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use perturb_cuda::CudaBackend;

    fn drv(what: &str, e: impl std::fmt::Debug) -> Error {
        perturb_core::Error::Device { backend: "cuda", msg: format!("{what}: {e:?}") }.into()
    }

    impl BenchBackend for CudaBackend {
        fn timing(&self) -> String {
            "cuda events".into()
        }
        fn time_ms(&self, warmup: usize, reps: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<Timed> {
            use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
            for _ in 0..warmup {
                f()?;
            }
            self.synchronize()?;
            let (ctx, stream) = (self.context(), self.stream());
            let mut events = Vec::with_capacity(reps);
            for _ in 0..reps {
                let start = ctx.new_event(Some(CU_EVENT_DEFAULT)).map_err(|e| drv("creating an event", e))?;
                let end = ctx.new_event(Some(CU_EVENT_DEFAULT)).map_err(|e| drv("creating an event", e))?;
                start.record(stream).map_err(|e| drv("recording an event", e))?;
                f()?;
                end.record(stream).map_err(|e| drv("recording an event", e))?;
                events.push((start, end));
            }
            // Surfaces any error a kernel raised while the events were queued.
            self.synchronize()?;
            let mut ms = Vec::with_capacity(reps);
            for (s, e) in &events {
                ms.push(s.elapsed_ms(e).map_err(|e| drv("reading an event", e))? as f64);
            }
            Ok(Timed { ms, cpu_share: None, timing: None })
        }
        fn variants(&self, op: Op) -> Vec<u32> {
            perturb_cuda::kernels::variants(op).to_vec()
        }
        fn default_variant(&self, op: Op) -> u32 {
            self.variant(op)
        }
        fn run_with_variant(&self, ops: &[Op], v: u32, f: &mut dyn FnMut(&Self) -> Result<()>) -> Result<()> {
            let mut b = self.clone();
            for &op in ops {
                b.set_variant(op, v)?;
            }
            f(&b)
        }
        fn tolerance_scale(&self, op: Op, v: u32) -> f64 {
            let linear = matches!(op, Op::LinearFwd | Op::LinearBwdInput | Op::LinearBwdWeight);
            if linear && v == 3 { 100.0 } else { 1.0 }
        }
        fn copy_elems(&self) -> usize {
            1 << 26
        }
        fn fma_gflops(&self) -> Option<Result<peaks::FmaRate>> {
            Some(peaks::cuda_fma_gflops(self))
        }
        fn gemm_vendor(&self) -> Option<Result<Box<dyn GemmVendor + '_>>> {
            Some(super::super::vendor::Cublas::new(self).map(|c| Box::new(c) as Box<dyn GemmVendor + '_>))
        }
    }
}

/// The `timing` of wgpu rows timed with timestamp queries.
pub const WGPU_TIMESTAMPS: &str = "wgpu timestamp queries";
/// The `timing` of wgpu rows on an adapter without timestamp queries.
pub const WGPU_WALL: &str = "wall clock + device sync";

#[cfg(feature = "wgpu")]
impl BenchBackend for perturb_wgpu::WgpuBackend {
    fn timing(&self) -> String {
        if self.has_timestamps() { WGPU_TIMESTAMPS } else { WGPU_WALL }.into()
    }
    fn time_ms(&self, warmup: usize, reps: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<Timed> {
        if !self.has_timestamps() {
            return wall_ms(self, warmup, reps, None, f);
        }
        for _ in 0..warmup {
            f()?;
        }
        let t = self.time_gpu(reps, f)?;
        // A closure that reads back (the attack rows) submits work itself: its span
        // then holds the host round trips too, and the row says so.
        let timing = (t.host_gaps > 0).then(|| format!("{WGPU_TIMESTAMPS} (span incl. host round trips)"));
        Ok(Timed { ms: t.ms, cpu_share: None, timing })
    }
    fn variants(&self, op: Op) -> Vec<u32> {
        perturb_wgpu::variants(op).to_vec()
    }
    fn default_variant(&self, op: Op) -> u32 {
        self.variant(op)
    }
    fn run_with_variant(&self, ops: &[Op], v: u32, f: &mut dyn FnMut(&Self) -> Result<()>) -> Result<()> {
        for &op in ops {
            self.set_variant(op, Some(v))?;
        }
        let r = f(self);
        // Back to the adapter's defaults (an override from PERTURB_WGPU_VARIANT is dropped too).
        for &op in ops {
            self.set_variant(op, None)?;
        }
        r
    }
    fn copy_elems(&self) -> usize {
        if self.adapter().device_type == "cpu" { 1 << 22 } else { 1 << 24 }
    }
}
