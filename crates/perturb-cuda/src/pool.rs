//! Device memory: a size-class pool of `CudaSlice<u8>` blocks and the storage handle tensors
//! hold. A dropped tensor's block goes back to its class's free list, so an attack loop that
//! allocates the same shapes every step reuses the same blocks and calls the driver's
//! allocator only on its first step. All work runs on one stream, so a block handed out again
//! is stream-ordered after every kernel that used it before: no event or sync is needed.

use crate::device::alloc_err;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use perturb_core::Result;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Smallest block handed out (also the allocation granularity for tiny tensors).
const MIN_BLOCK: usize = 256;

/// The block size serving a request of `bytes`: powers of two up to 4 KiB, then eight classes
/// per octave (at most 12.5% slack).
pub(crate) fn size_class(bytes: usize) -> usize {
    let b = bytes.max(MIN_BLOCK);
    if b <= 4096 {
        return b.next_power_of_two();
    }
    // Eight classes between consecutive powers of two.
    let step = (1usize << (usize::BITS - 1 - b.leading_zeros())) / 8;
    // Saturates for requests near usize::MAX: the driver then refuses them (OutOfMemory with
    // the bytes asked for) instead of the rounding overflowing.
    b.div_ceil(step).saturating_mul(step)
}

/// The free lists, shared by every block so a block can return itself on drop.
pub(crate) struct Pool {
    stream: Arc<CudaStream>,
    free: Mutex<HashMap<usize, Vec<CudaSlice<u8>>>>,
    /// Allocations that went to the driver (a pool hit does not count).
    driver_allocs: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(stream: Arc<CudaStream>) -> Arc<Self> {
        Arc::new(Pool { stream, free: Mutex::new(HashMap::new()), driver_allocs: AtomicUsize::new(0) })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<usize, Vec<CudaSlice<u8>>>> {
        // A panic while holding the lock leaves the map consistent (only push/pop), so a
        // poisoned lock is still usable.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A block of at least `bytes` bytes, contents unspecified.
    pub(crate) fn alloc(self: &Arc<Self>, bytes: usize) -> Result<Block> {
        let class = size_class(bytes);
        if let Some(slice) = self.lock().get_mut(&class).and_then(|v| v.pop()) {
            return Ok(Block::new(slice, class, self.clone()));
        }
        // SAFETY: u8 has no invalid bit patterns; callers overwrite the block before reading.
        let slice = match unsafe { self.stream.alloc::<u8>(class) } {
            Ok(s) => s,
            Err(_) => {
                // The device may be full of cached blocks: release them and try once more.
                self.trim();
                // SAFETY: as above.
                unsafe { self.stream.alloc::<u8>(class) }.map_err(|e| alloc_err(bytes, e))?
            }
        };
        self.driver_allocs.fetch_add(1, Ordering::Relaxed);
        Ok(Block::new(slice, class, self.clone()))
    }

    /// How many blocks came from the driver rather than the free lists.
    pub(crate) fn driver_allocs(&self) -> usize {
        self.driver_allocs.load(Ordering::Relaxed)
    }

    /// Frees every cached block (stream-ordered, so kernels still using them finish first).
    pub(crate) fn trim(&self) {
        let drained: Vec<_> = self.lock().drain().collect();
        drop(drained);
    }

    /// Bytes held in free lists.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.lock().iter().map(|(class, v)| class * v.len()).sum()
    }

    fn give_back(&self, class: usize, slice: CudaSlice<u8>) {
        self.lock().entry(class).or_default().push(slice);
    }
}

/// One device allocation in use; returns to its pool on drop.
pub(crate) struct Block {
    slice: Option<CudaSlice<u8>>,
    ptr: u64,
    bytes: usize,
    pool: Arc<Pool>,
    /// What the host knows of a u32 block's largest value (see [`LabelBound`]), packed as
    /// `max << 32 | index` (index u32::MAX: unknown); u64::MAX: nothing known.
    labels: AtomicU64,
}

/// The largest value a u32 tensor holds, as far as the host knows without reading it back:
/// exact with its first index after an upload, an upper bound after argmax_rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LabelBound {
    pub(crate) max: u32,
    pub(crate) at: Option<u32>,
}

const UNKNOWN: u64 = u64::MAX;

impl Block {
    fn new(slice: CudaSlice<u8>, bytes: usize, pool: Arc<Pool>) -> Self {
        let ptr = {
            let (ptr, _record) = slice.device_ptr(&pool.stream);
            ptr
        };
        Block { ptr, bytes, slice: Some(slice), pool, labels: AtomicU64::new(UNKNOWN) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(s) = self.slice.take() {
            self.pool.give_back(self.bytes, s);
        }
    }
}

/// The storage behind a CUDA tensor: a shared handle to one device block. Clones alias the
/// same memory (as [`perturb_core::Tensor`] handles do); the block returns to the pool when
/// the last handle drops.
#[derive(Clone)]
pub struct CudaStorage(Arc<Block>);

impl CudaStorage {
    pub(crate) fn new(block: Block) -> Self {
        CudaStorage(Arc::new(block))
    }
    /// The raw device address, passed to kernels as a pointer argument.
    pub(crate) fn ptr(&self) -> u64 {
        self.0.ptr
    }
    /// The block's size in bytes (at least the tensor's size).
    pub fn capacity(&self) -> usize {
        self.0.bytes
    }
    /// What is known of the largest u32 value in the block.
    pub(crate) fn label_bound(&self) -> Option<LabelBound> {
        match self.0.labels.load(Ordering::Acquire) {
            UNKNOWN => None,
            v => Some(LabelBound { max: (v >> 32) as u32, at: Some(v as u32).filter(|&i| i != u32::MAX) }),
        }
    }
    /// Records (or forgets, with None) what is known of the largest u32 value in the block.
    pub(crate) fn set_label_bound(&self, b: Option<LabelBound>) {
        let v = b.map_or(UNKNOWN, |b| ((b.max as u64) << 32) | b.at.unwrap_or(u32::MAX) as u64);
        self.0.labels.store(v, Ordering::Release);
    }
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({:#x}, {} bytes)", self.0.ptr, self.0.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_bounded_slack() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(257), 512);
        assert_eq!(size_class(4096), 4096);
        for bytes in [4097usize, 10_000, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(bytes);
            assert!(c >= bytes && (c - bytes) as f64 <= 0.125 * bytes as f64 + 1.0, "{bytes} -> {c}");
            assert_eq!(size_class(c), c, "a class maps to itself");
        }
        // A request too large to round up saturates instead of overflowing.
        assert_eq!(size_class(usize::MAX - 5), usize::MAX);
        assert!(size_class(usize::MAX / 2 + 3) >= usize::MAX / 2 + 3);
    }
}
