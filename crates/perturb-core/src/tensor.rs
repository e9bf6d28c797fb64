//! The Tensor handle: a backend storage handle plus shape and dtype.
//!
//! A `Tensor` is a *handle*: `clone()` is cheap and aliases the same device memory (as a
//! PyTorch tensor view does). In-place ops (the methods ending in `_`) write through any
//! handle; use [`crate::Backend::copy_`] or [`crate::Backend::duplicate`] for a deep copy.

use crate::{Backend, DType, Error, Result, Shape};

/// A typed, shaped handle to memory owned by backend `B` (see the [module docs](self)).
/// Tensors are made by the backend ([`Backend::zeros`], [`Backend::upload_f32`], the ops) and
/// read back with [`Backend::download_f32`] / [`Backend::download_u32`]. The element order is
/// row-major over [`Tensor::dims`] (NCHW for images).
///
/// ```
/// # fn main() -> perturb_core::Result<()> {
/// use perturb_core::{Backend, DType, Shape};
///
/// let b = perturb_cpu::CpuBackend::new();
/// let t = b.upload_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &Shape::from([2, 3]))?;
/// assert_eq!((t.dims(), t.numel(), t.dtype()), (&[2, 3][..], 6, DType::F32));
///
/// // A reshape is a view: it aliases the same memory, as does clone().
/// let flat = t.reshape([6])?;
/// b.fill_(&flat, 0.5)?;
/// assert_eq!(b.download_f32(&t)?, [0.5; 6]);
/// assert!(t.reshape([4]).is_err()); // 6 elements cannot be viewed as 4
///
/// // duplicate() is the deep copy.
/// let copy = b.duplicate(&t)?;
/// b.fill_(&t, 2.0)?;
/// assert_eq!(b.download_f32(&copy)?, [0.5; 6]);
/// # Ok(())
/// # }
/// ```
pub struct Tensor<B: Backend> {
    storage: B::Storage,
    shape: Shape,
    dtype: DType,
}

impl<B: Backend> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        Tensor { storage: self.storage.clone(), shape: self.shape.clone(), dtype: self.dtype }
    }
}

impl<B: Backend> std::fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor<{}>({}, {})", std::any::type_name::<B>(), self.shape, self.dtype)
    }
}

impl<B: Backend> Tensor<B> {
    /// Wraps a storage handle; backends call this, users get tensors from the backend.
    pub fn from_storage(storage: B::Storage, shape: Shape, dtype: DType) -> Self {
        Tensor { storage, shape, dtype }
    }
    /// The backend's storage handle (for backend implementations).
    pub fn storage(&self) -> &B::Storage {
        &self.storage
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// The dimensions, outermost first (`self.shape().dims()`).
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    /// A handle with another shape over the same memory (no copy). [`Error::Shape`] if the
    /// element counts differ.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != self.shape.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {} ({} elements) as {}", self.shape, self.numel(), shape),
            ));
        }
        Ok(Tensor { storage: self.storage.clone(), shape, dtype: self.dtype })
    }
    /// Checks the dtype: [`Error::DType`] naming `op` on a mismatch.
    pub fn expect_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::DType { op, expected: dtype, got: self.dtype, shape: self.shape.clone() });
        }
        Ok(())
    }
    /// Checks the exact shape: [`Error::Shape`] naming `op` and the argument `what` on a mismatch.
    pub fn expect_shape(&self, op: &'static str, what: &str, dims: &[usize]) -> Result<()> {
        if self.shape.dims() != dims {
            return Err(Error::shape(op, format!("{what} has shape {}, expected {}", self.shape, Shape::from(dims))));
        }
        Ok(())
    }
    /// Checks the element count: [`Error::Shape`] naming `op` and the argument `what` on a
    /// mismatch.
    pub fn expect_numel(&self, op: &'static str, what: &str, n: usize) -> Result<()> {
        if self.numel() != n {
            return Err(Error::shape(
                op,
                format!("{what} has shape {} ({} elements), expected {n} elements", self.shape, self.numel()),
            ));
        }
        Ok(())
    }
}
