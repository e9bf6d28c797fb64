//! Lying headers must be refused before anything of the claimed size is allocated. This binary
//! installs a counting allocator, so it holds one test only (tests in one binary run in parallel
//! and would see each other's allocations).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{gzip, idx_labels, images_header};
use perturb_data::{Error, parse_idx_images, parse_idx_labels};

/// Tracks the largest single allocation requested since the last reset.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Largest allocation made while running `f` (inputs are built before the reset).
fn largest_during(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    f();
    LARGEST.load(Ordering::Relaxed)
}

#[test]
fn lying_headers_allocate_little() {
    const SMALL: usize = 1 << 20; // 1 MiB: decoder state and messages, nothing payload-sized

    // Raw: 2^31 images of 28x28 (1.6 TB) in 100 bytes.
    let mut raw = images_header(1 << 31, 28, 28);
    raw.resize(100, 0);
    let big = largest_during(|| {
        assert!(matches!(parse_idx_images(&raw, "r"), Err(Error::PayloadTooShort { .. })));
    });
    assert!(big < SMALL, "raw: largest allocation {big} bytes");

    // Gzip, header just under the 2 GiB limit (2^21 images of 32x32 = 2 GiB), 100 real bytes:
    // the reservation is bounded by the compressed size, not the header.
    let mut under = images_header(1 << 21, 32, 32);
    under.extend_from_slice(&[7u8; 100]);
    let gz = gzip(&under);
    let big = largest_during(|| {
        let r = parse_idx_images(&gz, "g");
        assert!(matches!(r, Err(Error::PayloadTooShort { found: 100, .. })), "{r:?}");
    });
    assert!(big < SMALL, "gzip under limit: largest allocation {big} bytes");

    // Gzip bomb: 64 MiB of zeros compress to ~64 KB; the header claims 10 labels, so the reader
    // stops after 11 payload bytes instead of inflating everything.
    let mut bomb = idx_labels(&[0; 10]);
    bomb.resize(bomb.len() + (64 << 20), 0);
    let gz = gzip(&bomb);
    drop(bomb);
    let big = largest_during(|| {
        let r = parse_idx_labels(&gz, "bomb");
        assert!(matches!(r, Err(Error::TrailingBytes { expected: 10, .. })), "{r:?}");
    });
    assert!(big < SMALL, "gzip bomb: largest allocation {big} bytes");
}
