//! The one error type of perturb-autograd.

/// What recording an op or running backward can refuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend op failed (shape mismatch, device error, ...).
    #[error(transparent)]
    Core(#[from] perturb_core::Error),
    /// A [`crate::Var`] from another graph (or stale) was passed to this graph.
    #[error("{op}: variable #{index} belongs to graph {var_graph}, not to this graph {graph}")]
    ForeignVar {
        /// The op that was given the var.
        op: &'static str,
        /// The var's tape index.
        index: usize,
        /// The graph the var belongs to.
        var_graph: u64,
        /// The graph it was passed to.
        graph: u64,
    },
    /// `backward` without a seed needs a one-element loss.
    #[error("backward: loss has shape {shape} ({numel} elements); pass a seed gradient for a non-scalar output")]
    NotScalar {
        /// The loss's shape.
        shape: perturb_core::Shape,
        /// Its element count.
        numel: usize,
    },
    /// An op was given arguments that do not fit together (shapes, dtypes, ranks).
    #[error("{op}: {msg}")]
    Invalid {
        /// The op.
        op: &'static str,
        /// What is wrong, with the shapes.
        msg: String,
    },
    /// A gradient was asked for a variable that received none.
    #[error("no gradient for variable #{index}: {why}")]
    MissingGrad {
        /// The var's tape index.
        index: usize,
        /// Why no gradient reached it.
        why: &'static str,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid { op, msg: msg.into() }
    }
}
