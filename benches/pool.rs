//! Max-pool 2d forward and backward.
//!
//! Checks every kernel against the host reference on the timed shape (and, off the CPU,
//! against the CPU reference backend) and refuses to time a wrong one; then one row per
//! variant and vendor baseline (see docs/bench.md). The same rows as
//! `perturb bench --op maxpool2d`.
//!
//! `cargo bench --no-default-features --bench pool`; environment: PERTURB_BENCH_BACKEND
//! (cpu|cuda|wgpu, default cpu), PERTURB_BENCH_THREADS (default 2), PERTURB_BENCH_REPS,
//! PERTURB_BENCH_SHAPES, PERTURB_BENCH_VARIANT, PERTURB_BENCH_JSON (file for the rows).

fn main() -> std::process::ExitCode {
    perturb::cli::bench::bench_main("maxpool2d")
}
