//! The Backend trait: device memory plus one method per kernel-level op.
//!
//! Conventions: NCHW activations, conv weights [out, in, kh, kw], linear weights [out, in],
//! f32 compute. Ops validate shapes and return `Err` naming the op and the shapes; they never
//! panic on a caller's shape. Ops that return a tensor allocate it (a GPU backend pools the
//! memory); ops whose name ends in `_` write in place through the handle they are given, so
//! loops such as an attack's steps or an optimiser's updates allocate nothing per step.

use crate::ops::{
    AdamParams, BiasParams, Conv2dParams, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use crate::{DType, Result, Shape, Tensor};

/// A compute device: memory (`zeros`, `upload_*`, `download_*`, `copy_`, `fill_`) and one
/// method per kernel-level op of the registry ([`crate::Op`]), each taking its `#[repr(C)]`
/// parameter struct from [`crate::ops`].
///
/// Implementations: `perturb_cpu::CpuBackend` (the rayon reference), `perturb_cuda` and
/// `perturb_wgpu`. Code above this trait (autograd, layers, attacks) is generic over it.
///
/// # Errors
/// Every method returns [`crate::Result`]: [`crate::Error::Shape`] when a tensor does not
/// match the params or another argument (the message gives the shapes),
/// [`crate::Error::DType`] for a wrong element type (ops compute in f32; labels and indices are
/// u32), [`crate::Error::Unsupported`] for an op or dtype the backend lacks,
/// [`crate::Error::OutOfMemory`] and [`crate::Error::Device`] for what the device refuses.
/// A backend never panics on a caller's shape.
///
/// # Example
/// Upload, one op, download, on the CPU reference:
/// ```
/// # fn main() -> perturb_core::Result<()> {
/// use perturb_core::ops::{LinearParams, StepParams};
/// use perturb_core::{Backend, Error, Shape};
///
/// let b = perturb_cpu::CpuBackend::new();
/// // x [m = 2, k = 3], w [n = 2, k = 3], row-major.
/// let x = b.upload_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &Shape::from([2, 3]))?;
/// let w = b.upload_f32(&[1.0, 0.0, -1.0, 0.5, 0.5, 0.5], &Shape::from([2, 3]))?;
/// let y = b.linear_fwd(&x, &w, &LinearParams::new(2, 3, 2)?)?; // y = x · wᵀ
/// assert_eq!(y.dims(), &[2, 2]);
/// assert_eq!(b.download_f32(&y)?, [-2.0, 3.0, -2.0, 7.5]);
///
/// // An in-place op: one FGSM step of 0.25 on y, clipped to [-2, 2]; sign(0) = 0.
/// let g = b.upload_f32(&[1.0, -1.0, 0.0, 1.0], &Shape::from([2, 2]))?;
/// b.sign_step_(&y, &g, &StepParams::new(2, 2, 0.25, 0.0, -2.0, 2.0)?)?;
/// assert_eq!(b.download_f32(&y)?, [-1.75, 2.0, -2.0, 2.0]);
///
/// // A length that does not match the shape is an error, not a panic.
/// let err = b.upload_f32(&[1.0, 2.0], &Shape::from([3])).unwrap_err();
/// assert!(matches!(err, Error::Shape { .. }), "{err}");
/// # Ok(())
/// # }
/// ```
pub trait Backend: Sized + Send + Sync + 'static {
    /// A cheap, clonable handle to device memory.
    type Storage: Clone + Send + Sync + 'static;

    /// Short backend name: "cpu", "cuda", "wgpu".
    fn name(&self) -> &'static str;
    /// The device in words (CPU model and threads, GPU name and driver).
    fn device_name(&self) -> String;

    // ---- memory ----------------------------------------------------------------------------

    /// A zero-filled tensor.
    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<Tensor<Self>>;
    /// Copies host f32 data to a new f32 tensor; `data.len()` must equal `shape.numel()`.
    fn upload_f32(&self, data: &[f32], shape: &Shape) -> Result<Tensor<Self>>;
    /// Copies host u32 data (labels, indices) to a new u32 tensor.
    fn upload_u32(&self, data: &[u32], shape: &Shape) -> Result<Tensor<Self>>;
    /// Copies an f32 tensor (or an f16/bf16 one, widened) to the host.
    fn download_f32(&self, t: &Tensor<Self>) -> Result<Vec<f32>>;
    /// Copies a u32 tensor to the host.
    fn download_u32(&self, t: &Tensor<Self>) -> Result<Vec<u32>>;
    /// dst = src (same dtype and element count).
    fn copy_(&self, dst: &Tensor<Self>, src: &Tensor<Self>) -> Result<()>;
    /// Overwrites an f32 tensor with `value`.
    fn fill_(&self, dst: &Tensor<Self>, value: f32) -> Result<()>;
    /// Waits until all queued work is done (a no-op on the CPU).
    fn synchronize(&self) -> Result<()>;

    /// How many independent batches a caller should have in flight at once (from as many
    /// threads) to keep this device busy: 1 by default (a GPU runs one queue, and one bigger
    /// batch beats two smaller ones); the CPU backend's thread count, since between its many
    /// small parallel ops on one batch, and in the attacks' serial host work, cores sit idle.
    /// Only a hint for speed: results must not depend on it.
    fn concurrent_batches(&self) -> usize {
        1
    }

    /// A deep copy into fresh memory.
    fn duplicate(&self, t: &Tensor<Self>) -> Result<Tensor<Self>> {
        let out = self.zeros(t.shape(), t.dtype())?;
        self.copy_(&out, t)?;
        Ok(out)
    }

    // ---- convolution -----------------------------------------------------------------------

    /// # Shapes
    /// x `[n, c_in, h, w]`, w `[c_out, c_in, kh, kw]` -> y `[n, c_out, h_out, w_out]` (no bias).
    fn conv2d_fwd(&self, x: &Tensor<Self>, w: &Tensor<Self>, p: &Conv2dParams) -> Result<Tensor<Self>>;
    /// # Shapes
    /// dy `[n, c_out, h_out, w_out]`, w `[c_out, c_in, kh, kw]` -> dx `[n, c_in, h, w]`.
    fn conv2d_bwd_input(&self, dy: &Tensor<Self>, w: &Tensor<Self>, p: &Conv2dParams) -> Result<Tensor<Self>>;
    /// # Shapes
    /// x `[n, c_in, h, w]`, dy `[n, c_out, h_out, w_out]` -> dw `[c_out, c_in, kh, kw]`.
    fn conv2d_bwd_weight(&self, x: &Tensor<Self>, dy: &Tensor<Self>, p: &Conv2dParams) -> Result<Tensor<Self>>;

    // ---- linear ----------------------------------------------------------------------------

    /// # Shapes
    /// x `[m, k]`, w `[n, k]` -> y `[m, n]` = x · wᵀ (no bias).
    fn linear_fwd(&self, x: &Tensor<Self>, w: &Tensor<Self>, p: &LinearParams) -> Result<Tensor<Self>>;
    /// # Shapes
    /// dy `[m, n]`, w `[n, k]` -> dx `[m, k]` = dy · w.
    fn linear_bwd_input(&self, dy: &Tensor<Self>, w: &Tensor<Self>, p: &LinearParams) -> Result<Tensor<Self>>;
    /// # Shapes
    /// x `[m, k]`, dy `[m, n]` -> dw `[n, k]` = dyᵀ · x.
    fn linear_bwd_weight(&self, x: &Tensor<Self>, dy: &Tensor<Self>, p: &LinearParams) -> Result<Tensor<Self>>;

    // ---- bias ------------------------------------------------------------------------------

    /// # Shapes
    /// y viewed as `[outer, channels, inner]`, b `[channels]` -> y + b broadcast over outer and inner.
    fn bias_add(&self, y: &Tensor<Self>, b: &Tensor<Self>, p: &BiasParams) -> Result<Tensor<Self>>;
    /// # Shapes
    /// dy viewed as `[outer, channels, inner]` -> db `[channels]` (sum over outer and inner).
    fn bias_grad(&self, dy: &Tensor<Self>, p: &BiasParams) -> Result<Tensor<Self>>;

    // ---- activations and pooling -----------------------------------------------------------

    /// # Shapes
    /// x `[any]` -> max(x, 0) `[same]`.
    fn relu_fwd(&self, x: &Tensor<Self>) -> Result<Tensor<Self>>;
    /// # Shapes
    /// dy `[any]`, x `[same]` -> dy where x > 0, else 0.
    fn relu_bwd(&self, dy: &Tensor<Self>, x: &Tensor<Self>) -> Result<Tensor<Self>>;
    /// # Shapes
    /// x `[n, c, h, w]` -> y `[n, c, h_out, w_out]`.
    fn maxpool2d_fwd(&self, x: &Tensor<Self>, p: &Pool2dParams) -> Result<Tensor<Self>>;
    /// Routes each output's gradient to the first maximum of its window (recomputed from x,
    /// so no index tensor is kept); each (n, c) plane is one task, so no atomics.
    /// # Shapes
    /// dy `[n, c, h_out, w_out]`, x `[n, c, h, w]` -> dx `[n, c, h, w]`.
    fn maxpool2d_bwd(&self, dy: &Tensor<Self>, x: &Tensor<Self>, p: &Pool2dParams) -> Result<Tensor<Self>>;

    // ---- loss ------------------------------------------------------------------------------

    /// Fused softmax cross-entropy forward and backward. Labels out of range are an error.
    /// # Shapes
    /// logits `[n, classes]`, labels u32 `[n]` -> (losses `[n]`, dlogits `[n, classes]` scaled by grad_scale).
    fn softmax_xent(
        &self,
        logits: &Tensor<Self>,
        labels: &Tensor<Self>,
        p: &XentParams,
    ) -> Result<(Tensor<Self>, Tensor<Self>)>;

    // ---- elementwise and reductions --------------------------------------------------------

    /// # Shapes
    /// x `[any]`, y `[same numel]` -> a*x + b*y `[shape of x]` (p.a, p.b).
    fn axpby(&self, x: &Tensor<Self>, y: &Tensor<Self>, p: &EltParams) -> Result<Tensor<Self>>;
    /// # Shapes
    /// x `[any]`, y `[same numel]` -> x * y `[shape of x]`.
    fn mul(&self, x: &Tensor<Self>, y: &Tensor<Self>) -> Result<Tensor<Self>>;
    /// # Shapes
    /// x viewed as `[rows, cols]` -> `[rows]` (sum of each row).
    fn sum_rows(&self, x: &Tensor<Self>, p: &RowParams) -> Result<Tensor<Self>>;
    /// First index of the maximum of each row.
    /// # Shapes
    /// x viewed as `[rows, cols]` -> u32 `[rows]`.
    fn argmax_rows(&self, x: &Tensor<Self>, p: &RowParams) -> Result<Tensor<Self>>;

    // ---- attack steps (in place on x; see [`StepParams`]) ---------------------------------

    /// x = clip(x + alpha * sign(g), lo, hi). The FGSM step.
    /// # Shapes
    /// x `[n, ...]`, g `[same]`.
    fn sign_step_(&self, x: &Tensor<Self>, g: &Tensor<Self>, p: &StepParams) -> Result<()>;
    /// x = clip(clamp(x + alpha * sign(g), x0 - eps, x0 + eps), lo, hi). One PGD L-inf step.
    /// # Shapes
    /// x `[n, ...]`, g `[same]`, x0 `[same]`.
    fn step_project_linf_(&self, x: &Tensor<Self>, g: &Tensor<Self>, x0: &Tensor<Self>, p: &StepParams) -> Result<()>;
    /// Normalised-gradient step, projection onto the L2 ball of radius eps around x0, clip.
    /// # Shapes
    /// x `[n, ...]`, g `[same]`, x0 `[same]`.
    fn step_project_l2_(&self, x: &Tensor<Self>, g: &Tensor<Self>, x0: &Tensor<Self>, p: &StepParams) -> Result<()>;

    // ---- optimisers (in place) -------------------------------------------------------------

    /// SGD with momentum and weight decay; `m` is the momentum buffer.
    /// # Shapes
    /// w, g, m `[same numel]`.
    fn sgd_update_(&self, w: &Tensor<Self>, g: &Tensor<Self>, m: &Tensor<Self>, p: &SgdParams) -> Result<()>;
    /// Adam / AdamW; `m`, `v` are the moment buffers.
    /// # Shapes
    /// w, g, m, v `[same numel]`.
    fn adam_update_(
        &self,
        w: &Tensor<Self>,
        g: &Tensor<Self>,
        m: &Tensor<Self>,
        v: &Tensor<Self>,
        p: &AdamParams,
    ) -> Result<()>;

    // ---- random numbers --------------------------------------------------------------------

    /// Fills an f32 tensor from the Philox stream described by `p` (see [`crate::rng`]).
    fn rng_fill_(&self, dst: &Tensor<Self>, p: &RngParams) -> Result<()>;
}
