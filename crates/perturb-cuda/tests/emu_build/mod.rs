//! Building the CPU emulator harness (emu/kernel_emu.cpp with kernels/*.cu), shared by
//! kernel_emu.rs and kernel_race.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether a skip must fail instead (CI sets PERTURB_REQUIRE_EMU=1).
pub fn require() -> bool {
    std::env::var("PERTURB_REQUIRE_EMU").is_ok_and(|v| v == "1")
}

/// The C++ compiler: $CXX, else the first of c++, g++, clang++ that runs.
pub fn compiler() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("CXX") {
        Ok(c) if !c.is_empty() => vec![c],
        _ => ["c++", "g++", "clang++"].iter().map(|s| s.to_string()).collect(),
    };
    candidates.into_iter().find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's kernels/ folder.
pub fn kernels_dir() -> PathBuf {
    crate_dir().join("../../kernels")
}

/// The C++20 flags every build of the harness uses.
pub const BASE_FLAGS: [&str; 4] = ["-std=c++20", "-O1", "-w", "-pthread"];

/// Compiles the harness with `cxx` and `extra` flags into `exe`. Err is a skip reason (a
/// compiler without C++20's <barrier>); any other compile failure panics with the log.
pub fn build_harness(cxx: &str, extra: &[&str], exe: &Path, what: &str) -> Result<(), String> {
    let emu = crate_dir().join("emu");
    let b = Command::new(cxx)
        .args(BASE_FLAGS)
        .args(extra)
        .arg("-I")
        .arg(kernels_dir())
        .arg("-I")
        .arg(&emu)
        .arg(emu.join("kernel_emu.cpp"))
        .arg("-o")
        .arg(exe)
        .output()
        .expect("run the C++ compiler");
    if !b.status.success() {
        let err = String::from_utf8_lossy(&b.stderr);
        // An old compiler without C++20's <barrier> cannot build the emulator at all.
        if err.contains("barrier") && (err.contains("No such file") || err.contains("not found")) {
            return Err(format!("{cxx} lacks C++20 <barrier>"));
        }
        panic!("{cxx} failed to build the {what}:\n{err}");
    }
    Ok(())
}
