//! Faults surface as typed errors and clear messages, never a panic or an abort:
//! - the CPU backend asked for absurd memory (an element count that overflows, a tensor far
//!   larger than the machine, a convolution whose output or input gradient would be):
//!   `InvalidArgument` or `OutOfMemory { bytes }` with the size asked for;
//! - CUDA without a driver: `perturb devices` names the reason and `perturb train/attack
//!   --backend cuda` fail with it and a non-zero exit (with or without `--deterministic`).
//!   The mapping of the driver's out-of-memory, launch and lost-device errors is unit-tested in
//!   perturb-cuda (src/device.rs), where the real cudarc error values are built.

use std::process::{Command, Output};

use perturb::core::ops::Conv2dParams;
use perturb::core::{Backend, DType, Error, Shape};
use perturb::cpu::CpuBackend;

// Sizes are 2^58 bytes (256 PiB): more than any x86-64 address space, 57-bit ones included,
// so the allocator refuses them whatever the kernel's overcommit policy.

#[test]
fn absurd_cpu_allocations_are_typed_errors() {
    let b = CpuBackend::new();
    match b.zeros(&Shape::from([1usize << 28, 1 << 28]), DType::F32) {
        Err(Error::OutOfMemory { backend: "cpu", bytes }) => assert_eq!(bytes, 1 << 58),
        Err(e) => panic!("expected OutOfMemory, got {e}"),
        Ok(_) => panic!("a 256 PiB tensor was allocated"),
    }
    // An element count that overflows usize is refused with the shape, not wrapped.
    for dims in [vec![usize::MAX, 2], vec![1 << 32, 1 << 32, 1 << 1]] {
        match b.zeros(&Shape::from(dims.clone()), DType::U32) {
            Err(Error::InvalidArgument { op: "zeros", msg }) => assert!(msg.contains("more elements"), "{msg}"),
            Err(e) => panic!("{dims:?}: expected InvalidArgument, got {e}"),
            Ok(_) => panic!("{dims:?}: allocated"),
        }
        assert!(b.upload_f32(&[1.0, 2.0], &Shape::from(dims.clone())).is_err(), "{dims:?}");
    }
    // More than isize::MAX bytes: no allocator can serve it, and the size is still reported.
    match b.zeros(&Shape::from([usize::MAX / 4]), DType::F32) {
        Err(Error::OutOfMemory { bytes, .. }) => assert_eq!(bytes, (usize::MAX / 4) as u64 * 4),
        Err(e) => panic!("expected OutOfMemory, got {e}"),
        Ok(_) => panic!("allocated"),
    }
}

#[test]
fn an_op_whose_output_cannot_fit_is_out_of_memory_not_an_abort() {
    let b = CpuBackend::new();
    let one = |b: &CpuBackend| b.upload_f32(&[1.0], &Shape::from([1, 1, 1, 1])).expect("upload");
    // conv2d backward to the input with a stride as large as the image: a 1-value dy and a
    // 1-value weight ask for a 2^28 x 2^28 dx.
    let side = 1usize << 28;
    let p = Conv2dParams::new([1, 1, side, side], [1, 1, 1, 1], side, 0).expect("params");
    assert_eq!(p.output_dims(), [1, 1, 1, 1]);
    match b.conv2d_bwd_input(&one(&b), &one(&b), &p) {
        Err(Error::OutOfMemory { backend: "cpu", bytes }) => assert_eq!(bytes, 1 << 58),
        Err(e) => panic!("expected OutOfMemory, got {e}"),
        Ok(_) => panic!("a 256 PiB gradient was allocated"),
    }
    // conv2d forward of a 1x1 image with 2^27 zero padding on each side: a (2^28 + 1)^2 output.
    let p = Conv2dParams::new([1, 1, 1, 1], [1, 1, 1, 1], 1, 1 << 27).expect("params");
    let out = (side + 1) * (side + 1);
    assert_eq!(p.output_dims(), [1, 1, side + 1, side + 1]);
    match b.conv2d_fwd(&one(&b), &one(&b), &p) {
        Err(Error::OutOfMemory { backend: "cpu", bytes }) => assert_eq!(bytes, out as u64 * 4),
        Err(e) => panic!("expected OutOfMemory, got {e}"),
        Ok(_) => panic!("a 256 PiB output was allocated"),
    }
    // The backend is still usable afterwards.
    let t = b.upload_f32(&[1.0, -2.0], &Shape::from([2])).expect("upload");
    assert_eq!(b.download_f32(&b.relu_fwd(&t).expect("relu")).expect("download"), [1.0, 0.0]);
}

fn perturb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the perturb binary runs")
}

/// Whether CUDA works here; when it does, the "unavailable" paths cannot be exercised.
fn cuda_present() -> bool {
    #[cfg(feature = "cuda")]
    {
        perturb::cuda::probe().is_ok_and(|d| !d.is_empty())
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

#[test]
fn cuda_without_a_driver_is_a_clear_error_and_a_nonzero_exit() {
    if cuda_present() {
        println!("skipped: a CUDA device is present, so it is not unavailable");
        return;
    }
    let o = perturb(&["devices"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "listing devices is not a failure: {o:?}");
    let line = out.lines().find(|l| l.starts_with("cuda:")).unwrap_or_else(|| panic!("no cuda line: {out}"));
    assert!(line.starts_with("cuda: unavailable: ") && line.len() > "cuda: unavailable: ".len() + 10, "{line}");
    // The reason alone, without the error's own "backend cuda unavailable: " prefix again.
    let reason = line.trim_start_matches("cuda: unavailable: ");
    assert!(reason.len() > 10 && !reason.contains("backend cuda unavailable"), "{line}");

    let train = ["train", "--backend", "cuda", "--model", "mlp", "--epochs", "1", "--train-limit", "64"];
    for extra in [&[][..], &["--deterministic"][..]] {
        let o = perturb(&[&train[..], extra].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "expected exit 1: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains("error: backend cuda unavailable: "), "{err}");
        // The same reason `perturb devices` gives (the binary may add words; the reason's
        // first clause is the same).
        let clause = reason.split(':').next().unwrap_or(reason);
        assert!(err.contains(clause), "{err} does not give the reason {reason}");
    }
    // attack reaches the backend only with a real model file: train one on the CPU first.
    let dir = std::env::temp_dir().join(format!("perturb-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let model = dir.join("mlp.safetensors");
    let m = model.to_str().expect("utf-8 path");
    let o =
        perturb(&["train", "--backend", "cpu", "--model", "mlp", "--epochs", "1", "--train-limit", "64", "--out", m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = perturb(&["attack", "--deterministic", "--backend", "cuda", "--model", m, "--test-limit", "10"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {err}");
    assert!(err.contains("error: backend cuda unavailable: ") && !err.contains("panicked"), "{err}");
}
