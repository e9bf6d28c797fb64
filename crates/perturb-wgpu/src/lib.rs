//! perturb's WGSL backend: every kernel-level op of [`perturb_core::Backend`] as a compute
//! shader (in the repository's `shaders/` folder), run by wgpu on Vulkan, Metal or DX12 — or on
//! a CPU through Mesa's lavapipe.
//!
//! - [`list_adapters`] lists what wgpu sees; [`WgpuBackend::new`] picks the best adapter or
//!   the one `PERTURB_WGPU_ADAPTER` names; [`test_backend`] is the tests' entry point.
//! - One device, queue, pipeline cache and buffer pool per backend; dispatches are batched
//!   into one submission until the host needs data.
//! - Ops with several kernel variants can be forced to one with
//!   [`WgpuBackend::set_variant`] or `PERTURB_WGPU_VARIANT=op=N,...`.

mod adapter;
mod backend;
mod kernels;
mod launch;
mod ops_f16;
mod ops_gemm;
mod ops_misc;
mod pool;
mod texture;
mod timestamp;

pub use adapter::{ADAPTER_ENV, AdapterSummary, list_adapters};
pub use kernels::variants;
pub use pool::{PoolStats, WgpuStorage};
pub use timestamp::GpuTimes;

use perturb_core::{Error, Op, Result};
use pool::{Kind, Pool, lock};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

const BACKEND: &str = "wgpu";

/// The environment variable that forces kernel variants: `op=N` pairs, comma-separated.
pub const VARIANT_ENV: &str = "PERTURB_WGPU_VARIANT";
/// Set to 1 to turn a missing wgpu adapter into a test failure instead of a skip.
pub const REQUIRE_ENV: &str = "PERTURB_REQUIRE_WGPU";

/// How to open a [`WgpuBackend`] ([`WgpuBackend::with_options`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WgpuOptions {
    /// Open the adapter whose name contains this (case-insensitive); `None`: the best one.
    pub adapter: Option<String>,
    /// Deterministic mode (`perturb --deterministic`). Every shader is atomic-free (but for
    /// softmax_xent's idempotent error-flag OR) with fixed-order reductions, so results repeat
    /// bit for bit on one adapter and driver without it; the mode also zero-fills every buffer
    /// the pool hands out before any dispatch sees it, so no result can depend on what an
    /// earlier tensor left in a recycled buffer. It cannot make two adapters agree: the
    /// default variants and the conv weight-gradient K-split are chosen per adapter, and the
    /// drivers' `exp`/`log` and multiply-add contraction differ.
    pub deterministic: bool,
}

/// The WGSL backend. Cheap to share by reference across threads (`Send + Sync`).
pub struct WgpuBackend {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    pub(crate) features: wgpu::Features,
    summary: AdapterSummary,
    cpu_adapter: bool,
    pub(crate) pool: Arc<Pool>,
    /// Operand textures for the texture-read GEMM variants (see `texture.rs`).
    pub(crate) tex_pool: Arc<texture::TexPool>,
    pub(crate) cache: launch::CacheCell,
    pub(crate) batch: launch::BatchCell,
    /// Errors reported outside any error scope.
    pub(crate) errors: Arc<Mutex<Vec<String>>>,
    /// Set when the device is lost.
    pub(crate) lost: Arc<Mutex<Option<String>>>,
    variants: Mutex<HashMap<Op, u32>>,
    /// Device-side error flags (bit 0: a softmax_xent label >= classes), read on synchronize
    /// and download when a kernel that can set them ran.
    pub(crate) status: WgpuStorage,
    pub(crate) status_pending: AtomicBool,
    deterministic: bool,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBackend({})", self.summary.name)
    }
}

impl WgpuBackend {
    /// Opens the best adapter, or the one whose name contains `PERTURB_WGPU_ADAPTER`
    /// (case-insensitive). `Err(Unavailable)` with the reason when there is none; never panics.
    pub fn new() -> Result<Self> {
        Self::with_adapter(adapter::env_filter().as_deref())
    }

    /// Opens the adapter whose name contains `name` (case-insensitive), or the best one for
    /// `None`. Kernel-variant overrides are read from `PERTURB_WGPU_VARIANT`.
    pub fn with_adapter(name: Option<&str>) -> Result<Self> {
        Self::with_options(&WgpuOptions { adapter: name.map(str::to_string), deterministic: false })
    }

    /// Opens an adapter with options (see [`WgpuOptions`]). Kernel-variant overrides are read
    /// from `PERTURB_WGPU_VARIANT`.
    pub fn with_options(options: &WgpuOptions) -> Result<Self> {
        let name = options.adapter.as_deref();
        let instance = adapter::instance();
        let adapters = adapter::enumerate(&instance)?;
        let chosen = adapter::select_adapter(adapters, name)?;
        let summary = AdapterSummary::from_adapter(&chosen);
        let limits = chosen.limits();
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        let features = chosen.features() & wanted;
        let desc = wgpu::DeviceDescriptor {
            label: Some("perturb"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let request = std::panic::AssertUnwindSafe(|| pollster::block_on(chosen.request_device(&desc)));
        let (device, queue) = std::panic::catch_unwind(request)
            .map_err(|p| Error::Unavailable {
                backend: BACKEND,
                reason: format!("opening {} panicked: {}", summary.name, adapter::panic_message(&p)),
            })?
            .map_err(|e| Error::Unavailable { backend: BACKEND, reason: format!("opening {}: {e}", summary.name) })?;

        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = lost_sink.lock() {
                *l = Some(if msg.is_empty() { format!("{reason:?}") } else { format!("{reason:?}: {msg}") });
            }
        });

        let pool = Arc::new(Pool::new(device.clone(), limits.max_buffer_size));
        let tex_pool = Arc::new(texture::TexPool::new(device.clone()));
        let status = WgpuStorage::new(&pool, Kind::Storage, 16)?;
        let mut overrides = HashMap::new();
        if let Ok(spec) = std::env::var(VARIANT_ENV) {
            overrides.extend(kernels::parse_overrides(&spec)?);
        }
        let backend = WgpuBackend {
            batch: Mutex::new(launch::Batch::new(&device)),
            cpu_adapter: summary.device_type == "cpu",
            device,
            queue,
            limits,
            features,
            summary,
            tex_pool,
            pool,
            cache: Mutex::default(),
            errors,
            lost,
            variants: Mutex::new(overrides),
            status,
            status_pending: AtomicBool::new(false),
            deterministic: options.deterministic,
        };
        backend.clear(&backend.status)?;
        backend.flush()?;
        Ok(backend)
    }

    /// The adapter this backend runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Whether this backend runs in deterministic mode (see [`WgpuOptions::deterministic`]).
    pub fn deterministic(&self) -> bool {
        self.deterministic
    }

    /// Whether the device has `SHADER_F16`.
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Forces `op` to kernel variant `v` (see [`variants`]); `None` restores the default.
    pub fn set_variant(&self, op: Op, v: Option<u32>) -> Result<()> {
        let mut map = lock(&self.variants)?;
        match v {
            Some(v) => {
                kernels::check_variant(op, v)?;
                map.insert(op, v);
            }
            None => {
                map.remove(&op);
            }
        }
        Ok(())
    }

    /// Builder form of [`set_variant`](Self::set_variant).
    pub fn with_variant(self, op: Op, v: u32) -> Result<Self> {
        self.set_variant(op, Some(v))?;
        Ok(self)
    }

    /// Forces variant `v` on every op that has one (the parity suites run `_v1` and `_v2`);
    /// ops without variant `v` keep their default. Err if no op has `v`.
    pub fn with_variant_everywhere(self, v: u32) -> Result<Self> {
        let ops: Vec<Op> = Op::ALL.iter().copied().filter(|&op| kernels::variants(op).contains(&v)).collect();
        if ops.is_empty() {
            return Err(Error::invalid("with_variant_everywhere", format!("no op has a variant {v}")));
        }
        for op in ops {
            self.set_variant(op, Some(v))?;
        }
        Ok(self)
    }

    /// The variant `op` runs: the forced one, else the default for this adapter.
    pub fn variant(&self, op: Op) -> u32 {
        let forced = self.variants.lock().ok().and_then(|m| m.get(&op).copied());
        forced.unwrap_or_else(|| kernels::default_variant(op, self.cpu_adapter))
    }

    /// Whether `op`'s variant was forced (then an unsuitable shape is an error rather than a
    /// silent fallback).
    pub(crate) fn variant_forced(&self, op: Op) -> bool {
        self.variants.lock().map(|m| m.contains_key(&op)).unwrap_or(false)
    }

    /// Buffer-pool counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Frees the pool's cached (unused) buffers.
    pub fn trim_pool(&self) -> Result<()> {
        self.tex_pool.trim()?;
        self.pool.trim()
    }

    /// Destroys the device, the way a driver reset or a removed GPU loses it: wgpu reports
    /// the loss, and every later call on this backend returns `Error::Device` naming it
    /// (no panic). For fault tests, and to give device memory back before the backend drops.
    pub fn destroy_device(&self) {
        self.device.destroy();
    }

    /// Queue submissions so far (the batch submits when the host needs data).
    pub fn submissions(&self) -> u64 {
        self.batch.lock().map(|b| b.submissions).unwrap_or(0)
    }

    /// Pipelines built so far.
    pub fn pipelines_built(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// A fresh (uninitialised) storage buffer of `bytes` bytes for `op`, refusing sizes the
    /// adapter cannot bind.
    pub(crate) fn alloc(&self, op: &'static str, bytes: u64) -> Result<WgpuStorage> {
        self.check_alive()?;
        let limit = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::Unsupported {
                backend: BACKEND,
                what: format!(
                    "{op}: a tensor of {bytes} bytes exceeds this adapter's max_storage_buffer_binding_size \
                     ({} bytes, max_buffer_size {}) on {}",
                    self.limits.max_storage_buffer_binding_size, self.limits.max_buffer_size, self.summary.name
                ),
            });
        }
        // The shaders index elements with u32.
        if bytes > u64::from(u32::MAX) {
            return Err(Error::Unsupported {
                backend: BACKEND,
                what: format!("{op}: a tensor of {bytes} bytes is beyond the kernels' 32-bit indexing (4 GiB)"),
            });
        }
        let s = WgpuStorage::new(&self.pool, Kind::Storage, bytes)?;
        if self.deterministic {
            self.clear(&s)?;
        }
        Ok(s)
    }
}

/// The backend for tests: `Some` when an adapter opens; otherwise prints one line
/// `skipped: wgpu unavailable: <reason>` and returns `None` — unless `PERTURB_REQUIRE_WGPU=1`,
/// in which case it panics with the reason (a test failure).
pub fn test_backend() -> Option<WgpuBackend> {
    match WgpuBackend::new() {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("wgpu required ({REQUIRE_ENV}=1) but unavailable: {e}");
            }
            println!("skipped: wgpu unavailable: {e}");
            None
        }
    }
}
