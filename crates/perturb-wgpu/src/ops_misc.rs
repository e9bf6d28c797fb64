//! Typed launchers for everything but the GEMM family: memory, elementwise, bias, reductions,
//! softmax cross-entropy, max pooling, attack steps, optimisers and the RNG. Each checks
//! dtypes, shapes and parameters (as the CPU reference does) before recording its dispatch.

use crate::kernels::TEXEL_VARIANT;
use crate::kernels::{ATTACK, BIAS, ELEMENTWISE, OPTIM, POOL, REDUCE, RNG, XENT};
use crate::launch::{Launch, r, tex, w};
use crate::pool::U32Bound;
use crate::{BACKEND, WgpuBackend, WgpuStorage};
use bytemuck::{Pod, bytes_of};
use perturb_core::ops::{
    AdamParams, BiasParams, EltParams, Pool2dParams, RngParams, RowParams, SgdParams, StepParams, XentParams,
};
use perturb_core::{DType, Error, Op, Result, Shape, Tensor};
use std::sync::atomic::Ordering;

pub(crate) type T = Tensor<WgpuBackend>;

/// Workgroup sizes (the shaders' `WG` override; powers of two for the tree reductions):
/// elementwise kernels, one-row-per-workgroup reductions over short rows (sum/argmax rows,
/// usually logits), long reductions (bias_grad over a batch, the L2 step over an example),
/// and softmax_xent (one row per invocation).
const ELT_WG: u32 = 256;
const ROW_WG: u32 = 64;
const TREE_WG: u32 = 256;
const XENT_WG: u32 = 64;
/// The reductions' workgroup size on a CPU adapter: one SIMD group of llvmpipe (8 lanes of
/// 256 bits), so the shared-memory tree takes 3 barrier levels instead of 6 or 8 (each
/// barrier suspends and resumes every lane group, about as costly as the sums themselves).
const CPU_TREE_WG: u32 = 8;

/// Status bit set by softmax_xent for a label >= classes.
const STATUS_BAD_LABEL: u32 = 1;

pub(crate) fn f32_in(op: &'static str, ts: &[&T]) -> Result<()> {
    ts.iter().try_for_each(|t| t.expect_dtype(op, DType::F32))
}

/// Bytes of a `shape` tensor of `dtype`, refusing sizes that overflow u64 (a shape from a
/// corrupt file or a typo must be an error, not a wrapped product and a small buffer).
pub(crate) fn tensor_bytes(op: &'static str, shape: &Shape, dtype: DType) -> Result<u64> {
    shape.dims().iter().try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64)).ok_or_else(|| {
        Error::Unsupported {
            backend: BACKEND,
            what: format!("{op}: a tensor of shape {shape} ({dtype}) has a byte size that overflows 64 bits"),
        }
    })
}

fn u32_len(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid(op, format!("{n} elements do not fit in u32")))
}

impl WgpuBackend {
    /// A fresh f32 tensor (contents undefined: the kernel writing it covers every element).
    pub(crate) fn out_f32(&self, op: &'static str, shape: impl Into<Shape>) -> Result<T> {
        let shape = shape.into();
        let bytes = tensor_bytes(op, &shape, DType::F32)?;
        Ok(Tensor::from_storage(self.alloc(op, bytes)?, shape, DType::F32))
    }

    /// The workgroup size of a shared-memory tree reduction: `gpu` on a GPU, CPU_TREE_WG on
    /// a CPU adapter.
    fn tree_wg(&self, gpu: u32) -> u32 {
        if self.adapter().device_type == "cpu" { CPU_TREE_WG } else { gpu }
    }

    /// Workgroup counts for `groups` workgroups along one axis, folded into (x, y).
    pub(crate) fn grid1(&self, op: &'static str, groups: u64) -> Result<[u32; 3]> {
        let max = u64::from(self.limits.max_compute_workgroups_per_dimension.max(1));
        let x = groups.clamp(1, max);
        let y = groups.div_ceil(x).max(1);
        if y > max {
            return Err(Error::Unsupported {
                backend: BACKEND,
                what: format!("{op}: {groups} workgroups exceed this adapter's grid ({max} x {max})"),
            });
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Records `entry` of `shader` over `items` work items with `per_group` items per
    /// workgroup of `wg` invocations (the shader's `WG` override).
    #[allow(clippy::too_many_arguments)]
    fn run1<P: Pod>(
        &self,
        op: &'static str,
        shader: &'static crate::kernels::Shader,
        entry: &str,
        param_slot: u32,
        params: &P,
        binds: &[crate::launch::Bind<'_>],
        items: u64,
        per_group: u64,
        wg: u32,
    ) -> Result<()> {
        if items == 0 {
            return Ok(());
        }
        let groups = self.grid1(op, items.div_ceil(per_group))?;
        let overrides = [("WG", f64::from(wg))];
        self.launch(Launch {
            shader,
            entry,
            param_slot,
            params: bytes_of(params),
            binds,
            overrides: &overrides,
            groups,
        })
    }

    /// Whether `op` runs its texel variant (v2: texture-copy inputs, vec4 outputs) on `len`
    /// floats: the variant in force is 2 and the copies fit a texture. A forced v2 that cannot
    /// run is an error; the default falls back to v1.
    fn texel(&self, op: Op, len: usize) -> Result<bool> {
        if self.variant(op) != TEXEL_VARIANT {
            return Ok(false);
        }
        if self.textures_fit(&[len]) {
            return Ok(true);
        }
        if self.variant_forced(op) {
            return Err(Error::invalid(
                op.name(),
                format!(
                    "variant 2 (texels) needs tensors of at most {} texture rows ({len} elements given)",
                    self.limits.max_texture_dimension_2d
                ),
            ));
        }
        Ok(false)
    }

    /// Records the texel variant `entry` over `len` floats: 4 per invocation.
    #[allow(clippy::too_many_arguments)]
    fn run_texel<P: Pod>(
        &self,
        op: &'static str,
        shader: &'static crate::kernels::Shader,
        entry: &str,
        param_slot: u32,
        params: &P,
        binds: &[crate::launch::Bind<'_>],
        len: usize,
    ) -> Result<()> {
        self.run1(op, shader, entry, param_slot, params, binds, (len as u64).div_ceil(4), ELT_WG as u64, ELT_WG)
    }

    // ---- memory -----------------------------------------------------------------------------

    pub(crate) fn op_zeros(&self, shape: &Shape, dtype: DType) -> Result<T> {
        let s = self.alloc("zeros", tensor_bytes("zeros", shape, dtype)?)?;
        self.clear(&s)?;
        s.0.set_bound(Some(U32Bound { max: 0, at: Some(0) }));
        Ok(Tensor::from_storage(s, shape.clone(), dtype))
    }

    pub(crate) fn op_upload(
        &self,
        op: &'static str,
        bytes: &[u8],
        numel: usize,
        shape: &Shape,
        dtype: DType,
    ) -> Result<T> {
        tensor_bytes(op, shape, dtype)?;
        if numel != shape.numel() {
            return Err(Error::shape(op, format!("{numel} values for shape {shape} ({} elements)", shape.numel())));
        }
        let s = self.alloc(op, bytes.len() as u64)?;
        self.write(&s, bytes)?;
        Ok(Tensor::from_storage(s, shape.clone(), dtype))
    }

    pub(crate) fn op_upload_u32(&self, data: &[u32], shape: &Shape) -> Result<T> {
        let t = self.op_upload("upload_u32", bytemuck::cast_slice(data), data.len(), shape, DType::U32)?;
        // The first position of the maximum (max_by_key keeps the last, so search reversed).
        let top = data.iter().enumerate().rev().max_by_key(|&(_, &v)| v);
        t.storage().0.set_bound(Some(
            top.map_or(U32Bound { max: 0, at: Some(0) }, |(i, &v)| U32Bound { max: u64::from(v), at: Some(i as u64) }),
        ));
        Ok(t)
    }

    fn read_checked(&self, t: &T) -> Result<Vec<u8>> {
        let bytes = (t.numel() * t.dtype().size()) as u64;
        if bytes > t.storage().bytes() {
            return Err(Error::shape(
                "download",
                format!("tensor {} ({}) is larger than its storage", t.shape(), t.dtype()),
            ));
        }
        let out = self.read(t.storage(), bytes)?;
        self.check_status()?;
        Ok(out)
    }

    pub(crate) fn op_download_f32(&self, t: &T) -> Result<Vec<f32>> {
        const OP: &str = "download_f32";
        let raw = self.read_checked(match t.dtype() {
            DType::U32 => {
                return Err(Error::DType { op: OP, expected: DType::F32, got: DType::U32, shape: t.shape().clone() });
            }
            _ => t,
        })?;
        Ok(match t.dtype() {
            DType::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            _ => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        })
    }

    pub(crate) fn op_download_u32(&self, t: &T) -> Result<Vec<u32>> {
        t.expect_dtype("download_u32", DType::U32)?;
        let raw = self.read_checked(t)?;
        Ok(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    pub(crate) fn op_copy(&self, dst: &T, src: &T) -> Result<()> {
        const OP: &str = "copy_";
        if dst.dtype() != src.dtype() {
            return Err(Error::DType { op: OP, expected: dst.dtype(), got: src.dtype(), shape: src.shape().clone() });
        }
        if dst.numel() != src.numel() {
            return Err(Error::shape(
                OP,
                format!("destination {} and source {} differ in element count", dst.shape(), src.shape()),
            ));
        }
        if dst.storage().same_buffer(src.storage()) {
            return Ok(());
        }
        self.copy_buffers(src.storage(), dst.storage(), (src.numel() * src.dtype().size()) as u64)?;
        dst.storage().0.set_bound(src.storage().0.bound());
        Ok(())
    }

    pub(crate) fn op_fill(&self, dst: &T, value: f32) -> Result<()> {
        const OP: &str = "fill_";
        dst.expect_dtype(OP, DType::F32)?;
        if value.to_bits() == 0 && dst.numel() * 4 == dst.storage().bytes() as usize {
            return self.clear(dst.storage());
        }
        let p = EltParams::new(dst.numel(), value, 0.0)?;
        self.run1(OP, &ELEMENTWISE, "fill", 0, &p, &[w(3, dst.storage())], dst.numel() as u64, ELT_WG as u64, ELT_WG)
    }

    pub(crate) fn op_synchronize(&self) -> Result<()> {
        self.wait()?;
        self.check_status()
    }

    /// Reads the device status flags when a kernel that sets them ran since the last check.
    fn check_status(&self) -> Result<()> {
        if !self.status_pending.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let raw = self.read(&self.status, 4)?;
        let flags = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        if flags == 0 {
            return Ok(());
        }
        self.clear(&self.status)?;
        self.flush()?;
        if flags & STATUS_BAD_LABEL != 0 {
            return Err(Error::invalid("softmax_xent", "a label is >= the number of classes (found on the device)"));
        }
        Err(Error::Device { backend: BACKEND, msg: format!("device status flags {flags:#x}") })
    }

    // ---- elementwise ------------------------------------------------------------------------

    pub(crate) fn op_relu_fwd(&self, x: &T) -> Result<T> {
        const OP: &str = "relu_fwd";
        f32_in(OP, &[x])?;
        let out = self.out_f32(OP, x.shape().clone())?;
        let n = x.numel();
        let p = EltParams::new(n, 0.0, 0.0)?;
        if self.texel(Op::ReluFwd, n)? {
            let binds = [tex(4, x.storage(), n as u64), w(3, out.storage())];
            self.run_texel(OP, &ELEMENTWISE, "relu_fwd_v2", 0, &p, &binds, n)?;
            return Ok(out);
        }
        self.run1(
            OP,
            &ELEMENTWISE,
            OP,
            0,
            &p,
            &[r(1, x.storage()), w(3, out.storage())],
            x.numel() as u64,
            ELT_WG as u64,
            ELT_WG,
        )?;
        Ok(out)
    }

    pub(crate) fn op_relu_bwd(&self, dy: &T, x: &T) -> Result<T> {
        const OP: &str = "relu_bwd";
        f32_in(OP, &[dy, x])?;
        if dy.shape() != x.shape() {
            return Err(Error::shape(OP, format!("dy {} and x {} differ", dy.shape(), x.shape())));
        }
        let out = self.out_f32(OP, x.shape().clone())?;
        let n = x.numel();
        let p = EltParams::new(n, 0.0, 0.0)?;
        if self.texel(Op::ReluBwd, n)? {
            let binds = [tex(4, x.storage(), n as u64), tex(5, dy.storage(), n as u64), w(3, out.storage())];
            self.run_texel(OP, &ELEMENTWISE, "relu_bwd_v2", 0, &p, &binds, n)?;
            return Ok(out);
        }
        let binds = [r(1, x.storage()), r(2, dy.storage()), w(3, out.storage())];
        self.run1(OP, &ELEMENTWISE, OP, 0, &p, &binds, x.numel() as u64, ELT_WG as u64, ELT_WG)?;
        Ok(out)
    }

    fn same_numel(op: &'static str, x: &T, y: &T) -> Result<()> {
        if x.numel() != y.numel() {
            return Err(Error::shape(
                op,
                format!("x {} ({} elements) and y {} ({} elements) differ", x.shape(), x.numel(), y.shape(), y.numel()),
            ));
        }
        Ok(())
    }

    pub(crate) fn op_axpby(&self, x: &T, y: &T, p: &EltParams) -> Result<T> {
        const OP: &str = "axpby";
        f32_in(OP, &[x, y])?;
        Self::same_numel(OP, x, y)?;
        x.expect_numel(OP, "x", p.len as usize)?;
        let out = self.out_f32(OP, x.shape().clone())?;
        let n = x.numel();
        if self.texel(Op::Axpby, n)? {
            let binds = [tex(4, x.storage(), n as u64), tex(5, y.storage(), n as u64), w(3, out.storage())];
            self.run_texel(OP, &ELEMENTWISE, "axpby_v2", 0, p, &binds, n)?;
            return Ok(out);
        }
        let binds = [r(1, x.storage()), r(2, y.storage()), w(3, out.storage())];
        self.run1(OP, &ELEMENTWISE, OP, 0, p, &binds, x.numel() as u64, ELT_WG as u64, ELT_WG)?;
        Ok(out)
    }

    pub(crate) fn op_mul(&self, x: &T, y: &T) -> Result<T> {
        const OP: &str = "mul";
        f32_in(OP, &[x, y])?;
        Self::same_numel(OP, x, y)?;
        let out = self.out_f32(OP, x.shape().clone())?;
        let n = x.numel();
        let p = EltParams::new(n, 0.0, 0.0)?;
        if self.texel(Op::Mul, n)? {
            let binds = [tex(4, x.storage(), n as u64), tex(5, y.storage(), n as u64), w(3, out.storage())];
            self.run_texel(OP, &ELEMENTWISE, "mul_v2", 0, &p, &binds, n)?;
            return Ok(out);
        }
        let binds = [r(1, x.storage()), r(2, y.storage()), w(3, out.storage())];
        self.run1(OP, &ELEMENTWISE, OP, 0, &p, &binds, x.numel() as u64, ELT_WG as u64, ELT_WG)?;
        Ok(out)
    }

    // ---- bias and reductions ----------------------------------------------------------------

    fn bias_dims(op: &'static str, p: &BiasParams) -> Result<usize> {
        let q = BiasParams::new(p.outer as usize, p.channels as usize, p.inner as usize)?;
        if q != *p {
            return Err(Error::invalid(op, format!("inconsistent BiasParams {p:?}")));
        }
        Ok(p.outer as usize * p.channels as usize * p.inner as usize)
    }

    pub(crate) fn op_bias_add(&self, y: &T, b: &T, p: &BiasParams) -> Result<T> {
        const OP: &str = "bias_add";
        f32_in(OP, &[y, b])?;
        let len = Self::bias_dims(OP, p)?;
        u32_len(OP, len)?;
        y.expect_numel(OP, "y", len)?;
        b.expect_numel(OP, "bias b", p.channels as usize)?;
        let out = self.out_f32(OP, y.shape().clone())?;
        // The v2 channel division is exact below 2^28 elements.
        if len < 1 << 28 && self.texel(Op::BiasAdd, len)? {
            let binds = [tex(4, y.storage(), len as u64), tex(5, b.storage(), b.numel() as u64), w(3, out.storage())];
            self.run_texel(OP, &BIAS, "bias_add_v2", 0, p, &binds, len)?;
            return Ok(out);
        }
        let binds = [r(1, y.storage()), r(2, b.storage()), w(3, out.storage())];
        self.run1(OP, &BIAS, OP, 0, p, &binds, len as u64, ELT_WG as u64, ELT_WG)?;
        Ok(out)
    }

    pub(crate) fn op_bias_grad(&self, dy: &T, p: &BiasParams) -> Result<T> {
        const OP: &str = "bias_grad";
        f32_in(OP, &[dy])?;
        let len = Self::bias_dims(OP, p)?;
        u32_len(OP, len)?;
        dy.expect_numel(OP, "dy", len)?;
        let out = self.out_f32(OP, [p.channels as usize])?;
        let wg = self.tree_wg(TREE_WG);
        self.run1(OP, &BIAS, OP, 0, p, &[r(1, dy.storage()), w(3, out.storage())], u64::from(p.channels), 1, wg)?;
        Ok(out)
    }

    fn row_dims(op: &'static str, x: &T, p: &RowParams) -> Result<()> {
        let (rows, cols) = (p.rows as usize, p.cols as usize);
        if rows == 0 || cols == 0 {
            return Err(Error::invalid(op, format!("rows = {rows} and cols = {cols} must be > 0")));
        }
        if x.numel() != rows * cols {
            return Err(Error::shape(
                op,
                format!("x {} has {} elements, not rows {rows} x cols {cols}", x.shape(), x.numel()),
            ));
        }
        Ok(())
    }

    pub(crate) fn op_sum_rows(&self, x: &T, p: &RowParams) -> Result<T> {
        const OP: &str = "sum_rows";
        f32_in(OP, &[x])?;
        Self::row_dims(OP, x, p)?;
        let out = self.out_f32(OP, [p.rows as usize])?;
        let wg = self.tree_wg(ROW_WG);
        self.run1(OP, &REDUCE, OP, 0, p, &[r(1, x.storage()), w(2, out.storage())], u64::from(p.rows), 1, wg)?;
        Ok(out)
    }

    pub(crate) fn op_argmax_rows(&self, x: &T, p: &RowParams) -> Result<T> {
        const OP: &str = "argmax_rows";
        f32_in(OP, &[x])?;
        Self::row_dims(OP, x, p)?;
        let s = self.alloc(OP, u64::from(p.rows) * 4)?;
        s.0.set_bound(Some(U32Bound { max: u64::from(p.cols) - 1, at: None }));
        let out = Tensor::from_storage(s, Shape::from([p.rows as usize]), DType::U32);
        let wg = self.tree_wg(ROW_WG);
        self.run1(OP, &REDUCE, OP, 0, p, &[r(1, x.storage()), w(3, out.storage())], u64::from(p.rows), 1, wg)?;
        Ok(out)
    }

    // ---- loss -------------------------------------------------------------------------------

    pub(crate) fn op_softmax_xent(&self, logits: &T, labels: &T, p: &XentParams) -> Result<(T, T)> {
        const OP: &str = "softmax_xent";
        let q = XentParams::new(p.n as usize, p.classes as usize, p.grad_scale)?;
        if q.n != p.n || q.classes != p.classes {
            return Err(Error::invalid(OP, format!("inconsistent XentParams {p:?}")));
        }
        let (n, c) = (p.n as usize, p.classes as usize);
        f32_in(OP, &[logits])?;
        labels.expect_dtype(OP, DType::U32)?;
        logits.expect_shape(OP, "logits", &[n, c])?;
        labels.expect_numel(OP, "labels", n)?;
        u32_len(OP, n * c)?;
        // The host knows a bound on the labels when they were uploaded or came from argmax;
        // otherwise the kernel flags a bad label and the next download reports it.
        match labels.storage().0.bound() {
            Some(b) if b.max < c as u64 => {}
            Some(U32Bound { max, at: Some(i) }) => {
                return Err(Error::invalid(OP, format!("label {max} at index {i} is out of range for {c} classes")));
            }
            _ => self.status_pending.store(true, Ordering::Release),
        }
        let losses = self.out_f32(OP, [n])?;
        let dlogits = self.out_f32(OP, logits.shape().clone())?;
        let binds = [
            r(1, logits.storage()),
            r(2, labels.storage()),
            w(3, losses.storage()),
            w(4, dlogits.storage()),
            w(5, &self.status),
        ];
        self.run1(OP, &XENT, "softmax_xent_v1", 0, p, &binds, n as u64, XENT_WG as u64, XENT_WG)?;
        Ok((losses, dlogits))
    }

    // ---- pooling ----------------------------------------------------------------------------

    fn pool_geo(op: &'static str, p: &Pool2dParams) -> Result<()> {
        let q = Pool2dParams::new(p.input_dims(), p.k as usize, p.stride as usize)?;
        if q != *p {
            return Err(Error::invalid(
                op,
                format!(
                    "inconsistent Pool2dParams {p:?}: input {:?} gives output {:?}",
                    p.input_dims(),
                    q.output_dims()
                ),
            ));
        }
        u32_len(op, p.input_dims().iter().product())?;
        Ok(())
    }

    pub(crate) fn op_maxpool_fwd(&self, x: &T, p: &Pool2dParams) -> Result<T> {
        const OP: &str = "maxpool2d_fwd";
        f32_in(OP, &[x])?;
        Self::pool_geo(OP, p)?;
        x.expect_shape(OP, "input x", &p.input_dims())?;
        let out = self.out_f32(OP, p.output_dims())?;
        let len = out.numel() as u64;
        self.run1(
            OP,
            &POOL,
            "maxpool2d_fwd_v1",
            0,
            p,
            &[r(1, x.storage()), w(3, out.storage())],
            len,
            ELT_WG as u64,
            ELT_WG,
        )?;
        Ok(out)
    }

    pub(crate) fn op_maxpool_bwd(&self, dy: &T, x: &T, p: &Pool2dParams) -> Result<T> {
        const OP: &str = "maxpool2d_bwd";
        f32_in(OP, &[dy, x])?;
        Self::pool_geo(OP, p)?;
        dy.expect_shape(OP, "output gradient dy", &p.output_dims())?;
        x.expect_shape(OP, "input x", &p.input_dims())?;
        let out = self.out_f32(OP, p.input_dims())?;
        let binds = [r(1, x.storage()), r(2, dy.storage()), w(3, out.storage())];
        self.run1(OP, &POOL, "maxpool2d_bwd_v1", 0, p, &binds, x.numel() as u64, ELT_WG as u64, ELT_WG)?;
        Ok(out)
    }

    // ---- attack steps -----------------------------------------------------------------------

    fn step_check(op: &'static str, p: &StepParams, ts: &[(&T, &str)]) -> Result<usize> {
        let q = StepParams::new(p.n as usize, p.d as usize, p.alpha, p.eps, p.lo, p.hi)?;
        if q != *p {
            return Err(Error::invalid(op, format!("inconsistent StepParams {p:?}")));
        }
        let len = p.n as usize * p.d as usize;
        u32_len(op, len)?;
        for (t, what) in ts {
            t.expect_dtype(op, DType::F32)?;
            t.expect_numel(op, what, len)?;
        }
        Ok(len)
    }

    pub(crate) fn op_sign_step(&self, x: &T, g: &T, p: &StepParams) -> Result<()> {
        const OP: &str = "sign_step";
        let len = Self::step_check(OP, p, &[(x, "x"), (g, "gradient g")])?;
        self.run1(
            OP,
            &ATTACK,
            "sign_step_v1",
            0,
            p,
            &[r(1, g.storage()), w(3, x.storage())],
            len as u64,
            ELT_WG as u64,
            ELT_WG,
        )
    }

    pub(crate) fn op_step_linf(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        const OP: &str = "step_project_linf";
        let len = Self::step_check(OP, p, &[(x, "x"), (g, "gradient g"), (x0, "clean input x0")])?;
        let binds = [r(1, g.storage()), r(2, x0.storage()), w(3, x.storage())];
        self.run1(OP, &ATTACK, "step_project_linf_v1", 0, p, &binds, len as u64, ELT_WG as u64, ELT_WG)
    }

    pub(crate) fn op_step_l2(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        const OP: &str = "step_project_l2";
        Self::step_check(OP, p, &[(x, "x"), (g, "gradient g"), (x0, "clean input x0")])?;
        let binds = [r(1, g.storage()), r(2, x0.storage()), w(3, x.storage())];
        // One workgroup per example.
        self.run1(OP, &ATTACK, "step_project_l2_v1", 0, p, &binds, u64::from(p.n), 1, self.tree_wg(TREE_WG))
    }

    // ---- optimisers -------------------------------------------------------------------------

    fn distinct(op: &'static str, ts: &[(&WgpuStorage, &str)]) -> Result<()> {
        for (i, (a, an)) in ts.iter().enumerate() {
            for (b, bn) in &ts[i + 1..] {
                if a.same_buffer(b) {
                    return Err(Error::invalid(op, format!("{an} and {bn} are the same tensor")));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn op_sgd(&self, wt: &T, g: &T, m: &T, p: &SgdParams) -> Result<()> {
        const OP: &str = "sgd_update";
        let q = SgdParams::new(p.len as usize, p.lr, p.momentum, p.weight_decay, p.nesterov != 0)?;
        if q != *p {
            return Err(Error::invalid(OP, format!("inconsistent SgdParams {p:?}")));
        }
        f32_in(OP, &[wt, g, m])?;
        for (t, what) in [(wt, "weights w"), (g, "gradient g"), (m, "momentum m")] {
            t.expect_numel(OP, what, p.len as usize)?;
        }
        Self::distinct(OP, &[(wt.storage(), "weights w"), (m.storage(), "momentum m")])?;
        let len = p.len as usize;
        if self.texel(Op::SgdUpdate, len)? {
            let n = len as u64;
            let binds = [
                tex(6, g.storage(), n),
                tex(7, wt.storage(), n),
                tex(8, m.storage(), n),
                w(2, wt.storage()),
                w(3, m.storage()),
            ];
            return self.run_texel(OP, &OPTIM, "sgd_update_v2", 0, p, &binds, len);
        }
        let binds = [r(1, g.storage()), w(2, wt.storage()), w(3, m.storage())];
        self.run1(OP, &OPTIM, "sgd_update_v1", 0, p, &binds, u64::from(p.len), ELT_WG as u64, ELT_WG)
    }

    pub(crate) fn op_adam(&self, wt: &T, g: &T, m: &T, v: &T, p: &AdamParams) -> Result<()> {
        const OP: &str = "adam_update";
        if !(p.bc1 > 0.0 && p.bc1 <= 1.0 && p.bc2 > 0.0 && p.bc2 <= 1.0) {
            return Err(Error::invalid(
                OP,
                format!("bias corrections bc1 = {}, bc2 = {} must lie in (0, 1]", p.bc1, p.bc2),
            ));
        }
        if !(p.lr.is_finite() && p.lr >= 0.0 && p.eps > 0.0 && p.weight_decay >= 0.0) {
            return Err(Error::invalid(OP, format!("inconsistent AdamParams {p:?}")));
        }
        f32_in(OP, &[wt, g, m, v])?;
        for (t, what) in [(wt, "weights w"), (g, "gradient g"), (m, "first moment m"), (v, "second moment v")] {
            t.expect_numel(OP, what, p.len as usize)?;
        }
        Self::distinct(
            OP,
            &[(wt.storage(), "weights w"), (m.storage(), "first moment m"), (v.storage(), "second moment v")],
        )?;
        let len = p.len as usize;
        if self.texel(Op::AdamUpdate, len)? {
            let n = len as u64;
            let binds = [
                tex(6, g.storage(), n),
                tex(7, wt.storage(), n),
                tex(8, m.storage(), n),
                tex(9, v.storage(), n),
                w(2, wt.storage()),
                w(3, m.storage()),
                w(4, v.storage()),
            ];
            return self.run_texel(OP, &OPTIM, "adam_update_v2", 5, p, &binds, len);
        }
        let binds = [r(1, g.storage()), w(2, wt.storage()), w(3, m.storage()), w(4, v.storage())];
        self.run1(OP, &OPTIM, "adam_update_v1", 5, p, &binds, u64::from(p.len), ELT_WG as u64, ELT_WG)
    }

    // ---- random numbers ---------------------------------------------------------------------

    pub(crate) fn op_rng_fill(&self, dst: &T, p: &RngParams) -> Result<()> {
        const OP: &str = "rng_fill";
        let dist = p.dist()?;
        dst.expect_dtype(OP, DType::F32)?;
        dst.expect_numel(OP, "destination", p.len as usize)?;
        let blocks = perturb_core::rng::counters_used(dist, p.len as usize);
        self.run1(OP, &RNG, "rng_fill_v1", 0, p, &[w(3, dst.storage())], blocks, ELT_WG as u64, ELT_WG)
    }
}
