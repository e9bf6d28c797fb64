//! The CUDA backend object: one context, one stream, the per-context module cache, the buffer
//! pool and the typed launch path every op goes through.

use crate::device::{self, CudaDeviceSummary, driver_err, unavailable};
use crate::kernels::{self, Kernel, Module};
use crate::nvrtc::{self, Target};
use crate::pool::{CudaStorage, Pool};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use perturb_core::{DType, Error, Op, Result, Shape, Tensor};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A parameter struct passed to a kernel by value. The structs are `#[repr(C)]` Pod with the
/// same layout as their mirrors in kernels/params.cuh (checked by `header_layout_matches_rust`).
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct KParams<P>(pub P);
// SAFETY: P is Pod (plain bytes, no pointers, no padding) and #[repr(C)], laid out exactly as
// the C struct the kernel declares; the wrapper is transparent.
unsafe impl<P: bytemuck::Pod> DeviceRepr for KParams<P> {}

/// A device buffer a kernel touches and how many 4-byte elements it may touch.
pub(crate) struct Buf<'a> {
    pub(crate) storage: &'a CudaStorage,
    pub(crate) elems: usize,
}

/// `t`'s storage, touched up to `elems` elements.
pub(crate) fn buf(t: &Tensor<CudaBackend>, elems: usize) -> Buf<'_> {
    Buf { storage: t.storage(), elems }
}

pub(crate) struct Inner {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) summary: CudaDeviceSummary,
    pub(crate) target: Target,
    modules: Mutex<HashMap<Module, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    pub(crate) pool: Arc<Pool>,
    /// One u32 on the device; softmax_xent sets bit 0 on an out-of-range label.
    pub(crate) err_flag: CudaStorage,
    /// Set when a kernel that may raise `err_flag` was queued since the last check.
    pub(crate) err_armed: AtomicBool,
}

/// How to open a [`CudaBackend`] ([`CudaBackend::with_options`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// Deterministic mode (`perturb --deterministic`). Every variant this crate promotes is
    /// already atomic-free with fixed reduction orders, so results repeat bit for bit run to
    /// run without it. The mode adds two guarantees on top:
    /// - only variants whose arithmetic is fixed by this crate's source may be selected
    ///   ([`kernels::deterministic_variant`]): the TF32 tensor-core GEMM (v3) is refused, since
    ///   the order and precision of the sums inside its `mma` are the hardware's;
    /// - every block the pool hands to an op is first filled with quiet-NaN bits, so no result
    ///   can depend on what an earlier tensor left in recycled memory (a kernel that read
    ///   memory it did not write would show NaN instead of a run-dependent value).
    pub deterministic: bool,
}

/// The CUDA backend. Cheap to clone (clones share the context, stream, module cache and pool);
/// each clone carries its own choice of kernel variants ([`CudaBackend::set_variant`]) and
/// its deterministic flag.
#[derive(Clone)]
pub struct CudaBackend {
    pub(crate) inner: Arc<Inner>,
    variants: [u32; Op::ALL.len()],
    deterministic: bool,
}

/// The bits deterministic mode fills fresh blocks with: an f32 quiet NaN.
pub(crate) const FRESH_FILL: u32 = 0x7fc0_0000;

fn op_index(op: Op) -> usize {
    Op::ALL.iter().position(|&o| o == op).unwrap_or(0)
}

impl CudaBackend {
    /// Opens device `ordinal`: probes the driver (never panics when libcuda is absent), checks
    /// libnvrtc, picks the compile target (the device's own `sm_XX` cubin where this NVRTC
    /// knows it) and creates a context and a stream. Kernels compile on first use.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_options(ordinal, CudaOptions::default())
    }

    /// [`CudaBackend::new`] with options (see [`CudaOptions`]).
    pub fn with_options(ordinal: usize, options: CudaOptions) -> Result<Self> {
        let (ctx, summary) = device::no_panic("opening the CUDA device", || {
            device::init_driver()?;
            let driver = device::driver_version()?;
            let count = device::device_count()?;
            if ordinal >= count {
                return Err(unavailable(format!("no CUDA device {ordinal}: the driver reports {count}")));
            }
            let summary = device::summary(ordinal, driver)?;
            let ctx = CudaContext::new(ordinal).map_err(|e| {
                unavailable(format!("creating a context on device {ordinal}: {}", device::driver_msg(&e)))
            })?;
            Ok((ctx, summary))
        })?;
        nvrtc::nvrtc_available().map_err(unavailable)?;
        let supported = nvrtc::supported_archs().map_err(unavailable)?;
        let target = nvrtc::target_for(summary.sm(), &supported).map_err(unavailable)?;
        let stream = ctx.new_stream().map_err(|e| driver_err("creating a stream", e))?;
        // SAFETY: every allocation and launch of this backend goes to this one stream, so the
        // per-buffer events cudarc would record are never needed; nothing was allocated yet.
        unsafe { ctx.disable_event_tracking() };
        let pool = Pool::new(stream.clone());
        let err_flag = CudaStorage::new(pool.alloc(4)?);
        let inner = Arc::new(Inner {
            ctx,
            stream,
            summary,
            target,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            pool,
            err_flag,
            err_armed: AtomicBool::new(false),
        });
        let mut variants = [1; Op::ALL.len()];
        for op in Op::ALL {
            variants[op_index(op)] = kernels::promoted(op);
        }
        let b = CudaBackend { inner, variants, deterministic: options.deterministic };
        b.memset32(&b.inner.err_flag, 0, 1)?;
        Ok(b)
    }

    /// Whether this handle runs in deterministic mode (see [`CudaOptions::deterministic`]).
    pub fn deterministic(&self) -> bool {
        self.deterministic
    }

    /// A handle sharing this device with deterministic mode on or off. Turning it on fails,
    /// naming the op, if a variant outside [`kernels::deterministic_variant`] is selected.
    pub fn with_deterministic(&self, on: bool) -> Result<Self> {
        let mut b = self.clone();
        b.deterministic = on;
        if on {
            for op in Op::ALL {
                b.check_deterministic(op, b.variant(op))?;
            }
        }
        Ok(b)
    }

    fn check_deterministic(&self, op: Op, v: u32) -> Result<()> {
        if self.deterministic && !kernels::deterministic_variant(op, v) {
            return Err(Error::Unsupported {
                backend: "cuda",
                what: format!(
                    "{} v{v} in deterministic mode: it is the TF32 tensor-core GEMM, whose result depends on the \
                     order and precision of the hardware's mma sums rather than on this crate's source",
                    op.name()
                ),
            });
        }
        Ok(())
    }

    /// The device this backend runs on.
    pub fn summary(&self) -> &CudaDeviceSummary {
        &self.inner.summary
    }
    /// What NVRTC compiles for on this device (its own cubin, or PTX for an older arch).
    pub fn target(&self) -> Target {
        self.inner.target
    }
    /// The context, for code that launches its own work (benchmarks, vendor libraries).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }
    /// The one stream every op of this backend is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// The variant `op` currently launches.
    pub fn variant(&self, op: Op) -> u32 {
        self.variants[op_index(op)]
    }

    /// Selects variant `v` of `op` for this handle (see [`kernels::variants`]).
    pub fn set_variant(&mut self, op: Op, v: u32) -> Result<()> {
        if !kernels::variants(op).contains(&v) {
            return Err(Error::invalid(
                op.name(),
                format!("no CUDA variant v{v}; variants are {:?}", kernels::variants(op)),
            ));
        }
        self.check_deterministic(op, v)?;
        let need = kernels::min_sm(op, v);
        if self.inner.summary.sm() < need {
            return Err(Error::Unsupported {
                backend: "cuda",
                what: format!("{} v{v} needs sm_{need}, device is sm_{}", op.name(), self.inner.summary.sm()),
            });
        }
        self.variants[op_index(op)] = v;
        Ok(())
    }

    /// A handle sharing this device with variant `v` selected for `op`.
    pub fn with_variant(&self, op: Op, v: u32) -> Result<Self> {
        let mut b = self.clone();
        b.set_variant(op, v)?;
        Ok(b)
    }

    /// A handle with variant `v` selected for every op that has a variant `v` (the others keep
    /// their current one): `with_variant_everywhere(1)` runs every naive kernel.
    pub fn with_variant_everywhere(&self, v: u32) -> Result<Self> {
        let mut b = self.clone();
        for op in Op::ALL {
            if kernels::variants(op).contains(&v) {
                b.set_variant(op, v)?;
            }
        }
        Ok(b)
    }

    /// Times `f` on this backend's stream with CUDA events (timing enabled): `warmup` untimed
    /// calls, then `reps` timed ones; returns each call's milliseconds (take the median).
    /// `f` must only queue work (no downloads), or the host wait lands inside the timing.
    pub fn time_ms(&self, warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f32>> {
        use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        for _ in 0..warmup {
            f()?;
        }
        self.sync_and_check()?;
        let ctx = &self.inner.ctx;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = ctx.new_event(Some(CU_EVENT_DEFAULT)).map_err(|e| driver_err("creating an event", e))?;
            let end = ctx.new_event(Some(CU_EVENT_DEFAULT)).map_err(|e| driver_err("creating an event", e))?;
            start.record(&self.inner.stream).map_err(|e| driver_err("recording an event", e))?;
            f()?;
            end.record(&self.inner.stream).map_err(|e| driver_err("recording an event", e))?;
            times.push(start.elapsed_ms(&end).map_err(|e| driver_err("reading an event", e))?);
        }
        self.sync_and_check()?;
        Ok(times)
    }

    /// Compiles and loads every kernel module now (otherwise each compiles on first use).
    pub fn compile_all(&self) -> Result<()> {
        for m in Module::ALL {
            self.module(m)?;
        }
        Ok(())
    }

    /// Frees the pool's cached blocks.
    pub fn trim_pool(&self) {
        self.inner.pool.trim();
    }
    /// How many device allocations went to the driver so far (pool hits do not count): a loop
    /// that reuses its shapes stops raising this after its first iteration.
    pub fn driver_allocations(&self) -> usize {
        self.inner.pool.driver_allocs()
    }
    /// Bytes the pool holds for reuse.
    pub fn pooled_bytes(&self) -> usize {
        self.inner.pool.cached_bytes()
    }

    // ---- module cache ----------------------------------------------------------------------

    fn module(&self, m: Module) -> Result<Arc<CudaModule>> {
        let mut mods = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(module) = mods.get(&m) {
            return Ok(module.clone());
        }
        let compiled = compiled_image(m, self.inner.target)?;
        let image = match &compiled.cubin {
            Some(cubin) => Ptx::from_binary(cubin.clone()),
            None => Ptx::from_src(compiled.ptx.clone()),
        };
        let module = self.inner.ctx.load_module(image).map_err(|e| {
            driver_err(&format!("loading kernels/{} ({})", m.info().file, self.inner.target.arch_flag()), e)
        })?;
        mods.insert(m, module.clone());
        Ok(module)
    }

    pub(crate) fn function(&self, k: Kernel) -> Result<CudaFunction> {
        if let Some(f) = self.inner.functions.lock().unwrap_or_else(|p| p.into_inner()).get(k.name) {
            return Ok(f.clone());
        }
        let module = self.module(k.module)?;
        let f = module
            .load_function(k.name)
            .map_err(|e| driver_err(&format!("kernel {} in kernels/{}", k.name, k.module.info().file), e))?;
        self.inner.functions.lock().unwrap_or_else(|p| p.into_inner()).insert(k.name, f.clone());
        Ok(f)
    }

    // ---- launching -------------------------------------------------------------------------

    /// A 1-D grid of `threads`-wide blocks covering `work` items, capped (the kernels loop
    /// grid-stride) at 32 blocks per SM.
    pub(crate) fn grid_1d(&self, work: usize, threads: u32) -> LaunchConfig {
        let cap = (self.inner.summary.multiprocessors.max(1) * 32) as usize;
        let blocks = work.div_ceil(threads as usize).clamp(1, cap) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
    }

    /// Queues kernel `k` with the buffers' device pointers (in order), then the parameter
    /// struct by value, then `extra` u32 scalars. Checks first that every buffer holds at least
    /// the elements the kernel may touch, so a wrong size is an Err, never an out-of-bounds write.
    pub(crate) fn launch<P: bytemuck::Pod>(
        &self,
        k: Kernel,
        cfg: LaunchConfig,
        bufs: &[Buf<'_>],
        params: &P,
        extra: &[u32],
    ) -> Result<()> {
        for (i, b) in bufs.iter().enumerate() {
            if b.storage.capacity() < b.elems.saturating_mul(4) {
                return Err(Error::Device {
                    backend: "cuda",
                    msg: format!(
                        "{}: argument {i} holds {} bytes but the kernel may touch {} elements",
                        k.name,
                        b.storage.capacity(),
                        b.elems
                    ),
                });
            }
        }
        let f = self.function(k)?;
        let ptrs: Vec<u64> = bufs.iter().map(|b| b.storage.ptr()).collect();
        let kp = KParams(*params);
        let mut builder = self.inner.stream.launch_builder(&f);
        for p in &ptrs {
            builder.arg(p);
        }
        builder.arg(&kp);
        for e in extra {
            builder.arg(e);
        }
        // SAFETY: `k` is declared in kernels/*.cu as (pointers..., params struct by value,
        // u32 scalars...) in exactly this order (the entry table and the NVRTC test tie the
        // names; each caller matches the signature in its op wrapper); every pointer is a live
        // pool block at least as large as the elements the kernel touches for these params
        // (checked above), and blocks are only recycled in stream order.
        unsafe { builder.launch(cfg) }.map_err(|e| driver_err(&format!("launching {}", k.name), e))?;
        Ok(())
    }

    // ---- memory helpers ----------------------------------------------------------------------

    /// A tensor of `shape` whose every byte the caller overwrites before any kernel reads it
    /// (uploads, `zeros`): its block is not filled even in deterministic mode.
    pub(crate) fn alloc_unfilled(&self, shape: &Shape, dtype: DType) -> Result<Tensor<Self>> {
        // Checked over the dims: `Shape::numel` wraps in a release build.
        let numel = shape.dims().iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let Some(numel) = numel.filter(|&n| n <= i32::MAX as usize) else {
            return Err(Error::Unsupported {
                backend: "cuda",
                what: format!("tensors over 2^31 - 1 elements (shape {shape})"),
            });
        };
        // At most (2^31 - 1) * 4 bytes: no overflow.
        let bytes = numel * dtype.size();
        let block = self.inner.pool.alloc(bytes)?;
        Ok(Tensor::from_storage(CudaStorage::new(block), shape.clone(), dtype))
    }

    /// An op's output tensor; in deterministic mode its block is first filled with
    /// [`FRESH_FILL`] (stream-ordered, before the kernel that writes it).
    pub(crate) fn alloc(&self, shape: &Shape, dtype: DType) -> Result<Tensor<Self>> {
        let t = self.alloc_unfilled(shape, dtype)?;
        if self.deterministic {
            let words = t.storage().capacity() / 4;
            self.memset32(t.storage(), FRESH_FILL, words)?;
        }
        Ok(t)
    }

    /// Fills `count` 32-bit words of `s` with `bits` (stream-ordered).
    pub(crate) fn memset32(&self, s: &CudaStorage, bits: u32, count: usize) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        if s.capacity() < count * 4 {
            return Err(Error::Device {
                backend: "cuda",
                msg: format!("memset of {count} words into {} bytes", s.capacity()),
            });
        }
        self.inner.ctx.bind_to_thread().map_err(|e| driver_err("binding the context", e))?;
        // SAFETY: `s` is a live block of at least `count` words (checked above) on this stream.
        unsafe { cudarc::driver::sys::cuMemsetD32Async(s.ptr(), bits, count, self.inner.stream.cu_stream()) }
            .result()
            .map_err(|e| driver_err("cuMemsetD32Async", e))
    }

    /// Copies host data into a fresh block.
    pub(crate) fn upload<T: bytemuck::Pod>(&self, data: &[T], shape: &Shape, dtype: DType) -> Result<Tensor<Self>> {
        // Checked over the dims (`Shape::numel` wraps in a release build, panics in a debug one).
        let numel = shape.dims().iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(data.len()) {
            return Err(Error::shape("upload", format!("{} values for shape {shape}", data.len())));
        }
        let t = self.alloc_unfilled(shape, dtype)?;
        if !data.is_empty() {
            self.inner.ctx.bind_to_thread().map_err(|e| driver_err("binding the context", e))?;
            // SAFETY: the destination block holds at least size_of_val(data) bytes (allocated
            // for this shape and dtype, whose size equals T's); a copy from pageable memory
            // has staged the source before it returns, so `data` may be dropped afterwards.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(t.storage().ptr(), data, self.inner.stream.cu_stream())
            }
            .map_err(|e| driver_err("copying to the device", e))?;
        }
        Ok(t)
    }

    /// Copies `out.len()` elements of `s` to the host and waits for them.
    pub(crate) fn download_into<T: bytemuck::Pod>(&self, s: &CudaStorage, out: &mut [T]) -> Result<()> {
        if std::mem::size_of_val(out) > s.capacity() {
            return Err(Error::Device { backend: "cuda", msg: "download larger than its block".into() });
        }
        if !out.is_empty() {
            self.inner.ctx.bind_to_thread().map_err(|e| driver_err("binding the context", e))?;
            // SAFETY: the source block holds at least size_of_val(out) bytes (checked above);
            // `out` stays borrowed until the stream synchronize below has completed the copy.
            unsafe { cudarc::driver::result::memcpy_dtoh_async(out, s.ptr(), self.inner.stream.cu_stream()) }
                .map_err(|e| driver_err("copying to the host", e))?;
        }
        self.sync_and_check()
    }

    /// Waits for the stream, then reports a device-side error raised since the last check.
    pub(crate) fn sync_and_check(&self) -> Result<()> {
        self.inner.stream.synchronize().map_err(|e| driver_err("synchronizing the stream", e))?;
        if !self.inner.err_armed.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let mut flag = [0u32];
        self.inner.ctx.bind_to_thread().map_err(|e| driver_err("binding the context", e))?;
        // SAFETY: err_flag is a live block of at least one u32; synchronized right below.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(
                &mut flag[..],
                self.inner.err_flag.ptr(),
                self.inner.stream.cu_stream(),
            )
        }
        .map_err(|e| driver_err("reading the error flag", e))?;
        self.inner.stream.synchronize().map_err(|e| driver_err("synchronizing the stream", e))?;
        if flag[0] != 0 {
            self.memset32(&self.inner.err_flag, 0, 1)?;
            return Err(Error::invalid(
                "softmax_xent",
                "a label was >= the number of classes (reported at the first sync after the launch; \
                 that row's loss and gradient are NaN)",
            ));
        }
        Ok(())
    }

    pub(crate) fn variant_kernel(&self, op: Op) -> Result<Kernel> {
        let v = self.variant(op);
        kernels::entry(op, v).ok_or_else(|| Error::Unsupported { backend: "cuda", what: format!("{} v{v}", op.name()) })
    }
}

/// NVRTC output for (module, target), compiled once per process: every context (every
/// `CudaBackend::new`, e.g. one per test) loads the same image instead of recompiling.
fn compiled_image(m: Module, target: Target) -> Result<Arc<nvrtc::Compiled>> {
    type Images = Mutex<HashMap<(Module, Target), Arc<nvrtc::Compiled>>>;
    static IMAGES: OnceLock<Images> = OnceLock::new();
    let images = IMAGES.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(c) = images.lock().unwrap_or_else(|p| p.into_inner()).get(&(m, target)) {
        return Ok(c.clone());
    }
    // Compiled outside the lock: two threads may race to compile the same module, and the
    // loser's identical result is dropped.
    let c = Arc::new(nvrtc::compile(m.info(), target).map_err(|msg| Error::Device { backend: "cuda", msg })?);
    Ok(images.lock().unwrap_or_else(|p| p.into_inner()).entry((m, target)).or_insert(c).clone())
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend({})", self.inner.summary)
    }
}
