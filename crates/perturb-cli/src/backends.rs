//! Choosing a backend from `--backend cpu|wgpu|cuda|auto` and running generic code on it.
//!
//! `--deterministic` is a global flag of the command line (it may follow any subcommand):
//! [`crate::main_with_args`] installs it for the command's duration with
//! [`DeterministicScope`], [`resolve`] opens the GPU backends in their deterministic mode, and
//! every `--json` result that names its backend records it ([`record_determinism`]). What the
//! mode does per backend is in [`determinism_note`] and docs/reliability.md (determinism).

use crate::{Error, Result};
use clap::ValueEnum;
use std::cell::Cell;

thread_local! {
    static DETERMINISTIC: Cell<bool> = const { Cell::new(false) };
}

/// Sets the `--deterministic` request for the current thread until dropped (a thread-local, so
/// tests running commands in parallel threads do not see each other's flag).
pub struct DeterministicScope {
    previous: bool,
}

impl DeterministicScope {
    /// Requests (or not) deterministic backends until the returned guard is dropped.
    pub fn set(on: bool) -> Self {
        DeterministicScope { previous: DETERMINISTIC.with(|d| d.replace(on)) }
    }
}

impl Drop for DeterministicScope {
    fn drop(&mut self) {
        DETERMINISTIC.with(|d| d.set(self.previous));
    }
}

/// Whether `--deterministic` was given to the running command.
pub fn deterministic_requested() -> bool {
    DETERMINISTIC.with(|d| d.get())
}

/// What `--deterministic` means on `backend` (`cpu`, `wgpu`, `cuda`), in one sentence.
pub fn determinism_note(backend: &str) -> &'static str {
    match backend {
        "cpu" => {
            "no-op: the CPU backend is always deterministic (fixed-size chunks summed in order, no atomics), \
             bit-identical run to run and for any --threads"
        }
        "cuda" => {
            "kernel variants limited to those whose arithmetic this source fixes (the TF32 GEMM v3 is refused; \
             every promoted kernel is already atomic-free and fixed-order) and fresh pool blocks filled with NaN \
             bits before use: bit-identical run to run on one GPU, driver and NVRTC"
        }
        "wgpu" => {
            "fresh pool buffers zero-filled before use (every shader is already atomic-free and fixed-order): \
             bit-identical run to run on one adapter and driver, not across adapters"
        }
        _ => "unknown backend",
    }
}

/// Adds `"deterministic"` (and, when it was requested, `"determinism"`: what it means there)
/// to a `--json` result that names its backend under `"backend"`; other values are left alone.
pub fn record_determinism(value: &mut serde_json::Value) {
    let Some(obj) = value.as_object_mut() else { return };
    let Some(name) = obj.get("backend").and_then(|b| b.as_str()).map(str::to_string) else { return };
    let on = deterministic_requested();
    obj.insert("deterministic".into(), serde_json::Value::Bool(on));
    if on {
        obj.insert("determinism".into(), serde_json::Value::String(determinism_note(&name).into()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The rayon CPU backend (always available).
    Cpu,
    /// WGSL compute shaders through wgpu (Vulkan, Metal, DX12).
    Wgpu,
    /// CUDA kernels compiled by NVRTC.
    Cuda,
    /// CUDA if a device is present, else wgpu on a real (non-CPU) adapter, else the CPU.
    Auto,
}

/// A backend that could be constructed, after resolving `auto`.
pub enum Resolved {
    Cpu(perturb_cpu::CpuBackend),
    #[cfg(feature = "wgpu")]
    Wgpu(Box<perturb_wgpu::WgpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(perturb_cuda::CudaBackend),
}

fn cpu(threads: Option<usize>) -> Result<Resolved> {
    Ok(Resolved::Cpu(match threads {
        Some(0) => return Err(Error::flag("--threads", "must be at least 1")),
        Some(n) if host_threads(n) => perturb_cpu::CpuBackend::new(),
        Some(n) => perturb_cpu::CpuBackend::with_threads(n)?,
        None => perturb_cpu::CpuBackend::new(),
    }))
}

/// Sizes rayon's global pool to `--threads` (the main thread one of them) and says whether it has that size, so the ops and
/// the attacks' per-example host work (FAB's projections, Square's window sums) share one
/// pool of `n` threads: two pools of `n` on `n` cores make each one's idle threads spin
/// against the other's work (measured: Square 19.4 s with two pools, see docs/bench.md). The
/// global pool is built once per process; when an earlier call gave it another size, the
/// backend gets a pool of its own instead.
fn host_threads(n: usize) -> bool {
    let builder = rayon::ThreadPoolBuilder::new().num_threads(n);
    // The process's main thread, which drives the attacks, is one of the pool's n threads: an
    // op it starts runs on it at once with the others stealing, instead of waking a worker and
    // sleeping until the result is back (two thread switches per op, and a core idle between
    // ops). Other threads (tests, embedders) that resolve a backend leave the pool's threads
    // to rayon.
    let builder = if std::thread::current().name() == Some("main") { builder.use_current_thread() } else { builder };
    let _ = builder.build_global();
    rayon::current_num_threads() == n
}

/// `--backend` and `--threads`, shared by every command that runs on a backend (flattened into
/// each command's arguments, so the flags read and behave the same everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct BackendArgs {
    /// Backend (auto: CUDA, else a real wgpu adapter, else the CPU).
    #[arg(long = "backend", value_name = "BACKEND", value_enum, default_value_t = BackendChoice::Auto)]
    pub choice: BackendChoice,
    /// CPU backend threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl BackendArgs {
    /// Opens the chosen backend ([`resolve`]).
    pub fn resolve(&self) -> Result<Resolved> {
        resolve(self.choice, self.threads)
    }
}

/// Builds the chosen backend; a GPU backend that cannot run here is an error naming why
/// (never a panic), except under `auto`, which falls back to the next one. Under
/// `--deterministic` ([`deterministic_requested`]) the GPU backends open in their
/// deterministic mode and the CPU prints a note that it always is.
pub fn resolve(choice: BackendChoice, threads: Option<usize>) -> Result<Resolved> {
    let det = deterministic_requested();
    let resolved = match choice {
        BackendChoice::Cpu => cpu(threads)?,
        BackendChoice::Wgpu => wgpu_backend(det)?,
        BackendChoice::Cuda => cuda_backend(det)?,
        BackendChoice::Auto => auto(threads, det)?,
    };
    if det && matches!(resolved, Resolved::Cpu(_)) {
        eprintln!("note: --deterministic: {}", determinism_note("cpu"));
    }
    Ok(resolved)
}

fn auto(threads: Option<usize>, det: bool) -> Result<Resolved> {
    if let Ok(b) = cuda_backend(det) {
        return Ok(b);
    }
    #[cfg(feature = "wgpu")]
    if perturb_wgpu::list_adapters().iter().any(|a| a.device_type != "cpu")
        && let Ok(b) = wgpu_backend(det)
    {
        return Ok(b);
    }
    cpu(threads)
}

#[cfg(feature = "wgpu")]
fn wgpu_backend(deterministic: bool) -> Result<Resolved> {
    let adapter = std::env::var(perturb_wgpu::ADAPTER_ENV).ok().filter(|s| !s.trim().is_empty());
    let options = perturb_wgpu::WgpuOptions { adapter, deterministic };
    Ok(Resolved::Wgpu(Box::new(perturb_wgpu::WgpuBackend::with_options(&options)?)))
}
#[cfg(not(feature = "wgpu"))]
fn wgpu_backend(_deterministic: bool) -> Result<Resolved> {
    Err(perturb_core::Error::Unavailable {
        backend: "wgpu",
        reason: "this binary was built without the `wgpu` feature".into(),
    }
    .into())
}
#[cfg(feature = "cuda")]
fn cuda_backend(deterministic: bool) -> Result<Resolved> {
    let options = perturb_cuda::CudaOptions { deterministic };
    Ok(Resolved::Cuda(perturb_cuda::CudaBackend::with_options(0, options)?))
}
#[cfg(not(feature = "cuda"))]
fn cuda_backend(_deterministic: bool) -> Result<Resolved> {
    Err(perturb_core::Error::Unavailable {
        backend: "cuda",
        reason: "this binary was built without the `cuda` feature".into(),
    }
    .into())
}

/// Runs `$f(&backend, args...)` on whichever backend `$resolved` holds; `$f` is generic over
/// `B: Backend`.
#[macro_export]
macro_rules! on_backend {
    ($resolved:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $resolved {
            $crate::backends::Resolved::Cpu(b) => $f(&b, $($arg),*),
            #[cfg(feature = "wgpu")]
            $crate::backends::Resolved::Wgpu(b) => $f(&*b, $($arg),*),
            #[cfg(feature = "cuda")]
            $crate::backends::Resolved::Cuda(b) => $f(&b, $($arg),*),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_sets_and_restores_the_request() {
        assert!(!deterministic_requested());
        {
            let _on = DeterministicScope::set(true);
            assert!(deterministic_requested());
            {
                let _off = DeterministicScope::set(false);
                assert!(!deterministic_requested());
            }
            assert!(deterministic_requested());
        }
        assert!(!deterministic_requested());
    }

    #[test]
    fn json_results_record_the_request_where_they_name_a_backend() {
        let mut v = serde_json::json!({ "backend": "cpu", "device": "x" });
        record_determinism(&mut v);
        assert_eq!(v["deterministic"], false);
        assert!(v.get("determinism").is_none());
        let _on = DeterministicScope::set(true);
        for name in ["cpu", "wgpu", "cuda"] {
            let mut v = serde_json::json!({ "backend": name });
            record_determinism(&mut v);
            assert_eq!(v["deterministic"], true);
            assert_eq!(v["determinism"], determinism_note(name));
        }
        assert!(determinism_note("cpu").starts_with("no-op"));
        // A result without a backend (perturb devices) is left as it is.
        let mut v = serde_json::json!({ "backends": [] });
        record_determinism(&mut v);
        assert!(v.get("deterministic").is_none());
    }

    #[test]
    fn cpu_under_deterministic_is_the_plain_cpu_backend() {
        let _on = DeterministicScope::set(true);
        match resolve(BackendChoice::Cpu, Some(2)) {
            Ok(Resolved::Cpu(b)) => assert_eq!(b.threads(), 2),
            _ => panic!("--backend cpu must give the CPU backend"),
        }
    }
}
