//! CIFAR-10 binary batches (`cifar-10-batches-bin`).
//!
//! Each record is 1 label byte then 3072 pixel bytes: the 32x32 red plane, then green, then blue,
//! each row-major. That is already C x H x W, so a record maps to an example without reordering.

use std::path::Path;

use crate::dataset::{Dataset, byte_to_pixel};
use crate::error::{Error, Result};
use crate::idx::read_file;
use crate::mnist::Split;

/// Classes in CIFAR-10.
pub const CIFAR10_CLASSES: usize = 10;
/// CIFAR-10 image side in pixels.
pub const CIFAR10_SIDE: usize = 32;
/// Pixel bytes per record: 3 x 32 x 32.
pub const CIFAR10_IMAGE_BYTES: usize = 3 * CIFAR10_SIDE * CIFAR10_SIDE;
/// Bytes per record: the label then the pixels.
pub const CIFAR10_RECORD_BYTES: usize = 1 + CIFAR10_IMAGE_BYTES;

/// Parses one CIFAR-10 binary batch held in memory into a 3 x 32 x 32 [`Dataset`] named `source`.
///
/// Errors when the size is zero or not a multiple of 3073 bytes (naming the file and the size) or
/// a label is `> 9` (naming the file and the record).
pub fn parse_cifar10_batch(bytes: &[u8], source: &str) -> Result<Dataset> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(CIFAR10_RECORD_BYTES) {
        return Err(Error::CifarSize { file: source.to_string(), size: bytes.len(), record: CIFAR10_RECORD_BYTES });
    }
    let n = bytes.len() / CIFAR10_RECORD_BYTES;
    let mut images = Vec::with_capacity(n * CIFAR10_IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (record, chunk) in bytes.chunks_exact(CIFAR10_RECORD_BYTES).enumerate() {
        let Some((&label, pixels)) = chunk.split_first() else {
            continue; // unreachable: chunks_exact yields 3073-byte chunks
        };
        if usize::from(label) >= CIFAR10_CLASSES {
            return Err(Error::LabelOutOfRange {
                file: format!("CIFAR-10 batch {source}"),
                unit: "record",
                index: record,
                label,
                num_classes: CIFAR10_CLASSES,
            });
        }
        labels.push(label);
        images.extend(pixels.iter().copied().map(byte_to_pixel));
    }
    Ok(Dataset {
        name: source.to_string(),
        images,
        labels,
        n,
        channels: 3,
        height: CIFAR10_SIDE,
        width: CIFAR10_SIDE,
        num_classes: CIFAR10_CLASSES,
    })
}

/// Reads and parses one CIFAR-10 binary batch file; see [`parse_cifar10_batch`].
pub fn read_cifar10_batch(path: &Path) -> Result<Dataset> {
    let (bytes, source) = read_file(path)?;
    parse_cifar10_batch(&bytes, &source)
}

/// The batch files that make up one split, in the order their records are concatenated.
pub fn cifar10_batch_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    }
}

/// Loads one split of CIFAR-10 from the binary distribution: `data_batch_1.bin` ..
/// `data_batch_5.bin` (Train) or `test_batch.bin` (Test), in `dir` or in its
/// `cifar-10-batches-bin` subfolder (what the official archive extracts to). All files of the
/// split must be present: a partial training set would silently change the experiment.
/// The result is named `cifar10-train` / `cifar10-test`.
pub fn load_cifar10_dir(dir: &Path, split: Split) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::MissingDir { dir: dir.to_path_buf() });
    }
    let sub = dir.join("cifar-10-batches-bin");
    let names = cifar10_batch_names(split);
    // The subfolder wins only when it holds the split's first file; otherwise report on `dir`.
    let root = match names.first() {
        Some(first) if sub.join(first).is_file() => sub,
        _ => dir.to_path_buf(),
    };
    let missing: Vec<String> = names.iter().filter(|n| !root.join(n).is_file()).cloned().collect();
    if !missing.is_empty() {
        return Err(Error::MissingFiles {
            dir: root,
            what: format!("CIFAR-10 {split} batch (also looked in cifar-10-batches-bin/)"),
            looked_for: missing,
        });
    }
    let mut out = Dataset {
        name: format!("cifar10-{split}"),
        images: Vec::new(),
        labels: Vec::new(),
        n: 0,
        channels: 3,
        height: CIFAR10_SIDE,
        width: CIFAR10_SIDE,
        num_classes: CIFAR10_CLASSES,
    };
    // Reserve from the real file sizes: 50,000 images are 614 MB as f32, and growing by doubling
    // would briefly need twice that.
    let records: u64 = names
        .iter()
        .filter_map(|n| std::fs::metadata(root.join(n)).ok())
        .map(|m| m.len() / CIFAR10_RECORD_BYTES as u64)
        .sum();
    // Only a hint: a wrong (huge) file must fail in the reader with a message, not abort here.
    let max_records = crate::idx::MAX_PAYLOAD_BYTES / CIFAR10_RECORD_BYTES as u64;
    let records = usize::try_from(records.min(max_records)).unwrap_or(0);
    let _ = out.images.try_reserve(records.saturating_mul(CIFAR10_IMAGE_BYTES));
    let _ = out.labels.try_reserve(records);
    for name in &names {
        let batch = read_cifar10_batch(&root.join(name))?;
        out.images.extend_from_slice(&batch.images);
        out.labels.extend_from_slice(&batch.labels);
        out.n += batch.n;
    }
    Ok(out)
}
