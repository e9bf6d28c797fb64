//! `perturb bench`: the JSON schema of a tiny run, `--compare` on two written files, the
//! refusal to time a deliberately wrong kernel, and bad flags giving a clear error and a
//! non-zero exit. Tiny shapes throughout.

use perturb::cli::bench::{self, timing::BenchBackend};
use perturb::core::ops::{
    AdamParams, BiasParams, Conv2dParams, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use perturb::core::{Backend, DType, Result, Shape, Tensor};
use perturb::cpu::CpuBackend;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn perturb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the perturb binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn rows_of(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status, stderr(o));
    let s = String::from_utf8_lossy(&o.stdout);
    match serde_json::from_str(s.trim()) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("stdout is not a JSON list ({other:?}): {s}"),
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn assert_fails(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert!(!o.status.success(), "expected failure; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "stderr should mention {n:?}: {e}");
    }
}

const KEYS: [&str; 9] = ["op", "variant", "backend", "device", "shape", "median_ms", "gflops", "gbs", "pct_peak"];

fn assert_schema(r: &Value) {
    for k in KEYS {
        assert!(r.get(k).is_some(), "row lacks {k:?}: {r}");
    }
    for k in ["op", "variant", "backend", "device", "shape", "dtype", "timing", "check"] {
        assert!(r[k].is_string(), "{k} is not a string: {r}");
    }
    for k in ["median_ms", "min_ms", "max_ms", "gflops", "gbs", "pct_peak"] {
        let v = r[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number: {r}"));
        assert!(v.is_finite() && v >= 0.0, "{k} = {v}: {r}");
    }
    assert!(r["min_ms"].as_f64() <= r["median_ms"].as_f64() && r["median_ms"].as_f64() <= r["max_ms"].as_f64());
}

#[test]
fn a_tiny_conv_run_prints_checked_rows_with_the_json_schema() {
    let o = perturb(&[
        "bench",
        "--op",
        "conv2d",
        "--backend",
        "cpu",
        "--threads",
        "1",
        "--shapes",
        "2x3x8x8/4x3x3x3/p1",
        "--reps",
        "2",
        "--warmup",
        "1",
        "--json",
    ]);
    let rows = rows_of(&o);
    for r in &rows {
        assert_schema(r);
        assert_eq!(r["backend"], "cpu");
        assert_eq!(r["threads"], 1);
        assert_eq!(r["shape"], "x[2, 3, 8, 8] w[4, 3, 3, 3] s1 p1");
    }
    let ops: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["op"].as_str().unwrap_or(""), r["variant"].as_str().unwrap_or(""))).collect();
    for op in ["conv2d_fwd", "conv2d_bwd_input", "conv2d_bwd_weight", "conv2d_layer"] {
        assert!(ops.contains(&(op, "v1")), "{op} v1 missing: {ops:?}");
        assert!(ops.contains(&(op, "gemm-crate")), "{op} vendor row missing: {ops:?}");
    }
    for r in rows.iter().filter(|r| r["variant"] == "v1") {
        assert!(r["check"].as_str().unwrap_or("").starts_with("ok"), "{r}");
        assert_eq!(r["x_vs_reference"], 1.0);
        assert!(r["x_vs_vendor"].as_f64().is_some_and(|v| v > 0.0), "{r}");
        assert_eq!(r["reps"], 2);
    }
    // FLOPs come from the registry: conv layer = 3 x one conv's work.
    let p = Conv2dParams::new([2, 3, 8, 8], [4, 3, 3, 3], 1, 1).expect("params");
    let layer = rows.iter().find(|r| r["op"] == "conv2d_layer" && r["variant"] == "v1").expect("layer row");
    let flops = layer["gflops"].as_f64().unwrap_or(0.0) * 1e9 * layer["median_ms"].as_f64().unwrap_or(0.0) * 1e-3;
    assert!((flops / (3.0 * p.work().flops) - 1.0).abs() < 1e-6, "{flops}");
}

#[test]
fn model_level_rows_report_images_per_second() {
    let o = perturb(&[
        "bench",
        "--op",
        "attack",
        "--backend",
        "cpu",
        "--threads",
        "1",
        "--shapes",
        "mlp/16",
        "--reps",
        "1",
        "--json",
    ]);
    let rows = rows_of(&o);
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap_or("")).collect();
    for op in ["attack_fgsm", "attack_pgd10", "adv_train_step", "backward_input_only", "backward_full"] {
        assert!(ops.contains(&op), "{op} missing: {ops:?}");
    }
    for r in &rows {
        assert_schema(r);
        assert!(r["images_per_s"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    }
    let o = perturb(&["bench", "--op", "train_step", "--backend", "cpu", "--shapes", "16", "--reps", "2", "--json"]);
    let rows = rows_of(&o);
    assert_eq!(rows[0]["op"], "train_step");
    assert_schema(&rows[0]);
}

#[test]
fn compare_prints_new_over_old_per_row() {
    let d = scratch("compare");
    let row = |op: &str, ms: f64| {
        serde_json::json!({"op": op, "variant": "v1", "backend": "cpu", "device": "d", "dtype": "f32",
                           "shape": "s", "median_ms": ms, "gflops": 1.0, "gbs": 1.0, "pct_peak": 1.0})
    };
    let (old, new) = (d.join("old.json"), d.join("new.json"));
    let write = |p: &PathBuf, v: Value| std::fs::write(p, v.to_string()).expect("write json");
    write(&old, Value::Array(vec![row("conv2d_fwd", 10.0), row("linear_fwd", 2.0), row("gone", 1.0)]));
    write(&new, Value::Array(vec![row("conv2d_fwd", 12.0), row("linear_fwd", 1.0), row("fresh", 1.0)]));
    let (o, n) = (old.to_string_lossy().into_owned(), new.to_string_lossy().into_owned());
    let rows = rows_of(&perturb(&["bench", "--compare", &o, &n, "--json"]));
    let find = |op: &str| rows.iter().find(|r| r["op"] == op).unwrap_or_else(|| panic!("{op}: {rows:?}"));
    assert!((find("conv2d_fwd")["ratio"].as_f64().unwrap_or(0.0) - 1.2).abs() < 1e-12);
    assert_eq!(find("conv2d_fwd")["verdict"], "regression");
    assert_eq!(find("linear_fwd")["verdict"], "faster");
    assert_eq!(find("fresh")["verdict"], "only in new");
    assert_eq!(find("gone")["verdict"], "only in old");
    let table = perturb(&["bench", "--compare", &o, &n]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("REGRESSION") && text.contains("1.200"), "{text}");

    // A real run written with --out compares against itself as "same" or within noise.
    let out = d.join("run.json");
    let run = perturb(&[
        "bench",
        "--op",
        "relu_fwd",
        "--backend",
        "cpu",
        "--shapes",
        "1000",
        "--reps",
        "3",
        "--out",
        &out.to_string_lossy(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let same = rows_of(&perturb(&["bench", "--compare", &out.to_string_lossy(), &out.to_string_lossy(), "--json"]));
    assert!(same.iter().all(|r| r["verdict"] == "same" && r["ratio"] == 1.0), "{same:?}");
}

#[test]
fn bad_flags_give_clear_errors_and_a_nonzero_exit() {
    assert_fails(&perturb(&["bench", "--op", "conv3d", "--backend", "cpu"]), &["--op", "unknown op", "conv3d"]);
    assert_fails(
        &perturb(&["bench", "--op", "conv2d", "--backend", "cpu", "--shapes", "128x32x26/64x32x3x3"]),
        &["--shapes", "NxCxHxW"],
    );
    assert_fails(
        &perturb(&["bench", "--op", "linear", "--backend", "cpu", "--shapes", "4xzx2"]),
        &["--shapes", "MxKxN"],
    );
    assert_fails(
        &perturb(&["bench", "--op", "conv2d", "--backend", "cpu", "--shapes", "2x3x8x8/4x2x3x3"]),
        &["--shapes", "channels"],
    );
    assert_fails(&perturb(&["bench", "--op", "attack", "--backend", "cpu", "--shapes", "resnet/8"]), &["resnet"]);
    assert_fails(&perturb(&["bench", "--backend", "cpu"]), &["--op"]);
    assert_fails(&perturb(&["bench", "--op", "relu", "--reps", "0"]), &["--reps"]);
    assert_fails(&perturb(&["bench", "--op", "relu", "--suite", "standard"]), &["--suite"]);
    assert_fails(
        &perturb(&["bench", "--compare", "/nonexistent/old.json", "/nonexistent/new.json"]),
        &["/nonexistent/old.json"],
    );
    let d = scratch("badjson");
    let p = d.join("x.json");
    std::fs::write(&p, "{\"op\": 1}").expect("write");
    let ps = p.to_string_lossy().into_owned();
    assert_fails(&perturb(&["bench", "--compare", &ps, &ps]), &["--compare", "list"]);
}

// ---- a deliberately wrong kernel -------------------------------------------------------------

/// The CPU backend with one op broken: conv2d_fwd adds 1e-3 to one output element, or
/// sign_step_ steps the wrong way on one element.
struct Broken {
    inner: CpuBackend,
    broken: &'static str,
}

type T = Tensor<Broken>;

fn un(t: &T) -> Tensor<CpuBackend> {
    Tensor::from_storage(t.storage().clone(), t.shape().clone(), t.dtype())
}
fn wr(t: Result<Tensor<CpuBackend>>) -> Result<T> {
    t.map(|t| Tensor::from_storage(t.storage().clone(), t.shape().clone(), t.dtype()))
}

impl BenchBackend for Broken {}

impl Backend for Broken {
    type Storage = <CpuBackend as Backend>::Storage;
    fn name(&self) -> &'static str {
        "broken-cpu"
    }
    fn device_name(&self) -> String {
        "a CPU backend with a wrong kernel".into()
    }
    fn zeros(&self, s: &Shape, d: DType) -> Result<T> {
        wr(self.inner.zeros(s, d))
    }
    fn upload_f32(&self, v: &[f32], s: &Shape) -> Result<T> {
        wr(self.inner.upload_f32(v, s))
    }
    fn upload_u32(&self, v: &[u32], s: &Shape) -> Result<T> {
        wr(self.inner.upload_u32(v, s))
    }
    fn download_f32(&self, t: &T) -> Result<Vec<f32>> {
        self.inner.download_f32(&un(t))
    }
    fn download_u32(&self, t: &T) -> Result<Vec<u32>> {
        self.inner.download_u32(&un(t))
    }
    fn copy_(&self, d: &T, s: &T) -> Result<()> {
        self.inner.copy_(&un(d), &un(s))
    }
    fn fill_(&self, d: &T, v: f32) -> Result<()> {
        self.inner.fill_(&un(d), v)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn conv2d_fwd(&self, x: &T, w: &T, p: &Conv2dParams) -> Result<T> {
        let y = self.inner.conv2d_fwd(&un(x), &un(w), p)?;
        if self.broken != "conv2d_fwd" {
            return wr(Ok(y));
        }
        let mut v = self.inner.download_f32(&y)?;
        let last = v.len() - 1;
        v[last / 2] += 1e-3;
        wr(self.inner.upload_f32(&v, y.shape()))
    }
    fn conv2d_bwd_input(&self, dy: &T, w: &T, p: &Conv2dParams) -> Result<T> {
        wr(self.inner.conv2d_bwd_input(&un(dy), &un(w), p))
    }
    fn conv2d_bwd_weight(&self, x: &T, dy: &T, p: &Conv2dParams) -> Result<T> {
        wr(self.inner.conv2d_bwd_weight(&un(x), &un(dy), p))
    }
    fn linear_fwd(&self, x: &T, w: &T, p: &LinearParams) -> Result<T> {
        wr(self.inner.linear_fwd(&un(x), &un(w), p))
    }
    fn linear_bwd_input(&self, dy: &T, w: &T, p: &LinearParams) -> Result<T> {
        wr(self.inner.linear_bwd_input(&un(dy), &un(w), p))
    }
    fn linear_bwd_weight(&self, x: &T, dy: &T, p: &LinearParams) -> Result<T> {
        wr(self.inner.linear_bwd_weight(&un(x), &un(dy), p))
    }
    fn bias_add(&self, y: &T, b: &T, p: &BiasParams) -> Result<T> {
        wr(self.inner.bias_add(&un(y), &un(b), p))
    }
    fn bias_grad(&self, dy: &T, p: &BiasParams) -> Result<T> {
        wr(self.inner.bias_grad(&un(dy), p))
    }
    fn relu_fwd(&self, x: &T) -> Result<T> {
        wr(self.inner.relu_fwd(&un(x)))
    }
    fn relu_bwd(&self, dy: &T, x: &T) -> Result<T> {
        wr(self.inner.relu_bwd(&un(dy), &un(x)))
    }
    fn maxpool2d_fwd(&self, x: &T, p: &Pool2dParams) -> Result<T> {
        wr(self.inner.maxpool2d_fwd(&un(x), p))
    }
    fn maxpool2d_bwd(&self, dy: &T, x: &T, p: &Pool2dParams) -> Result<T> {
        wr(self.inner.maxpool2d_bwd(&un(dy), &un(x), p))
    }
    fn softmax_xent(&self, z: &T, y: &T, p: &XentParams) -> Result<(T, T)> {
        let (l, d) = self.inner.softmax_xent(&un(z), &un(y), p)?;
        Ok((wr(Ok(l))?, wr(Ok(d))?))
    }
    fn axpby(&self, x: &T, y: &T, p: &EltParams) -> Result<T> {
        wr(self.inner.axpby(&un(x), &un(y), p))
    }
    fn mul(&self, x: &T, y: &T) -> Result<T> {
        wr(self.inner.mul(&un(x), &un(y)))
    }
    fn sum_rows(&self, x: &T, p: &RowParams) -> Result<T> {
        wr(self.inner.sum_rows(&un(x), p))
    }
    fn argmax_rows(&self, x: &T, p: &RowParams) -> Result<T> {
        wr(self.inner.argmax_rows(&un(x), p))
    }
    fn sign_step_(&self, x: &T, g: &T, p: &StepParams) -> Result<()> {
        self.inner.sign_step_(&un(x), &un(g), p)?;
        if self.broken == "sign_step" {
            let mut v = self.inner.download_f32(&un(x))?;
            v[0] = 1.0 - v[0];
            self.inner.copy_(&un(x), &self.inner.upload_f32(&v, x.shape())?)?;
        }
        Ok(())
    }
    fn step_project_linf_(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        self.inner.step_project_linf_(&un(x), &un(g), &un(x0), p)
    }
    fn step_project_l2_(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        self.inner.step_project_l2_(&un(x), &un(g), &un(x0), p)
    }
    fn sgd_update_(&self, w: &T, g: &T, m: &T, p: &SgdParams) -> Result<()> {
        self.inner.sgd_update_(&un(w), &un(g), &un(m), p)
    }
    fn adam_update_(&self, w: &T, g: &T, m: &T, v: &T, p: &AdamParams) -> Result<()> {
        self.inner.adam_update_(&un(w), &un(g), &un(m), &un(v), p)
    }
    fn rng_fill_(&self, d: &T, p: &RngParams) -> Result<()> {
        self.inner.rng_fill_(&un(d), p)
    }
}

#[test]
fn a_wrong_kernel_is_refused_not_timed() {
    let inner = CpuBackend::with_threads(1).expect("cpu");
    // The wrapper itself is sound: with nothing broken, the same rows are checked and timed.
    let ok = Broken { inner: inner.clone(), broken: "" };
    let rows = bench::run_op_on(&ok, "conv2d_fwd", Some("2x3x9x7/4x3x3x3/s2/p1"), 2).expect("sound kernel is timed");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].check.starts_with("ok"), "{:?}", rows[0]);

    let bad = Broken { inner: inner.clone(), broken: "conv2d_fwd" };
    let e =
        bench::run_op_on(&bad, "conv2d_fwd", Some("2x3x9x7/4x3x3x3/s2/p1"), 2).expect_err("must refuse").to_string();
    assert!(e.contains("refusing to time") && e.contains("conv2d_fwd") && e.contains("broken-cpu"), "{e}");
    // The conv layer launches the broken forward too.
    let e = bench::run_op_on(&bad, "conv2d_layer", Some("2x3x9x7/4x3x3x3"), 2).expect_err("must refuse").to_string();
    assert!(e.contains("refusing to time"), "{e}");

    let bad = Broken { inner, broken: "sign_step" };
    let e = bench::run_op_on(&bad, "sign_step", Some("3x17"), 2).expect_err("must refuse").to_string();
    assert!(e.contains("refusing to time") && e.contains("sign_step"), "{e}");
}

/// The wgpu row machinery on whatever adapter is present (lavapipe on CI): tiny shape, every
/// variant checked against the CPU reference and timed, by timestamp queries where the
/// adapter has them (lavapipe does), and the row says which. Timings on lavapipe mean nothing.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_rows_are_checked_against_the_cpu_reference_and_timed() {
    use bench::timing::{WGPU_TIMESTAMPS, WGPU_WALL};
    let Some(b) = perturb::wgpu::test_backend() else { return };
    let method = if b.has_timestamps() { WGPU_TIMESTAMPS } else { WGPU_WALL };
    assert_eq!(b.timing(), method);
    let rows = bench::run_op_on(&b, "conv2d", Some("2x3x8x8/4x3x3x3/p1"), 2).expect("wgpu conv rows");
    let variants: Vec<&str> = rows.iter().filter(|r| r.op == "conv2d_fwd").map(|r| r.variant.as_str()).collect();
    assert!(variants.len() >= 2, "every variant gets a row: {variants:?}");
    for r in &rows {
        assert_eq!(r.backend, "wgpu");
        assert_eq!(r.timing, method, "{r:?}");
        assert!(r.check.contains("cpu full"), "compared with the CPU reference: {r:?}");
        assert!(r.x_vs_reference.is_some_and(|x| x > 0.0), "{r:?}");
        assert!(r.median_ms > 0.0 && r.median_ms.is_finite(), "{r:?}");
    }
    let rows = bench::run_op_on(&b, "attack_step", Some("3x17"), 2).expect("wgpu step rows");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.timing == method), "{rows:?}");
}

/// What the wgpu timing says about a closure that reads back (a host round trip inside the
/// timed span) and one that only launches kernels.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_timing_names_host_round_trips() {
    use bench::timing::WGPU_TIMESTAMPS;
    let Some(b) = perturb::wgpu::test_backend() else { return };
    let x = b.upload_f32(&[1.0, -2.0, 3.0], &Shape::from([3])).expect("upload");
    let launch = b
        .time_ms(1, 3, &mut || {
            b.relu_fwd(&x)?;
            Ok(())
        })
        .expect("timed");
    let read = b
        .time_ms(1, 3, &mut || {
            b.download_f32(&b.relu_fwd(&x)?)?;
            Ok(())
        })
        .expect("timed");
    for t in [&launch, &read] {
        assert_eq!(t.ms.len(), 3);
        assert!(t.ms.iter().all(|&m| m.is_finite() && m >= 0.0), "{t:?}");
    }
    if b.has_timestamps() {
        assert_eq!(launch.timing, None, "a kernel launch is timed as the backend says");
        assert_eq!(read.timing.as_deref(), Some(&*format!("{WGPU_TIMESTAMPS} (span incl. host round trips)")));
    } else {
        assert_eq!((launch.timing, read.timing), (None, None));
    }
}

/// The CUDA FMA-rate kernel compiles wherever libnvrtc is present (no GPU needed).
#[cfg(feature = "cuda")]
#[test]
fn cuda_fma_kernel_compiles_with_nvrtc() {
    if let Err(why) = perturb::cuda::nvrtc_available() {
        println!("skipped: nvrtc unavailable: {why}");
        return;
    }
    let c = perturb::cuda::nvrtc::compile(&bench::peaks::CUDA_FMA_MODULE, perturb::cuda::nvrtc::Target::Cubin(90))
        .expect("compiles");
    assert!(c.has_entry("bench_fma_rate"), "{}", c.ptx);
}

/// A kernel variant whose preconditions a shape does not meet (wgpu's vec4 and texture GEMMs
/// need feature counts divisible by 4) is skipped with its reason, not a failure of the whole
/// run; the other variants are still timed and checked. Skipped without an adapter unless
/// PERTURB_REQUIRE_WGPU=1.
#[cfg(feature = "wgpu")]
#[test]
fn a_variant_that_does_not_fit_the_shape_is_skipped_not_fatal() {
    if perturb::wgpu::test_backend().is_none() {
        return;
    }
    let o = perturb(&[
        "bench",
        "--op",
        "linear_fwd",
        "--backend",
        "wgpu",
        "--shapes",
        "33x65x17",
        "--no-vendor",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    let rows = rows_of(&o);
    assert!(rows.iter().any(|r| r["variant"] == "v1" && r["check"].as_str().is_some_and(|c| c.starts_with("ok"))));
    let e = stderr(&o);
    assert!(e.contains("v4 skipped: variant 4 (texture operands) needs in and out features divisible by 4"), "{e}");
    assert!(!rows.iter().any(|r| r["variant"] == "v4"), "no row for a skipped variant");
}
