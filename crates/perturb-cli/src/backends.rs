//! Choosing a backend from `--backend cpu|wgpu|cuda|auto` and running generic code on it.

use crate::{Error, Result};
use clap::ValueEnum;

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
        Some(n) => perturb_cpu::CpuBackend::with_threads(n)?,
        None => perturb_cpu::CpuBackend::new(),
    }))
}

/// Builds the chosen backend; a GPU backend that cannot run here is an error naming why
/// (never a panic), except under `auto`, which falls back to the next one.
pub fn resolve(choice: BackendChoice, threads: Option<usize>) -> Result<Resolved> {
    match choice {
        BackendChoice::Cpu => cpu(threads),
        BackendChoice::Wgpu => wgpu_backend(),
        BackendChoice::Cuda => cuda_backend(),
        BackendChoice::Auto => {
            if let Ok(b) = cuda_backend() {
                return Ok(b);
            }
            #[cfg(feature = "wgpu")]
            if perturb_wgpu::list_adapters().iter().any(|a| a.device_type != "cpu") {
                if let Ok(b) = wgpu_backend() {
                    return Ok(b);
                }
            }
            cpu(threads)
        }
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_backend() -> Result<Resolved> {
    Ok(Resolved::Wgpu(Box::new(perturb_wgpu::WgpuBackend::new()?)))
}
#[cfg(not(feature = "wgpu"))]
fn wgpu_backend() -> Result<Resolved> {
    Err(perturb_core::Error::Unavailable {
        backend: "wgpu",
        reason: "this binary was built without the `wgpu` feature".into(),
    }
    .into())
}
#[cfg(feature = "cuda")]
fn cuda_backend() -> Result<Resolved> {
    Ok(Resolved::Cuda(perturb_cuda::CudaBackend::new(0)?))
}
#[cfg(not(feature = "cuda"))]
fn cuda_backend() -> Result<Resolved> {
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
