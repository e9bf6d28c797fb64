//! The C ABI from C and from Python, as a caller links it: examples/c/robust_accuracy.c and
//! examples/c/bad_input.c compiled against libperturb_capi (shared and static) and run, and
//! python/tests/test_capi.py on the shared library; the robust accuracy they compute through
//! the ABI must equal `perturb eval`'s on the same file and digits, bit for bit (CPU backend).
//! A missing C compiler or numpy skips with the reason, and fails under PERTURB_REQUIRE_CAPI=1
//! (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>/deps, where cargo puts libperturb_capi.{so,a} for this test's build.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().expect("deps folder").to_path_buf();
    assert!(
        dir.join("libperturb_capi.so").is_file() && dir.join("libperturb_capi.a").is_file(),
        "libperturb_capi.so/.a are not in {} (perturb-capi is a dev-dependency: they should be)",
        dir.display()
    );
    dir
}

fn skip(why: &str) -> bool {
    if std::env::var_os("PERTURB_REQUIRE_CAPI").is_some() {
        panic!("PERTURB_REQUIRE_CAPI is set but {why}");
    }
    eprintln!("skipped: {why}");
    true
}

fn work() -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-capi-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp folder");
    d
}

/// A small mlp trained by `perturb train` (once per test process).
fn model() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let out = work().join("mlp.safetensors");
        let st = Command::new(env!("CARGO_BIN_EXE_perturb"))
            .args(["train", "--model", "mlp", "--epochs", "1", "--train-limit", "2000", "--test-limit", "100"])
            .args(["--backend", "cpu", "--threads", "2", "--json", "--out"])
            .arg(&out)
            .output()
            .expect("run perturb train");
        assert!(st.status.success(), "perturb train failed: {}", String::from_utf8_lossy(&st.stderr));
        out
    })
}

/// Compiles examples/c/`src` (run with LD_LIBRARY_PATH = the deps folder: cargo's own
/// LD_LIBRARY_PATH also names target/<profile>, where a `cargo build -p perturb-capi` may have
/// left an older library that would win over the rpath) against the shared or the static library; `None` without a compiler.
fn compile(src: &str, static_lib: bool) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        skip(&format!("no C compiler ({cc})"));
        return None;
    }
    let lib = lib_dir();
    let exe = work().join(format!("{}-{}", src.trim_end_matches(".c"), if static_lib { "static" } else { "shared" }));
    let mut cmd = Command::new(&cc);
    cmd.arg("-std=c11").arg("-Wall").arg("-Wextra").arg("-Werror").arg("-O1");
    cmd.arg(root().join("examples/c").join(src)).arg("-I").arg(root().join("crates/perturb-capi/include"));
    cmd.arg("-o").arg(&exe);
    if static_lib {
        cmd.arg(lib.join("libperturb_capi.a")).args(["-lpthread", "-ldl", "-lm", "-lgcc_s", "-lc"]);
    } else {
        cmd.arg("-L").arg(&lib).arg("-lperturb_capi").arg("-lpthread").arg(format!("-Wl,-rpath,{}", lib.display()));
    }
    let out = cmd.output().expect("run the C compiler");
    assert!(out.status.success(), "{src} did not compile:\n{}", String::from_utf8_lossy(&out.stderr));
    Some(exe)
}

fn eval_accuracy(model: &Path, n: usize, attack: &str) -> (f64, f64) {
    let out = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .arg("eval")
        .arg("--model")
        .arg(model)
        .args(["--backend", "cpu", "--threads", "2", "--test-limit", &n.to_string(), "--attacks", attack, "--json"])
        .output()
        .expect("run perturb eval");
    assert!(out.status.success(), "perturb eval failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let v: serde_json::Value = serde_json::from_str(text.lines().last().expect("a JSON line")).expect("JSON");
    (v["clean_accuracy"].as_f64().expect("clean"), v["attacks"][attack]["accuracy"].as_f64().expect("accuracy"))
}

fn run_example(exe: &Path, n: usize, attack: &str) -> f64 {
    let out = Command::new(exe)
        .env("LD_LIBRARY_PATH", lib_dir())
        .arg(model())
        .arg(n.to_string())
        .arg(attack)
        .output()
        .expect("run the C example");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{} failed:\n{stdout}{}", exe.display(), String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("robust_accuracy ")).expect("a robust_accuracy line");
    line.trim().parse().expect("a number")
}

#[test]
fn the_c_example_gives_perturb_evals_robust_accuracy_bit_for_bit() {
    let n = 300;
    let (clean, eval_pgd) = eval_accuracy(model(), n, "pgd");
    let (_, eval_fgsm) = eval_accuracy(model(), n, "fgsm");
    assert!(clean > 0.7 && eval_pgd < clean, "clean {clean}, pgd {eval_pgd}: the model is not a useful check");
    for static_lib in [false, true] {
        let Some(exe) = compile("robust_accuracy.c", static_lib) else { return };
        assert_eq!(run_example(&exe, n, "pgd").to_bits(), eval_pgd.to_bits(), "pgd, static {static_lib}");
        assert_eq!(run_example(&exe, n, "fgsm").to_bits(), eval_fgsm.to_bits(), "fgsm, static {static_lib}");
    }
}

#[test]
fn bad_input_through_the_c_abi_is_an_error_never_a_crash() {
    let Some(exe) = compile("bad_input.c", false) else { return };
    let not_a_model = work().join("not-a-model.safetensors");
    std::fs::write(&not_a_model, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}").expect("write");
    let out = Command::new(&exe)
        .env("LD_LIBRARY_PATH", lib_dir())
        .arg(model())
        .arg(&not_a_model)
        .output()
        .expect("run bad_input");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bad_input failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("0 failure(s)") && stdout.lines().filter(|l| l.starts_with("ok")).count() >= 40,
        "{stdout}"
    );
}

#[test]
fn the_python_module_trains_attacks_and_matches_perturb_eval() {
    let python = std::env::var("PERTURB_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(&python).args(["-c", "import numpy"]).output() {
        Ok(o) if o.status.success() => {}
        _ => {
            skip(&format!("{python} cannot import numpy"));
            return;
        }
    }
    let out = Command::new(&python)
        .arg(root().join("python/tests/test_capi.py"))
        .arg(env!("CARGO_BIN_EXE_perturb"))
        .arg(work())
        .env("PERTURB_LIB", lib_dir().join("libperturb_capi.so"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python/tests/test_capi.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
