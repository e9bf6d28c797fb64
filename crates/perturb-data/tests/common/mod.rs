//! Helpers shared by the integration tests: scratch folders and writers for the binary formats.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A scratch folder under the system temp dir, removed on drop. Unique per process and call so
/// parallel tests never share one.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("perturb-data-test-{}-{tag}-{k}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// IDX images header: magic 0x00000803, n, rows, cols (big-endian).
pub fn images_header(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

/// A complete IDX images file whose pixel k is `(k * 7 + 3) % 256`.
pub fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = images_header(n, rows, cols);
    let len = (n * rows * cols) as usize;
    v.extend((0..len).map(pixel_byte));
    v
}

pub fn pixel_byte(k: usize) -> u8 {
    ((k * 7 + 3) % 256) as u8
}

/// A complete IDX labels file.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// One CIFAR-10 record: the label, then 3072 pixel bytes where the byte at (c, y, x) is
/// `(c * 50 + y * 3 + x + seed) % 256`.
pub fn cifar_record(label: u8, seed: usize) -> Vec<u8> {
    let mut v = vec![label];
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                v.push(((c * 50 + y * 3 + x + seed) % 256) as u8);
            }
        }
    }
    v
}

pub fn assert_err_contains<T: std::fmt::Debug>(r: perturb_data::Result<T>, parts: &[&str]) {
    let msg = match r {
        Ok(v) => panic!("expected an error containing {parts:?}, got Ok({v:?})"),
        Err(e) => e.to_string(),
    };
    for p in parts {
        assert!(msg.contains(p), "error message {msg:?} lacks {p:?}");
    }
}
