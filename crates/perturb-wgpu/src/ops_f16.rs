//! f16 storage (`shaders/f16.wgsl`): casts between f32 and f16, and the forward GEMMs (linear,
//! conv2d) reading f16 inputs with f32 accumulation and an f32 output. Everything here needs
//! the adapter's `SHADER_F16`; without it the op is refused with an error naming the feature.

use crate::kernels::F16;
use crate::launch::{Launch, r, w};
use crate::ops_misc::T;
use crate::{BACKEND, WgpuBackend};
use bytemuck::bytes_of;
use perturb_core::ops::{Conv2dParams, EltParams, LinearParams};
use perturb_core::{DType, Error, Result, Tensor};

impl WgpuBackend {
    fn require_f16(&self, op: &'static str) -> Result<()> {
        if self.has_f16() {
            return Ok(());
        }
        Err(Error::Unsupported {
            backend: BACKEND,
            what: format!("{op}: f16 storage needs the SHADER_F16 feature, which {} lacks", self.adapter().name),
        })
    }

    /// A copy of `t` converted to `dtype`: f32 -> f16 (round to nearest) or f16 -> f32
    /// (exact); the same dtype gives a plain copy. f16 needs `SHADER_F16`.
    pub fn cast(&self, t: &T, dtype: DType) -> Result<T> {
        const OP: &str = "cast";
        let entry = match (t.dtype(), dtype) {
            (a, b) if a == b => return perturb_core::Backend::duplicate(self, t),
            (DType::F32, DType::F16) => "cast_f32_to_f16",
            (DType::F16, DType::F32) => "cast_f16_to_f32",
            (a, b) => return Err(Error::Unsupported { backend: BACKEND, what: format!("{OP} from {a} to {b}") }),
        };
        self.require_f16(OP)?;
        let n = t.numel();
        let out = Tensor::from_storage(self.alloc(OP, (n * dtype.size()) as u64)?, t.shape().clone(), dtype);
        if n == 0 {
            return Ok(out);
        }
        let p = EltParams::new(n, 0.0, 0.0)?;
        let binds = if dtype == DType::F16 {
            [r(1, t.storage()), w(4, out.storage())]
        } else {
            [r(2, t.storage()), w(3, out.storage())]
        };
        let groups = self.grid1(OP, (n as u64).div_ceil(256))?;
        let overrides = [("WG", 256.0)];
        self.launch(Launch {
            shader: &F16,
            entry,
            param_slot: 0,
            params: bytes_of(&p),
            binds: &binds,
            overrides: &overrides,
            groups,
        })?;
        Ok(out)
    }

    /// Both operands must be f16 (mixing is refused rather than silently widened).
    fn both_f16(op: &'static str, a: &T, b: &T) -> Result<()> {
        for t in [a, b] {
            t.expect_dtype(op, DType::F16)?;
        }
        Ok(())
    }

    /// linear_fwd with x and w in f16: f32 accumulation, f32 output (register-blocked, v1).
    pub(crate) fn linear_fwd_f16(&self, x: &T, wt: &T, p: &LinearParams) -> Result<T> {
        const OP: &str = "linear_fwd";
        self.require_f16(OP)?;
        Self::both_f16(OP, x, wt)?;
        let (m, k, n) = (p.m as usize, p.k as usize, p.n as usize);
        x.expect_shape(OP, "input x", &[m, k])?;
        wt.expect_shape(OP, "weight w", &[n, k])?;
        let out = self.out_f32(OP, [m, n])?;
        let groups = self.gemm_grid(OP, m as u64, n as u64, 32, 32)?;
        let binds = [r(8, x.storage()), r(9, wt.storage()), w(3, out.storage())];
        self.launch(Launch {
            shader: &F16,
            entry: "linear_fwd_f16_v1",
            param_slot: 6,
            params: bytes_of(p),
            binds: &binds,
            overrides: &[],
            groups,
        })?;
        Ok(out)
    }

    /// conv2d_fwd with x and w in f16: f32 accumulation, f32 output (register-blocked, v1).
    pub(crate) fn conv_fwd_f16(&self, x: &T, wt: &T, p: &Conv2dParams) -> Result<T> {
        const OP: &str = "conv2d_fwd";
        self.require_f16(OP)?;
        Self::both_f16(OP, x, wt)?;
        x.expect_shape(OP, "input x", &p.input_dims())?;
        wt.expect_shape(OP, "weight w", &p.weight_dims())?;
        let [n, c_out, ho, wo] = p.output_dims();
        let out = self.out_f32(OP, p.output_dims())?;
        let groups = self.gemm_grid(OP, c_out as u64, (n * ho * wo) as u64, 32, 32)?;
        let binds = [r(8, wt.storage()), r(9, x.storage()), w(3, out.storage())];
        self.launch(Launch {
            shader: &F16,
            entry: "conv2d_fwd_f16_v1",
            param_slot: 7,
            params: bytes_of(p),
            binds: &binds,
            overrides: &[],
            groups,
        })?;
        Ok(out)
    }
}
