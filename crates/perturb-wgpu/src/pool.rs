//! Device memory: a pool of wgpu buffers keyed by size class, and the storage handle.
//!
//! A [`WgpuStorage`] is an `Arc` over one pooled buffer. When the last handle drops, the
//! buffer goes back to the pool's free list for its size class instead of being destroyed, so
//! a loop that allocates the same shapes every step (an attack, a training step) reuses the
//! same buffers and creates none after its first step. Size classes are 4 per octave (at most
//! 25 % slack), with a 256-byte minimum.
//!
//! Reuse is ordered by the queue: work recorded before a buffer was released runs before
//! work recorded after it was handed out again, because every write to a pooled buffer is
//! either recorded into the same command stream or preceded by a flush (see `launch.rs`).

use perturb_core::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

const BACKEND: &str = "wgpu";

/// What a pooled buffer is for; each kind has its own free lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// STORAGE | COPY_SRC | COPY_DST: tensors.
    Storage,
    /// MAP_READ | COPY_DST: download staging.
    Readback,
}

impl Kind {
    fn usage(self) -> wgpu::BufferUsages {
        match self {
            Kind::Storage => wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            Kind::Readback => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        }
    }
}

/// Counters of the pool, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers created on the device since the backend started.
    pub created: u64,
    /// Requests served from a free list.
    pub reused: u64,
    /// Bytes held by live and free buffers together.
    pub bytes_held: u64,
    /// Bytes in the free lists.
    pub bytes_free: u64,
}

/// The rounded allocation size for a request of `bytes`: 256 bytes minimum, then 4 classes
/// per power of two.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let top = 63 - b.leading_zeros() as u64; // 2^top <= b < 2^(top+1)
    let step = 1u64 << (top - 2);
    b.div_ceil(step) * step
}

pub(crate) struct Pool {
    device: wgpu::Device,
    free: Mutex<HashMap<(Kind, u64), Vec<wgpu::Buffer>>>,
    stats: Mutex<PoolStats>,
    max_buffer_size: u64,
}

impl Pool {
    pub(crate) fn new(device: wgpu::Device, max_buffer_size: u64) -> Self {
        Pool { device, free: Mutex::new(HashMap::new()), stats: Mutex::new(PoolStats::default()), max_buffer_size }
    }

    /// A buffer of at least `bytes` bytes (contents undefined).
    pub(crate) fn acquire(&self, kind: Kind, bytes: u64) -> Result<(wgpu::Buffer, u64)> {
        let class = size_class(bytes).min(self.max_buffer_size.max(bytes));
        let class = class.div_ceil(wgpu::COPY_BUFFER_ALIGNMENT) * wgpu::COPY_BUFFER_ALIGNMENT;
        if let Some(buf) = lock(&self.free)?.get_mut(&(kind, class)).and_then(Vec::pop) {
            let mut s = lock(&self.stats)?;
            s.reused += 1;
            s.bytes_free -= class;
            return Ok((buf, class));
        }
        let buf = match self.create(kind, class) {
            Ok(b) => b,
            Err(Error::OutOfMemory { .. }) => {
                // Give the cached buffers back to the driver and try once more; a second
                // refusal reports the size the op asked for, not its size class.
                self.trim()?;
                self.create(kind, class).map_err(|e| match e {
                    Error::OutOfMemory { backend, .. } => Error::OutOfMemory { backend, bytes },
                    e => e,
                })?
            }
            Err(e) => return Err(e),
        };
        let mut s = lock(&self.stats)?;
        s.created += 1;
        s.bytes_held += class;
        Ok((buf, class))
    }

    fn create(&self, kind: Kind, class: u64) -> Result<wgpu::Buffer> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("perturb tensor"),
            size: class,
            usage: kind.usage(),
            mapped_at_creation: false,
        });
        let val_err = pollster::block_on(val.pop());
        let oom_err = pollster::block_on(oom.pop());
        if oom_err.is_some() {
            return Err(Error::OutOfMemory { backend: BACKEND, bytes: class });
        }
        if let Some(e) = val_err {
            return Err(Error::Device { backend: BACKEND, msg: format!("creating a buffer of {class} bytes: {e}") });
        }
        Ok(buf)
    }

    pub(crate) fn release(&self, kind: Kind, class: u64, buf: wgpu::Buffer) {
        // A poisoned lock only happens after a panic elsewhere; then the buffer is simply freed.
        if let (Ok(mut free), Ok(mut s)) = (self.free.lock(), self.stats.lock()) {
            free.entry((kind, class)).or_default().push(buf);
            s.bytes_free += class;
        }
    }

    /// Destroys every free buffer.
    pub(crate) fn trim(&self) -> Result<()> {
        let mut free = lock(&self.free)?;
        let mut s = lock(&self.stats)?;
        for ((_, class), bufs) in free.drain() {
            for b in bufs {
                b.destroy();
                s.bytes_held -= class;
                s.bytes_free -= class;
            }
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| Error::Device { backend: BACKEND, msg: "internal lock poisoned by an earlier panic".into() })
}

/// What the host knows about a u32 tensor's values without reading them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct U32Bound {
    /// Every element is <= max.
    pub max: u64,
    /// Where the maximum first occurs, when `max` is the exact maximum (uploads, zeros);
    /// `None` when it is only an upper bound (argmax outputs: cols - 1).
    pub at: Option<u64>,
}

/// One pooled device buffer; returns itself to the pool on drop.
pub(crate) struct Buf {
    buffer: Option<wgpu::Buffer>,
    /// Bytes the tensor uses (the buffer may be larger: its size class).
    pub(crate) bytes: u64,
    class: u64,
    kind: Kind,
    pool: Weak<Pool>,
    /// For u32 tensors: a bound on the elements when the host knows one. Lets softmax_xent
    /// reject bad labels up front without reading the labels back.
    u32_bound: Mutex<Option<U32Bound>>,
}

impl Buf {
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        // Only `drop` takes the buffer out, so it is always present while a handle exists.
        self.buffer.as_ref().unwrap_or_else(|| unreachable!("buffer taken before drop"))
    }
    /// The bytes to bind: the tensor's bytes rounded up to 16 (so vec4 views are whole),
    /// never more than the buffer holds.
    pub(crate) fn binding_size(&self) -> u64 {
        self.bytes.max(16).div_ceil(16).saturating_mul(16).min(self.class)
    }
    pub(crate) fn bound(&self) -> Option<U32Bound> {
        self.u32_bound.lock().ok().and_then(|b| *b)
    }
    pub(crate) fn set_bound(&self, b: Option<U32Bound>) {
        if let Ok(mut g) = self.u32_bound.lock() {
            *g = b;
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let (Some(b), Some(pool)) = (self.buffer.take(), self.pool.upgrade()) {
            pool.release(self.kind, self.class, b);
        }
    }
}

/// The backend's storage handle: a cheap clone aliasing one device buffer.
#[derive(Clone)]
pub struct WgpuStorage(pub(crate) Arc<Buf>);

impl WgpuStorage {
    pub(crate) fn new(pool: &Arc<Pool>, kind: Kind, bytes: u64) -> Result<Self> {
        let (buffer, class) = pool.acquire(kind, bytes)?;
        Ok(WgpuStorage(Arc::new(Buf {
            buffer: Some(buffer),
            bytes,
            class,
            kind,
            pool: Arc::downgrade(pool),
            u32_bound: Mutex::new(None),
        })))
    }
    /// Bytes this tensor occupies.
    pub fn bytes(&self) -> u64 {
        self.0.bytes
    }
    /// Whether two handles alias the same buffer.
    pub fn same_buffer(&self, other: &WgpuStorage) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for WgpuStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuStorage({} bytes)", self.0.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_have_bounded_slack() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1 << 20), 1 << 20);
        for b in [300u64, 1000, 4097, 123_457, 10_000_000] {
            let c = size_class(b);
            assert!(c >= b && (c as f64) <= b as f64 * 1.25 + 1.0, "{b} -> {c}");
            assert_eq!(size_class(c), c, "classes are fixed points");
        }
    }
}
