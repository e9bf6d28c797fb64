//! The one error type of perturb-nn.

use std::path::PathBuf;

/// Everything building, running, optimising, saving or loading a model can refuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend op failed.
    #[error(transparent)]
    Core(#[from] perturb_core::Error),
    /// Recording on the tape or running backward failed.
    #[error(transparent)]
    Autograd(#[from] perturb_autograd::Error),
    /// A file system error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The safetensors container is malformed (truncated, bad header, bad offsets).
    #[error("invalid safetensors data: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// JSON in the metadata (architecture, input shape) does not parse.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A model name `build_model` does not know.
    #[error("unknown model '{name}'; known models: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// Layers that do not fit together or a layer with an invalid size.
    #[error("architecture: {0}")]
    Architecture(String),
    /// A file's content does not match what the model expects (missing or extra tensor,
    /// wrong shape or dtype, missing metadata).
    #[error("{0}")]
    Format(String),
    /// An optimiser or schedule setting out of range, or a state / gradient list that does
    /// not match the parameters.
    #[error("optimiser: {0}")]
    Optim(String),
    /// An error while reading or writing `path`.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Attaches the file the error happened in.
    pub(crate) fn in_file(self, path: &std::path::Path) -> Self {
        Error::File { path: path.to_path_buf(), source: Box::new(self) }
    }
}
