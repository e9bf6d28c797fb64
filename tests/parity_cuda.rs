//! The shared parity suite on the CUDA backend: the promoted kernels (`cuda`) and every naive
//! v1 kernel (`cuda_v1`). Without a CUDA device each test prints one `skipped:` line and
//! passes; PERTURB_REQUIRE_CUDA=1 turns that into a failure. The TF32 GEMM (v3) has its own,
//! wider tolerance and is tested in crates/perturb-cuda/tests/device_ops.rs.
#![cfg(feature = "cuda")]

#[macro_use]
mod common;

parity_suite!(cuda, perturb::cuda::test_backend());
parity_suite!(
    cuda_v1,
    perturb::cuda::test_backend().map(|b| b.with_variant_everywhere(1).expect("every op with variants has a v1"))
);

/// Batch reductions (split-K weight gradients, block sums) give bit-identical results when
/// run twice: no atomics, fixed orders.
#[test]
fn cuda_results_are_deterministic() {
    if let Some(b) = perturb::cuda::test_backend() {
        common::deterministic_across(&b, &b);
    }
}
