//! Shared helpers for the wgpu tests: the backends, seeded data and comparisons.
#![allow(dead_code)]

use perturb_core::{Backend, Result, Shape, Tensor, Tolerance, check_close};
use perturb_cpu::CpuBackend;
use perturb_wgpu::WgpuBackend;

/// The wgpu backend or `None` (skipped, see `perturb_wgpu::test_backend`).
pub fn gpu() -> Option<WgpuBackend> {
    perturb_wgpu::test_backend()
}

pub fn cpu() -> CpuBackend {
    CpuBackend::new()
}

/// Seeded values in [lo, hi) (xorshift64*; independent of any backend).
pub fn data(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

/// Seeded values on a coarse grid (many exact ties), for max/argmax tests.
pub fn ties(seed: u64, n: usize) -> Vec<f32> {
    data(seed, n, 0.0, 4.0).into_iter().map(|v| v.floor()).collect()
}

pub fn labels(seed: u64, n: usize, classes: usize) -> Vec<u32> {
    data(seed, n, 0.0, classes as f32).into_iter().map(|v| (v as u32).min(classes as u32 - 1)).collect()
}

pub fn up<B: Backend>(b: &B, v: &[f32], dims: &[usize]) -> Result<Tensor<B>> {
    b.upload_f32(v, &Shape::from(dims))
}

pub fn down<B: Backend>(b: &B, t: &Tensor<B>) -> Vec<f32> {
    b.download_f32(t).expect("download")
}

/// Asserts `actual` is within `tol` of `expected`, naming the case on failure.
#[track_caller]
pub fn close(what: &str, actual: &[f32], expected: &[f32], tol: Tolerance) {
    if let Err(msg) = check_close(actual, expected, tol) {
        panic!("{what}: {msg}");
    }
}
