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

/// A driver error in words: its name and the driver's description.
pub(crate) fn driver_msg(e: &DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name}: {}", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// Maps a driver error to [`Error::Device`] (or [`Error::OutOfMemory`] for an allocation of
/// `bytes` the device refused).
pub(crate) fn driver_err(what: &str, e: DriverError) -> Error {
    Error::Device { backend: "cuda", msg: format!("{what}: {}", driver_msg(&e)) }
}

pub(crate) fn alloc_err(bytes: usize, e: DriverError) -> Error {
    if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        Error::OutOfMemory { backend: "cuda", bytes: bytes as u64 }
    } else {
        driver_err(&format!("allocating {bytes} bytes"), e)
    }
}

/// Checks that libcuda can be loaded and initialised; never panics.
pub(crate) fn init_driver() -> Result<()> {
    // SAFETY: only tries to dlopen the driver library by name; loads nothing else.
    if !unsafe { sys::is_culib_present() } {
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
