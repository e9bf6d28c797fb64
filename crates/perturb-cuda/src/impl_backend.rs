//! `impl Backend for CudaBackend`: memory methods here, every op delegating to its typed
//! wrapper in ops_nn.rs / ops_vec.rs.

use crate::backend::CudaBackend;
use crate::device::driver_err;
use crate::pool::{CudaStorage, LabelBound};
use perturb_core::ops::{
    AdamParams, BiasParams, Conv2dParams, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use perturb_core::{Backend, DType, Error, Result, Shape, Tensor};

type T = Tensor<CudaBackend>;

impl Backend for CudaBackend {
    type Storage = CudaStorage;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn device_name(&self) -> String {
        let s = self.summary();
        format!(
            "{} (sm_{}, {} SMs, {:.0} GiB, driver CUDA {}.{}, kernels {})",
            s.name,
            s.sm(),
            s.multiprocessors,
            s.total_memory as f64 / (1u64 << 30) as f64,
            s.driver_version.0,
            s.driver_version.1,
            self.target().arch_flag()
        )
    }

    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<T> {
        let t = self.alloc_unfilled(shape, dtype)?;
        self.memset32(t.storage(), 0, (shape.numel() * dtype.size()).div_ceil(4))?;
        if dtype == DType::U32 && shape.numel() > 0 {
            t.storage().set_label_bound(Some(LabelBound { max: 0, at: Some(0) }));
        }
        Ok(t)
    }

    fn upload_f32(&self, data: &[f32], shape: &Shape) -> Result<T> {
        self.upload(data, shape, DType::F32)
    }

    fn upload_u32(&self, data: &[u32], shape: &Shape) -> Result<T> {
        let t = self.upload(data, shape, DType::U32)?;
        // Remember the largest value and where it first occurs, so softmax_xent can reject an
        // out-of-range label without reading the labels back.
        let first_max = data.iter().enumerate().fold(None, |best: Option<(usize, u32)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        });
        let bound = first_max.and_then(|(i, v)| Some(LabelBound { max: v, at: Some(u32::try_from(i).ok()?) }));
        t.storage().set_label_bound(bound);
        Ok(t)
    }

    fn download_f32(&self, t: &T) -> Result<Vec<f32>> {
        let n = t.numel();
        match t.dtype() {
            DType::F32 => {
                let mut out = vec![0f32; n];
                self.download_into(t.storage(), &mut out)?;
                Ok(out)
            }
            DType::F16 | DType::BF16 => {
                let mut raw = vec![0u16; n];
                self.download_into(t.storage(), &mut raw)?;
                Ok(if t.dtype() == DType::F16 {
                    raw.into_iter().map(|b| half::f16::from_bits(b).to_f32()).collect()
                } else {
                    raw.into_iter().map(|b| half::bf16::from_bits(b).to_f32()).collect()
                })
            }
            DType::U32 => Err(Error::DType {
                op: "download_f32",
                expected: DType::F32,
                got: DType::U32,
                shape: t.shape().clone(),
            }),
        }
    }

    fn download_u32(&self, t: &T) -> Result<Vec<u32>> {
        t.expect_dtype("download_u32", DType::U32)?;
        let mut out = vec![0u32; t.numel()];
        self.download_into(t.storage(), &mut out)?;
        Ok(out)
    }

    fn copy_(&self, dst: &T, src: &T) -> Result<()> {
        src.expect_dtype("copy_", dst.dtype())?;
        src.expect_numel("copy_", "src", dst.numel())?;
        let bytes = dst.numel() * dst.dtype().size();
        if bytes == 0 || dst.storage().ptr() == src.storage().ptr() {
            return Ok(());
        }
        if dst.storage().capacity() < bytes || src.storage().capacity() < bytes {
            return Err(Error::Device { backend: "cuda", msg: format!("copy_ of {bytes} bytes exceeds a block") });
        }
        self.inner.ctx.bind_to_thread().map_err(|e| driver_err("binding the context", e))?;
        // SAFETY: both blocks are live and hold at least `bytes` bytes (checked above); the
        // copy is ordered on the backend's one stream after every kernel already queued.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                dst.storage().ptr(),
                src.storage().ptr(),
                bytes,
                self.inner.stream.cu_stream(),
            )
        }
        .map_err(|e| driver_err("copy_", e))?;
        dst.storage().set_label_bound(src.storage().label_bound());
        Ok(())
    }

    fn fill_(&self, dst: &T, value: f32) -> Result<()> {
        dst.expect_dtype("fill_", DType::F32)?;
        self.memset32(dst.storage(), value.to_bits(), dst.numel())
    }

    fn synchronize(&self) -> Result<()> {
        self.sync_and_check()
    }

    fn conv2d_fwd(&self, x: &T, w: &T, p: &Conv2dParams) -> Result<T> {
        self.conv2d_fwd_impl(x, w, p)
    }
    fn conv2d_bwd_input(&self, dy: &T, w: &T, p: &Conv2dParams) -> Result<T> {
        self.conv2d_bwd_input_impl(dy, w, p)
    }
    fn conv2d_bwd_weight(&self, x: &T, dy: &T, p: &Conv2dParams) -> Result<T> {
        self.conv2d_bwd_weight_impl(x, dy, p)
    }
    fn linear_fwd(&self, x: &T, w: &T, p: &LinearParams) -> Result<T> {
        self.linear_fwd_impl(x, w, p)
    }
    fn linear_bwd_input(&self, dy: &T, w: &T, p: &LinearParams) -> Result<T> {
        self.linear_bwd_input_impl(dy, w, p)
    }
    fn linear_bwd_weight(&self, x: &T, dy: &T, p: &LinearParams) -> Result<T> {
        self.linear_bwd_weight_impl(x, dy, p)
    }
    fn bias_add(&self, y: &T, b: &T, p: &BiasParams) -> Result<T> {
        self.bias_add_impl(y, b, p)
    }
    fn bias_grad(&self, dy: &T, p: &BiasParams) -> Result<T> {
        self.bias_grad_impl(dy, p)
    }
    fn relu_fwd(&self, x: &T) -> Result<T> {
        self.relu_fwd_impl(x)
    }
    fn relu_bwd(&self, dy: &T, x: &T) -> Result<T> {
        self.relu_bwd_impl(dy, x)
    }
    fn maxpool2d_fwd(&self, x: &T, p: &Pool2dParams) -> Result<T> {
        self.maxpool2d_fwd_impl(x, p)
    }
    fn maxpool2d_bwd(&self, dy: &T, x: &T, p: &Pool2dParams) -> Result<T> {
        self.maxpool2d_bwd_impl(dy, x, p)
    }
    fn softmax_xent(&self, logits: &T, labels: &T, p: &XentParams) -> Result<(T, T)> {
        self.softmax_xent_impl(logits, labels, p)
    }
    fn axpby(&self, x: &T, y: &T, p: &EltParams) -> Result<T> {
        self.axpby_impl(x, y, p)
    }
    fn mul(&self, x: &T, y: &T) -> Result<T> {
        self.mul_impl(x, y)
    }
    fn sum_rows(&self, x: &T, p: &RowParams) -> Result<T> {
        self.sum_rows_impl(x, p)
    }
    fn argmax_rows(&self, x: &T, p: &RowParams) -> Result<T> {
        self.argmax_rows_impl(x, p)
    }
    fn sign_step_(&self, x: &T, g: &T, p: &StepParams) -> Result<()> {
        self.sign_step_impl(x, g, p)
    }
    fn step_project_linf_(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        self.step_project_linf_impl(x, g, x0, p)
    }
    fn step_project_l2_(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        self.step_project_l2_impl(x, g, x0, p)
    }
    fn sgd_update_(&self, w: &T, g: &T, m: &T, p: &SgdParams) -> Result<()> {
        self.sgd_update_impl(w, g, m, p)
    }
    fn adam_update_(&self, w: &T, g: &T, m: &T, v: &T, p: &AdamParams) -> Result<()> {
        self.adam_update_impl(w, g, m, v, p)
    }
    fn rng_fill_(&self, dst: &T, p: &RngParams) -> Result<()> {
        self.rng_fill_impl(dst, p)
    }
}
