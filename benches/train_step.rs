//! One full training step, the foundation issue's target workload: conv(1->32, 3x3) - relu -
//! conv(32->64, 3x3) - relu - maxpool 2 - flatten - fc(9216->128) - relu - fc(128->10) at
//! batch 128 on real digits: forward, softmax cross-entropy, backward (no input gradient of
//! the first layer, as in training), SGD with momentum.
//!
//! Before timing, the shared harness checks that the step is right: the first conv's largest
//! weight gradient against a central difference of the loss, the loss on a fixed batch falling
//! by 30% over ten steps, and off the CPU the first loss against the CPU reference backend's.
//! Then warm-up, repetitions, one row: median/min/max ms, GFLOP/s (the sum of the registry's
//! `work()` over the kernels the step launches), % of peak, images/s (see docs/bench.md).
//! The same row as `perturb bench --op train_step`.
//!
//! `cargo bench --no-default-features --bench train_step`; environment: PERTURB_BENCH_BACKEND
//! (cpu|cuda|wgpu, default cpu), PERTURB_BENCH_THREADS (default 2), PERTURB_BENCH_REPS,
//! PERTURB_BENCH_SHAPES (batch sizes), PERTURB_BENCH_JSON (file for the rows).

fn main() -> std::process::ExitCode {
    perturb::cli::bench::bench_main("train_step")
}
