//! The race check of the CPU emulator (emu/cuda_emu.h; README "Tests"). Builds
//! emu/kernel_emu.cpp three ways and runs every kernel variant on small awkward shapes:
//! - under ThreadSanitizer, which flags any shared or global word one CUDA thread writes and
//!   another reads or writes with no barrier between (every CUDA thread is a std::thread and
//!   the barriers are std::barrier);
//! - under AddressSanitizer + UBSan (every buffer allocated to its exact size, shared arrays
//!   with redzones), with the harness's race-check mode on (`--check`: each grid twice, in
//!   opposite seeded block orders, results bit-identical, per-block write sets disjoint, const
//!   inputs unchanged);
//! - plain, with `--check --serial` (the threads of a block one at a time in a seeded order,
//!   reversed in the second run, so schedule-dependent results differ between the runs).
//!
//! Each detector is shown to bite: every `__syncthreads()` in kernels/ removed in turn must be
//! reported by TSan, and the broken kernels of emu/planted.cu (missing barrier, warp-synchronous
//! reduction, out-of-bounds reads, two blocks writing one word, a block reading another's output,
//! a write through a const input, a late shared broadcast) must each be caught by the detector
//! meant for it.
//!
//! Without a C++20 compiler, or without the sanitizer runtime, a test prints one `skipped:`
//! line and passes, unless PERTURB_REQUIRE_EMU=1. PERTURB_EMU_SEED sets the seed (default 1).

mod emu_build;

use emu_build::{BASE_FLAGS, build_harness, compiler, kernels_dir, require};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn seed() -> String {
    std::env::var("PERTURB_EMU_SEED").unwrap_or_else(|_| "1".to_string())
}

#[derive(Clone, Copy, Debug)]
enum Flavor {
    Plain,
    Tsan,
    Asan,
}

impl Flavor {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Flavor::Plain => &[],
            Flavor::Tsan => &["-g", "-fsanitize=thread"],
            Flavor::Asan => {
                &["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
            }
        }
    }
    fn name(self) -> &'static str {
        match self {
            Flavor::Plain => "plain",
            Flavor::Tsan => "tsan",
            Flavor::Asan => "asan",
        }
    }
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kernel-race-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn first_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b).lines().next().unwrap_or("").trim().to_string()
}

/// Builds one flavor of the harness. Err is a skip reason (no compiler, no <barrier>, no
/// sanitizer runtime, a sanitizer that cannot run here); a broken harness panics.
fn build_flavor(flavor: Flavor) -> Result<PathBuf, String> {
    let cxx = compiler().ok_or("no C++ compiler found ($CXX, c++, g++, clang++)")?;
    let dir = out_dir();
    if !matches!(flavor, Flavor::Plain) {
        // A probe: the runtime links and starts (TSan refuses some kernels' memory layouts).
        let src = dir.join("probe.cpp");
        std::fs::write(&src, "#include <thread>\nint main() { std::thread t([] {}); t.join(); }\n")
            .expect("write probe");
        let exe = dir.join(format!("probe-{}", flavor.name()));
        let b = Command::new(&cxx)
            .args(BASE_FLAGS)
            .args(flavor.flags())
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .output()
            .expect("run cxx");
        if !b.status.success() {
            return Err(format!("{cxx} cannot build with {:?}: {}", flavor.flags(), first_line(&b.stderr)));
        }
        let r = Command::new(&exe).output().expect("run probe");
        if !r.status.success() {
            return Err(format!("the {} runtime does not start here: {}", flavor.name(), first_line(&r.stderr)));
        }
    }
    let exe = dir.join(format!("kernel_emu-{}", flavor.name()));
    build_harness(&cxx, flavor.flags(), &exe, &format!("{} kernel emulator", flavor.name()))?;
    Ok(exe)
}

/// The harness built as `flavor`, or None after printing why the test is skipped.
fn harness(flavor: Flavor) -> Option<&'static Path> {
    static BUILDS: [OnceLock<Result<PathBuf, String>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let built = BUILDS[flavor as usize].get_or_init(|| build_flavor(flavor));
    match built {
        Ok(p) => Some(p.as_path()),
        Err(reason) => {
            if require() {
                panic!("PERTURB_REQUIRE_EMU=1 but {reason}");
            }
            println!("skipped: {} race check not run ({reason})", flavor.name());
            None
        }
    }
}

struct Run {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn context(&self) -> String {
        let tail: Vec<&str> = self.stderr.lines().take(40).collect();
        format!(
            "kernel_emu {} (exit {:?})\n--- stdout ---\n{}\n--- stderr (first 40 lines) ---\n{}",
            self.args,
            self.code,
            self.stdout,
            tail.join("\n")
        )
    }
    fn clean(&self) -> bool {
        self.code == Some(0)
            && self.stdout.contains("\n0 failure(s)")
            && !self.stderr.contains("Sanitizer")
            && !self.stderr.contains("runtime error")
    }
}

fn run(exe: &Path, args: &[&str]) -> Run {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--seed".to_string(), seed()]);
    let out: Output = Command::new(exe)
        .args(&all)
        // Stop at the first report: a mutant needs one, and a clean run has none.
        .env("TSAN_OPTIONS", "halt_on_error=1 exitcode=66")
        .env("ASAN_OPTIONS", "detect_leaks=0 abort_on_error=0")
        .env("UBSAN_OPTIONS", "print_stacktrace=1")
        .output()
        .expect("run the kernel emulator");
    Run {
        args: all.join(" "),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every `extern "C" __global__` entry point in kernels/*.cu.
fn kernel_entry_points() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(kernels_dir()).expect("kernels/") {
        let path = e.expect("entry").path();
        if path.extension().is_none_or(|x| x != "cu") {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("read kernel");
        let pat = "extern \"C\" __global__ void";
        let mut at = 0;
        while let Some(i) = src[at..].find(pat) {
            let mut rest = src[at + i + pat.len()..].trim_start();
            if let Some(r) = rest.strip_prefix("__launch_bounds__(") {
                rest = r[r.find(')').expect("launch bounds") + 1..].trim_start();
            }
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(!name.is_empty(), "cannot parse an entry point in {}", path.display());
            names.insert(name);
            at += i + pat.len();
        }
    }
    names
}

/// Every `__syncthreads()` in kernels/ (outside comments) as "file:line".
fn barrier_sites_in_source() -> BTreeSet<String> {
    let mut sites = BTreeSet::new();
    for e in std::fs::read_dir(kernels_dir()).expect("kernels/") {
        let path = e.expect("entry").path();
        let file = path.file_name().expect("name").to_string_lossy().into_owned();
        if !(file.ends_with(".cu") || file.ends_with(".cuh")) {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("read kernel");
        for (i, line) in src.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("__syncthreads()") {
                sites.insert(format!("{file}:{}", i + 1));
            }
        }
    }
    sites
}

fn launched(r: &Run) -> BTreeSet<String> {
    let line = r.stdout.lines().find(|l| l.starts_with("launched:")).unwrap_or("launched:");
    line["launched:".len()..].split_whitespace().map(str::to_string).collect()
}

fn assert_covers_every_kernel(r: &Run) {
    let missing: Vec<String> = kernel_entry_points().difference(&launched(r)).cloned().collect();
    assert!(missing.is_empty(), "the race check did not launch {missing:?}\n{}", r.context());
}

#[test]
fn real_kernels_have_no_tsan_race() {
    let Some(exe) = harness(Flavor::Tsan) else { return };
    // One run per launch: TSan's verdict does not depend on the block order (blocks are
    // separated by a barrier); the --check runs below (ASan, plain) cover the orders.
    let r = run(exe, &["--small"]);
    assert!(r.clean(), "TSan or the race check flagged a real kernel:\n{}", r.context());
    assert_covers_every_kernel(&r);
}

#[test]
fn tsan_reports_every_barrier_removed_from_the_kernels() {
    let Some(plain) = harness(Flavor::Plain) else { return };
    let Some(tsan) = harness(Flavor::Tsan) else { return };
    // Which test groups reach which barrier (fast, plain build).
    let list = run(plain, &["--small", "--list-barriers"]);
    assert!(list.clean(), "{}", list.context());
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in list.stdout.lines().filter_map(|l| l.strip_prefix("barrier-site ")) {
        let (site, group) = l.split_once(' ').expect("site group");
        groups.entry(site.to_string()).or_default().push(group.to_string());
    }
    let in_source = barrier_sites_in_source();
    let reached: BTreeSet<String> = groups.keys().cloned().collect();
    assert!(in_source.len() >= 8, "expected the kernels' barriers, found {in_source:?}");
    assert_eq!(in_source, reached, "every __syncthreads() in kernels/ must be reached by the small shapes");
    let mut missed = Vec::new();
    for (site, gs) in &groups {
        let only = gs.join(",");
        let r = run(tsan, &["--small", "--only", &only, "--drop-barrier", site]);
        let caught = r.code != Some(0) && r.stderr.contains("WARNING: ThreadSanitizer: data race");
        println!("barrier {site} removed ({only}): {}", if caught { "TSan data race" } else { "NOT CAUGHT" });
        if !caught {
            missed.push(r.context());
        }
    }
    assert!(missed.is_empty(), "TSan missed a removed barrier:\n{}", missed.join("\n"));
}

#[test]
fn tsan_catches_the_planted_races() {
    let Some(tsan) = harness(Flavor::Tsan) else { return };
    for plant in ["missing_barrier", "warp_sync", "late_broadcast"] {
        let r = run(tsan, &["--plant", plant]);
        assert!(
            r.code == Some(66) && r.stderr.contains("WARNING: ThreadSanitizer: data race"),
            "TSan did not report the planted race `{plant}`:\n{}",
            r.context()
        );
        assert!(
            r.stderr.contains(&format!("planted_{plant}")),
            "the report does not name the kernel:\n{}",
            r.context()
        );
    }
    // Two blocks writing one word never run concurrently here, so TSan cannot see it (the
    // write-set check does, below): the control that TSan is not simply failing everything.
    let r = run(tsan, &["--plant", "halo_write"]);
    assert!(r.code == Some(0) && !r.stderr.contains("ThreadSanitizer"), "{}", r.context());
}

#[test]
fn real_kernels_are_clean_under_asan_and_ubsan() {
    let Some(exe) = harness(Flavor::Asan) else { return };
    let r = run(exe, &["--check", "--small"]);
    assert!(r.clean(), "ASan/UBSan or the race check flagged a real kernel:\n{}", r.context());
    assert_covers_every_kernel(&r);
}

#[test]
fn asan_catches_the_planted_out_of_bounds_accesses() {
    let Some(exe) = harness(Flavor::Asan) else { return };
    let r = run(exe, &["--plant", "oob_global"]);
    assert!(
        r.code != Some(0)
            && r.stderr.contains("AddressSanitizer: heap-buffer-overflow")
            && r.stderr.contains("planted_oob_global"),
        "ASan missed the read past the end of a buffer:\n{}",
        r.context()
    );
    // A shared array indexed past its end through a pointer: ASan's global redzone or UBSan's
    // object-size check (whichever runs first; both abort) must name the planted kernel.
    let r = run(exe, &["--plant", "oob_shared"]);
    assert!(
        r.code != Some(0)
            && (r.stderr.contains("AddressSanitizer: global-buffer-overflow") || r.stderr.contains("runtime error"))
            && r.stderr.contains("planted.cu"),
        "ASan/UBSan missed the shared-memory overrun:\n{}",
        r.context()
    );
}

#[test]
fn cross_block_and_schedule_checks_catch_the_plants_in_a_plain_build() {
    let Some(exe) = harness(Flavor::Plain) else { return };
    let clean = run(exe, &["--check", "--serial", "--small"]);
    assert!(clean.clean(), "the plain race check flagged a real kernel:\n{}", clean.context());
    assert_covers_every_kernel(&clean);

    // The halo write gives the right values in any order; only the write sets see it.
    let plain = run(exe, &["--plant", "halo_write"]);
    assert!(plain.clean(), "without --check the halo write should go unseen:\n{}", plain.context());
    let r = run(exe, &["--check", "--plant", "halo_write"]);
    assert!(
        r.code != Some(0) && r.stdout.contains("written by blocks") && r.stdout.contains("ok   planted_halo_write"),
        "the cross-block write check missed two blocks writing one word:\n{}",
        r.context()
    );
    let cases = [
        ("cross_block_read", &["--check"][..], "differs between the two runs"),
        ("writes_input", &["--check"][..], "const argument 0 changed"),
        ("late_broadcast", &["--check", "--serial"][..], "differs between the two runs"),
        ("missing_barrier", &["--check", "--serial"][..], "differs between the two runs"),
    ];
    for (plant, flags, expect) in cases {
        let mut args = flags.to_vec();
        args.extend(["--plant", plant]);
        let r = run(exe, &args);
        assert!(
            r.code != Some(0) && r.stdout.contains("RACE-CHECK FAIL") && r.stdout.contains(expect),
            "the race check missed `{plant}` (expected \"{expect}\"):\n{}",
            r.context()
        );
    }
}
