//! Operand and parameter checks, the same the CPU reference makes: parameter structs have
//! public fields, so each is re-derived through its constructor and must come out identical
//! (a hand-made struct with a wrong output size is an Err, not an out-of-bounds kernel).

use crate::backend::CudaBackend;
use perturb_core::ops::{BiasParams, Conv2dParams, LinearParams, Pool2dParams, RowParams, StepParams, XentParams};
use perturb_core::{DType, Error, Result, Tensor};

type T = Tensor<CudaBackend>;

fn same<P: PartialEq + std::fmt::Debug>(op: &'static str, given: &P, derived: P) -> Result<()> {
    if *given != derived {
        return Err(Error::invalid(op, format!("inconsistent parameters {given:?}: they derive as {derived:?}")));
    }
    Ok(())
}

pub(crate) fn conv(op: &'static str, p: &Conv2dParams) -> Result<()> {
    same(op, p, Conv2dParams::new(p.input_dims(), p.weight_dims(), p.stride as usize, p.pad as usize)?)
}
pub(crate) fn pool(op: &'static str, p: &Pool2dParams) -> Result<()> {
    same(op, p, Pool2dParams::new(p.input_dims(), p.k as usize, p.stride as usize)?)
}
pub(crate) fn linear(op: &'static str, p: &LinearParams) -> Result<()> {
    same(op, p, LinearParams::new(p.m as usize, p.k as usize, p.n as usize)?)
}
pub(crate) fn bias(op: &'static str, p: &BiasParams) -> Result<()> {
    same(op, p, BiasParams::new(p.outer as usize, p.channels as usize, p.inner as usize)?)
}
pub(crate) fn rows(op: &'static str, p: &RowParams) -> Result<()> {
    same(op, p, RowParams::new(p.rows as usize, p.cols as usize)?)
}
pub(crate) fn xent(op: &'static str, p: &XentParams) -> Result<()> {
    same(op, p, XentParams::new(p.n as usize, p.classes as usize, p.grad_scale)?)
}
pub(crate) fn step(op: &'static str, p: &StepParams) -> Result<usize> {
    same(op, p, StepParams::new(p.n as usize, p.d as usize, p.alpha, p.eps, p.lo, p.hi)?)?;
    Ok(p.n as usize * p.d as usize)
}

/// An f32 operand with exactly these dimensions.
pub(crate) fn f32_dims(op: &'static str, what: &str, t: &T, dims: &[usize]) -> Result<()> {
    t.expect_dtype(op, DType::F32)?;
    t.expect_shape(op, what, dims)
}

/// An f32 operand with this many elements.
pub(crate) fn f32_numel(op: &'static str, what: &str, t: &T, n: usize) -> Result<()> {
    t.expect_dtype(op, DType::F32)?;
    t.expect_numel(op, what, n)
}

/// Two f32 operands with the same element count.
pub(crate) fn same_numel(op: &'static str, x: &T, y: &T) -> Result<usize> {
    x.expect_dtype(op, DType::F32)?;
    y.expect_dtype(op, DType::F32)?;
    if x.numel() != y.numel() {
        return Err(Error::shape(
            op,
            format!("x {} ({} elements) and y {} ({} elements) differ", x.shape(), x.numel(), y.shape(), y.numel()),
        ));
    }
    Ok(x.numel())
}
