//! The one error type of perturb-core; the crates above convert it upward.

use crate::{DType, Shape};

/// Everything a backend or an op can refuse. Messages name the op, the shapes or the limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op was given tensors whose shapes do not fit together.
    #[error("{op}: shape mismatch: {msg}")]
    Shape { op: &'static str, msg: String },
    /// An op was given a tensor of a dtype it does not take.
    #[error("{op}: expected dtype {expected}, got {got} (shape {shape})")]
    DType { op: &'static str, expected: DType, got: DType, shape: Shape },
    /// A parameter out of its domain (negative eps, zero stride, ...).
    #[error("{op}: invalid argument: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    /// The backend cannot run here (no driver, no adapter, library missing).
    #[error("backend {backend} unavailable: {reason}")]
    Unavailable { backend: &'static str, reason: String },
    /// The backend exists but does not (yet) implement this op or dtype.
    #[error("backend {backend}: {what} is not supported")]
    Unsupported { backend: &'static str, what: String },
    /// An allocation the device refused, with the size asked for.
    #[error("backend {backend}: out of memory allocating {bytes} bytes")]
    OutOfMemory { backend: &'static str, bytes: u64 },
    /// A failure reported by a device, driver or compiler.
    #[error("backend {backend}: {msg}")]
    Device { backend: &'static str, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Shape`].
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
}
