//! Status codes, the thread-local last error, and the boundary every entry point goes through.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a call returned. `PERTURB_STATUS_OK` is 0; every other value is an error whose message
/// `perturb_last_error()` returns on the same thread.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerturbStatus {
    /// Success.
    Ok = 0,
    /// A pointer argument was NULL (the message names it).
    NullPointer = 1,
    /// A value out of its domain: an unknown name, eps < 0, a label >= classes, a string that
    /// is not UTF-8, a misaligned buffer.
    InvalidArgument = 2,
    /// A buffer whose length does not fit the shape (the message gives both lengths).
    Length = 3,
    /// The backend asked for is not available here (the message says why).
    Unavailable = 4,
    /// A model file that does not load, or a model that could not be written.
    Model = 5,
    /// A backend operation failed: device error, out of memory.
    Backend = 6,
    /// A handle that was destroyed, never created, or of another kind.
    InvalidHandle = 7,
    /// Training produced a non-finite loss or weight (the weights are then unusable: load the
    /// model again).
    Diverged = 8,
    /// An internal error (a caught panic); the message has the details. Please report it.
    Internal = 9,
}

pub(crate) use PerturbStatus as Status;

/// An error on its way to the caller: a status and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The status code returned.
    pub status: Status,
    /// The message `perturb_last_error()` returns.
    pub msg: String,
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with `status` and `msg`.
    pub fn new(status: Status, msg: impl Into<String>) -> Self {
        Error { status, msg: msg.into() }
    }
    /// A NULL pointer argument.
    pub fn null(what: &str) -> Self {
        Error::new(Status::NullPointer, format!("{what} is NULL"))
    }
    /// A value out of its domain.
    pub fn invalid(what: &str, msg: impl std::fmt::Display) -> Self {
        Error::new(Status::InvalidArgument, format!("{what}: {msg}"))
    }
}

fn core_status(e: &perturb_core::Error) -> Status {
    use perturb_core::Error as E;
    match e {
        E::Shape { .. } | E::DType { .. } | E::InvalidArgument { .. } => Status::InvalidArgument,
        E::Unavailable { .. } => Status::Unavailable,
        _ => Status::Backend,
    }
}

impl From<perturb_core::Error> for Error {
    fn from(e: perturb_core::Error) -> Self {
        Error::new(core_status(&e), e.to_string())
    }
}

impl From<perturb_adv::Error> for Error {
    fn from(e: perturb_adv::Error) -> Self {
        use perturb_adv::Error as E;
        let status = match &e {
            E::Core(c) => core_status(c),
            E::InvalidArgument { .. } | E::Mismatch(_) | E::Data(_) => Status::InvalidArgument,
            E::Nn(perturb_nn::Error::Core(c)) => core_status(c),
            E::Io { .. } => Status::Model,
            _ => Status::Backend,
        };
        Error::new(status, e.to_string())
    }
}

impl From<perturb_nn::Error> for Error {
    fn from(e: perturb_nn::Error) -> Self {
        let status = match &e {
            perturb_nn::Error::Core(c) => core_status(c),
            _ => Status::InvalidArgument,
        };
        Error::new(status, e.to_string())
    }
}

impl From<perturb_data::Error> for Error {
    fn from(e: perturb_data::Error) -> Self {
        Error::new(Status::InvalidArgument, e.to_string())
    }
}

impl From<perturb_cli::Error> for Error {
    fn from(e: perturb_cli::Error) -> Self {
        let status = match &e {
            perturb_cli::Error::Core(c) => core_status(c),
            _ => Status::InvalidArgument,
        };
        Error::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(msg: &str) {
    // An interior NUL would cut the C string short; show it instead.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

/// The last error's message on this thread, or NULL when no call on it has failed.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs one entry point: its error becomes a status and the thread's last error, a panic
/// becomes `PERTURB_STATUS_INTERNAL` (never an unwind across the boundary).
pub(crate) fn boundary(name: &str, f: impl FnOnce() -> Result<()>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(e)) => {
            set_last_error(&format!("{name}: {}", e.msg));
            e.status
        }
        Err(payload) => {
            set_last_error(&format!("{name}: internal error (panic): {}", panic_message(&*payload)));
            Status::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        let p = last_error_ptr();
        assert!(!p.is_null());
        // SAFETY: perturb's own NUL-terminated string, valid until the next failure here.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let s = boundary("perturb_test", || panic!("planted {}", 42));
        assert_eq!(s, Status::Internal);
        assert_eq!(last(), "perturb_test: internal error (panic): planted 42");
    }

    #[test]
    fn an_error_sets_the_threads_last_error_and_success_leaves_it() {
        assert_eq!(boundary("f", || Err(Error::new(Status::Length, "x: too short"))), Status::Length);
        assert_eq!(last(), "f: x: too short");
        assert_eq!(boundary("g", || Ok(())), Status::Ok);
        assert_eq!(last(), "f: x: too short");
        // Another thread has its own.
        std::thread::spawn(|| assert!(last_error_ptr().is_null())).join().unwrap();
    }
}
