//! The one error type of perturb-adv.

use std::path::PathBuf;

/// Everything an attack, an evaluation or the diagnosis can refuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend op failed.
    #[error(transparent)]
    Core(#[from] perturb_core::Error),
    /// Recording on the tape or running backward failed.
    #[error(transparent)]
    Autograd(#[from] perturb_autograd::Error),
    /// A model could not run, be built or be trained.
    #[error(transparent)]
    Nn(#[from] perturb_nn::Error),
    /// Data could not be batched.
    #[error(transparent)]
    Data(#[from] perturb_data::Error),
    /// An attack setting out of its domain; `param` names the setting (`eps`, `steps`, ...), so
    /// the command line can name its flag.
    #[error("{param}: {msg}")]
    InvalidArgument {
        /// The setting (`eps`, `steps`, `step_size`, `restarts`, `alpha`, `queries`, `p_init`, ...).
        param: &'static str,
        /// What is wrong, with the value.
        msg: String,
    },
    /// Two models (target and surrogate) or a model and the data do not fit together.
    #[error("{0}")]
    Mismatch(String),
    /// A file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A plot could not be drawn or encoded.
    #[error("plot {}: {msg}", path.display())]
    Plot {
        /// The PNG being written.
        path: PathBuf,
        /// What plotters reported.
        msg: String,
    },
    /// JSON could not be written.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(param: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { param, msg: msg.into() }
    }
}
