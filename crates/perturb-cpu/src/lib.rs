//! perturb-cpu: the rayon CPU backend, the oracle every GPU kernel is checked against and the
//! backend users without a GPU train on.
//!
//! - Memory: [`CpuStorage`], an `Arc<RwLock<CpuData>>`; tensor clones alias (see `storage`).
//! - Compute: f32 only; an f16/bf16 tensor given to a compute op is `Error::Unsupported`.
//! - Speed: convolution with at least 4 input channels is direct (register tiles over a padded
//!   channel-last copy of each image, AVX-512 / AVX2 / plain chosen at run time), with fewer it
//!   is im2col + `gemm`; linear layers are `gemm`; elementwise ops run over fixed-size parallel
//!   chunks.
//! - Determinism: every reduction over a batch (conv and linear weight gradients, bias_grad,
//!   sum_rows) is cut into chunks of a fixed size and the partials are added in chunk order,
//!   so results are bit-identical for any thread count. Input and weight gradients are separate
//!   loops; nothing uses atomics.
//! - Threads: [`CpuBackend::new`] uses rayon's global pool, [`CpuBackend::with_threads`] owns a
//!   pool and runs every op inside it.
//!
//! Rules a GPU kernel must reproduce to match this oracle bit for bit where the tolerance is
//! exact:
//! - relu: `x > 0 ? x : 0` (NaN gives 0); relu backward passes dy where `x > 0`;
//! - max-pool and argmax: the running maximum starts at the window's (row's) first element
//!   and moves only on a strictly greater one, so ties go to the first maximum;
//! - sign(0) = 0; clip(v) = min(max(v, lo), hi); the L-inf step is
//!   `clip(min(max(x + alpha*sign(g), x0 - eps), x0 + eps))`, all in f32;
//! - the L2 step computes norms, δ and the scaled sum in f64 per example and rounds once.
//!
//! Fixed chunk sizes (public so other backends can mirror the summation order if they wish):
//! conv weight gradient [`CpuBackend::CONV_WGRAD_CHUNK`] images, linear weight gradient
//! [`LINEAR_WGRAD_ROWS`] rows, bias gradient [`BIAS_CHUNK`] outer items, row sums in blocks
//! of [`SUM_BLOCK`].

#![warn(missing_docs)]

mod conv;
mod dense;
mod elementwise;
mod isa;
mod linear;
mod loss;
mod matmul;
mod optim;
mod pool;
mod step;
mod storage;

pub use elementwise::{BIAS_CHUNK, SUM_BLOCK};
pub use linear::WGRAD_ROWS as LINEAR_WGRAD_ROWS;
use storage::checked_len;
pub use storage::{CpuData, CpuStorage, CpuTensor, F32Read, F32Write};

use perturb_core::ops::{
    AdamParams, BiasParams, Conv2dParams, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use perturb_core::{Backend, DType, Error, Result, Shape, Tensor};
use std::sync::Arc;

/// The CPU backend. Cloning it shares its thread pool.
#[derive(Clone)]
pub struct CpuBackend {
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend").field("threads", &self.threads()).finish()
    }
}

/// Wraps an f32 vector as a tensor of `shape` (the caller guarantees the length).
pub(crate) fn wrap_f32(data: Vec<f32>, shape: impl Into<Shape>) -> Result<CpuTensor> {
    wrap(CpuData::F32(data), shape.into(), DType::F32)
}

pub(crate) fn wrap(data: CpuData, shape: Shape, dtype: DType) -> Result<CpuTensor> {
    if data.len() != shape.numel() || data.dtype() != dtype {
        return Err(Error::shape(
            "cpu",
            format!("{} {} elements cannot be viewed as {shape} {dtype}", data.len(), data.dtype()),
        ));
    }
    Ok(Tensor::from_storage(CpuStorage::new(data), shape, dtype))
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

impl CpuBackend {
    /// A backend on rayon's global thread pool.
    pub fn new() -> Self {
        CpuBackend { pool: None }
    }

    /// A backend with its own pool of `threads` threads; every op runs inside it.
    pub fn with_threads(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::invalid("CpuBackend::with_threads", "threads must be > 0"));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("perturb-cpu-{i}"))
            .build()
            .map_err(|e| Error::Unavailable {
                backend: "cpu",
                reason: format!("cannot start {threads} threads: {e}"),
            })?;
        Ok(CpuBackend { pool: Some(Arc::new(pool)) })
    }

    /// Threads the ops run on.
    pub fn threads(&self) -> usize {
        match &self.pool {
            Some(p) => p.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Runs `f` on this backend's threads.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Wraps a host vector as an f32 tensor without copying; `data.len()` must equal the
    /// shape's element count.
    pub fn from_vec_f32(&self, data: Vec<f32>, shape: impl Into<Shape>) -> Result<CpuTensor> {
        let shape = shape.into();
        if data.len() != checked_len("from_vec_f32", shape.dims())? {
            return Err(Error::shape("from_vec_f32", format!("{} values for shape {shape}", data.len())));
        }
        wrap_f32(data, shape)
    }

    /// Wraps a host vector as a u32 tensor without copying.
    pub fn from_vec_u32(&self, data: Vec<u32>, shape: impl Into<Shape>) -> Result<CpuTensor> {
        let shape = shape.into();
        if data.len() != checked_len("from_vec_u32", shape.dims())? {
            return Err(Error::shape("from_vec_u32", format!("{} values for shape {shape}", data.len())));
        }
        wrap(CpuData::U32(data), shape, DType::U32)
    }

    /// Wraps any [`CpuData`] as a tensor (f16/bf16 included) without copying.
    pub fn from_data(&self, data: CpuData, shape: impl Into<Shape>) -> Result<CpuTensor> {
        let shape = shape.into();
        let dtype = data.dtype();
        if data.len() != checked_len("from_data", shape.dims())? {
            return Err(Error::shape("from_data", format!("{} values for shape {shape}", data.len())));
        }
        wrap(data, shape, dtype)
    }
}

impl Backend for CpuBackend {
    type Storage = CpuStorage;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn device_name(&self) -> String {
        let model = cpu_model().unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let t = self.threads();
        format!("{model} ({t} thread{})", if t == 1 { "" } else { "s" })
    }

    /// An absurd shape is an error, not an abort: an element count that overflows is
    /// `InvalidArgument`, memory the system refuses is `OutOfMemory` with the bytes asked for.
    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<CpuTensor> {
        let len = checked_len("zeros", shape.dims())?;
        wrap(CpuData::try_zeros(dtype, len)?, shape.clone(), dtype)
    }

    fn upload_f32(&self, data: &[f32], shape: &Shape) -> Result<CpuTensor> {
        self.from_vec_f32(data.to_vec(), shape.clone())
    }

    fn upload_u32(&self, data: &[u32], shape: &Shape) -> Result<CpuTensor> {
        self.from_vec_u32(data.to_vec(), shape.clone())
    }

    fn download_f32(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        const OP: &str = "download_f32";
        let g = t.storage().read();
        if g.len() != t.numel() || g.dtype() != t.dtype() {
            return Err(Error::shape(OP, format!("tensor {} ({}) does not match its storage", t.shape(), t.dtype())));
        }
        match &*g {
            CpuData::F32(v) => Ok(v.clone()),
            CpuData::F16(v) => Ok(v.iter().map(|x| x.to_f32()).collect()),
            CpuData::BF16(v) => Ok(v.iter().map(|x| x.to_f32()).collect()),
            CpuData::U32(_) => {
                Err(Error::DType { op: OP, expected: DType::F32, got: DType::U32, shape: t.shape().clone() })
            }
        }
    }

    fn download_u32(&self, t: &CpuTensor) -> Result<Vec<u32>> {
        storage::read_u32("download_u32", t)
    }

    fn copy_(&self, dst: &CpuTensor, src: &CpuTensor) -> Result<()> {
        storage::copy_into("copy_", dst, src)
    }

    fn fill_(&self, dst: &CpuTensor, value: f32) -> Result<()> {
        self.install(|| elementwise::fill(dst, value))
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn concurrent_batches(&self) -> usize {
        self.threads()
    }

    fn conv2d_fwd(&self, x: &CpuTensor, w: &CpuTensor, p: &Conv2dParams) -> Result<CpuTensor> {
        self.install(|| conv::fwd(x, w, p))
    }

    fn conv2d_bwd_input(&self, dy: &CpuTensor, w: &CpuTensor, p: &Conv2dParams) -> Result<CpuTensor> {
        self.install(|| conv::bwd_input(dy, w, p))
    }

    fn conv2d_bwd_weight(&self, x: &CpuTensor, dy: &CpuTensor, p: &Conv2dParams) -> Result<CpuTensor> {
        self.install(|| conv::bwd_weight(x, dy, p))
    }

    fn linear_fwd(&self, x: &CpuTensor, w: &CpuTensor, p: &LinearParams) -> Result<CpuTensor> {
        self.install(|| linear::fwd(x, w, p))
    }

    fn linear_bwd_input(&self, dy: &CpuTensor, w: &CpuTensor, p: &LinearParams) -> Result<CpuTensor> {
        self.install(|| linear::bwd_input(dy, w, p))
    }

    fn linear_bwd_weight(&self, x: &CpuTensor, dy: &CpuTensor, p: &LinearParams) -> Result<CpuTensor> {
        self.install(|| linear::bwd_weight(x, dy, p))
    }

    fn bias_add(&self, y: &CpuTensor, b: &CpuTensor, p: &BiasParams) -> Result<CpuTensor> {
        self.install(|| elementwise::bias_add(y, b, p))
    }

    fn bias_grad(&self, dy: &CpuTensor, p: &BiasParams) -> Result<CpuTensor> {
        self.install(|| elementwise::bias_grad(dy, p))
    }

    fn relu_fwd(&self, x: &CpuTensor) -> Result<CpuTensor> {
        self.install(|| elementwise::relu_fwd(x))
    }

    fn relu_bwd(&self, dy: &CpuTensor, x: &CpuTensor) -> Result<CpuTensor> {
        self.install(|| elementwise::relu_bwd(dy, x))
    }

    fn maxpool2d_fwd(&self, x: &CpuTensor, p: &Pool2dParams) -> Result<CpuTensor> {
        self.install(|| pool::fwd(x, p))
    }

    fn maxpool2d_bwd(&self, dy: &CpuTensor, x: &CpuTensor, p: &Pool2dParams) -> Result<CpuTensor> {
        self.install(|| pool::bwd(dy, x, p))
    }

    fn softmax_xent(&self, logits: &CpuTensor, labels: &CpuTensor, p: &XentParams) -> Result<(CpuTensor, CpuTensor)> {
        self.install(|| loss::softmax_xent(logits, labels, p))
    }

    fn axpby(&self, x: &CpuTensor, y: &CpuTensor, p: &EltParams) -> Result<CpuTensor> {
        self.install(|| elementwise::axpby(x, y, p))
    }

    fn mul(&self, x: &CpuTensor, y: &CpuTensor) -> Result<CpuTensor> {
        self.install(|| elementwise::mul(x, y))
    }

    fn sum_rows(&self, x: &CpuTensor, p: &RowParams) -> Result<CpuTensor> {
        self.install(|| elementwise::sum_rows(x, p))
    }

    fn argmax_rows(&self, x: &CpuTensor, p: &RowParams) -> Result<CpuTensor> {
        self.install(|| elementwise::argmax_rows(x, p))
    }

    fn sign_step_(&self, x: &CpuTensor, g: &CpuTensor, p: &StepParams) -> Result<()> {
        self.install(|| step::sign_step(x, g, p))
    }

    fn step_project_linf_(&self, x: &CpuTensor, g: &CpuTensor, x0: &CpuTensor, p: &StepParams) -> Result<()> {
        self.install(|| step::step_project_linf(x, g, x0, p))
    }

    fn step_project_l2_(&self, x: &CpuTensor, g: &CpuTensor, x0: &CpuTensor, p: &StepParams) -> Result<()> {
        self.install(|| step::step_project_l2(x, g, x0, p))
    }

    fn sgd_update_(&self, w: &CpuTensor, g: &CpuTensor, m: &CpuTensor, p: &SgdParams) -> Result<()> {
        self.install(|| optim::sgd(w, g, m, p))
    }

    fn adam_update_(&self, w: &CpuTensor, g: &CpuTensor, m: &CpuTensor, v: &CpuTensor, p: &AdamParams) -> Result<()> {
        self.install(|| optim::adam(w, g, m, v, p))
    }

    fn rng_fill_(&self, dst: &CpuTensor, p: &RngParams) -> Result<()> {
        self.install(|| elementwise::rng_fill(dst, p))
    }
}
