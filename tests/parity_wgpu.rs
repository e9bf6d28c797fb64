//! The shared parity suite on the wgpu backend: the default kernels (`wgpu`; on llvmpipe the
//! barrier-free v1 GEMMs), every op forced to v1 (`wgpu_v1`) and the workgroup-tiled v2 GEMMs
//! (`wgpu_v2`). The vec4 GEMM (v3) needs feature counts divisible by 4 and is tested on such
//! shapes in crates/perturb-wgpu/tests/gemm.rs. Without an adapter each test prints one
//! `skipped:` line and passes; PERTURB_REQUIRE_WGPU=1 turns that into a failure.
#![cfg(feature = "wgpu")]

#[macro_use]
mod common;

parity_suite!(wgpu, perturb::wgpu::test_backend());
parity_suite!(wgpu_v1, perturb::wgpu::test_backend().map(|b| b.with_variant_everywhere(1).expect("every op has a v1")));
parity_suite!(
    wgpu_v2,
    perturb::wgpu::test_backend().map(|b| b.with_variant_everywhere(2).expect("the GEMMs have a v2"))
);

/// Batch reductions give bit-identical results when run twice: no atomics, fixed orders.
#[test]
fn wgpu_results_are_deterministic() {
    if let Some(b) = perturb::wgpu::test_backend() {
        common::deterministic_across(&b, &b);
    }
}
