//! The one error type of perturb-core; the crates above convert it upward.

use crate::{DType, Shape};

/// Everything a backend or an op can refuse. Messages name the op, the shapes or the limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op was given tensors whose shapes do not fit together.
    #[error("{op}: shape mismatch: {msg}")]
    Shape {
        /// The op (or function) that refused.
        op: &'static str,
        /// What did not fit, with the shapes.
        msg: String,
    },
    /// An op was given a tensor of a dtype it does not take.
    #[error("{op}: expected dtype {expected}, got {got} (shape {shape})")]
    DType {
        /// The op that refused.
        op: &'static str,
        /// The dtype the op takes.
        expected: DType,
        /// The dtype it was given.
        got: DType,
        /// The shape of the offending tensor.
        shape: Shape,
    },
    /// A parameter out of its domain (negative eps, zero stride, ...).
    #[error("{op}: invalid argument: {msg}")]
    InvalidArgument {
        /// The op (or constructor) that refused.
        op: &'static str,
        /// Which parameter and why.
        msg: String,
    },
    /// The backend cannot run here (no driver, no adapter, library missing).
    #[error("backend {backend} unavailable: {reason}")]
    Unavailable {
        /// The backend's short name (`"cuda"`, `"wgpu"`, ...).
        backend: &'static str,
        /// Why it cannot run (the missing library, no adapter, ...).
        reason: String,
    },
    /// The backend exists but does not (yet) implement this op or dtype.
    #[error("backend {backend}: {what} is not supported")]
    Unsupported {
        /// The backend's short name.
        backend: &'static str,
        /// The op or dtype it lacks.
        what: String,
    },
    /// An allocation the device refused, with the size asked for.
    #[error("backend {backend}: out of memory allocating {bytes} bytes")]
    OutOfMemory {
        /// The backend's short name.
        backend: &'static str,
        /// The size of the refused allocation, in bytes.
        bytes: u64,
    },
    /// A failure reported by a device, driver or compiler.
    #[error("backend {backend}: {msg}")]
    Device {
        /// The backend's short name.
        backend: &'static str,
        /// The device's, driver's or compiler's message (an NVRTC log, a wgpu validation error).
        msg: String,
    },
}

/// `std::result::Result` with perturb-core's [`Error`].
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
