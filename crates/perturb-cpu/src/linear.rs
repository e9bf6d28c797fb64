//! Fully connected layer without bias, x [m, k], w [n, k], y [m, n]: the forward and (up to
//! 256 outputs) the input gradient by the register-blocked kernels of [`crate::dense`], the
//! rest as gemms.
//!
//! The weight gradient sums over the batch, so it is cut into fixed chunks of
//! [`WGRAD_ROWS`] rows whose partials are added in chunk order (thread-count independent).

use crate::dense;
use crate::matmul::{MatMut, MatRef, Par, chunked_sum, sgemm};
use crate::storage::{CpuTensor, alloc_f32, with_f32};
use crate::wrap_f32;
use perturb_core::ops::LinearParams;
use perturb_core::{Error, Result};

/// Batch rows per weight-gradient partial.
pub const WGRAD_ROWS: usize = 256;

/// Whether the register-blocked input gradient of [`dense`] takes a product (else gemm): up
/// to 256 outputs. With more, each step of its sum over outputs reads another row of w, and
/// gemm's packed product is faster (8.1 vs 5.9 ms at m128 k3136 n1024; 0.35 vs 0.38 ms at
/// m158 k1568 n100, this machine, docs/bench.md). The forward always takes it.
fn dense_input_grad(n: usize) -> bool {
    n <= 256
}

fn dims(op: &'static str, p: &LinearParams) -> Result<(usize, usize, usize)> {
    let q = LinearParams::new(p.m as usize, p.k as usize, p.n as usize)?;
    if q != *p {
        return Err(Error::invalid(op, format!("inconsistent LinearParams {p:?}")));
    }
    Ok((p.m as usize, p.k as usize, p.n as usize))
}

/// y [m, n] = x [m, k] · w [n, k]ᵀ.
pub(crate) fn fwd(x: &CpuTensor, w: &CpuTensor, p: &LinearParams) -> Result<CpuTensor> {
    const OP: &str = "linear_fwd";
    let (m, k, n) = dims(OP, p)?;
    x.expect_shape(OP, "input x", &[m, k])?;
    w.expect_shape(OP, "weight w", &[n, k])?;
    let mut y = alloc_f32(OP, &[m, n])?;
    with_f32(OP, &[x, w], &[], |r, _| {
        dense::fwd(m, k, n, r[0], r[1], &mut y);
        Ok(())
    })?;
    wrap_f32(y, [m, n])
}

/// dx [m, k] = dy [m, n] · w [n, k].
pub(crate) fn bwd_input(dy: &CpuTensor, w: &CpuTensor, p: &LinearParams) -> Result<CpuTensor> {
    const OP: &str = "linear_bwd_input";
    let (m, k, n) = dims(OP, p)?;
    dy.expect_shape(OP, "output gradient dy", &[m, n])?;
    w.expect_shape(OP, "weight w", &[n, k])?;
    let mut dx = alloc_f32(OP, &[m, k])?;
    with_f32(OP, &[dy, w], &[], |r, _| {
        if dense_input_grad(n) {
            dense::bwd_input(m, k, n, r[0], r[1], &mut dx);
            return Ok(());
        }
        sgemm(
            [m, k, n],
            MatMut { data: &mut dx, rs: k, cs: 1 },
            MatRef { data: r[0], rs: n, cs: 1 },
            MatRef { data: r[1], rs: k, cs: 1 },
            false,
            Par::Pool,
        )
    })?;
    wrap_f32(dx, [m, k])
}

/// dw [n, k] = dy [m, n]ᵀ · x [m, k], summed over fixed chunks of rows.
pub(crate) fn bwd_weight(x: &CpuTensor, dy: &CpuTensor, p: &LinearParams) -> Result<CpuTensor> {
    const OP: &str = "linear_bwd_weight";
    let (m, k, n) = dims(OP, p)?;
    x.expect_shape(OP, "input x", &[m, k])?;
    dy.expect_shape(OP, "output gradient dy", &[m, n])?;
    let mut dw = alloc_f32(OP, &[n, k])?;
    with_f32(OP, &[x, dy], &[], |r, _| {
        let (xs, dys) = (r[0], r[1]);
        chunked_sum(m.div_ceil(WGRAD_ROWS), &mut dw, |c, part, par| {
            let (r0, r1) = (c * WGRAD_ROWS, ((c + 1) * WGRAD_ROWS).min(m));
            sgemm(
                [n, k, r1 - r0],
                MatMut { data: part, rs: k, cs: 1 },
                MatRef { data: &dys[r0 * n..r1 * n], rs: 1, cs: n },
                MatRef { data: &xs[r0 * k..r1 * k], rs: k, cs: 1 },
                false,
                par,
            )
        })
    })?;
    wrap_f32(dw, [n, k])
}
