//! The default data set compiled into the binary: 10,000 real MNIST digits (see
//! `data/mnist10k/README.md`), so `perturb demo` works with no download and no network.

use crate::dataset::Dataset;
use crate::error::Result;
use crate::mnist::{mnist_from_idx_bytes, split_train_test};

static IMAGES_GZ: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/mnist10k/images-idx3-ubyte.gz"));
static LABELS_GZ: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/mnist10k/labels-idx1-ubyte.gz"));

/// The embedded files themselves, `(images, labels)`: the gzipped IDX bytes of
/// `data/mnist10k`, for programs outside perturb (a reference evaluation in another language)
/// that must read exactly the digits perturb reads.
pub fn embedded_mnist10k_idx_gz() -> (&'static [u8], &'static [u8]) {
    (IMAGES_GZ, LABELS_GZ)
}

/// Examples in the embedded set.
pub const MNIST10K_LEN: usize = 10_000;
/// The first this many embedded examples are the training split; the rest (2,000) are the test.
pub const MNIST10K_TRAIN_LEN: usize = 8_000;

/// Decompresses the embedded MNIST-10k set and returns `(train, test)`: the first 8,000 digits
/// named "mnist10k-train" and the last 2,000 named "mnist10k-test", 1 x 28 x 28, pixels
/// `byte / 255`. The split is the same one [`crate::load_mnist_dir`] applies to the
/// `data/mnist10k` folder, so the embedded and on-disk copies give identical sets.
///
/// Decompresses on every call (about 8 MB of pixels as bytes, 31 MB as f32); callers keep the
/// result.
pub fn embedded_mnist10k() -> Result<(Dataset, Dataset)> {
    let all = mnist_from_idx_bytes(
        IMAGES_GZ,
        "embedded data/mnist10k/images-idx3-ubyte.gz",
        LABELS_GZ,
        "embedded data/mnist10k/labels-idx1-ubyte.gz",
        "mnist10k",
    )?;
    split_train_test(&all)
}
