//! perturb-core: the vocabulary every backend and every layer above it shares.
//!
//! - [`Shape`], [`DType`] and the [`Tensor`] handle;
//! - the [`Backend`] trait, one method per kernel-level op (backward ops first-class);
//! - the op registry ([`Op`], the `#[repr(C)]` parameter structs in [`ops`], and
//!   [`Work`] — the one place FLOPs and bytes are counted);
//! - [`Error`], [`Tolerance`] and [`assert_close`];
//! - the counter-based Philox RNG ([`rng`]) that every backend reproduces;
//! - [`naive`]: every op as plain f64 loops, the oracle tests and benches check kernels against.

#![warn(missing_docs)]

pub mod backend;
pub mod dtype;
pub mod error;
pub mod naive;
pub mod ops;
pub mod rng;
pub mod shape;
pub mod tensor;
pub mod tolerance;

pub use backend::Backend;
pub use dtype::DType;
pub use error::{Error, Result};
pub use ops::{Op, Work};
pub use shape::Shape;
pub use tensor::Tensor;
pub use tolerance::{CloseReport, Tolerance, assert_close, check_close};
