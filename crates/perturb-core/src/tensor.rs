//! The Tensor handle: a backend storage handle plus shape and dtype.
//!
//! A `Tensor` is a *handle*: `clone()` is cheap and aliases the same device memory (as a
//! PyTorch tensor view does). In-place ops (the methods ending in `_`) write through any
//! handle; use [`crate::Backend::copy_`] or [`crate::Backend::duplicate`] for a deep copy.

use crate::{Backend, DType, Error, Result, Shape};

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
    pub fn storage(&self) -> &B::Storage {
        &self.storage
    }
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    /// A handle with another shape over the same memory (no copy). Errors if the element
    /// counts differ.
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
    /// Checks the dtype, naming the op on failure.
    pub fn expect_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::DType { op, expected: dtype, got: self.dtype, shape: self.shape.clone() });
        }
        Ok(())
    }
    /// Checks the exact shape, naming the op and the argument on failure.
    pub fn expect_shape(&self, op: &'static str, what: &str, dims: &[usize]) -> Result<()> {
        if self.shape.dims() != dims {
            return Err(Error::shape(op, format!("{what} has shape {}, expected {}", self.shape, Shape::from(dims))));
        }
        Ok(())
    }
    /// Checks the element count, naming the op and the argument on failure.
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
