//! Vendor baselines timed in the same run as the kernels: the `gemm` crate on the CPU, cuBLAS
//! on CUDA (cudarc's `cublas`), and PyTorch through a small Python script when `import torch`
//! works: cuDNN/cuBLAS on CUDA, oneDNN/MKL on the CPU with the same thread count.
//!
//! A convolution's GEMM baseline is the matrix product of its implicit GEMM (M = N·Ho·Wo,
//! N = Cout, K = Cin·kh·kw for the forward; the backwards reorder it), without the im2col:
//! the bound a conv lowered to one GEMM could reach, so a ratio below 1 against it is expected.

use crate::{Error, Result};
use perturb_core::Op;
use perturb_core::ops::{Conv2dParams, LinearParams};
use serde_json::{Value, json};

/// A row-major product C[m, n] = op(A)[m, k] · op(B)[k, n]; `ta`: A is stored [k, m]; `tb`:
/// B is stored [n, k].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ta: bool,
    pub tb: bool,
}

impl GemmShape {
    /// The product behind a linear op: fwd y = x·wᵀ, bwd_input dx = dy·w, bwd_weight dw = dyᵀ·x.
    pub fn linear(op: Op, p: &LinearParams) -> Option<GemmShape> {
        let (m, k, n) = (p.m as usize, p.k as usize, p.n as usize);
        Some(match op {
            Op::LinearFwd => GemmShape { m, n, k, ta: false, tb: true },
            Op::LinearBwdInput => GemmShape { m, n: k, k: n, ta: false, tb: false },
            Op::LinearBwdWeight => GemmShape { m: n, n: k, k: m, ta: true, tb: false },
            _ => return None,
        })
    }
    /// The implicit GEMM of a conv op (see the module docs).
    pub fn conv(op: Op, p: &Conv2dParams) -> Option<GemmShape> {
        let [n, _, ho, wo] = p.output_dims();
        let (rows, cout, patch) = (n * ho * wo, p.c_out as usize, p.patch_len());
        Some(match op {
            Op::Conv2dFwd => GemmShape { m: rows, n: cout, k: patch, ta: false, tb: true },
            Op::Conv2dBwdInput => GemmShape { m: rows, n: patch, k: cout, ta: false, tb: false },
            Op::Conv2dBwdWeight => GemmShape { m: cout, n: patch, k: rows, ta: true, tb: false },
            _ => return None,
        })
    }
}

/// A vendor GEMM that can be timed on the device of its backend.
pub trait GemmVendor {
    /// Library name as it appears in the rows (`gemm-crate`, `cublas`).
    fn name(&self) -> String;
    /// Times C = op(A)·op(B) for `g`: `warmup` untimed calls, then `reps` timed ones (ms).
    fn time_gemm(&mut self, g: GemmShape, warmup: usize, reps: usize) -> Result<Vec<f64>>;
}

/// The `gemm` crate (what the CPU backend itself calls) on the backend's thread pool.
pub struct GemmCrate {
    b: perturb_cpu::CpuBackend,
}

impl GemmCrate {
    pub fn new(b: perturb_cpu::CpuBackend) -> Self {
        GemmCrate { b }
    }
}

impl GemmVendor for GemmCrate {
    fn name(&self) -> String {
        "gemm-crate".into()
    }

    fn time_gemm(&mut self, g: GemmShape, warmup: usize, reps: usize) -> Result<Vec<f64>> {
        let GemmShape { m, n, k, ta, tb } = g;
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let bm: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
        let mut c = vec![0f32; m * n];
        // Strides (row, column) of A as [m, k] and B as [k, n] over their storage.
        let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
        let threads = self.b.threads();
        let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        let run = |c: &mut [f32]| {
            self.b.install(|| {
                // SAFETY: A holds m*k, B k*n and C m*n elements; the strides above address
                // exactly those (largest offset (m-1)*rs + (k-1)*cs < m*k, and likewise for B
                // and C), and C is a unique borrow distinct from A and B.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        a_cs as isize,
                        a_rs as isize,
                        bm.as_ptr(),
                        b_cs as isize,
                        b_rs as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            })
        };
        for _ in 0..warmup {
            run(&mut c);
        }
        let mut ms = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = std::time::Instant::now();
            run(&mut c);
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        std::hint::black_box(&c);
        Ok(ms)
    }
}

/// cuBLAS SGEMM (FP32, default math mode: no TF32) on the backend's stream.
#[cfg(feature = "cuda")]
pub struct Cublas<'a> {
    b: &'a perturb_cuda::CudaBackend,
    blas: cudarc::cublas::CudaBlas,
}

#[cfg(feature = "cuda")]
impl<'a> Cublas<'a> {
    /// Loads cuBLAS (Err naming why when libcublas is absent; cudarc would panic).
    pub fn new(b: &'a perturb_cuda::CudaBackend) -> Result<Self> {
        // SAFETY: only probes whether the shared library can be opened.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Core(perturb_core::Error::Unavailable {
                backend: "cuda",
                reason: "libcublas not found (put the CUDA or PyTorch nvidia/*/lib folder on LD_LIBRARY_PATH)".into(),
            }));
        }
        let blas = cudarc::cublas::CudaBlas::new(b.stream().clone()).map_err(|e| {
            Error::Core(perturb_core::Error::Device { backend: "cuda", msg: format!("cublas init: {e:?}") })
        })?;
        Ok(Cublas { b, blas })
    }
}

#[cfg(feature = "cuda")]
impl GemmVendor for Cublas<'_> {
    fn name(&self) -> String {
        "cublas".into()
    }

    fn time_gemm(&mut self, g: GemmShape, warmup: usize, reps: usize) -> Result<Vec<f64>> {
        use super::timing::BenchBackend;
        use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        use cudarc::cublas::{Gemm, GemmConfig};
        let GemmShape { m, n, k, ta, tb } = g;
        let dev = |e: &dyn std::fmt::Debug| -> Error {
            Error::Core(perturb_core::Error::Device { backend: "cuda", msg: format!("cublas: {e:?}") })
        };
        let stream = self.b.stream();
        let a = stream.alloc_zeros::<f32>(m * k).map_err(|e| dev(&e))?;
        let bm = stream.alloc_zeros::<f32>(k * n).map_err(|e| dev(&e))?;
        let mut c = stream.alloc_zeros::<f32>(m * n).map_err(|e| dev(&e))?;
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: B's storage is the first operand.
        let cfg = GemmConfig {
            transa: if tb { CUBLAS_OP_T } else { CUBLAS_OP_N },
            transb: if ta { CUBLAS_OP_T } else { CUBLAS_OP_N },
            m: n as i32,
            n: m as i32,
            k: k as i32,
            alpha: 1.0f32,
            lda: if tb { k as i32 } else { n as i32 },
            ldb: if ta { m as i32 } else { k as i32 },
            beta: 0.0f32,
            ldc: n as i32,
        };
        let blas = &self.blas;
        let t = BenchBackend::time_ms(self.b, warmup, reps, &mut || {
            // SAFETY: A, B and C were allocated with m*k, k*n and m*n floats, and the leading
            // dimensions above describe exactly those column-major views.
            unsafe { blas.gemm(cfg, &bm, &a, &mut c) }.map_err(|e| dev(&e))
        })?;
        Ok(t.ms)
    }
}

/// The PyTorch script (embedded; written to a temporary file when run).
pub const TORCH_SCRIPT: &str = include_str!("torch_bench.py");

/// The Python that runs the PyTorch baselines and the AutoAttack reference: `$PERTURB_PYTHON`
/// (e.g. a virtual environment's python), else `python3`.
pub fn python() -> String {
    std::env::var("PERTURB_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// What PyTorch runs on `backend`, for the baseline rows' notes.
pub fn torch_libs(backend: &str) -> &'static str {
    if backend == "cuda" { "cuDNN/cuBLAS, TF32 off" } else { "oneDNN/MKL, same thread count" }
}

/// Whether the Python of [`python`] imports torch (and, for `device` "cuda", sees a CUDA
/// device); Ok holds torch's version, Err says why not.
pub fn torch_available(device: &str) -> std::result::Result<String, String> {
    let py = python();
    let probe = if device == "cuda" {
        "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__)"
    } else {
        "import torch; print(torch.__version__)"
    };
    let out = std::process::Command::new(&py)
        .args(["-c", probe])
        .output()
        .map_err(|e| format!("{py} not runnable: {e} (set PERTURB_PYTHON to a python with torch)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("{py}: {}", err.lines().last().unwrap_or("import torch failed")))
    }
}

/// Runs the PyTorch script on `cases` (JSON objects the script understands: conv / linear
/// directions, the training step, attacks and adversarial-training steps) on `device` ("cuda"
/// or "cpu", with `threads` intra-op threads there), returning its rows (`case`, `median_ms`,
/// `min_ms`, `max_ms`, `version`). CUDA: events, TF32 off, cuDNN benchmark mode; CPU: wall clock.
pub fn run_torch(cases: &[Value], warmup: usize, reps: usize, device: &str, threads: usize) -> Result<Vec<Value>> {
    let dir = std::env::temp_dir().join(format!("perturb-bench-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
    let script = dir.join("torch_bench.py");
    std::fs::write(&script, TORCH_SCRIPT).map_err(|e| Error::Io { path: script.display().to_string(), source: e })?;
    let input =
        json!({ "warmup": warmup, "reps": reps, "device": device, "threads": threads, "cases": cases }).to_string();
    let spec = dir.join("cases.json");
    std::fs::write(&spec, input).map_err(|e| Error::Io { path: spec.display().to_string(), source: e })?;
    let out = std::process::Command::new(python())
        .arg(&script)
        .arg(&spec)
        .output()
        .map_err(|e| Error::Io { path: python(), source: e })?;
    let _ = std::fs::remove_dir_all(&dir);
    let backend = if device == "cuda" { "cuda" } else { "cpu" };
    if !out.status.success() {
        return Err(Error::Core(perturb_core::Error::Device {
            backend,
            msg: format!("the PyTorch baseline failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        }));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    match v {
        Value::Array(rows) => Ok(rows),
        other => Err(Error::Core(perturb_core::Error::Device {
            backend,
            msg: format!("the PyTorch baseline printed {other} instead of a list"),
        })),
    }
}

/// The case a PyTorch run times for a conv op.
pub fn torch_case_conv(op: Op, p: &Conv2dParams) -> Value {
    json!({ "kind": "conv2d", "dir": op.name(), "x": p.input_dims(), "w": p.weight_dims(),
            "stride": p.stride, "pad": p.pad })
}

/// See [`torch_case_conv`].
pub fn torch_case_linear(op: Op, p: &LinearParams) -> Value {
    json!({ "kind": "linear", "dir": op.name(), "m": p.m, "k": p.k, "n": p.n })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case kind perturb sends is one the script dispatches on.
    #[test]
    fn torch_script_knows_every_case_kind_perturb_sends() {
        let p = Conv2dParams::new([2, 1, 6, 6], [3, 1, 3, 3], 1, 0).unwrap();
        let mut cases = vec![
            torch_case_conv(Op::Conv2dFwd, &p),
            torch_case_linear(Op::LinearFwd, &LinearParams::new(2, 3, 4).unwrap()),
            json!({ "kind": "train_step", "batch": 2 }),
        ];
        cases.extend(crate::bench::model::torch_attack_cases("mlp", 2).into_iter().map(|(_, c)| c));
        for c in &cases {
            let kind = c["kind"].as_str().unwrap();
            assert!(TORCH_SCRIPT.contains(&format!("\"{kind}\": ")), "torch_bench.py has no case kind {kind:?}");
        }
    }

    /// With a Python that imports torch (`$PERTURB_PYTHON`, else python3), the script runs each
    /// attack and adversarial-training case on the CPU and reports a time for each; elsewhere
    /// it prints why it is skipped.
    #[test]
    fn torch_script_runs_the_attack_cases_on_the_cpu() {
        if let Err(why) = torch_available("cpu") {
            println!("skipped: no PyTorch ({why})");
            return;
        }
        let cases: Vec<Value> = crate::bench::model::torch_attack_cases("mlp", 4).into_iter().map(|(_, c)| c).collect();
        let rows = run_torch(&cases, 0, 2, "cpu", 1).unwrap();
        assert_eq!(rows.len(), cases.len());
        for (r, c) in rows.iter().zip(&cases) {
            assert_eq!(&r["case"], c);
            assert!(r["median_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{r}");
        }
    }

    #[test]
    fn conv_gemm_shapes_have_the_conv_flops() {
        let p = Conv2dParams::new([128, 32, 26, 26], [64, 32, 3, 3], 1, 0).unwrap();
        for op in [Op::Conv2dFwd, Op::Conv2dBwdInput, Op::Conv2dBwdWeight] {
            let g = GemmShape::conv(op, &p).unwrap();
            assert_eq!(2.0 * (g.m * g.n * g.k) as f64, p.work().flops, "{op:?}");
        }
    }

    #[test]
    fn gemm_crate_runs_every_transpose() {
        let mut v = GemmCrate::new(perturb_cpu::CpuBackend::with_threads(1).unwrap());
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let ms = v.time_gemm(GemmShape { m: 5, n: 7, k: 3, ta, tb }, 1, 2).unwrap();
            assert_eq!(ms.len(), 2);
        }
    }
}
