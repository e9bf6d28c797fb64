//! perturb-cuda: the CUDA backend. Hand-written kernels in `kernels/*.cu` (repository root),
//! compiled at first use by NVRTC for the device's own architecture, cached per context, and
//! launched through typed wrappers that check buffer sizes. See the crate README for the
//! variants and the NVRTC test CI runs.
//!
//! Nothing here panics when CUDA is absent: [`probe`], [`CudaBackend::new`] and
//! [`nvrtc_available`] return why instead.

mod backend;
mod check;
pub mod device;
mod impl_backend;
pub mod kernels;
pub mod nvrtc;
mod ops_nn;
mod ops_vec;
mod pool;

pub use backend::{CudaBackend, CudaOptions};
pub use device::{CudaDeviceSummary, probe};
pub use nvrtc::nvrtc_available;
pub use pool::CudaStorage;

/// The backend for tests: device 0, or `None` after printing one line
/// `skipped: cuda unavailable: <reason>`. With `PERTURB_REQUIRE_CUDA=1` an unavailable
/// device panics instead, so a CI job that expects a GPU fails rather than skips.
pub fn test_backend() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) => {
            let reason = match &e {
                perturb_core::Error::Unavailable { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            if std::env::var("PERTURB_REQUIRE_CUDA").is_ok_and(|v| v == "1") {
                panic!("PERTURB_REQUIRE_CUDA=1 but cuda is unavailable: {reason}");
            }
            println!("skipped: cuda unavailable: {reason}");
            None
        }
    }
}

#[cfg(test)]
mod layout_tests;

#[cfg(test)]
mod tests {
    use perturb_core::Error;

    #[test]
    fn probe_and_new_return_errors_not_panics() {
        match crate::probe() {
            Ok(devices) => assert!(!devices.is_empty(), "Ok means at least one device"),
            Err(Error::Unavailable { backend, reason }) => {
                assert_eq!(backend, "cuda");
                assert!(!reason.is_empty());
                println!("skipped: cuda unavailable: {reason}");
            }
            Err(e) => panic!("probe must say Unavailable, got {e}"),
        }
        if let Err(e) = crate::CudaBackend::new(0) {
            assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        }
        if crate::probe().is_ok() {
            let e = crate::CudaBackend::new(10_000).expect_err("no device 10000");
            assert!(e.to_string().contains("10000"), "{e}");
        }
    }
}
