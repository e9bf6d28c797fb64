//! Device peaks: a table of published FP32 (non-tensor-core) and memory-bandwidth figures,
//! and the two measurements made on the device at hand (copy bandwidth, FMA rate).
//!
//! `% of peak` uses the roofline: an op whose FLOPs per compulsory byte exceed the device's
//! balance point (peak FLOP/s / peak B/s) is measured against the FLOP peak, any other against
//! the bandwidth peak. The spec figure is used where the table knows the device, the measured
//! one otherwise (the row's `peak_source` says which).

use crate::Result;
use perturb_core::Work;

/// Published peaks of a known device.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecPeaks {
    /// FP32 FLOP/s without tensor cores, in GFLOP/s.
    pub gflops: Option<f64>,
    /// Memory bandwidth, GB/s.
    pub gbs: Option<f64>,
    /// The table entry that matched ("" when none).
    pub entry: String,
}

/// (name substring, FP32 TFLOP/s, memory TB/s), most specific first. Boost-clock vendor
/// figures (NVIDIA data sheets).
const GPU_TABLE: &[(&str, f64, f64)] = &[
    ("H200 NVL", 60.0, 4.8),
    ("H200", 67.0, 4.8),
    ("H100 NVL", 60.0, 3.9),
    ("H100 PCIe", 51.0, 2.0),
    ("H100", 67.0, 3.35), // SXM5, HBM3
    ("GH200", 67.0, 4.0),
    ("A100-SXM4-80GB", 19.5, 2.039),
    ("A100 80GB PCIe", 19.5, 1.935),
    ("A100", 19.5, 1.555),
    ("L40S", 91.6, 0.864),
    ("L4", 30.3, 0.3),
    ("A10G", 31.2, 0.6),
    ("A10", 31.2, 0.6),
    ("RTX 4090", 82.6, 1.008),
    ("RTX 3090", 35.6, 0.936),
    ("V100", 15.7, 0.9),
    ("T4", 8.1, 0.32),
];

/// FP32 GFLOP/s per core of the 2-core AMD EPYC machines this project runs on (their CPUID
/// model name is the bare "AMD EPYC"): 32 FLOP/cycle (two 256-bit FMA pipes) x 3.64 GHz under
/// load (../shared/PLATFORM.md; a pure FMA loop measured 233 GFLOP/s on 2 idle cores). Their
/// Zen 4 cores expose AVX-512, but run a 512-bit FMA as two 256-bit halves: `peak_fma` times
/// both widths and they agree, so the figure holds for either.
const EPYC_GFLOPS_PER_CORE: f64 = 116.5;

/// The peaks of the device named `device` (a backend's `device_name()`); `threads` scales a
/// CPU's per-core figure.
pub fn lookup(device: &str, threads: Option<usize>) -> SpecPeaks {
    let lower = device.to_ascii_lowercase();
    if let Some(t) = threads {
        // "AMD EPYC (2 threads)": the masked model name of these machines; a named EPYC
        // ("AMD EPYC 9654 ...") is another generation and needs its own entry.
        if lower.starts_with("amd epyc (") {
            return SpecPeaks {
                gflops: Some(EPYC_GFLOPS_PER_CORE * t as f64),
                // No published figure for a share of a cloud host's memory: measured instead.
                gbs: None,
                entry: format!("2-core AMD EPYC VM, {t} x 116.5 GFLOP/s"),
            };
        }
        return SpecPeaks { gflops: None, gbs: None, entry: String::new() };
    }
    for &(name, tf, tb) in GPU_TABLE {
        if lower.contains(&name.to_ascii_lowercase()) {
            return SpecPeaks { gflops: Some(tf * 1e3), gbs: Some(tb * 1e3), entry: format!("{name} data sheet") };
        }
    }
    SpecPeaks { gflops: None, gbs: None, entry: String::new() }
}

/// The peaks a row is measured against, resolved from spec and measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Peaks {
    pub gflops: f64,
    pub gbs: f64,
    pub source: String,
    pub measured_gflops: Option<f64>,
    pub measured_gbs: Option<f64>,
}

impl Peaks {
    /// Spec figures where known, measured ones otherwise.
    pub fn resolve(spec: &SpecPeaks, measured_gflops: Option<f64>, measured_gbs: Option<f64>) -> Peaks {
        let (gflops, fs) = match (spec.gflops, measured_gflops) {
            (Some(g), _) => (g, "spec"),
            (None, Some(m)) => (m, "measured"),
            (None, None) => (f64::NAN, "unknown"),
        };
        let (gbs, bs) = match (spec.gbs, measured_gbs) {
            (Some(g), _) => (g, "spec"),
            (None, Some(m)) => (m, "measured"),
            (None, None) => (f64::NAN, "unknown"),
        };
        let entry = if spec.entry.is_empty() { String::new() } else { format!(" ({})", spec.entry) };
        Peaks { gflops, gbs, source: format!("flops {fs}, bandwidth {bs}{entry}"), measured_gflops, measured_gbs }
    }

    /// (percent of the binding roof, which roof) for `work` done in `ms`.
    pub fn percent(&self, work: Work, ms: f64) -> (f64, &'static str) {
        let s = ms * 1e-3;
        let (gf, gb) = (work.flops / s / 1e9, work.bytes / s / 1e9);
        let balance = self.gflops / self.gbs; // FLOPs per byte where the roofs meet
        let intensity = if work.bytes > 0.0 { work.flops / work.bytes } else { f64::INFINITY };
        if !balance.is_finite() {
            // One roof unknown (no FMA measurement on wgpu): use the one there is.
            return match (self.gflops.is_finite(), self.gbs.is_finite()) {
                (true, _) => (100.0 * gf / self.gflops, "flops"),
                (false, true) => (100.0 * gb / self.gbs, "bandwidth"),
                _ => (f64::NAN, "-"),
            };
        }
        if intensity >= balance { (100.0 * gf / self.gflops, "flops") } else { (100.0 * gb / self.gbs, "bandwidth") }
    }
}

/// Copy bandwidth on the CPU backend's threads: a parallel chunked copy of 128 MiB, counted
/// as bytes read + bytes written (as STREAM's copy).
pub fn cpu_copy_gbs(b: &perturb_cpu::CpuBackend) -> Result<f64> {
    use rayon::prelude::*;
    const N: usize = 1 << 25;
    let src: Vec<f32> = (0..N).map(|i| i as f32).collect();
    let mut dst = vec![0f32; N];
    let mut ms = Vec::new();
    for rep in 0..8 {
        let t = std::time::Instant::now();
        b.install(|| {
            dst.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        });
        if rep >= 2 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    // The best repetition: a peak is what the device can do, not what a busy moment allowed.
    let (_, best, _) = super::row::stats(&mut ms);
    std::hint::black_box(&dst);
    Ok(2.0 * 4.0 * N as f64 / (best * 1e-3) / 1e9)
}

/// A measured FMA rate and the instruction set that reached it.
#[derive(Debug, Clone, PartialEq)]
pub struct FmaRate {
    /// GFLOP/s (an FMA counts 2 FLOPs).
    pub gflops: f64,
    /// What ran: the widest vector FMA that gave the best rate (CPU), or the GPU kernel.
    pub isa: String,
    /// Every width tried, for the row's note ("avx512f (512-bit) 231.0, avx2+fma (256-bit) 230.4").
    pub detail: String,
}

/// The FMA widths this CPU can run, widest first: (short name, lanes, runner).
type FmaWidth = (&'static str, usize, fn(usize) -> f32);

fn cpu_fma_widths() -> Vec<FmaWidth> {
    let mut w: Vec<FmaWidth> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            w.push(("avx512f", 16, fma_chains_avx512_safe));
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            w.push(("avx2+fma", 8, fma_chains_avx2_safe));
        }
    }
    if w.is_empty() {
        w.push(("scalar", 1, fma_chains_scalar));
    }
    w
}

/// FMA rate on the CPU backend's threads, the way the hardware runs: every vector width the
/// CPU has (512-bit where AVX-512 is present, 256-bit AVX2+FMA; scalar only when neither) is timed
/// with 12 independent chains per thread (enough to cover the FMA latency on two pipes), and
/// the best is the peak. Some CPUs split 512-bit FMAs into two 256-bit halves (AMD Zen 4), so
/// the widest is not assumed to be the fastest: each is measured.
pub fn cpu_fma_gflops(b: &perturb_cpu::CpuBackend) -> Result<FmaRate> {
    let threads = b.threads();
    let mut rates: Vec<(&'static str, usize, f64)> = Vec::new();
    for (name, lanes, run) in cpu_fma_widths() {
        // About 0.1 s per repetition whatever the width: scalar runs far fewer iterations.
        let iters = if lanes == 1 { 400_000 } else { 4_000_000 * 8 / lanes };
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let sums: Vec<f32> = b.install(|| rayon::broadcast(|_| run(iters)));
            let s = t.elapsed().as_secs_f64();
            std::hint::black_box(&sums);
            let flops = threads as f64 * iters as f64 * FMA_CHAINS as f64 * lanes as f64 * 2.0;
            best = best.max(flops / s / 1e9);
        }
        rates.push((name, lanes, best));
    }
    let (isa, _, gflops) = rates.iter().copied().fold(("", 0, 0.0f64), |a, r| if r.2 > a.2 { r } else { a });
    let detail = rates.iter().map(|(n, l, g)| format!("{n} ({}-bit) {g:.1}", 32 * l)).collect::<Vec<_>>().join(", ");
    Ok(FmaRate { gflops, isa: isa.to_string(), detail })
}

/// Independent FMA chains per thread in every CPU width.
const FMA_CHAINS: usize = 12;

/// 12 scalar chains x `iters` FMAs; returns their sum so nothing is optimised away.
fn fma_chains_scalar(iters: usize) -> f32 {
    let mut acc = [1.0f32; FMA_CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
fn fma_chains_avx2_safe(iters: usize) -> f32 {
    assert!(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"));
    // SAFETY: the CPU supports AVX2 and FMA (asserted just above), which is all the function's
    // target features require.
    unsafe { fma_chains_avx2(iters) }
}

#[cfg(target_arch = "x86_64")]
fn fma_chains_avx512_safe(iters: usize) -> f32 {
    assert!(std::arch::is_x86_feature_detected!("avx512f"));
    // SAFETY: the CPU supports AVX-512F (asserted just above), the function's one feature.
    unsafe { fma_chains_avx512(iters) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let c = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); FMA_CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, c);
        }
    }
    let mut lanes = [0f32; 8];
    let mut total = 0.0;
    for v in acc {
        // SAFETY: `lanes` holds exactly 8 f32, the width of one unaligned 256-bit store.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        total += lanes.iter().sum::<f32>();
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let c = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); FMA_CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, c);
        }
    }
    acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
}

/// The FMA kernel the CUDA measurement compiles: 8 independent chains per thread.
pub const CUDA_FMA_SOURCE: &str = r#"
extern "C" __global__ void bench_fma_rate(float* out, float a, float c, int iters) {
    float x0 = threadIdx.x, x1 = x0 + 1.f, x2 = x0 + 2.f, x3 = x0 + 3.f;
    float x4 = x0 + 4.f, x5 = x0 + 5.f, x6 = x0 + 6.f, x7 = x0 + 7.f;
    for (int i = 0; i < iters; ++i) {
        x0 = fmaf(x0, a, c); x1 = fmaf(x1, a, c); x2 = fmaf(x2, a, c); x3 = fmaf(x3, a, c);
        x4 = fmaf(x4, a, c); x5 = fmaf(x5, a, c); x6 = fmaf(x6, a, c); x7 = fmaf(x7, a, c);
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
}
"#;

/// The FMA kernel as a module NVRTC can compile (used by the measurement and by a test that
/// compiles it wherever libnvrtc is present).
#[cfg(feature = "cuda")]
pub static CUDA_FMA_MODULE: perturb_cuda::kernels::KernelModule = perturb_cuda::kernels::KernelModule {
    module: perturb_cuda::kernels::Module::Elementwise,
    file: "bench_fma_rate (perturb bench)",
    source: CUDA_FMA_SOURCE,
    entries: &["bench_fma_rate"],
    fmad: true,
};

/// FMA rate of the CUDA device: 4 blocks of 512 threads per SM, 8 chains each.
#[cfg(feature = "cuda")]
pub fn cuda_fma_gflops(b: &perturb_cuda::CudaBackend) -> Result<FmaRate> {
    use super::timing::BenchBackend;
    use cudarc::driver::{LaunchConfig, PushKernelArg};
    let err = |what: &str, e: String| -> crate::Error {
        perturb_core::Error::Device { backend: "cuda", msg: format!("FMA-rate kernel: {what}: {e}") }.into()
    };
    let compiled = perturb_cuda::nvrtc::compile(&CUDA_FMA_MODULE, b.target()).map_err(|e| err("compiling", e))?;
    let image = match compiled.cubin {
        Some(c) => cudarc::nvrtc::Ptx::from_binary(c),
        None => cudarc::nvrtc::Ptx::from_src(compiled.ptx),
    };
    let module = b.context().load_module(image).map_err(|e| err("loading", format!("{e:?}")))?;
    let f = module.load_function("bench_fma_rate").map_err(|e| err("loading", format!("{e:?}")))?;
    let blocks = 4 * b.summary().multiprocessors.max(1);
    let threads = 512u32;
    let out = b.stream().alloc_zeros::<f32>((blocks * threads) as usize).map_err(|e| err("alloc", format!("{e:?}")))?;
    let (a, c, iters) = (0.999_999f32, 1e-7f32, 1 << 16i32);
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let t = BenchBackend::time_ms(b, 2, 5, &mut || {
        let mut l = b.stream().launch_builder(&f);
        l.arg(&out).arg(&a).arg(&c).arg(&iters);
        // SAFETY: bench_fma_rate(float*, float, float, int) takes exactly these arguments, and
        // `out` holds one float per launched thread (blocks x threads).
        unsafe { l.launch(cfg) }.map_err(|e| err("launching", format!("{e:?}")))?;
        Ok(())
    })?;
    let mut ms = t.ms;
    let (med, ..) = super::row::stats(&mut ms);
    let flops = blocks as f64 * threads as f64 * iters as f64 * 8.0 * 2.0;
    let gflops = flops / (med * 1e-3) / 1e9;
    Ok(FmaRate { gflops, isa: "fmaf".into(), detail: format!("{blocks} blocks x {threads} threads x 8 chains") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_gpu_names_most_specific_first() {
        assert_eq!(lookup("NVIDIA H100 80GB HBM3", None).gbs, Some(3350.0));
        assert_eq!(lookup("NVIDIA H100 PCIe", None).gbs, Some(2000.0));
        assert_eq!(lookup("cuda:0 NVIDIA H200 (sm_90, 132 SMs)", None).gbs, Some(4800.0));
        assert_eq!(lookup("NVIDIA H200", None).gflops, Some(67_000.0));
        assert_eq!(lookup("llvmpipe (LLVM 15.0.6, 256 bits)", None).gflops, None);
        assert_eq!(lookup("AMD EPYC (2 threads)", Some(2)).gflops, Some(233.0));
        assert_eq!(lookup("AMD EPYC 9654 96-Core Processor (4 threads)", Some(4)).gflops, None);
    }

    #[test]
    fn roofline_picks_the_binding_roof() {
        let p = Peaks::resolve(&SpecPeaks { gflops: Some(100.0), gbs: Some(10.0), entry: String::new() }, None, None);
        // 1000 FLOP/byte: compute bound; 1 GFLOP in 20 ms = 50 GFLOP/s = 50%.
        let (pct, roof) = p.percent(Work { flops: 1e9, bytes: 1e6 }, 20.0);
        assert_eq!(roof, "flops");
        assert!((pct - 50.0).abs() < 1e-9);
        // 0.25 FLOP/byte: bandwidth bound; 0.1 GB in 20 ms = 5 GB/s = 50%.
        let (pct, roof) = p.percent(Work { flops: 2.5e7, bytes: 1e8 }, 20.0);
        assert_eq!(roof, "bandwidth");
        assert!((pct - 50.0).abs() < 1e-9);
    }

    #[test]
    fn every_fma_width_computes_the_same_chains() {
        // x <- 0.999999 x + 1e-7 from 1, 100 times, in every chain and lane: the widths differ
        // only in how many lanes they sum, so per lane they agree to rounding.
        let widths = cpu_fma_widths();
        assert!(!widths.is_empty());
        let per_lane = |(_, lanes, run): &FmaWidth| run(100) as f64 / (FMA_CHAINS * lanes) as f64;
        let want = per_lane(&("scalar", 1, fma_chains_scalar));
        assert!((want - 0.999_91).abs() < 1e-4, "scalar chain value {want}");
        for w in &widths {
            assert!((per_lane(w) - want).abs() < 1e-5, "{}: {} vs {want}", w.0, per_lane(w));
        }
    }
}
