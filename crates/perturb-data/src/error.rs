//! The crate's one error type. Every variant names the file (or, for in-memory checks, the data
//! set) it is about, and says what was expected and what was found, so a user pointing the CLI at
//! the wrong folder or a damaged download can tell what to fix without a debugger.

use std::path::PathBuf;

/// Everything that can go wrong while reading, checking or batching data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a read (permissions, a folder where a file was expected, ...).
    #[error("reading {file}: {source}")]
    Io {
        /// The file being read.
        file: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A gzip stream could not be decompressed (bad deflate data, CRC mismatch, garbage after it).
    #[error("{kind} file {file}: gzip data is corrupt: {source}")]
    Decompress {
        /// "images" or "labels".
        kind: &'static str,
        /// The file being read.
        file: String,
        /// What the decompressor reported.
        #[source]
        source: std::io::Error,
    },

    /// The data folder does not exist.
    #[error("data folder {} does not exist or is not a folder", dir.display())]
    MissingDir {
        /// The folder asked for.
        dir: PathBuf,
    },

    /// The folder exists but holds none of the file names a reader accepts.
    #[error("no {what} file in {}; looked for: {}", dir.display(), looked_for.join(", "))]
    MissingFiles {
        /// The folder searched.
        dir: PathBuf,
        /// What was missing, e.g. "MNIST train images".
        what: String,
        /// Every file name tried, in the order tried.
        looked_for: Vec<String>,
    },

    /// The file is shorter than its fixed-size header.
    #[error("{kind} file {file}: truncated header: need {expected} bytes, found {found}")]
    TruncatedHeader {
        /// "images" or "labels".
        kind: &'static str,
        /// The file being read.
        file: String,
        /// Header size in bytes.
        expected: usize,
        /// Bytes present.
        found: usize,
    },

    /// The IDX magic number is not the one for this kind of file.
    #[error(
        "{kind} file {file}: bad magic 0x{found:08x}, expected 0x{expected:08x}{}",
        magic_hint(*found)
    )]
    BadMagic {
        /// "images" or "labels".
        kind: &'static str,
        /// The file being read.
        file: String,
        /// The magic this reader wants.
        expected: u32,
        /// The first four bytes of the file, big-endian.
        found: u32,
    },

    /// A header dimension is zero, which no real data set has.
    #[error("{kind} file {file}: header says {header}; a zero dimension is not a usable data set")]
    ZeroDimension {
        /// "images" or "labels".
        kind: &'static str,
        /// The file being read.
        file: String,
        /// The header as read, e.g. "0 images of 28x28".
        header: String,
    },

    /// The header implies more data than this reader will hold in memory.
    #[error(
        "{kind} file {file}: header says {header} ({expected} bytes), over the {limit}-byte limit; \
         the header is corrupt or the file is not this format"
    )]
    TooLarge {
        /// "images" or "labels".
        kind: &'static str,
        /// The file being read.
        file: String,
        /// The header as read.
        header: String,
        /// Payload bytes the header implies (u128: three u32 dimensions can pass u64).
        expected: u128,
        /// The refusal limit in bytes.
        limit: u64,
    },

    /// Fewer payload bytes follow the header than it promises.
    #[error("{kind} file {file}: header says {header} ({expected} bytes) but only {found} bytes follow")]
    PayloadTooShort {
        /// "images" or "labels".
        kind: &'static str,
        /// The file being read.
        file: String,
        /// The header as read.
        header: String,
        /// Payload bytes the header implies (u128: three u32 dimensions can pass u64).
        expected: u128,
        /// Payload bytes present.
        found: u64,
    },

    /// Bytes follow the payload: the file is corrupt or the header understates its size.
    #[error(
        "{kind} file {file}: header says {header} ({expected} bytes) but {} follow the payload; \
         the file is corrupt or not this format",
        describe_extra(*extra)
    )]
    TrailingBytes {
        /// "images" or "labels".
        kind: &'static str,
        /// The file being read.
        file: String,
        /// The header as read.
        header: String,
        /// Payload bytes the header implies.
        expected: u64,
        /// Extra bytes counted; `None` when only "at least one" is known (gzip, read with a cap).
        extra: Option<u64>,
    },

    /// The images and labels files disagree on how many examples there are.
    #[error("image/label count mismatch: {images_file} holds {images} images but {labels_file} holds {labels} labels")]
    CountMismatch {
        /// The images file.
        images_file: String,
        /// Images in it.
        images: usize,
        /// The labels file.
        labels_file: String,
        /// Labels in it.
        labels: usize,
    },

    /// A label is not below the number of classes.
    #[error("{file}: label {label} at {unit} {index} is out of range (expected 0..{num_classes})")]
    LabelOutOfRange {
        /// The file (or data set name) holding the label.
        file: String,
        /// "index" for IDX files and data sets, "record" for CIFAR batches.
        unit: &'static str,
        /// Which example.
        index: usize,
        /// The label found.
        label: u8,
        /// Classes allowed.
        num_classes: usize,
    },

    /// A CIFAR-10 batch file is not a whole number of 3073-byte records.
    #[error(
        "CIFAR-10 batch {file}: size {size} bytes is not a positive multiple of the {record}-byte record \
         (1 label byte + 3072 pixel bytes): {} whole records and {} bytes left over",
        size / record, size % record
    )]
    CifarSize {
        /// The batch file.
        file: String,
        /// Its size in bytes.
        size: usize,
        /// Record size (3073).
        record: usize,
    },

    /// `slice` was asked for a range outside the data set.
    #[error("data set {dataset}: range {start}..{end} is out of bounds for {len} examples")]
    RangeOutOfBounds {
        /// Data set name.
        dataset: String,
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Examples in the data set.
        len: usize,
    },

    /// `gather` was given an example index past the end.
    #[error("data set {dataset}: batch position {position} asks for example {index} but there are {len}")]
    IndexOutOfBounds {
        /// Data set name.
        dataset: String,
        /// Position within the requested batch.
        position: usize,
        /// The example index asked for.
        index: usize,
        /// Examples in the data set.
        len: usize,
    },

    /// A pixel is NaN or infinite.
    #[error("data set {dataset}: example {index} has a non-finite pixel {value} at offset {offset}")]
    NonFinitePixel {
        /// Data set name.
        dataset: String,
        /// The example index.
        index: usize,
        /// Offset within the example's c*h*w pixels.
        offset: usize,
        /// The value found.
        value: f32,
    },

    /// `filter_classes` was given a class the data set does not have.
    #[error("data set {dataset}: class {class} is out of range (the data set has {num_classes} classes)")]
    ClassOutOfRange {
        /// Data set name.
        dataset: String,
        /// The class asked for.
        class: u8,
        /// Classes in the data set.
        num_classes: usize,
    },

    /// `filter_classes` was given the same class twice, or no classes at all.
    #[error("data set {dataset}: bad class list {classes:?}: {why}")]
    BadClassList {
        /// Data set name.
        dataset: String,
        /// The list given.
        classes: Vec<u8>,
        /// What is wrong with it.
        why: String,
    },

    /// The fields of a `Dataset` disagree with one another.
    #[error("data set {dataset}: {detail}")]
    Inconsistent {
        /// Data set name.
        dataset: String,
        /// What disagrees, with both sizes.
        detail: String,
    },

    /// A batching parameter is unusable.
    #[error("batching: {0}")]
    Batching(String),
}

/// Shorthand used by every fallible function in the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// When a file carries the other IDX kind's magic, say so: the usual cause is swapped paths.
fn magic_hint(found: u32) -> &'static str {
    match found {
        crate::idx::IMAGES_MAGIC => " (this is an IDX images file)",
        crate::idx::LABELS_MAGIC => " (this is an IDX labels file)",
        0x1f8b_0000..=0x1f8b_ffff => " (gzip inside gzip: the file was compressed twice)",
        _ => "",
    }
}

fn describe_extra(extra: Option<u64>) -> String {
    match extra {
        Some(n) => format!("{n} more bytes"),
        None => "more bytes".to_string(),
    }
}
