//! Elementwise ops, row reductions, attack steps, optimiser updates and the RNG fill. Each
//! validates its operands against its parameter struct and queues one kernel; in-place ops
//! write through the handles they are given and allocate nothing.

use crate::backend::{CudaBackend, buf};
use crate::check::{self, f32_numel};
use crate::kernels as k;
use crate::pool::LabelBound;
use cudarc::driver::LaunchConfig;
use perturb_core::ops::{AdamParams, EltParams, RngParams, RowParams, SgdParams, StepParams};
use perturb_core::rng::counters_used;
use perturb_core::{DType, Error, Result, Shape, Tensor};

type T = Tensor<CudaBackend>;

/// Threads per block for the per-example L2 step: more for long examples.
fn l2_threads(d: usize) -> u32 {
    match d {
        0..=2047 => 128,
        2048..=16383 => 256,
        _ => 1024,
    }
}

impl CudaBackend {
    pub(crate) fn axpby_impl(&self, x: &T, y: &T, p: &EltParams) -> Result<T> {
        const OP: &str = "axpby";
        let n = check::same_numel(OP, x, y)?;
        x.expect_numel(OP, "x", p.len as usize)?;
        let out = self.alloc(x.shape(), DType::F32)?;
        self.launch(k::AXPBY_V1, self.grid_1d(n / 4 + 1, 256), &[buf(x, n), buf(y, n), buf(&out, n)], p, &[])?;
        Ok(out)
    }

    pub(crate) fn mul_impl(&self, x: &T, y: &T) -> Result<T> {
        const OP: &str = "mul";
        let n = check::same_numel(OP, x, y)?;
        let out = self.alloc(x.shape(), DType::F32)?;
        let p = EltParams::new(n, 0.0, 0.0)?;
        self.launch(k::MUL_V1, self.grid_1d(n / 4 + 1, 256), &[buf(x, n), buf(y, n), buf(&out, n)], &p, &[])?;
        Ok(out)
    }

    fn rows_launch(&self, kern: k::Kernel, op: &'static str, x: &T, p: &RowParams, dtype: DType) -> Result<T> {
        check::rows(op, p)?;
        let (r, c) = (p.rows as usize, p.cols as usize);
        x.expect_dtype(op, DType::F32)?;
        if x.numel() != r * c {
            return Err(Error::shape(
                op,
                format!("x {} has {} elements, not rows {r} x cols {c}", x.shape(), x.numel()),
            ));
        }
        let out = self.alloc(&Shape::from([r]), dtype)?;
        // One warp per row, 8 rows per 256-thread block.
        let cfg = LaunchConfig { grid_dim: (r.div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        self.launch(kern, cfg, &[buf(x, r * c), buf(&out, r)], p, &[])?;
        Ok(out)
    }

    pub(crate) fn sum_rows_impl(&self, x: &T, p: &RowParams) -> Result<T> {
        self.rows_launch(k::SUM_ROWS_V1, "sum_rows", x, p, DType::F32)
    }

    pub(crate) fn argmax_rows_impl(&self, x: &T, p: &RowParams) -> Result<T> {
        let out = self.rows_launch(k::ARGMAX_ROWS_V1, "argmax_rows", x, p, DType::U32)?;
        out.storage().set_label_bound(Some(LabelBound { max: p.cols - 1, at: None }));
        Ok(out)
    }

    pub(crate) fn sign_step_impl(&self, x: &T, g: &T, p: &StepParams) -> Result<()> {
        const OP: &str = "sign_step";
        let n = check::step(OP, p)?;
        f32_numel(OP, "x", x, n)?;
        f32_numel(OP, "g", g, n)?;
        self.launch(k::SIGN_STEP_V1, self.grid_1d(n / 4 + 1, 256), &[buf(x, n), buf(g, n)], p, &[])
    }

    pub(crate) fn step_project_linf_impl(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        const OP: &str = "step_project_linf";
        let n = check::step(OP, p)?;
        f32_numel(OP, "x", x, n)?;
        f32_numel(OP, "g", g, n)?;
        f32_numel(OP, "x0", x0, n)?;
        self.launch(k::STEP_PROJECT_LINF_V1, self.grid_1d(n / 4 + 1, 256), &[buf(x, n), buf(g, n), buf(x0, n)], p, &[])
    }

    pub(crate) fn step_project_l2_impl(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        const OP: &str = "step_project_l2";
        let n = check::step(OP, p)?;
        f32_numel(OP, "x", x, n)?;
        f32_numel(OP, "g", g, n)?;
        f32_numel(OP, "x0", x0, n)?;
        if p.n > i32::MAX as u32 {
            return Err(Error::Unsupported { backend: "cuda", what: format!("{OP}: batch {}", p.n) });
        }
        let cfg =
            LaunchConfig { grid_dim: (p.n, 1, 1), block_dim: (l2_threads(p.d as usize), 1, 1), shared_mem_bytes: 0 };
        self.launch(k::STEP_PROJECT_L2_V1, cfg, &[buf(x, n), buf(g, n), buf(x0, n)], p, &[])
    }

    pub(crate) fn sgd_update_impl(&self, w: &T, g: &T, m: &T, p: &SgdParams) -> Result<()> {
        const OP: &str = "sgd_update";
        let n = p.len as usize;
        f32_numel(OP, "w", w, n)?;
        f32_numel(OP, "g", g, n)?;
        f32_numel(OP, "m", m, n)?;
        self.launch(k::SGD_UPDATE_V1, self.grid_1d(n, 256), &[buf(w, n), buf(g, n), buf(m, n)], p, &[])
    }

    pub(crate) fn adam_update_impl(&self, w: &T, g: &T, m: &T, v: &T, p: &AdamParams) -> Result<()> {
        const OP: &str = "adam_update";
        let n = p.len as usize;
        f32_numel(OP, "w", w, n)?;
        f32_numel(OP, "g", g, n)?;
        f32_numel(OP, "m", m, n)?;
        f32_numel(OP, "v", v, n)?;
        self.launch(k::ADAM_UPDATE_V1, self.grid_1d(n, 256), &[buf(w, n), buf(g, n), buf(m, n), buf(v, n)], p, &[])
    }

    pub(crate) fn rng_fill_impl(&self, dst: &T, p: &RngParams) -> Result<()> {
        const OP: &str = "rng_fill";
        let n = p.len as usize;
        f32_numel(OP, "dst", dst, n)?;
        let blocks = counters_used(p.dist()?, n) as usize;
        self.launch(k::RNG_FILL_V1, self.grid_1d(blocks, 256), &[buf(dst, n)], p, &[])
    }
}
