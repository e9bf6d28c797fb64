//! Typed launchers for the GEMM family: linear forward/backward (`shaders/linear.wgsl`) and
//! conv2d forward/backward as implicit GEMM (`shaders/conv2d.wgsl`).
//!
//! Each op is C[M, N] = A · B with the operands described in the shader header; the launcher
//! validates shapes like the CPU reference, picks the variant (forced or default), and sizes
//! the grid: tiles along N in x (folded into z past the per-dimension limit), along M in y.

use crate::kernels::{CONV2D, CONV2D_TEX, LINEAR};
use crate::kernels::{TEX_VARIANT_CONV, TEX_VARIANT_LINEAR};
use crate::launch::{Launch, r, tex, w};
use crate::ops_misc::{T, f32_in};
use crate::{BACKEND, WgpuBackend};
use bytemuck::bytes_of;
use perturb_core::ops::{Conv2dParams, LinearParams};
use perturb_core::{DType, Error, Op, Result};

/// The launch shape of a GEMM variant for an M-row output: tile rows and columns, and the
/// override constants. v1 (register-blocked, TX x TY invocations of RM x 4 outputs) shrinks
/// its tile rows to M so small-M products (batch-1 linear, c_in = 1 conv backward) waste no
/// invocations; v2/v3 use fixed 64x64 tiles (16x16 invocations of 4x4).
struct Shape {
    rows: u64,
    cols: u64,
    overrides: Vec<(&'static str, f64)>,
}

fn launch_shape(variant: u32, m: usize) -> Shape {
    if variant == TEX_VARIANT_LINEAR {
        return Shape { rows: 32, cols: 32, overrides: Vec::new() };
    }
    if variant != 1 {
        return Shape { rows: 64, cols: 64, overrides: Vec::new() };
    }
    let (tx, ty, rm) = match m {
        0..=4 => (64, 1, m.max(1)),
        5..=8 => (32, 2, 4),
        9..=16 => (16, 4, 4),
        _ => (8, 8, 4),
    };
    Shape {
        rows: (ty * rm) as u64,
        cols: 4 * tx as u64,
        overrides: vec![("TX", tx as f64), ("TY", ty as f64), ("RM", rm as f64)],
    }
}

impl WgpuBackend {
    /// Workgroup counts for an M x N output in tiles of `rows` x `cols`.
    pub(crate) fn gemm_grid(&self, op: &'static str, m: u64, n: u64, rows: u64, cols: u64) -> Result<[u32; 3]> {
        let max = u64::from(self.limits.max_compute_workgroups_per_dimension.max(1));
        let (tn, tm) = (n.div_ceil(cols).max(1), m.div_ceil(rows).max(1));
        let x = tn.min(max);
        let z = tn.div_ceil(x);
        if tm > max || z > max {
            return Err(Error::Unsupported {
                backend: BACKEND,
                what: format!("{op}: an output of {m} x {n} needs more workgroups than this adapter's grid allows"),
            });
        }
        Ok([x as u32, tm as u32, z as u32])
    }

    /// The variant to run for `op`; v3 (vec4 loads) and v4 (texture texels) need `aligned`,
    /// v4 also operands that fit a texture (`textures_fit`); otherwise v3 falls back to v2 and
    /// v4 to v1, unless the variant was forced (then an error says why).
    fn gemm_variant(&self, op: Op, aligned: bool, textures_fit: bool, need: &str) -> Result<u32> {
        let v = self.variant(op);
        let (ok, fallback, what) = match v {
            3 => (aligned, 2, "variant 3 (vec4 loads)"),
            TEX_VARIANT_LINEAR => (aligned && textures_fit, 1, "variant 4 (texture operands)"),
            _ => return Ok(v),
        };
        if ok {
            return Ok(v);
        }
        if self.variant_forced(op) {
            let why = if aligned {
                format!("operands of at most {} texture rows", self.limits.max_texture_dimension_2d)
            } else {
                need.to_string()
            };
            return Err(Error::invalid(op.name(), format!("{what} needs {why}")));
        }
        Ok(fallback)
    }

    /// Whether every tensor (given by its element count) fits a texture copy.
    pub(crate) fn textures_fit(&self, numels: &[usize]) -> bool {
        numels.iter().all(|&n| crate::texture::extent(n as u64, self.limits.max_texture_dimension_2d).is_some())
    }

    fn linear_dims(op: &'static str, p: &LinearParams) -> Result<(usize, usize, usize)> {
        let q = LinearParams::new(p.m as usize, p.k as usize, p.n as usize)?;
        if q != *p {
            return Err(Error::invalid(op, format!("inconsistent LinearParams {p:?}")));
        }
        Ok((p.m as usize, p.k as usize, p.n as usize))
    }

    /// Shared launcher: `a`, `b` are the shader's A and B buffers for `op`'s mode.
    fn linear_launch(&self, op: Op, a: &T, b: &T, p: &LinearParams) -> Result<T> {
        let name = op.name();
        let (m, k, n) = (p.m as usize, p.k as usize, p.n as usize);
        // The output [mm, nn] and whether v3's vec4 loads fit (see linear.wgsl).
        let (mm, nn, aligned) = match op {
            Op::LinearFwd => (m, n, k % 4 == 0),
            Op::LinearBwdInput => (m, k, n % 4 == 0 && k % 4 == 0),
            _ => (n, k, n % 4 == 0 && k % 4 == 0),
        };
        let out_dims = [mm, nn];
        let fit = self.textures_fit(&[a.numel(), b.numel()]);
        let v = self.gemm_variant(op, aligned, fit, "in and out features divisible by 4")?;
        let out = self.out_f32(name, out_dims)?;
        let shape = launch_shape(v, mm);
        let groups = self.gemm_grid(name, mm as u64, nn as u64, shape.rows, shape.cols)?;
        let entry = format!("{name}_v{v}");
        let (sa, sb, sc) = (a.storage(), b.storage(), out.storage());
        let binds_v1 = [r(1, sa), r(2, sb), w(3, sc)];
        let binds_tiled = [r(1, sa), r(2, sb), w(3, sc), r(4, sa), r(5, sb)];
        let binds_tex = [tex(6, sa, a.numel() as u64), tex(7, sb, b.numel() as u64), w(3, sc)];
        let binds: &[_] = match v {
            1 => &binds_v1,
            TEX_VARIANT_LINEAR => &binds_tex,
            _ => &binds_tiled,
        };
        self.launch(Launch {
            shader: &LINEAR,
            entry: &entry,
            param_slot: 0,
            params: bytes_of(p),
            binds,
            overrides: &shape.overrides,
            groups,
        })?;
        Ok(out)
    }

    pub(crate) fn op_linear_fwd(&self, x: &T, wt: &T, p: &LinearParams) -> Result<T> {
        const OP: &str = "linear_fwd";
        let (m, k, n) = Self::linear_dims(OP, p)?;
        if x.dtype() == DType::F16 || wt.dtype() == DType::F16 {
            return self.linear_fwd_f16(x, wt, p);
        }
        f32_in(OP, &[x, wt])?;
        x.expect_shape(OP, "input x", &[m, k])?;
        wt.expect_shape(OP, "weight w", &[n, k])?;
        self.linear_launch(Op::LinearFwd, x, wt, p)
    }

    pub(crate) fn op_linear_bwd_input(&self, dy: &T, wt: &T, p: &LinearParams) -> Result<T> {
        const OP: &str = "linear_bwd_input";
        f32_in(OP, &[dy, wt])?;
        let (m, k, n) = Self::linear_dims(OP, p)?;
        dy.expect_shape(OP, "output gradient dy", &[m, n])?;
        wt.expect_shape(OP, "weight w", &[n, k])?;
        self.linear_launch(Op::LinearBwdInput, dy, wt, p)
    }

    pub(crate) fn op_linear_bwd_weight(&self, x: &T, dy: &T, p: &LinearParams) -> Result<T> {
        const OP: &str = "linear_bwd_weight";
        f32_in(OP, &[x, dy])?;
        let (m, k, n) = Self::linear_dims(OP, p)?;
        x.expect_shape(OP, "input x", &[m, k])?;
        dy.expect_shape(OP, "output gradient dy", &[m, n])?;
        self.linear_launch(Op::LinearBwdWeight, dy, x, p)
    }

    fn conv_check(op: &'static str, p: &Conv2dParams) -> Result<()> {
        let q = Conv2dParams::new(p.input_dims(), p.weight_dims(), p.stride as usize, p.pad as usize)?;
        if q != *p {
            return Err(Error::invalid(
                op,
                format!(
                    "inconsistent Conv2dParams {p:?}: input {:?}, weight {:?}, stride {}, pad {} give output {:?}",
                    p.input_dims(),
                    p.weight_dims(),
                    p.stride,
                    p.pad,
                    q.output_dims()
                ),
            ));
        }
        Ok(())
    }

    /// Shared launcher: `a`, `b` are the shader's A and B buffers for `op`'s mode.
    fn conv_launch(&self, op: Op, a: &T, b: &T, p: &Conv2dParams) -> Result<T> {
        let name = op.name();
        // GEMM rows, GEMM columns and the output tensor's dims per mode (see conv2d.wgsl).
        let (mm, nn, out_dims) = match op {
            Op::Conv2dFwd => {
                let [n, c_out, ho, wo] = p.output_dims();
                (c_out, n * ho * wo, p.output_dims())
            }
            Op::Conv2dBwdInput => {
                let [n, c_in, h, wd] = p.input_dims();
                (c_in, n * h * wd, p.input_dims())
            }
            _ => (p.c_out as usize, p.patch_len(), p.weight_dims()),
        };
        let mut v = self.variant(op);
        // The packed copies (bwd_input, bwd_weight) round channels or the batch reduction up
        // to a multiple of 4: at most 4x the elements, and they must be bindable too.
        let packed = 16 * a.numel().max(b.numel()) as u64;
        let bindable = packed <= self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        if v == TEX_VARIANT_CONV && !(bindable && self.textures_fit(&[4 * a.numel(), 4 * b.numel()])) {
            if self.variant_forced(op) {
                return Err(Error::invalid(
                    name,
                    format!(
                        "variant 3 (texture operands) needs operands of at most {} texture rows whose \
                         channel-padded copies fit max_storage_buffer_binding_size",
                        self.limits.max_texture_dimension_2d
                    ),
                ));
            }
            v = 1;
        }
        if v == TEX_VARIANT_CONV {
            return self.conv_tex(op, a, b, p, mm, nn, out_dims);
        }
        let out = self.out_f32(name, out_dims)?;
        let shape = launch_shape(v, mm);
        let entry = format!("{name}_v{v}");
        let kk = match op {
            Op::Conv2dBwdWeight => p.n as usize * p.h_out as usize * p.w_out as usize,
            _ => p.patch_len(),
        };
        let splits = if op == Op::Conv2dBwdWeight { self.k_splits(mm, nn, kk, &shape) } else { 1 };
        if splits <= 1 {
            let groups = self.gemm_grid(name, mm as u64, nn as u64, shape.rows, shape.cols)?;
            let binds = [r(1, a.storage()), r(2, b.storage()), w(3, out.storage())];
            self.launch(Launch {
                shader: &CONV2D,
                entry: &entry,
                param_slot: 0,
                params: bytes_of(p),
                binds: &binds,
                overrides: &shape.overrides,
                groups,
            })?;
            return Ok(out);
        }
        // Split-K: partials [splits, M, N], then their sum in split order.
        let mut ps = *p;
        ps._pad0 = splits;
        let partial = self.out_f32(name, [splits as usize, mm, nn])?;
        let [gx, gy, gz] = self.gemm_grid(name, mm as u64, nn as u64, shape.rows, shape.cols)?;
        let max = self.limits.max_compute_workgroups_per_dimension;
        let gy = gy.checked_mul(splits).filter(|&y| y <= max).ok_or_else(|| Error::Unsupported {
            backend: BACKEND,
            what: format!("{name}: {gy} x {splits} split workgroup rows exceed the grid limit {max}"),
        })?;
        let binds = [r(1, a.storage()), r(2, b.storage()), w(3, partial.storage())];
        self.launch(Launch {
            shader: &CONV2D,
            entry: &entry,
            param_slot: 0,
            params: bytes_of(&ps),
            binds: &binds,
            overrides: &shape.overrides,
            groups: [gx, gy, gz],
        })?;
        let sum_binds = [r(1, partial.storage()), w(3, out.storage())];
        self.launch(Launch {
            shader: &CONV2D,
            entry: "conv2d_bwd_weight_sum_splits",
            param_slot: 0,
            params: bytes_of(&ps),
            binds: &sum_binds,
            overrides: &[],
            groups: self.grid1(name, ((mm * nn) as u64).div_ceil(256))?,
        })?;
        Ok(out)
    }

    /// The texture-operand conv (v3, see conv2d.wgsl): CR output rows by 4 columns per
    /// invocation, 64 invocations (256 columns) per workgroup.
    #[allow(clippy::too_many_arguments)]
    fn conv_tex(
        &self,
        op: Op,
        a: &T,
        b: &T,
        p: &Conv2dParams,
        mm: usize,
        nn: usize,
        out_dims: [usize; 4],
    ) -> Result<T> {
        let name = op.name();
        let cr: u32 = match mm {
            0..=1 => 1,
            2 => 2,
            3..=4 => 4,
            _ => 8,
        };
        let out = self.out_f32(name, out_dims)?;
        let entry = format!("{name}_v{TEX_VARIANT_CONV}");
        let mut overrides = vec![("CR", f64::from(cr))];
        // kw = 4: whole weight rows of texels and x read 4 adjacent values at a time.
        let kw4 = p.kw == 4 && p.pad < 16;
        if op == Op::Conv2dFwd {
            overrides.push(("AVEC", if p.patch_len().is_multiple_of(4) { 1.0 } else { 0.0 }));
            overrides.push(("KW4", if kw4 { 1.0 } else { 0.0 }));
        }
        if op == Op::Conv2dBwdWeight && kw4 {
            return self.conv_bwd_weight_kw4(a, b, p, cr, out, overrides);
        }
        let binds = [tex(6, a.storage(), a.numel() as u64), tex(7, b.storage(), b.numel() as u64), w(3, out.storage())];
        let cr64 = u64::from(cr);
        let launch = |params: &Conv2dParams, groups: [u32; 3], binds: &[crate::launch::Bind<'_>]| {
            self.launch(Launch {
                shader: &CONV2D_TEX,
                entry: &entry,
                param_slot: 0,
                params: bytes_of(params),
                binds,
                overrides: &overrides,
                groups,
            })
        };
        match op {
            Op::Conv2dBwdInput => {
                // Channels-last copies: w as [c_in*kh*kw, C4], dy as [n*h_out*w_out, C4].
                let khw = p.kh as usize * p.kw as usize;
                let howo = p.h_out as usize * p.w_out as usize;
                let wp = self.pack_channels_last4(name, a, 1, p.c_out as usize, p.c_in as usize * khw)?;
                let dyp = self.pack_channels_last4(name, b, p.n as usize, p.c_out as usize, howo)?;
                // Rows: s * s stride-parity classes, each ceil(c_in / CR) row blocks; columns:
                // the largest class's pixels.
                let s = p.stride as u64;
                let cols = p.n as u64 * u64::from(p.h).div_ceil(s) * u64::from(p.w).div_ceil(s);
                let rows = s * s * (mm as u64).div_ceil(cr64) * cr64;
                let packed = [tex(6, &wp, wp.bytes() / 4), tex(7, &dyp, dyp.bytes() / 4), w(3, out.storage())];
                launch(p, self.gemm_grid(name, rows, cols, cr64, 256)?, &packed)?;
            }
            Op::Conv2dBwdWeight => {
                let shape = Shape { rows: cr64, cols: 256, overrides: Vec::new() };
                let kk = p.n as usize * p.h_out as usize * p.w_out as usize;
                let splits = self.k_splits(mm, nn, kk, &shape);
                let [gx, gy, gz] = self.gemm_grid(name, mm as u64, nn as u64, cr64, 256)?;
                if splits <= 1 {
                    launch(p, [gx, gy, gz], &binds)?;
                    return Ok(out);
                }
                let mut ps = *p;
                ps._pad0 = splits;
                let partial = self.out_f32(name, [splits as usize, mm, nn])?;
                let max = self.limits.max_compute_workgroups_per_dimension;
                let gy = gy.checked_mul(splits).filter(|&y| y <= max).ok_or_else(|| Error::Unsupported {
                    backend: BACKEND,
                    what: format!("{name}: {gy} x {splits} split workgroup rows exceed the grid limit {max}"),
                })?;
                let split_binds = [
                    tex(6, a.storage(), a.numel() as u64),
                    tex(7, b.storage(), b.numel() as u64),
                    w(3, partial.storage()),
                ];
                launch(&ps, [gx, gy, gz], &split_binds)?;
                self.launch(Launch {
                    shader: &CONV2D,
                    entry: "conv2d_bwd_weight_sum_splits",
                    param_slot: 0,
                    params: bytes_of(&ps),
                    binds: &[r(1, partial.storage()), w(3, out.storage())],
                    overrides: &[],
                    groups: self.grid1(name, ((mm * nn) as u64).div_ceil(256))?,
                })?;
            }
            _ => launch(p, self.gemm_grid(name, mm as u64, nn as u64, cr64, 256)?, &binds)?,
        }
        Ok(out)
    }

    /// bwd_weight v3 with kw = 4: dy packed as [c_out, L4], CR rows by one (ci, r) column
    /// quad per invocation, 64 quads per workgroup, K split in whole texels.
    fn conv_bwd_weight_kw4(
        &self,
        dy: &T,
        x: &T,
        p: &Conv2dParams,
        cr: u32,
        out: T,
        mut overrides: Vec<(&'static str, f64)>,
    ) -> Result<T> {
        let name = Op::Conv2dBwdWeight.name();
        overrides.push(("KW4", 1.0));
        let (mm, nn) = (p.c_out as usize, p.patch_len());
        let howo = p.h_out as usize * p.w_out as usize;
        let l4 = (p.n as usize * howo).div_ceil(4);
        let dyp = self.pack_channels_first4(name, dy, p.n as usize, mm, howo)?;
        let quads = p.c_in as u64 * u64::from(p.kh);
        let [gx, gy, gz] = self.gemm_grid(name, mm as u64, quads, u64::from(cr), 64)?;
        // Enough workgroups for every core (a few per core on a CPU adapter), at least 256
        // texels (1024 steps) per split, at most 64 splits.
        let tiles = u64::from(gx) * u64::from(gz) * u64::from(gy);
        let target: u64 = if self.adapter().device_type == "cpu" { 16 } else { 512 };
        let splits = target.div_ceil(tiles).clamp(1, 64).min((l4 as u64 / 256).max(1)) as u32;
        let max = self.limits.max_compute_workgroups_per_dimension;
        let gy = gy.checked_mul(splits).filter(|&y| y <= max).ok_or_else(|| Error::Unsupported {
            backend: BACKEND,
            what: format!("{name}: {gy} x {splits} split workgroup rows exceed the grid limit {max}"),
        })?;
        let mut ps = *p;
        ps._pad0 = splits;
        let target_buf = if splits > 1 { Some(self.out_f32(name, [splits as usize, mm, nn])?) } else { None };
        let dst = target_buf.as_ref().map_or(out.storage(), |t| t.storage());
        let binds = [tex(6, &dyp, dyp.bytes() / 4), tex(7, x.storage(), x.numel() as u64), w(3, dst)];
        let entry = format!("{name}_v{TEX_VARIANT_CONV}");
        self.launch(Launch {
            shader: &CONV2D_TEX,
            entry: &entry,
            param_slot: 0,
            params: bytes_of(&ps),
            binds: &binds,
            overrides: &overrides,
            groups: [gx, gy, gz],
        })?;
        if let Some(partial) = target_buf {
            self.launch(Launch {
                shader: &CONV2D,
                entry: "conv2d_bwd_weight_sum_splits",
                param_slot: 0,
                params: bytes_of(&ps),
                binds: &[r(1, partial.storage()), w(3, out.storage())],
                overrides: &[],
                groups: self.grid1(name, ((mm * nn) as u64).div_ceil(256))?,
            })?;
        }
        Ok(out)
    }

    /// `t` viewed as [outer, channels, inner], copied to [channels, L4] (L4 = outer * inner
    /// rounded up to a multiple of 4, zero-padded): whole texels along the batch reduction.
    fn pack_channels_first4(
        &self,
        op: &'static str,
        t: &T,
        outer: usize,
        channels: usize,
        inner: usize,
    ) -> Result<crate::WgpuStorage> {
        let len = channels * (outer * inner).next_multiple_of(4);
        self.pack4(op, "pack_channels_first4", t, [outer, channels, inner], len)
    }

    /// `t` viewed as [outer, channels, inner], copied to [outer, inner, C4] (C4 = channels
    /// rounded up to a multiple of 4, zero-padded): whole texels of channels per pixel.
    fn pack_channels_last4(
        &self,
        op: &'static str,
        t: &T,
        outer: usize,
        channels: usize,
        inner: usize,
    ) -> Result<crate::WgpuStorage> {
        let len = outer * inner * channels.next_multiple_of(4);
        self.pack4(op, "pack_channels_last4", t, [outer, channels, inner], len)
    }

    /// Runs the packing entry `entry` of bias.wgsl on `t` viewed as [outer, channels, inner]
    /// into a fresh buffer of `len` floats (a multiple of 4: one invocation per texel).
    fn pack4(
        &self,
        op: &'static str,
        entry: &'static str,
        t: &T,
        [outer, channels, inner]: [usize; 3],
        len: usize,
    ) -> Result<crate::WgpuStorage> {
        let out = self.alloc(op, len as u64 * 4)?;
        let p = perturb_core::ops::BiasParams::new(outer, channels, inner)?;
        let groups = self.grid1(op, (len as u64 / 4).div_ceil(256))?;
        self.launch(Launch {
            shader: &crate::kernels::BIAS,
            entry,
            param_slot: 0,
            params: bytes_of(&p),
            binds: &[tex(4, t.storage(), t.numel() as u64), w(3, &out)],
            overrides: &[("WG", 256.0)],
            groups,
        })?;
        Ok(out)
    }

    /// How many K-splits a long reduction into a small M x N output should use: enough
    /// workgroups to fill the device (a few per core on a CPU adapter, hundreds on a GPU),
    /// at least 1024 reduction steps per split, at most 64 splits.
    fn k_splits(&self, mm: usize, nn: usize, kk: usize, shape: &Shape) -> u32 {
        let tiles = (mm as u64).div_ceil(shape.rows) * (nn as u64).div_ceil(shape.cols);
        let target: u64 = if self.adapter().device_type == "cpu" { 8 } else { 512 };
        let by_work = (kk as u64 / 1024).max(1);
        let tiles_m = (mm as u64).div_ceil(shape.rows);
        let by_grid = u64::from(self.limits.max_compute_workgroups_per_dimension) / tiles_m.max(1);
        target.div_ceil(tiles).clamp(1, 64).min(by_work).min(by_grid.max(1)) as u32
    }

    pub(crate) fn op_conv_fwd(&self, x: &T, wt: &T, p: &Conv2dParams) -> Result<T> {
        const OP: &str = "conv2d_fwd";
        Self::conv_check(OP, p)?;
        if x.dtype() == DType::F16 || wt.dtype() == DType::F16 {
            return self.conv_fwd_f16(x, wt, p);
        }
        f32_in(OP, &[x, wt])?;
        x.expect_shape(OP, "input x", &p.input_dims())?;
        wt.expect_shape(OP, "weight w", &p.weight_dims())?;
        self.conv_launch(Op::Conv2dFwd, wt, x, p)
    }

    pub(crate) fn op_conv_bwd_input(&self, dy: &T, wt: &T, p: &Conv2dParams) -> Result<T> {
        const OP: &str = "conv2d_bwd_input";
        f32_in(OP, &[dy, wt])?;
        Self::conv_check(OP, p)?;
        dy.expect_shape(OP, "output gradient dy", &p.output_dims())?;
        wt.expect_shape(OP, "weight w", &p.weight_dims())?;
        self.conv_launch(Op::Conv2dBwdInput, wt, dy, p)
    }

    pub(crate) fn op_conv_bwd_weight(&self, x: &T, dy: &T, p: &Conv2dParams) -> Result<T> {
        const OP: &str = "conv2d_bwd_weight";
        f32_in(OP, &[x, dy])?;
        Self::conv_check(OP, p)?;
        x.expect_shape(OP, "input x", &p.input_dims())?;
        dy.expect_shape(OP, "output gradient dy", &p.output_dims())?;
        self.conv_launch(Op::Conv2dBwdWeight, dy, x, p)
    }
}
