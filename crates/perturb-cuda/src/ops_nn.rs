//! The layer ops: convolution, linear, bias, ReLU, max-pool and the fused loss. Each validates
//! its operands (dtype and element counts against the parameter struct), allocates its output
//! from the pool and queues the selected variant; nothing here waits for the device.

use crate::backend::{CudaBackend, buf};
use crate::check::{self, f32_dims, f32_numel};
use crate::kernels as k;
use crate::pool::LabelBound;
use cudarc::driver::LaunchConfig;
use perturb_core::ops::{BiasParams, Conv2dParams, EltParams, LinearParams, Pool2dParams, RowParams, XentParams};
use perturb_core::{DType, Error, Op, Result, Shape, Tensor};
use std::sync::atomic::Ordering;

type T = Tensor<CudaBackend>;

fn prod(d: [usize; 4]) -> usize {
    d.iter().product()
}

fn cfg(grid: (usize, usize, usize), block: u32, op: &'static str) -> Result<LaunchConfig> {
    let fit = |v: usize, max: usize| {
        if v == 0 || v > max {
            Err(Error::Unsupported { backend: "cuda", what: format!("{op}: a grid of {grid:?} blocks") })
        } else {
            Ok(v as u32)
        }
    };
    Ok(LaunchConfig {
        grid_dim: (fit(grid.0, i32::MAX as usize)?, fit(grid.1, 65_535)?, fit(grid.2, 65_535)?),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Conv tiles of kernels/conv2d.cu v2.
const CV_TILE: usize = 64;
/// GEMM tiles of kernels/gemm.cu v2 and v3.
const G2_TILE: usize = 128;
const G3_TILE: usize = 64;

impl CudaBackend {
    pub(crate) fn conv2d_fwd_impl(&self, x: &T, w: &T, p: &Conv2dParams) -> Result<T> {
        const OP: &str = "conv2d_fwd";
        check::conv(OP, p)?;
        let (xl, wl, yl) = (prod(p.input_dims()), prod(p.weight_dims()), prod(p.output_dims()));
        f32_dims(OP, "input x", x, &p.input_dims())?;
        f32_dims(OP, "weight w", w, &p.weight_dims())?;
        let y = self.alloc(&Shape::from(p.output_dims()), DType::F32)?;
        let kern = self.variant_kernel(Op::Conv2dFwd)?;
        let bufs = [buf(x, xl), buf(w, wl), buf(&y, yl)];
        let c = match self.variant(Op::Conv2dFwd) {
            1 => self.grid_1d(yl, 256),
            _ => {
                let n = p.n as usize * p.h_out as usize * p.w_out as usize;
                cfg((n.div_ceil(CV_TILE), (p.c_out as usize).div_ceil(CV_TILE), 1), 256, OP)?
            }
        };
        self.launch(kern, c, &bufs, p, &[])?;
        Ok(y)
    }

    pub(crate) fn conv2d_bwd_input_impl(&self, dy: &T, w: &T, p: &Conv2dParams) -> Result<T> {
        const OP: &str = "conv2d_bwd_input";
        check::conv(OP, p)?;
        let (xl, wl, yl) = (prod(p.input_dims()), prod(p.weight_dims()), prod(p.output_dims()));
        f32_dims(OP, "output gradient dy", dy, &p.output_dims())?;
        f32_dims(OP, "weight w", w, &p.weight_dims())?;
        let dx = self.alloc(&Shape::from(p.input_dims()), DType::F32)?;
        let kern = self.variant_kernel(Op::Conv2dBwdInput)?;
        let bufs = [buf(dy, yl), buf(w, wl), buf(&dx, xl)];
        let c = match self.variant(Op::Conv2dBwdInput) {
            1 => self.grid_1d(xl, 256),
            _ => {
                let n = p.n as usize * p.h as usize * p.w as usize;
                cfg((n.div_ceil(CV_TILE), (p.c_in as usize).div_ceil(CV_TILE), 1), 256, OP)?
            }
        };
        self.launch(kern, c, &bufs, p, &[])?;
        Ok(dx)
    }

    pub(crate) fn conv2d_bwd_weight_impl(&self, x: &T, dy: &T, p: &Conv2dParams) -> Result<T> {
        const OP: &str = "conv2d_bwd_weight";
        check::conv(OP, p)?;
        let (xl, wl, yl) = (prod(p.input_dims()), prod(p.weight_dims()), prod(p.output_dims()));
        f32_dims(OP, "input x", x, &p.input_dims())?;
        f32_dims(OP, "output gradient dy", dy, &p.output_dims())?;
        let dw = self.alloc(&Shape::from(p.weight_dims()), DType::F32)?;
        if self.variant(Op::Conv2dBwdWeight) == 1 {
            self.launch(
                k::CONV2D_BWD_WEIGHT_V1,
                self.grid_1d(wl, 256),
                &[buf(x, xl), buf(dy, yl), buf(&dw, wl)],
                p,
                &[],
            )?;
            return Ok(dw);
        }
        // The reduction (n * h_out * w_out) is long and the output small, so split it over
        // grid.z; the split depends on the shape only, so results do not vary across devices.
        let (m, n) = (p.c_out as usize, p.patch_len());
        let kk = yl / m;
        let (k_chunk, splits) = bwd_weight_split(m, n, kk);
        let grid = (n.div_ceil(CV_TILE), m.div_ceil(CV_TILE), splits);
        let chunk = u32::try_from(k_chunk).map_err(|_| Error::invalid(OP, "reduction too long"))?;
        if splits == 1 {
            self.launch(
                k::CONV2D_BWD_WEIGHT_V2,
                cfg(grid, 256, OP)?,
                &[buf(x, xl), buf(dy, yl), buf(&dw, wl)],
                p,
                &[chunk],
            )?;
            return Ok(dw);
        }
        let partial = self.alloc(&Shape::from([splits, wl]), DType::F32)?;
        self.launch(
            k::CONV2D_BWD_WEIGHT_V2,
            cfg(grid, 256, OP)?,
            &[buf(x, xl), buf(dy, yl), buf(&partial, splits * wl)],
            p,
            &[chunk],
        )?;
        // partial viewed as [splits, wl], summed over rows in order.
        let rows = RowParams::new(splits, wl)?;
        self.launch(
            k::CONV2D_BWD_WEIGHT_V2_REDUCE,
            self.grid_1d(wl, 256),
            &[buf(&partial, splits * wl), buf(&dw, wl)],
            &rows,
            &[],
        )?;
        Ok(dw)
    }

    /// Queues the selected GEMM variant for `op`; (a, b) are the kernel's first two operands
    /// in its declared order (fwd: x, w; bwd_input: dy, w; bwd_weight: x, dy), already checked.
    fn linear_launch(&self, op: Op, a: &T, b: &T, out: &T, p: &LinearParams) -> Result<()> {
        let (m, k, n) = (p.m as usize, p.k as usize, p.n as usize);
        // Output rows and columns of the product each direction computes.
        let (rows, cols) = match op {
            Op::LinearBwdInput => (m, k),
            Op::LinearBwdWeight => (n, k),
            _ => (m, n),
        };
        let kern = self.variant_kernel(op)?;
        let c = match self.variant(op) {
            1 => LaunchConfig {
                block_dim: (16, 16, 1),
                ..cfg((cols.div_ceil(16), rows.div_ceil(16), 1), 256, op.name())?
            },
            3 => cfg((cols.div_ceil(G3_TILE), rows.div_ceil(G3_TILE), 1), 128, op.name())?,
            _ => cfg((cols.div_ceil(G2_TILE), rows.div_ceil(G2_TILE), 1), 256, op.name())?,
        };
        self.launch(kern, c, &[buf(a, a.numel()), buf(b, b.numel()), buf(out, rows * cols)], p, &[])
    }

    pub(crate) fn linear_fwd_impl(&self, x: &T, w: &T, p: &LinearParams) -> Result<T> {
        const OP: &str = "linear_fwd";
        check::linear(OP, p)?;
        let (m, kd, n) = (p.m as usize, p.k as usize, p.n as usize);
        f32_dims(OP, "input x", x, &[m, kd])?;
        f32_dims(OP, "weight w", w, &[n, kd])?;
        let y = self.alloc(&Shape::from([m, n]), DType::F32)?;
        self.linear_launch(Op::LinearFwd, x, w, &y, p)?;
        Ok(y)
    }

    pub(crate) fn linear_bwd_input_impl(&self, dy: &T, w: &T, p: &LinearParams) -> Result<T> {
        const OP: &str = "linear_bwd_input";
        check::linear(OP, p)?;
        let (m, kd, n) = (p.m as usize, p.k as usize, p.n as usize);
        f32_dims(OP, "output gradient dy", dy, &[m, n])?;
        f32_dims(OP, "weight w", w, &[n, kd])?;
        let dx = self.alloc(&Shape::from([m, kd]), DType::F32)?;
        self.linear_launch(Op::LinearBwdInput, dy, w, &dx, p)?;
        Ok(dx)
    }

    pub(crate) fn linear_bwd_weight_impl(&self, x: &T, dy: &T, p: &LinearParams) -> Result<T> {
        const OP: &str = "linear_bwd_weight";
        check::linear(OP, p)?;
        let (m, kd, n) = (p.m as usize, p.k as usize, p.n as usize);
        f32_dims(OP, "input x", x, &[m, kd])?;
        f32_dims(OP, "output gradient dy", dy, &[m, n])?;
        let dw = self.alloc(&Shape::from([n, kd]), DType::F32)?;
        self.linear_launch(Op::LinearBwdWeight, x, dy, &dw, p)?;
        Ok(dw)
    }

    pub(crate) fn bias_add_impl(&self, y: &T, b: &T, p: &BiasParams) -> Result<T> {
        const OP: &str = "bias_add";
        check::bias(OP, p)?;
        f32_numel(OP, "y", y, p.len())?;
        f32_numel(OP, "bias b", b, p.channels as usize)?;
        let out = self.alloc(y.shape(), DType::F32)?;
        let bufs = [buf(y, p.len()), buf(b, p.channels as usize), buf(&out, p.len())];
        self.launch(k::BIAS_ADD_V1, self.grid_1d(p.len(), 256), &bufs, p, &[])?;
        Ok(out)
    }

    pub(crate) fn bias_grad_impl(&self, dy: &T, p: &BiasParams) -> Result<T> {
        const OP: &str = "bias_grad";
        check::bias(OP, p)?;
        f32_numel(OP, "dy", dy, p.len())?;
        let c = p.channels as usize;
        let db = self.alloc(&Shape::from([c]), DType::F32)?;
        self.launch(k::BIAS_GRAD_V1, cfg((c, 1, 1), 256, OP)?, &[buf(dy, p.len()), buf(&db, c)], p, &[])?;
        Ok(db)
    }

    pub(crate) fn relu_fwd_impl(&self, x: &T) -> Result<T> {
        x.expect_dtype("relu_fwd", DType::F32)?;
        let n = x.numel();
        let y = self.alloc(x.shape(), DType::F32)?;
        let p = EltParams::new(n, 0.0, 0.0)?;
        self.launch(k::RELU_FWD_V1, self.grid_1d(n / 4 + 1, 256), &[buf(x, n), buf(&y, n)], &p, &[])?;
        Ok(y)
    }

    pub(crate) fn relu_bwd_impl(&self, dy: &T, x: &T) -> Result<T> {
        const OP: &str = "relu_bwd";
        if dy.shape() != x.shape() {
            return Err(Error::shape(OP, format!("dy {} and x {} differ", dy.shape(), x.shape())));
        }
        let n = check::same_numel(OP, dy, x)?;
        let dx = self.alloc(dy.shape(), DType::F32)?;
        let p = EltParams::new(n, 0.0, 0.0)?;
        self.launch(k::RELU_BWD_V1, self.grid_1d(n / 4 + 1, 256), &[buf(dy, n), buf(x, n), buf(&dx, n)], &p, &[])?;
        Ok(dx)
    }

    pub(crate) fn maxpool2d_fwd_impl(&self, x: &T, p: &Pool2dParams) -> Result<T> {
        const OP: &str = "maxpool2d_fwd";
        check::pool(OP, p)?;
        let (il, ol) = (prod(p.input_dims()), prod(p.output_dims()));
        f32_dims(OP, "input x", x, &p.input_dims())?;
        let y = self.alloc(&Shape::from(p.output_dims()), DType::F32)?;
        self.launch(k::MAXPOOL2D_FWD_V1, self.grid_1d(ol, 256), &[buf(x, il), buf(&y, ol)], p, &[])?;
        Ok(y)
    }

    pub(crate) fn maxpool2d_bwd_impl(&self, dy: &T, x: &T, p: &Pool2dParams) -> Result<T> {
        const OP: &str = "maxpool2d_bwd";
        check::pool(OP, p)?;
        let (il, ol) = (prod(p.input_dims()), prod(p.output_dims()));
        f32_dims(OP, "output gradient dy", dy, &p.output_dims())?;
        f32_dims(OP, "input x", x, &p.input_dims())?;
        let dx = self.alloc(&Shape::from(p.input_dims()), DType::F32)?;
        self.launch(k::MAXPOOL2D_BWD_V1, self.grid_1d(il, 256), &[buf(dy, ol), buf(x, il), buf(&dx, il)], p, &[])?;
        Ok(dx)
    }

    pub(crate) fn softmax_xent_impl(&self, logits: &T, labels: &T, p: &XentParams) -> Result<(T, T)> {
        const OP: &str = "softmax_xent";
        check::xent(OP, p)?;
        let (n, c) = (p.n as usize, p.classes as usize);
        f32_dims(OP, "logits", logits, &[n, c])?;
        labels.expect_dtype(OP, DType::U32)?;
        labels.expect_numel(OP, "labels", n)?;
        // Labels the host has seen (uploads, copies) are checked here, synchronously; labels a
        // kernel wrote (argmax) and whose bound is not below `classes` are checked on the
        // device, and an out-of-range one is reported at the next sync.
        let bound = labels.storage().label_bound();
        if let Some(LabelBound { max, at: Some(i) }) = bound
            && max >= p.classes
        {
            return Err(Error::invalid(OP, format!("label {max} at index {i} is out of range for {c} classes")));
        }
        let proven = bound.is_some_and(|b| b.max < p.classes);
        let losses = self.alloc(&Shape::from([n]), DType::F32)?;
        let dlogits = self.alloc(logits.shape(), DType::F32)?;
        let flag = crate::backend::Buf { storage: &self.inner.err_flag, elems: 1 };
        let bufs = [buf(logits, n * c), buf(labels, n), buf(&losses, n), buf(&dlogits, n * c), flag];
        // One warp per row, 8 rows per block.
        self.launch(k::SOFTMAX_XENT_V1, cfg((n.div_ceil(8), 1, 1), 256, OP)?, &bufs, p, &[])?;
        if !proven {
            self.inner.err_armed.store(true, Ordering::Release);
        }
        Ok((losses, dlogits))
    }
}

/// How conv2d_bwd_weight v2 splits its reduction of length `k` for an [m, n] output:
/// (chunk length, a multiple of the 16-deep k-step; number of chunks). Aims at about 256
/// blocks in all, never a chunk shorter than 512, at most 64 chunks.
pub(crate) fn bwd_weight_split(m: usize, n: usize, k: usize) -> (usize, usize) {
    let tiles = m.div_ceil(CV_TILE) * n.div_ceil(CV_TILE);
    let max_splits = (k / 512).clamp(1, 64);
    let want = (256 / tiles.max(1)).clamp(1, max_splits);
    let chunk = k.div_ceil(want).div_ceil(16) * 16;
    (chunk, k.div_ceil(chunk))
}

#[cfg(test)]
mod tests {
    use super::bwd_weight_split;

    #[test]
    fn split_covers_the_reduction_with_nonempty_chunks() {
        for (m, n, k) in
            [(64, 288, 128 * 24 * 24), (16, 9, 13 * 26 * 26), (256, 2304, 256 * 8 * 8), (3, 3, 5), (1, 1, 1)]
        {
            let (chunk, splits) = bwd_weight_split(m, n, k);
            assert!(chunk % 16 == 0 && chunk > 0 && (1..=64).contains(&splits));
            assert!(chunk * splits >= k, "{m} {n} {k}: covers");
            assert!(chunk * (splits - 1) < k, "{m} {n} {k}: the last chunk is not empty");
        }
        assert_eq!(bwd_weight_split(256, 2304, 16384).1, 1, "enough tiles: no split");
    }
}
