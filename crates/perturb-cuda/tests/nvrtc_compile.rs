//! The CI gate for the kernels: every kernels/*.cu compiles with NVRTC for sm_80 and sm_90,
//! with the exact options the backend uses, without a single warning, and defines exactly the
//! entry points the Rust launch tables name. Runs with no GPU; needs only libnvrtc.
//!
//! Without libnvrtc it prints one `skipped:` line and passes, unless PERTURB_REQUIRE_NVRTC=1.
//! The kernels must build with NVRTC 12.x and 13.x: .ci/run runs this file under both, with
//! PERTURB_EXPECT_NVRTC_MAJOR naming the one it put on the loader path.

use perturb_cuda::kernels::{MODULES, Module};
use perturb_cuda::nvrtc::{self, Target};

/// The architectures CI compiles for: A100-class and H100-class.
const ARCHS: [u32; 2] = [80, 90];

fn nvrtc_or_skip(test: &str) -> bool {
    match nvrtc::nvrtc_available() {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("PERTURB_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
                panic!("PERTURB_REQUIRE_NVRTC=1 but {reason}");
            }
            // `reason` begins "libnvrtc not found ..." and says how to install it.
            println!("skipped: {reason} [{test}]");
            false
        }
    }
}

/// Every `.entry NAME(` in a PTX text.
fn ptx_entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix(".visible ").unwrap_or(l);
            let rest = l.strip_prefix(".entry ")?;
            Some(rest.split(|c: char| c == '(' || c.is_whitespace()).next()?.to_string())
        })
        .collect()
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_warnings() {
    if !nvrtc_or_skip("every_kernel_compiles_for_sm80_and_sm90_without_warnings") {
        return;
    }
    let (major, minor) = nvrtc::nvrtc_version().expect("nvrtc version");
    // CI runs this test once per NVRTC major (12 and 13); PERTURB_EXPECT_NVRTC_MAJOR makes a
    // loader path that picked up the other library a failure instead of a silent re-run.
    if let Ok(want) = std::env::var("PERTURB_EXPECT_NVRTC_MAJOR") {
        assert_eq!(
            want.trim(),
            major.to_string(),
            "PERTURB_EXPECT_NVRTC_MAJOR={want} but NVRTC {major}.{minor} loaded"
        );
    }
    let supported = nvrtc::supported_archs().expect("supported archs");
    let mut failures = Vec::new();
    let mut compiled = 0;
    for sm in ARCHS {
        assert!(supported.contains(&sm), "NVRTC {major}.{minor} cannot target sm_{sm} (supports {supported:?})");
        for m in Module::ALL {
            let info = m.info();
            match nvrtc::compile(info, Target::Cubin(sm)) {
                Err(e) => failures.push(e),
                Ok(c) => {
                    compiled += 1;
                    if c.log.to_lowercase().contains("warning") {
                        failures.push(format!("kernels/{} for sm_{sm} compiled with warnings:\n{}", info.file, c.log));
                    }
                    if c.cubin.as_ref().is_none_or(|b| b.is_empty()) {
                        failures.push(format!("kernels/{} for sm_{sm}: empty cubin", info.file));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} NVRTC failure(s):\n\n{}", failures.len(), failures.join("\n\n"));
    println!("NVRTC {major}.{minor}: {compiled} module builds clean (sm_80, sm_90)");
}

#[test]
fn ptx_defines_exactly_the_entries_the_launch_tables_name() {
    if !nvrtc_or_skip("ptx_defines_exactly_the_entries_the_launch_tables_name") {
        return;
    }
    let mut problems = Vec::new();
    for m in MODULES.iter() {
        let c = match nvrtc::compile(m, Target::Ptx(80)) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let found = ptx_entries(&c.ptx);
        for want in m.entries {
            if !c.has_entry(want) {
                problems.push(format!(
                    "kernels/{}: entry `{want}` named in kernels.rs is not in the PTX (found {found:?})",
                    m.file
                ));
            }
        }
        for got in &found {
            if !m.entries.contains(&got.as_str()) {
                problems.push(format!("kernels/{}: PTX defines `{got}`, which kernels.rs does not list", m.file));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_broken_kernel_reports_the_module_and_the_log() {
    if !nvrtc_or_skip("a_broken_kernel_reports_the_module_and_the_log") {
        return;
    }
    let broken = perturb_cuda::kernels::KernelModule {
        module: Module::Elementwise,
        file: "broken.cu",
        source: "#include \"params.cuh\"\nextern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }\n",
        entries: &["k"],
        fmad: false,
    };
    let e = nvrtc::compile(&broken, Target::Cubin(80)).expect_err("must not compile");
    assert!(e.contains("kernels/broken.cu") && e.contains("sm_80"), "{e}");
    assert!(e.contains("undefined_name"), "the NVRTC log must be in the error: {e}");
}
