//! Every op of every backend against the f64 oracle `perturb::core::naive` (see `common/mod.rs`).
//! The CPU backend runs here; the GPU backends add their own `parity_suite!` lines.

#[macro_use]
mod common;

parity_suite!(cpu, Some(perturb::cpu::CpuBackend::new()));

/// A one-thread and a two-thread backend give bit-identical batch reductions.
#[test]
fn cpu_results_do_not_depend_on_thread_count() {
    let one = perturb::cpu::CpuBackend::with_threads(1).unwrap();
    let two = perturb::cpu::CpuBackend::with_threads(2).unwrap();
    common::deterministic_across(&one, &two);
    let three = perturb::cpu::CpuBackend::with_threads(3).unwrap();
    common::deterministic_across(&one, &three);
}

#[test]
fn every_op_has_a_parity_test() {
    common::check_coverage();
}

#[test]
fn tolerances_reject_wrong_kernels() {
    common::tolerance_catches_wrong_kernels();
}
