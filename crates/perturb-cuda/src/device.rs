//! Probing the driver before touching it: `libcuda` may be absent (no NVIDIA driver), present
//! with no device, or present and working. cudarc panics when it cannot load the library, so
//! every entry point here checks `is_culib_present` first and turns each failure into
//! [`Error::Unavailable`] with a reason a person can act on.

use cudarc::driver::{DriverError, result, sys};
use perturb_core::{Error, Result};

/// One CUDA device as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDeviceSummary {
    /// Device ordinal (the `N` of `CudaBackend::new(N)`).
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compute capability (major, minor), e.g. (9, 0).
    pub compute_capability: (u32, u32),
    /// Global memory in bytes.
    pub total_memory: u64,
    /// Streaming multiprocessors.
    pub multiprocessors: u32,
    /// Driver's CUDA version (major, minor), e.g. (13, 0).
    pub driver_version: (u32, u32),
}

impl CudaDeviceSummary {
    /// The `sm_XX` number, e.g. 90 for compute capability 9.0.
    pub fn sm(&self) -> u32 {
        self.compute_capability.0 * 10 + self.compute_capability.1
    }
}

impl std::fmt::Display for CudaDeviceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cuda:{} {} (sm_{}, {} SMs, {:.1} GiB, driver CUDA {}.{})",
            self.ordinal,
            self.name,
            self.sm(),
            self.multiprocessors,
            self.total_memory as f64 / (1u64 << 30) as f64,
            self.driver_version.0,
            self.driver_version.1
        )
    }
}

pub(crate) fn unavailable(reason: impl Into<String>) -> Error {
    Error::Unavailable { backend: "cuda", reason: reason.into() }
}

/// Whether libcuda can be loaded (checked once per process). cudarc's `DriverError` methods
/// (`error_name`, `error_string`, even its `Debug`) call into libcuda and panic when it is
/// absent, so nothing here calls them without this.
pub(crate) fn driver_loaded() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: only tries to dlopen the driver library by its usual names.
    *LOADED.get_or_init(|| unsafe { sys::is_culib_present() })
}

/// Errors after which the context is unusable: the driver reports the same error for every
/// later call on it (the "sticky" errors of the CUDA documentation), or the device is gone.
pub fn is_context_lost(e: &DriverError) -> bool {
    use sys::CUresult::*;
    matches!(
        e.0,
        CUDA_ERROR_ILLEGAL_ADDRESS
            | CUDA_ERROR_LAUNCH_FAILED
            | CUDA_ERROR_LAUNCH_TIMEOUT
            | CUDA_ERROR_HARDWARE_STACK_ERROR
            | CUDA_ERROR_ILLEGAL_INSTRUCTION
            | CUDA_ERROR_MISALIGNED_ADDRESS
            | CUDA_ERROR_INVALID_ADDRESS_SPACE
            | CUDA_ERROR_INVALID_PC
            | CUDA_ERROR_ASSERT
            | CUDA_ERROR_TENSOR_MEMORY_LEAK
            | CUDA_ERROR_ECC_UNCORRECTABLE
            | CUDA_ERROR_NVLINK_UNCORRECTABLE
            | CUDA_ERROR_CONTAINED
            | CUDA_ERROR_EXTERNAL_DEVICE
            | CUDA_ERROR_DEVICE_UNAVAILABLE
            | CUDA_ERROR_CONTEXT_IS_DESTROYED
            | CUDA_ERROR_DEINITIALIZED
    )
}

/// A driver error in words: its name (`CUDA_ERROR_OUT_OF_MEMORY`, from the enum, so it needs
/// no driver) and, when libcuda is loaded, the driver's description.
pub(crate) fn driver_msg(e: &DriverError) -> String {
    let name = format!("{:?}", e.0);
    if !driver_loaded() {
        return name;
    }
    match e.error_string() {
        Ok(s) => format!("{name}: {}", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// Maps a driver error to [`Error::Device`], saying so when the context is lost (every later
/// call on this backend will fail the same way: only a new process recovers).
pub fn driver_err(what: &str, e: DriverError) -> Error {
    let lost = if is_context_lost(&e) {
        "; the CUDA context is lost (a sticky error): every later call on this backend fails, \
         restart the process"
    } else {
        ""
    };
    Error::Device { backend: "cuda", msg: format!("{what}: {}{lost}", driver_msg(&e)) }
}

/// Maps the driver's answer to an allocation of `bytes` bytes: `CUDA_ERROR_OUT_OF_MEMORY` is
/// [`Error::OutOfMemory`] with the size asked for, anything else [`Error::Device`] naming it.
pub fn alloc_err(bytes: usize, e: DriverError) -> Error {
    if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        Error::OutOfMemory { backend: "cuda", bytes: bytes as u64 }
    } else {
        driver_err(&format!("allocating {bytes} bytes"), e)
    }
}

/// Checks that libcuda can be loaded and initialised; never panics.
pub(crate) fn init_driver() -> Result<()> {
    if !driver_loaded() {
        return Err(unavailable(
            "libcuda (the NVIDIA driver library) was not found: no NVIDIA driver is installed here, \
             or libcuda.so is not on the loader path",
        ));
    }
    result::init().map_err(|e| {
        if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE {
            unavailable("the NVIDIA driver is installed but reports no CUDA device")
        } else {
            unavailable(format!("cuInit failed: {}", driver_msg(&e)))
        }
    })
}

/// The driver's CUDA version, e.g. (13, 0). Call after [`init_driver`].
pub(crate) fn driver_version() -> Result<(u32, u32)> {
    let mut v: std::ffi::c_int = 0;
    // SAFETY: the driver is loaded and initialised (init_driver); writes one int.
    unsafe { sys::cuDriverGetVersion(&mut v) }.result().map_err(|e| driver_err("cuDriverGetVersion", e))?;
    let v = v.max(0) as u32;
    Ok((v / 1000, (v % 1000) / 10))
}

fn attr(dev: sys::CUdevice, a: sys::CUdevice_attribute) -> Result<u32> {
    // SAFETY: `dev` came from cuDeviceGet on an initialised driver.
    let v = unsafe { result::device::get_attribute(dev, a) }.map_err(|e| driver_err("cuDeviceGetAttribute", e))?;
    Ok(v.max(0) as u32)
}

/// Describes device `ordinal`. Call after [`init_driver`].
pub(crate) fn summary(ordinal: usize, driver: (u32, u32)) -> Result<CudaDeviceSummary> {
    use sys::CUdevice_attribute::*;
    let idx = i32::try_from(ordinal).map_err(|_| unavailable(format!("device ordinal {ordinal} out of range")))?;
    let dev = result::device::get(idx).map_err(|e| driver_err(&format!("cuDeviceGet({ordinal})"), e))?;
    let name = result::device::get_name(dev).map_err(|e| driver_err("cuDeviceGetName", e))?;
    // SAFETY: `dev` came from cuDeviceGet on an initialised driver.
    let total = unsafe { result::device::total_mem(dev) }.map_err(|e| driver_err("cuDeviceTotalMem", e))?;
    Ok(CudaDeviceSummary {
        ordinal,
        name,
        compute_capability: (
            attr(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        ),
        total_memory: total as u64,
        multiprocessors: attr(dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        driver_version: driver,
    })
}

/// Number of CUDA devices; an error when there is none. Call after [`init_driver`].
pub(crate) fn device_count() -> Result<usize> {
    let n =
        result::device::get_count().map_err(|e| unavailable(format!("cuDeviceGetCount failed: {}", driver_msg(&e))))?;
    if n <= 0 {
        return Err(unavailable("the NVIDIA driver is installed but reports no CUDA device"));
    }
    Ok(n as usize)
}

/// Runs `f`, turning a panic inside cudarc (a symbol missing from an old driver, say) into
/// [`Error::Unavailable`] rather than unwinding into the caller.
pub(crate) fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(unavailable(format!("{what}: {msg}")))
        }
    }
}

/// Lists every CUDA device with its name, compute capability, memory and the driver version.
///
/// Returns [`Error::Unavailable`] (never panics) when libcuda is absent, the driver fails to
/// initialise, or it reports no device.
pub fn probe() -> Result<Vec<CudaDeviceSummary>> {
    no_panic("probing the CUDA driver", || {
        init_driver()?;
        let driver = driver_version()?;
        let n = device_count()?;
        (0..n).map(|i| summary(i, driver)).collect()
    })
}

#[cfg(test)]
mod tests {
    //! The error mapping on the driver's real error values. None of this needs libcuda: the
    //! mapping must work (and not panic) on a machine without it, where cudarc's own
    //! `DriverError` methods would.
    use super::*;
    use sys::CUresult::*;

    #[test]
    fn an_allocation_the_device_refuses_is_out_of_memory_with_the_size_asked_for() {
        let bytes = (1usize << 40) + 12_345;
        match alloc_err(bytes, DriverError(CUDA_ERROR_OUT_OF_MEMORY)) {
            Error::OutOfMemory { backend, bytes: b } => {
                assert_eq!(backend, "cuda");
                assert_eq!(b, bytes as u64);
            }
            other => panic!("expected OutOfMemory, got {other}"),
        }
        let text = alloc_err(bytes, DriverError(CUDA_ERROR_OUT_OF_MEMORY)).to_string();
        assert!(text.contains("out of memory") && text.contains(&bytes.to_string()), "{text}");
    }

    #[test]
    fn other_allocation_failures_are_device_errors_naming_the_size_and_the_error() {
        for (code, lost) in [(CUDA_ERROR_INVALID_VALUE, false), (CUDA_ERROR_ILLEGAL_ADDRESS, true)] {
            match alloc_err(4096, DriverError(code)) {
                Error::Device { backend, msg } => {
                    assert_eq!(backend, "cuda");
                    assert!(msg.contains("allocating 4096 bytes"), "{msg}");
                    assert!(msg.contains(&format!("{code:?}")), "{msg}");
                    assert_eq!(msg.contains("context is lost"), lost, "{msg}");
                }
                other => panic!("{code:?}: expected Device, got {other}"),
            }
        }
    }

    #[test]
    fn a_failed_launch_or_a_lost_device_is_a_device_error_that_says_so() {
        for code in [
            CUDA_ERROR_LAUNCH_FAILED,
            CUDA_ERROR_ILLEGAL_ADDRESS,
            CUDA_ERROR_ECC_UNCORRECTABLE,
            CUDA_ERROR_DEVICE_UNAVAILABLE,
            CUDA_ERROR_CONTEXT_IS_DESTROYED,
            CUDA_ERROR_LAUNCH_TIMEOUT,
        ] {
            let e = DriverError(code);
            assert!(is_context_lost(&e), "{code:?}");
            match driver_err("launching linear_fwd_v2", e) {
                Error::Device { backend: "cuda", msg } => {
                    assert!(msg.starts_with("launching linear_fwd_v2: "), "{msg}");
                    assert!(msg.contains(&format!("{code:?}")), "{msg}");
                    assert!(msg.contains("context is lost") && msg.contains("restart"), "{msg}");
                }
                other => panic!("{code:?}: expected Device, got {other}"),
            }
        }
        // Errors the context survives are reported without the restart advice.
        for code in [CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_OUT_OF_MEMORY] {
            assert!(!is_context_lost(&DriverError(code)), "{code:?}");
            let msg = driver_err("synchronizing the stream", DriverError(code)).to_string();
            assert!(msg.contains(&format!("{code:?}")) && !msg.contains("context is lost"), "{msg}");
        }
    }

    #[test]
    fn without_a_driver_the_message_is_the_error_name() {
        if driver_loaded() {
            // With libcuda the driver's description follows the name.
            let msg = driver_msg(&DriverError(CUDA_ERROR_OUT_OF_MEMORY));
            assert!(msg.starts_with("CUDA_ERROR_OUT_OF_MEMORY: "), "{msg}");
        } else {
            assert_eq!(driver_msg(&DriverError(CUDA_ERROR_LAUNCH_FAILED)), "CUDA_ERROR_LAUNCH_FAILED");
            // The backend refuses to open, with the reason, rather than panicking.
            for det in [false, true] {
                match crate::CudaBackend::with_options(0, crate::CudaOptions { deterministic: det }) {
                    Err(Error::Unavailable { backend: "cuda", reason }) => {
                        assert!(reason.contains("libcuda"), "{reason}")
                    }
                    Err(e) => panic!("expected Unavailable, got {e}"),
                    Ok(_) => panic!("a backend opened without libcuda"),
                }
            }
        }
    }
}
