//! Runs every CUDA kernel on the CPU: builds emu/kernel_emu.cpp (the kernels/*.cu sources plus
//! a small CUDA emulator, emu/cuda_emu.h) with the system C++ compiler, runs it, and requires
//! every variant to match its double-precision reference and the RNG fills to match
//! perturb_core::rng bit for bit. This is what lets a machine without a GPU check what the
//! kernels compute; the NVRTC test checks that they compile for real targets.
//!
//! Without a C++20 compiler it prints one `skipped:` line and passes, unless
//! PERTURB_REQUIRE_EMU=1. The compiler is $CXX, else c++, g++ or clang++.

mod emu_build;

use emu_build::{build_harness, compiler, require};
use perturb_core::ops::{Dist, RngParams};
use std::path::PathBuf;
use std::process::Command;

fn skip(reason: &str) {
    if require() {
        panic!("PERTURB_REQUIRE_EMU=1 but {reason}");
    }
    println!("skipped: kernel emulator not run ({reason})");
}

/// The fill kernel_emu.cpp prints for `dist`: 11 values, seed 0xDEADBEEF0123, offset 2^33.
fn expected_fill(dist: Dist) -> Vec<u32> {
    let (a, b) = match dist {
        Dist::Uniform => (-1.0, 3.0),
        Dist::Normal => (0.5, 2.0),
        Dist::Sign => (0.25, 2.0),
    };
    let p = RngParams::new(11, 0xDEAD_BEEF_0123, 1 << 33, dist, a, b).expect("params");
    (0..11).map(|i| perturb_core::rng::sample(&p, dist, i).to_bits()).collect()
}

#[test]
fn every_kernel_matches_its_reference_on_the_cpu_emulator() {
    let Some(cxx) = compiler() else {
        return skip("no C++ compiler found ($CXX, c++, g++, clang++)");
    };
    let out: PathBuf = std::env::temp_dir().join(format!("perturb-kernel-emu-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    let exe = out.join("kernel_emu");
    if let Err(reason) = build_harness(&cxx, &[], &exe, "kernel emulator") {
        return skip(&reason);
    }
    let run = Command::new(&exe).output().expect("run the kernel emulator");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let _ = std::fs::remove_dir_all(&out);
    println!("{stdout}");
    assert!(
        run.status.success() && stdout.contains("\n0 failure(s)"),
        "kernel emulator failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for dist in [Dist::Uniform, Dist::Normal, Dist::Sign] {
        let prefix = format!("rng dist {}:", dist as u32);
        let line = stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no `{prefix}` line"));
        let got: Vec<u32> =
            line[prefix.len()..].split_whitespace().map(|h| u32::from_str_radix(h, 16).expect("hex")).collect();
        assert_eq!(got, expected_fill(dist), "rng_fill_v1 {dist:?} differs from perturb_core::rng");
    }
}
