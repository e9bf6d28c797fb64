//! Data for the perturb models: readers for the IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary
//! formats, the embedded MNIST-10k default set, and seeded batching.
//!
//! Every reader yields a [`Dataset`]: f32 pixels scaled to `[0, 1]` in N x C x H x W order, u8
//! labels. Input files are untrusted: sizes in headers are checked against the bytes present
//! before allocating, and every error names the file and what was expected and found.

mod batch;
mod cifar;
mod dataset;
mod embedded;
mod error;
mod idx;
mod mnist;

pub use batch::{Batches, SplitMix64, batch_indices, shuffled_indices};
pub use cifar::{
    CIFAR10_CLASSES, CIFAR10_IMAGE_BYTES, CIFAR10_RECORD_BYTES, CIFAR10_SIDE, cifar10_batch_names, load_cifar10_dir,
    parse_cifar10_batch, read_cifar10_batch,
};
pub use dataset::Dataset;
pub use embedded::{MNIST10K_LEN, MNIST10K_TRAIN_LEN, embedded_mnist10k, embedded_mnist10k_idx_gz};
pub use error::{Error, Result};
pub use idx::{MAX_PAYLOAD_BYTES, is_gzip, parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels};
pub use mnist::{MNIST_CLASSES, Split, load_idx_pair, load_mnist_dir, mnist_from_idx_bytes, split_train_test};
