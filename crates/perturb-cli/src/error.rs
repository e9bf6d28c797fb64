//! The command line's one error type: every lower crate's error, plus flag errors that name
//! the flag. `main` prints it and exits non-zero; nothing on a user's path panics.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] perturb_core::Error),
    #[error(transparent)]
    Data(#[from] perturb_data::Error),
    #[error(transparent)]
    Nn(#[from] perturb_nn::Error),
    #[error(transparent)]
    Adv(#[from] perturb_adv::Error),
    /// A flag whose value is out of its domain; names the flag.
    #[error("{flag}: {msg}")]
    Flag { flag: &'static str, msg: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Training produced a non-finite loss.
    #[error("{0}")]
    Diverged(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn flag(flag: &'static str, msg: impl Into<String>) -> Self {
        Error::Flag { flag, msg: msg.into() }
    }
}
