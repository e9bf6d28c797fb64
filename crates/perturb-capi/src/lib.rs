//! perturb's C ABI: the engine for programs in other languages (the header is
//! `include/perturb.h`, generated from this crate by cbindgen; `python/perturb` wraps it with
//! ctypes).
//!
//! Conventions, the same for every function:
//! - Every function but [`perturb_version`] and [`perturb_last_error`] returns a
//!   [`PerturbStatus`]; on an error, [`perturb_last_error`] gives a sentence saying what was
//!   wrong (on the calling thread, until its next failing call).
//! - Handles ([`PerturbBackend`], [`PerturbModel`], [`PerturbTrainer`]) are opaque, made through
//!   an out-pointer (set to NULL when the call fails) and freed by the matching `*_destroy`,
//!   which takes the caller's pointer by address and sets it to NULL. A destroyed or made-up
//!   handle is `PERTURB_STATUS_INVALID_HANDLE`, never a crash; destroying NULL is a no-op.
//! - Every pointer is checked for NULL and alignment; every buffer comes with its length in
//!   elements, checked against the shape (the error names the expected and the given length).
//! - Images are f32, N x C x H x W row-major, in [0, 1]; labels are `uint32_t`, one per image.
//! - A panic inside perturb is caught at the boundary and returned as
//!   `PERTURB_STATUS_INTERNAL`; nothing unwinds into the caller.
//! - Threads: every handle may be used from any thread. Calls on one model, and on the
//!   trainers made from it, run one at a time (a lock per model); calls on different models run
//!   in parallel. A model keeps its backend alive until the model is destroyed.
//!
//! Results are the library's, with the defaults of the `perturb` command: an attack run here on
//! the embedded test digits with [`perturb_attack_options_default`] gives, on the CPU backend,
//! bit for bit the robust accuracy `perturb eval --attacks NAME` prints for the same file.

#![warn(missing_docs)]

mod engine;
mod error;
mod handles;

use std::ffi::{CStr, c_char};
use std::path::Path;
use std::sync::Arc;

use perturb_adv::AttackConfig;
use perturb_adv::autoattack::AutoAttackConfig;
use perturb_adv::training::{MethodConfig, TrainMethod};
use perturb_cli::attack::{AttackSettings, TargetArg, parse_attack};
use perturb_cli::backends::BackendChoice;
use perturb_data::Dataset;
use perturb_nn::{AdamConfig, SgdConfig};

pub use engine::{Engine, ModelOps, OptimizerChoice, TrainerOps, TrainerSettings};
pub use error::{Error, PerturbStatus, Result};
pub use handles::{PerturbBackend, PerturbModel, PerturbTrainer, live_count};

use error::{Status, boundary, last_error_ptr};

// ---- the boundary's checks -----------------------------------------------------------------

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| Error::invalid(what, "is not valid UTF-8"))
}

fn check_ptr<T>(p: *const T, what: &str) -> Result<()> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    if !p.is_aligned() {
        return Err(Error::invalid(what, format!("is not aligned to {} bytes", std::mem::align_of::<T>())));
    }
    Ok(())
}

/// A caller's input buffer of `len` elements.
///
/// # Safety
/// `p` is NULL or valid for reads of `len` elements for the call.
unsafe fn input<'a, T>(p: *const T, len: usize, what: &str) -> Result<&'a [T]> {
    check_ptr(p, what)?;
    // SAFETY: checked non-null and aligned; the length is the caller's.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A caller's output buffer of `len` elements.
///
/// # Safety
/// `p` is NULL or valid for writes of `len` elements for the call, and not aliased.
unsafe fn output<'a, T>(p: *mut T, len: usize, what: &str) -> Result<&'a mut [T]> {
    check_ptr(p, what)?;
    // SAFETY: checked non-null and aligned; the length is the caller's.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Writes `v` through an optional out-pointer (NULL: not wanted).
///
/// # Safety
/// `p` is NULL or valid for a write of one `T`.
unsafe fn put_optional<T>(p: *mut T, v: T, what: &str) -> Result<()> {
    if p.is_null() {
        return Ok(());
    }
    check_ptr(p, what)?;
    // SAFETY: checked non-null and aligned.
    unsafe { p.write(v) };
    Ok(())
}

/// Writes `v` through a required out-pointer.
///
/// # Safety
/// `p` is NULL or valid for a write of one `T`.
unsafe fn put<T>(p: *mut T, v: T, what: &str) -> Result<()> {
    check_ptr(p, what)?;
    // SAFETY: checked non-null and aligned.
    unsafe { p.write(v) };
    Ok(())
}

fn expect_len(what: &str, got: usize, expected: usize, of: impl FnOnce() -> String) -> Result<()> {
    if got != expected {
        return Err(Error::new(Status::Length, format!("{what}: expected {expected} elements ({}), got {got}", of())));
    }
    Ok(())
}

/// Checks `x` ([n, c, h, w] f32) against the model, returning the per-image length.
fn check_images(m: &dyn ModelOps, x_len: usize, n: usize) -> Result<usize> {
    let ([c, h, w], _) = m.shape();
    let per = c * h * w;
    let expected = n.checked_mul(per).ok_or_else(|| Error::invalid("n", format!("{n} images overflow")))?;
    expect_len("x", x_len, expected, || format!("n {n} x {c}x{h}x{w}"))?;
    if n == 0 {
        return Err(Error::invalid("n", "must be at least 1"));
    }
    Ok(per)
}

/// A data set over the caller's batch (labels checked against the model's classes).
fn batch(m: &dyn ModelOps, x: &[f32], labels: &[u32]) -> Result<Dataset> {
    let ([c, h, w], classes) = m.shape();
    let mut small = Vec::with_capacity(labels.len());
    for (i, &l) in labels.iter().enumerate() {
        if l as usize >= classes {
            return Err(Error::invalid(
                "labels",
                format!("labels[{i}] = {l} is not below the model's {classes} classes"),
            ));
        }
        small.push(u8::try_from(l).map_err(|_| Error::invalid("labels", format!("labels[{i}] = {l} is above 255")))?);
    }
    Ok(Dataset {
        name: "the caller's batch".into(),
        images: x.to_vec(),
        labels: small,
        n: labels.len(),
        channels: c,
        height: h,
        width: w,
        num_classes: classes,
    })
}

/// `*out = NULL` first, so a failed call leaves no stale handle behind.
///
/// # Safety
/// `out` is NULL or valid for a write of one pointer.
unsafe fn clear_out<T>(out: *mut *mut T) {
    if !out.is_null() && out.is_aligned() {
        // SAFETY: checked non-null and aligned.
        unsafe { out.write(std::ptr::null_mut()) };
    }
}

/// Destroys the handle `*h` of kind `want` and sets `*h` to NULL.
///
/// # Safety
/// `h` is NULL or valid for reading and writing one pointer.
unsafe fn destroy<T>(h: *mut *mut T, want: &'static str) -> Result<()> {
    if h.is_null() {
        return Ok(());
    }
    check_ptr(h, want)?;
    // SAFETY: checked non-null and aligned.
    let token = unsafe { h.read() }.addr();
    handles::remove(token, want)?;
    // SAFETY: as above.
    unsafe { h.write(std::ptr::null_mut()) };
    Ok(())
}

// ---- library ------------------------------------------------------------------------------

/// perturb's version ("0.1.0"), a static NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn perturb_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on this thread, or NULL when none failed. The string
/// belongs to perturb and stays valid until the next failing call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn perturb_last_error() -> *const c_char {
    last_error_ptr()
}

// ---- backends ------------------------------------------------------------------------------

/// Opens a backend: `kind` is "cpu", "wgpu", "cuda" or "auto" (CUDA if a device is present,
/// else wgpu on a real GPU, else the CPU). `threads`: CPU threads (0: one per core; ignored by
/// the GPU backends). A backend that cannot run here is `PERTURB_STATUS_UNAVAILABLE` with the
/// reason.
///
/// # Safety
/// `kind` is a NUL-terminated string; `out` is valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_backend_open(
    kind: *const c_char,
    threads: u32,
    out: *mut *mut PerturbBackend,
) -> PerturbStatus {
    // SAFETY: the caller's contract.
    unsafe { clear_out(out) };
    boundary("perturb_backend_open", || {
        check_ptr(out, "out")?;
        // SAFETY: the caller's contract.
        let choice = match unsafe { text(kind, "kind") }? {
            "cpu" => BackendChoice::Cpu,
            "wgpu" => BackendChoice::Wgpu,
            "cuda" => BackendChoice::Cuda,
            "auto" => BackendChoice::Auto,
            other => {
                return Err(Error::invalid(
                    "kind",
                    format!("unknown backend '{other}' (known: cpu, wgpu, cuda, auto)"),
                ));
            }
        };
        let engine = engine::open(choice, (threads > 0).then_some(threads as usize))?;
        // SAFETY: checked above.
        unsafe { put(out, handles::new_backend(engine), "out") }
    })
}

/// The backend's short name ("cpu", "wgpu", "cuda"), a static string, in `*name`.
///
/// # Safety
/// `name` is valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_backend_name(
    backend: *const PerturbBackend,
    name: *mut *const c_char,
) -> PerturbStatus {
    boundary("perturb_backend_name", || {
        let b = handles::backend(backend)?;
        let s: &'static str = match b.name() {
            "cpu" => "cpu\0",
            "wgpu" => "wgpu\0",
            "cuda" => "cuda\0",
            _ => "unknown\0",
        };
        // SAFETY: the caller's contract.
        unsafe { put(name, s.as_ptr().cast(), "name") }
    })
}

/// Copies the device in words (CPU model and threads, GPU name and driver) into `buf` of
/// `buf_len` bytes, NUL-terminated; `*needed` (if not NULL) gets the bytes it takes with the
/// NUL. A `buf` too short is `PERTURB_STATUS_LENGTH` (with `*needed` set); `buf` may be NULL
/// with `buf_len` 0 to ask for the size.
///
/// # Safety
/// `buf` is NULL or valid for `buf_len` bytes; `needed` is NULL or valid for one `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_backend_device(
    backend: *const PerturbBackend,
    buf: *mut c_char,
    buf_len: usize,
    needed: *mut usize,
) -> PerturbStatus {
    boundary("perturb_backend_device", || {
        let b = handles::backend(backend)?;
        let s = b.device().replace('\0', " ");
        let want = s.len() + 1;
        // SAFETY: the caller's contract.
        unsafe { put_optional(needed, want, "needed") }?;
        if buf.is_null() && buf_len == 0 {
            return Ok(());
        }
        // SAFETY: the caller's contract.
        let dst = unsafe { output(buf.cast::<u8>(), buf_len, "buf") }?;
        if buf_len < want {
            return Err(Error::new(Status::Length, format!("buf: needs {want} bytes, got {buf_len}")));
        }
        dst[..s.len()].copy_from_slice(s.as_bytes());
        dst[s.len()] = 0;
        Ok(())
    })
}

/// Closes the handle `*backend` and sets `*backend` to NULL. Models made on it keep it open
/// until they are destroyed. NULL or `*backend == NULL`: nothing to do.
///
/// # Safety
/// `backend` is NULL or valid for reading and writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_backend_destroy(backend: *mut *mut PerturbBackend) -> PerturbStatus {
    // SAFETY: the caller's contract.
    boundary("perturb_backend_destroy", || unsafe { destroy(backend, "PerturbBackend") })
}

// ---- models --------------------------------------------------------------------------------

/// The shape a model takes and gives.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerturbModelShape {
    /// Channels of an input image.
    pub channels: usize,
    /// Height of an input image.
    pub height: usize,
    /// Width of an input image.
    pub width: usize,
    /// Classes (logits per image).
    pub classes: usize,
}

/// Loads a model file written by `perturb train` or [`perturb_model_save`] (safetensors with
/// perturb's metadata) onto `backend`. A file that does not load is `PERTURB_STATUS_MODEL`
/// naming the file and what is wrong.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` is valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_model_load(
    backend: *const PerturbBackend,
    path: *const c_char,
    out: *mut *mut PerturbModel,
) -> PerturbStatus {
    // SAFETY: the caller's contract.
    unsafe { clear_out(out) };
    boundary("perturb_model_load", || {
        check_ptr(out, "out")?;
        let b = handles::backend(backend)?;
        // SAFETY: the caller's contract.
        let p = unsafe { text(path, "path") }?;
        let m = b.load(Path::new(p))?;
        // SAFETY: checked above.
        unsafe { put(out, handles::new_model(m), "out") }
    })
}

/// Builds a freshly initialised model: `arch` is "cnn-small", "cnn-madry" or "mlp", for images
/// of `channels` x `height` x `width` and `classes` classes, initialised from `seed` (the
/// weights `perturb train --seed` starts from).
///
/// # Safety
/// `arch` is a NUL-terminated string; `out` is valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_model_build(
    backend: *const PerturbBackend,
    arch: *const c_char,
    shape: PerturbModelShape,
    seed: u64,
    out: *mut *mut PerturbModel,
) -> PerturbStatus {
    // SAFETY: the caller's contract.
    unsafe { clear_out(out) };
    boundary("perturb_model_build", || {
        check_ptr(out, "out")?;
        let b = handles::backend(backend)?;
        // SAFETY: the caller's contract.
        let arch = unsafe { text(arch, "arch") }?;
        if shape.channels == 0 || shape.height == 0 || shape.width == 0 || shape.classes < 2 {
            return Err(Error::invalid("shape", format!("{shape:?} needs every side >= 1 and classes >= 2")));
        }
        let m = b.build(arch, [shape.channels, shape.height, shape.width], shape.classes, seed)?;
        // SAFETY: checked above.
        unsafe { put(out, handles::new_model(m), "out") }
    })
}

/// The model's input shape and class count, in `*shape`.
///
/// # Safety
/// `shape` is valid for a write of one `PerturbModelShape`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_model_shape(
    model: *const PerturbModel,
    shape: *mut PerturbModelShape,
) -> PerturbStatus {
    boundary("perturb_model_shape", || {
        let m = handles::model(model)?;
        let ([channels, height, width], classes) = m.shape();
        // SAFETY: the caller's contract.
        unsafe { put(shape, PerturbModelShape { channels, height, width, classes }, "shape") }
    })
}

/// Logits of `n` images: `x` holds n x C x H x W floats (`x_len` of them), `logits` gets
/// n x classes (`logits_len` must be exactly that).
///
/// # Safety
/// `x` is valid for `x_len` reads, `logits` for `logits_len` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_model_forward(
    model: *const PerturbModel,
    x: *const f32,
    x_len: usize,
    n: usize,
    logits: *mut f32,
    logits_len: usize,
) -> PerturbStatus {
    boundary("perturb_model_forward", || {
        let m = handles::model(model)?;
        check_images(&*m, x_len, n)?;
        let classes = m.shape().1;
        expect_len("logits", logits_len, n * classes, || format!("n {n} x {classes} classes"))?;
        // SAFETY: the caller's contract.
        let (xs, out) = unsafe { (input(x, x_len, "x")?, output(logits, logits_len, "logits")?) };
        out.copy_from_slice(&m.forward(xs)?);
        Ok(())
    })
}

/// The input gradient of the cross-entropy: `grad` (as long as `x`) gets
/// d (sum over the n images of CE(logits_i, labels_i)) / d x, so each image's rows are that
/// image's own gradient; `*loss` (if not NULL) gets the sum. Only the input-only backward runs
/// (no weight gradients).
///
/// # Safety
/// `x` is valid for `x_len` reads, `labels` for `n`, `grad` for `grad_len` writes, `loss` NULL
/// or valid for one write.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn perturb_model_input_grad(
    model: *const PerturbModel,
    x: *const f32,
    x_len: usize,
    labels: *const u32,
    n: usize,
    grad: *mut f32,
    grad_len: usize,
    loss: *mut f32,
) -> PerturbStatus {
    boundary("perturb_model_input_grad", || {
        let m = handles::model(model)?;
        check_images(&*m, x_len, n)?;
        expect_len("grad", grad_len, x_len, || "as long as x".into())?;
        // SAFETY: the caller's contract.
        let (xs, ys, out) =
            unsafe { (input(x, x_len, "x")?, input(labels, n, "labels")?, output(grad, grad_len, "grad")?) };
        batch(&*m, &[], ys)?; // checks the labels
        let (g, l) = m.input_grad(xs, ys)?;
        out.copy_from_slice(&g);
        // SAFETY: the caller's contract.
        unsafe { put_optional(loss, l, "loss") }
    })
}

/// Writes the model (weights and architecture, the format `perturb` reads) to `path`,
/// atomically: a temporary file renamed over `path`.
///
/// # Safety
/// `path` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_model_save(model: *const PerturbModel, path: *const c_char) -> PerturbStatus {
    boundary("perturb_model_save", || {
        let m = handles::model(model)?;
        // SAFETY: the caller's contract.
        let p = unsafe { text(path, "path") }?;
        m.save(Path::new(p))
    })
}

/// Frees the handle `*model` (once no call on another thread still uses it) and sets `*model`
/// to NULL. Its trainers keep the model alive.
///
/// # Safety
/// `model` is NULL or valid for reading and writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_model_destroy(model: *mut *mut PerturbModel) -> PerturbStatus {
    // SAFETY: the caller's contract.
    boundary("perturb_model_destroy", || unsafe { destroy(model, "PerturbModel") })
}

// ---- attacks -------------------------------------------------------------------------------

/// How `-targeted` attacks pick their target class.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerturbTargetRule {
    /// A random other class (seeded).
    Random = 0,
    /// (label + 1) mod classes.
    Next = 1,
    /// The class with the smallest clean logit.
    LeastLikely = 2,
}

/// The settings of [`perturb_attack`]: the `perturb eval` flags of the same names. Fill with
/// [`perturb_attack_options_default`], then change what you need.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerturbAttackOptions {
    /// L-inf radius of the L-inf attacks (default 0.3).
    pub eps: f32,
    /// L2 radius of the L2 attacks (default 2.0).
    pub eps_l2: f32,
    /// Steps of the iterative attacks (default 40).
    pub steps: u32,
    /// Step size of the iterative L-inf attacks (default 0.01).
    pub step_size: f32,
    /// Step size of the iterative L2 attacks; 0: 2.5 eps_l2 / steps (the default).
    pub step_size_l2: f32,
    /// Random restarts of PGD; each image keeps its worst case (default 1).
    pub restarts: u32,
    /// R-FGSM's random step; a negative value: eps / 2 (the default).
    pub alpha: f32,
    /// Square attack: forward passes per image at most (default 1000).
    pub queries: u32,
    /// Square attack: initial share of pixels in a square (default 0.3).
    pub p_init: f32,
    /// Targets of the `-targeted` attacks, a `PerturbTargetRule` value (default random); a plain
    /// integer so that an out-of-range value is an error, not undefined behaviour.
    pub target_rule: u32,
    /// Seed of random starts, R-FGSM noise, random targets, Square (default 0).
    pub seed: u64,
    /// Images per batch (default 500, `perturb eval`'s).
    pub batch_size: u32,
}

/// Fills `*options` with the defaults (those of `perturb eval`).
///
/// # Safety
/// `options` is valid for a write of one `PerturbAttackOptions`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_attack_options_default(options: *mut PerturbAttackOptions) -> PerturbStatus {
    boundary("perturb_attack_options_default", || {
        // SAFETY: the caller's contract.
        unsafe { put(options, ATTACK_DEFAULTS, "options") }
    })
}

const ATTACK_DEFAULTS: PerturbAttackOptions = PerturbAttackOptions {
    eps: 0.3,
    eps_l2: 2.0,
    steps: 40,
    step_size: 0.01,
    step_size_l2: 0.0,
    restarts: 1,
    alpha: -1.0,
    queries: 1000,
    p_init: 0.3,
    target_rule: PerturbTargetRule::Random as u32,
    seed: 0,
    batch_size: 500,
};

fn settings(o: &PerturbAttackOptions) -> Result<AttackSettings> {
    Ok(AttackSettings {
        eps: o.eps,
        eps_l2: o.eps_l2,
        steps: o.steps as usize,
        step_size: o.step_size,
        step_size_l2: (o.step_size_l2 > 0.0).then_some(o.step_size_l2),
        restarts: o.restarts as usize,
        alpha: (o.alpha >= 0.0).then_some(o.alpha),
        queries: o.queries as usize,
        p_init: o.p_init,
        target_rule: match o.target_rule {
            0 => TargetArg::Random,
            1 => TargetArg::Next,
            2 => TargetArg::LeastLikely,
            other => {
                return Err(Error::invalid("options.target_rule", format!("{other} is not a PerturbTargetRule (0-2)")));
            }
        },
        seed: o.seed,
    })
}

/// The attack `name` as `perturb eval --attacks NAME` runs it with the same settings.
fn attack_config(name: &str, o: &PerturbAttackOptions, features: usize) -> Result<AttackConfig> {
    if o.batch_size == 0 {
        return Err(Error::invalid("options.batch_size", "must be at least 1"));
    }
    let spec = parse_attack(name, &settings(o)?, None, "name")?;
    if spec.surrogate.is_some() {
        return Err(Error::invalid(
            "name",
            format!("'{name}': transfer attacks are not in the C ABI (use `perturb eval`)"),
        ));
    }
    spec.config.validate(features)?;
    Ok(spec.config)
}

/// Attacks `n` images with `name` — "fgsm", "fgm-l2", "rfgsm", "bim", "bim-l2", "pgd",
/// "pgd-l2", "cw", "cw-l2" or "square", each optionally ending in "-targeted" — exactly as
/// `perturb eval --attacks NAME` does with the same settings (`options`; NULL: the defaults).
/// `adv` (as long as `x`) gets the adversarial images, each inside the eps-ball around its
/// clean image and in [0, 1]; `*n_correct` (if not NULL) the images still classified correctly.
///
/// # Safety
/// `name` is a NUL-terminated string; `options` NULL or valid; `x` valid for `x_len` reads,
/// `labels` for `n`, `adv` for `adv_len` writes; `n_correct` NULL or valid for one write.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn perturb_attack(
    model: *const PerturbModel,
    name: *const c_char,
    options: *const PerturbAttackOptions,
    x: *const f32,
    x_len: usize,
    labels: *const u32,
    n: usize,
    adv: *mut f32,
    adv_len: usize,
    n_correct: *mut usize,
) -> PerturbStatus {
    boundary("perturb_attack", || {
        let m = handles::model(model)?;
        let per = check_images(&*m, x_len, n)?;
        expect_len("adv", adv_len, x_len, || "as long as x".into())?;
        // SAFETY: the caller's contract.
        let name = unsafe { text(name, "name") }?;
        let mut o = ATTACK_DEFAULTS;
        if !options.is_null() {
            check_ptr(options, "options")?;
            // SAFETY: checked non-null and aligned.
            o = unsafe { options.read() };
        }
        let config = attack_config(name, &o, per)?;
        // SAFETY: the caller's contract.
        let (xs, ys) = unsafe { (input(x, x_len, "x")?, input(labels, n, "labels")?) };
        let data = batch(&*m, xs, ys)?;
        let run = m.attack(config, &data, o.batch_size as usize)?;
        // SAFETY: the caller's contract.
        unsafe { output(adv, adv_len, "adv") }?.copy_from_slice(&run.adv);
        let correct = run.correct.iter().filter(|&&c| c).count();
        // SAFETY: the caller's contract.
        unsafe { put_optional(n_correct, correct, "n_correct") }
    })
}

/// The settings of [`perturb_autoattack`]: AutoAttack's standard version (APGD-CE, APGD-T,
/// FAB-T, Square-5000 at L-inf radius `eps`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerturbAutoAttackOptions {
    /// L-inf radius (default 0.3).
    pub eps: f32,
    /// Seed of every random draw (default 0).
    pub seed: u64,
    /// Target classes of APGD-T and FAB-T (default 9; at most classes - 1).
    pub n_target_classes: u32,
    /// Images per batch (default 500).
    pub batch_size: u32,
}

/// Fills `*options` with the defaults (those of `perturb eval --suite autoattack`).
///
/// # Safety
/// `options` is valid for a write of one `PerturbAutoAttackOptions`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_autoattack_options_default(options: *mut PerturbAutoAttackOptions) -> PerturbStatus {
    boundary("perturb_autoattack_options_default", || {
        // SAFETY: the caller's contract.
        unsafe { put(options, AUTOATTACK_DEFAULTS, "options") }
    })
}

const AUTOATTACK_DEFAULTS: PerturbAutoAttackOptions =
    PerturbAutoAttackOptions { eps: 0.3, seed: 0, n_target_classes: 9, batch_size: 500 };

/// Runs AutoAttack-standard on `n` images, as `perturb eval --suite autoattack` does: each
/// attack on the images every earlier one failed on. `adv` (as long as `x`) gets the adversarial
/// images (the clean image where no attack succeeded); `*n_robust` (if not NULL) the images
/// correct under all four.
///
/// # Safety
/// `options` NULL or valid; `x` valid for `x_len` reads, `labels` for `n`, `adv` for `adv_len`
/// writes; `n_robust` NULL or valid for one write.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn perturb_autoattack(
    model: *const PerturbModel,
    options: *const PerturbAutoAttackOptions,
    x: *const f32,
    x_len: usize,
    labels: *const u32,
    n: usize,
    adv: *mut f32,
    adv_len: usize,
    n_robust: *mut usize,
) -> PerturbStatus {
    boundary("perturb_autoattack", || {
        let m = handles::model(model)?;
        let per = check_images(&*m, x_len, n)?;
        expect_len("adv", adv_len, x_len, || "as long as x".into())?;
        let mut o = AUTOATTACK_DEFAULTS;
        if !options.is_null() {
            check_ptr(options, "options")?;
            // SAFETY: checked non-null and aligned.
            o = unsafe { options.read() };
        }
        let mut cfg = AutoAttackConfig::standard(o.eps);
        cfg.seed = o.seed;
        cfg.n_target_classes = o.n_target_classes as usize;
        cfg.batch_size = o.batch_size as usize;
        cfg.validate(m.shape().1, per)?;
        // SAFETY: the caller's contract.
        let (xs, ys) = unsafe { (input(x, x_len, "x")?, input(labels, n, "labels")?) };
        let data = batch(&*m, xs, ys)?;
        let outcome = m.autoattack(&cfg, &data)?;
        // SAFETY: the caller's contract.
        unsafe { output(adv, adv_len, "adv") }?.copy_from_slice(&outcome.adv);
        let robust = outcome.robust.iter().filter(|&&r| r).count();
        // SAFETY: the caller's contract.
        unsafe { put_optional(n_robust, robust, "n_robust") }
    })
}

// ---- training ------------------------------------------------------------------------------

/// The optimiser of a trainer.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerturbOptimizer {
    /// SGD with `momentum`, `nesterov`, `weight_decay`.
    Sgd = 0,
    /// Adam (L2 weight decay).
    Adam = 1,
    /// AdamW (decoupled weight decay).
    AdamW = 2,
}

/// The settings of a trainer. Fill with [`perturb_trainer_options_default`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerturbTrainerOptions {
    /// The method, a NUL-terminated name as `perturb train --method` takes it: "standard",
    /// "fgsm", "rfgsm", "fgsm-rs", "fgsm-reg", "pgd", "differential", "self-gradient"
    /// (default "pgd"). Read only by [`perturb_trainer_create`].
    pub method: *const c_char,
    /// L-inf radius of the training perturbations (default 0.3).
    pub eps: f32,
    /// PGD steps of `pgd` training (default 10; step size 2.5 eps / steps).
    pub pgd_steps: u32,
    /// Weight of `fgsm-reg`'s logit-distance term (default 2).
    pub lambda: f32,
    /// The optimiser, a `PerturbOptimizer` value (default SGD); a plain integer so that an
    /// out-of-range value is an error, not undefined behaviour.
    pub optimizer: u32,
    /// SGD momentum (default 0.9).
    pub momentum: f32,
    /// SGD Nesterov momentum (default 1 = on).
    pub nesterov: u8,
    /// Weight decay (default 0).
    pub weight_decay: f32,
    /// Seed of the method's random starts and noise; step k uses seed + k (default 0).
    pub seed: u64,
}

/// Fills `*options` with the defaults (PGD-10 training at eps 0.3, SGD with Nesterov momentum
/// 0.9, as `perturb train --method pgd`).
///
/// # Safety
/// `options` is valid for a write of one `PerturbTrainerOptions`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_trainer_options_default(options: *mut PerturbTrainerOptions) -> PerturbStatus {
    boundary("perturb_trainer_options_default", || {
        let o = PerturbTrainerOptions {
            method: c"pgd".as_ptr(),
            eps: 0.3,
            pgd_steps: 10,
            lambda: 2.0,
            optimizer: PerturbOptimizer::Sgd as u32,
            momentum: 0.9,
            nesterov: 1,
            weight_decay: 0.0,
            seed: 0,
        };
        // SAFETY: the caller's contract.
        unsafe { put(options, o, "options") }
    })
}

/// Makes a trainer for `model` (whose weights its steps update in place).
///
/// # Safety
/// `options` is valid (its `method` a NUL-terminated string); `out` valid for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_trainer_create(
    model: *const PerturbModel,
    options: *const PerturbTrainerOptions,
    out: *mut *mut PerturbTrainer,
) -> PerturbStatus {
    // SAFETY: the caller's contract.
    unsafe { clear_out(out) };
    boundary("perturb_trainer_create", || {
        check_ptr(out, "out")?;
        let m = handles::model(model)?;
        check_ptr(options, "options")?;
        // SAFETY: checked non-null and aligned.
        let o = unsafe { options.read() };
        // SAFETY: the caller's contract.
        let method = TrainMethod::parse(unsafe { text(o.method, "options.method") }?)?;
        let mut cfg = MethodConfig::new(method, o.eps).with_lambda(o.lambda).with_seed(o.seed);
        cfg = cfg.with_pgd(o.pgd_steps as usize, None);
        let optimizer = match o.optimizer {
            0 => OptimizerChoice::Sgd(SgdConfig {
                lr: 0.01,
                momentum: o.momentum,
                weight_decay: o.weight_decay,
                nesterov: o.nesterov != 0,
            }),
            1 => OptimizerChoice::Adam(AdamConfig { weight_decay: o.weight_decay, ..AdamConfig::default() }),
            2 => OptimizerChoice::Adam(AdamConfig { weight_decay: o.weight_decay, ..AdamConfig::adamw() }),
            other => {
                return Err(Error::invalid("options.optimizer", format!("{other} is not a PerturbOptimizer (0-2)")));
            }
        };
        let t = m.trainer(TrainerSettings { method: cfg, optimizer })?;
        // SAFETY: checked above.
        unsafe { put(out, handles::new_trainer(Arc::from(t)), "out") }
    })
}

/// One training step on a batch of `n` images at learning rate `lr`: the method's adversarial
/// examples from the current weights, one optimiser step. `*loss` (if not NULL) gets the step's
/// loss. A non-finite loss or weight is `PERTURB_STATUS_DIVERGED` naming the parameter; the
/// weights are then unusable (load the model again).
///
/// # Safety
/// `x` valid for `x_len` reads, `labels` for `n`; `loss` NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_trainer_step(
    trainer: *const PerturbTrainer,
    x: *const f32,
    x_len: usize,
    labels: *const u32,
    n: usize,
    lr: f32,
    loss: *mut f32,
) -> PerturbStatus {
    boundary("perturb_trainer_step", || {
        let t = handles::trainer(trainer)?;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::invalid("lr", format!("{lr} must be a finite number > 0")));
        }
        let m = t.model();
        check_images(&*m, x_len, n)?;
        // SAFETY: the caller's contract.
        let (xs, ys) = unsafe { (input(x, x_len, "x")?, input(labels, n, "labels")?) };
        let data = batch(&*m, xs, ys)?;
        let l = t.step(&data, lr)?;
        // SAFETY: the caller's contract.
        unsafe { put_optional(loss, l, "loss") }
    })
}

/// Steps the trainer has taken, in `*steps`.
///
/// # Safety
/// `steps` is valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_trainer_steps(trainer: *const PerturbTrainer, steps: *mut u64) -> PerturbStatus {
    boundary("perturb_trainer_steps", || {
        let t = handles::trainer(trainer)?;
        // SAFETY: the caller's contract.
        unsafe { put(steps, t.steps(), "steps") }
    })
}

/// Frees the handle `*trainer` and sets `*trainer` to NULL.
///
/// # Safety
/// `trainer` is NULL or valid for reading and writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_trainer_destroy(trainer: *mut *mut PerturbTrainer) -> PerturbStatus {
    // SAFETY: the caller's contract.
    boundary("perturb_trainer_destroy", || unsafe { destroy(trainer, "PerturbTrainer") })
}

// ---- data ----------------------------------------------------------------------------------

/// A split of the embedded MNIST-10k digits.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerturbSplit {
    /// The first 8,000 digits.
    Train = 0,
    /// The last 2,000 (the held-out digits `perturb eval` uses).
    Test = 1,
}

/// `split` is a `PerturbSplit` value, taken as a plain integer so that an out-of-range value is
/// an error, not undefined behaviour.
fn mnist10k(split: u32) -> Result<Dataset> {
    let (train, test) = perturb_data::embedded_mnist10k()?;
    match split {
        0 => Ok(train),
        1 => Ok(test),
        other => Err(Error::invalid("split", format!("{other} is not a PerturbSplit (0 train, 1 test)"))),
    }
}

/// Digits in a split of the embedded MNIST-10k set, in `*n`.
///
/// # Safety
/// `n` is valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_mnist10k_len(split: u32, n: *mut usize) -> PerturbStatus {
    boundary("perturb_mnist10k_len", || {
        let len = mnist10k(split)?.len();
        // SAFETY: the caller's contract.
        unsafe { put(n, len, "n") }
    })
}

/// Copies `count` digits of a split from index `offset` on: `images` gets count x 1 x 28 x 28
/// floats in [0, 1] (`images_len` must be exactly that), `labels` `count` labels.
///
/// # Safety
/// `images` valid for `images_len` writes, `labels` for `labels_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn perturb_mnist10k(
    split: u32,
    offset: usize,
    count: usize,
    images: *mut f32,
    images_len: usize,
    labels: *mut u32,
    labels_len: usize,
) -> PerturbStatus {
    boundary("perturb_mnist10k", || {
        let ds = mnist10k(split)?;
        let end = offset.checked_add(count).filter(|&e| e <= ds.len()).ok_or_else(|| {
            Error::invalid("offset", format!("{offset} + count {count} is past the split's {} digits", ds.len()))
        })?;
        let per = ds.image_len();
        expect_len("images", images_len, count * per, || format!("count {count} x 1x28x28"))?;
        expect_len("labels", labels_len, count, || format!("count {count}"))?;
        // SAFETY: the caller's contract.
        let (xs, ys) = unsafe { (output(images, images_len, "images")?, output(labels, labels_len, "labels")?) };
        xs.copy_from_slice(&ds.images[offset * per..end * per]);
        for (d, &s) in ys.iter_mut().zip(&ds.labels[offset..end]) {
            *d = u32::from(s);
        }
        Ok(())
    })
}
