//! A thin NVRTC driver over cudarc's raw bindings. cudarc's `compile_ptx_with_opts` returns
//! PTX only and drops the log of a successful compile; we need the cubin (so the driver never
//! sees PTX newer than itself), the log of every compile (so CI can fail on warnings) and
//! in-memory headers (`params.cuh`, `common.cuh`), so this module calls NVRTC directly.

use crate::kernels::{HEADERS, KernelModule};
use cudarc::nvrtc::sys;
use std::ffi::{CStr, CString, c_char, c_int};

/// What NVRTC is asked to produce for an architecture `sm` (e.g. 90).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Machine code for exactly `sm_XX` (plus its PTX, which NVRTC also keeps).
    Cubin(u32),
    /// PTX for the virtual `compute_XX`, which a driver newer than this NVRTC can JIT.
    Ptx(u32),
}

impl Target {
    /// The `--gpu-architecture` value.
    pub fn arch_flag(self) -> String {
        match self {
            Target::Cubin(sm) => format!("sm_{sm}"),
            Target::Ptx(sm) => format!("compute_{sm}"),
        }
    }
}

/// A compiled module: its PTX text (always), its cubin (for [`Target::Cubin`]) and the
/// compiler's log (warnings; empty when clean).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub module: &'static str,
    pub target: Target,
    pub ptx: String,
    pub cubin: Option<Vec<u8>>,
    pub log: String,
}

impl Compiled {
    /// Whether the PTX defines a kernel entry named `name` (`.entry name(`).
    pub fn has_entry(&self, name: &str) -> bool {
        self.ptx.lines().any(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix(".visible ").unwrap_or(l);
            rest.strip_prefix(".entry ")
                .is_some_and(|r| r.trim_start().strip_prefix(name).is_some_and(|t| t.starts_with('(')))
        })
    }
}

/// The options every kernel is compiled with: an explicit architecture, C++17, line info for
/// profilers, IEEE division and square root, no flush-to-zero (fast math stays off),
/// multiply-add contraction only where the module allows it (`fmad`), and a ptxas warning on
/// any register spill (so the warning-free CI compile also guards against spills).
pub fn compile_options(target: Target, fmad: bool) -> Vec<String> {
    vec![
        format!("--gpu-architecture={}", target.arch_flag()),
        format!("--fmad={fmad}"),
        "--std=c++17".into(),
        "-lineinfo".into(),
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--ftz=false".into(),
        "--ptxas-options=--warn-on-spills".into(),
    ]
}

/// Ok when libnvrtc can be loaded and answers; Err with the reason (and the fix) otherwise.
pub fn nvrtc_available() -> Result<(), String> {
    nvrtc_version().map(|_| ())
}

/// NVRTC's version, e.g. (13, 0).
pub fn nvrtc_version() -> Result<(u32, u32), String> {
    // SAFETY: only tries to dlopen libnvrtc by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err("libnvrtc not found on the loader path (install it with `pip install nvidia-cuda-nvrtc` \
                    and add site-packages/nvidia/cu13/lib to LD_LIBRARY_PATH, or install the CUDA toolkit)"
            .into());
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the library is present (checked above); writes two ints.
    check(unsafe { sys::nvrtcVersion(&mut major, &mut minor) }, "nvrtcVersion")?;
    Ok((major.max(0) as u32, minor.max(0) as u32))
}

/// The real architectures (`sm_XX` numbers) this NVRTC can emit cubins for.
pub fn supported_archs() -> Result<Vec<u32>, String> {
    nvrtc_available()?;
    let mut n: c_int = 0;
    // SAFETY: libnvrtc is loaded; writes one int.
    check(unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }, "nvrtcGetNumSupportedArchs")?;
    let mut archs = vec![0 as c_int; n.max(0) as usize];
    // SAFETY: `archs` holds exactly the number of entries NVRTC reported.
    check(unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }, "nvrtcGetSupportedArchs")?;
    Ok(archs.into_iter().map(|a| a.max(0) as u32).collect())
}

/// Picks what to compile for a device of architecture `device_sm`: its own cubin when this
/// NVRTC knows the architecture; PTX for the newest architecture NVRTC knows when the device
/// is newer (the driver JIT-compiles it forward); an error when the device is older than any
/// architecture this NVRTC supports.
pub fn target_for(device_sm: u32, supported: &[u32]) -> Result<Target, String> {
    if supported.contains(&device_sm) {
        return Ok(Target::Cubin(device_sm));
    }
    match supported.iter().copied().filter(|&a| a <= device_sm).max() {
        Some(a) => Ok(Target::Ptx(a)),
        None => Err(format!(
            "this NVRTC supports sm_{:?} but the device is sm_{device_sm}; use an NVRTC that supports it",
            supported
        )),
    }
}

fn check(r: sys::nvrtcResult, what: &str) -> Result<(), String> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        return Ok(());
    }
    // SAFETY: nvrtcGetErrorString returns a static string for any result code.
    let s = unsafe { sys::nvrtcGetErrorString(r) };
    let text = if s.is_null() {
        format!("{r:?}")
    } else {
        // SAFETY: non-null, NUL-terminated static string owned by NVRTC.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    };
    Err(format!("{what}: {text}"))
}

/// Owns an `nvrtcProgram` and destroys it on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed exactly once, here. A failure to
        // destroy leaks host memory only, so its result is ignored.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

impl Program {
    fn log(&self) -> Result<String, String> {
        let mut size = 0usize;
        // SAFETY: valid program; writes one size.
        check(unsafe { sys::nvrtcGetProgramLogSize(self.0, &mut size) }, "nvrtcGetProgramLogSize")?;
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: `buf` holds `size` bytes as NVRTC asked.
        check(unsafe { sys::nvrtcGetProgramLog(self.0, buf.as_mut_ptr() as *mut c_char) }, "nvrtcGetProgramLog")?;
        Ok(nul_terminated(buf))
    }

    fn ptx(&self) -> Result<String, String> {
        let mut size = 0usize;
        // SAFETY: valid, compiled program; writes one size.
        check(unsafe { sys::nvrtcGetPTXSize(self.0, &mut size) }, "nvrtcGetPTXSize")?;
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: `buf` holds `size` bytes as NVRTC asked.
        check(unsafe { sys::nvrtcGetPTX(self.0, buf.as_mut_ptr() as *mut c_char) }, "nvrtcGetPTX")?;
        Ok(nul_terminated(buf))
    }

    fn cubin(&self) -> Result<Vec<u8>, String> {
        let mut size = 0usize;
        // SAFETY: valid, compiled program; writes one size.
        check(unsafe { sys::nvrtcGetCUBINSize(self.0, &mut size) }, "nvrtcGetCUBINSize")?;
        if size == 0 {
            return Err("NVRTC produced no cubin".into());
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` holds `size` bytes as NVRTC asked.
        check(unsafe { sys::nvrtcGetCUBIN(self.0, buf.as_mut_ptr() as *mut c_char) }, "nvrtcGetCUBIN")?;
        Ok(buf)
    }
}

fn nul_terminated(mut buf: Vec<u8>) -> String {
    if let Some(end) = buf.iter().position(|&b| b == 0) {
        buf.truncate(end);
    }
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

fn cstring(what: &str, s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

/// Compiles one kernel module (with the shared headers available to `#include`) for `target`.
/// On a compile error, the Err holds the module's file name, the architecture and NVRTC's log.
pub fn compile(module: &KernelModule, target: Target) -> Result<Compiled, String> {
    nvrtc_available()?;
    let fail = |msg: String| format!("NVRTC: kernels/{} for {}: {msg}", module.file, target.arch_flag());
    let src = cstring(module.file, module.source).map_err(fail)?;
    let name = cstring("module name", module.file).map_err(fail)?;
    let header_srcs = HEADERS.iter().map(|h| cstring(h.0, h.1)).collect::<Result<Vec<_>, _>>().map_err(fail)?;
    let header_names =
        HEADERS.iter().map(|h| cstring("header name", h.0)).collect::<Result<Vec<_>, _>>().map_err(fail)?;
    let header_ptrs: Vec<*const c_char> = header_srcs.iter().map(|c| c.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|c| c.as_ptr()).collect();

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer is a live NUL-terminated string owned by this frame, and the
    // header arrays hold exactly `HEADERS.len()` entries each.
    check(
        unsafe {
            sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                header_ptrs.len() as c_int,
                header_ptrs.as_ptr(),
                name_ptrs.as_ptr(),
            )
        },
        "nvrtcCreateProgram",
    )
    .map_err(fail)?;
    let prog = Program(prog);

    let opts = compile_options(target, module.fmad)
        .into_iter()
        .map(|o| cstring("option", &o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: valid program; `opt_ptrs` holds `opts.len()` live NUL-terminated strings.
    let r = unsafe { sys::nvrtcCompileProgram(prog.0, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
    let log = prog.log().map_err(fail)?;
    if let Err(e) = check(r, "nvrtcCompileProgram") {
        return Err(fail(format!("{e}\n{log}")));
    }
    let ptx = prog.ptx().map_err(fail)?;
    let cubin = match target {
        Target::Cubin(_) => Some(prog.cubin().map_err(fail)?),
        Target::Ptx(_) => None,
    };
    Ok(Compiled { module: module.file, target, ptx, cubin, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_cubin_for_known_arch_and_ptx_for_newer() {
        let s = [75, 80, 86, 89, 90, 100, 120];
        assert_eq!(target_for(90, &s), Ok(Target::Cubin(90)));
        assert_eq!(target_for(121, &s), Ok(Target::Ptx(120)));
        assert_eq!(target_for(87, &s), Ok(Target::Ptx(86)));
        assert!(target_for(70, &s).is_err());
    }

    #[test]
    fn finds_entries_in_ptx() {
        let c = Compiled {
            module: "x.cu",
            target: Target::Ptx(80),
            ptx: ".visible .entry linear_fwd_v1(\n\t.param .u64 a\n)\n.visible .entry linear_fwd_v12(\n".into(),
            cubin: None,
            log: String::new(),
        };
        assert!(c.has_entry("linear_fwd_v1"));
        assert!(c.has_entry("linear_fwd_v12"));
        assert!(!c.has_entry("linear_fwd_v2"));
        assert!(!c.has_entry("linear_fwd"));
    }
}
