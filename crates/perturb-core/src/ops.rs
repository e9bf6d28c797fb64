//! The op registry: every kernel-level op once, with its parameter struct, its work count and
//! its tolerance against the reference.
//!
//! Each parameter struct is `#[repr(C)]`, bytemuck `Pod`, made only of u32/f32 fields and
//! padded to a multiple of 16 bytes, so the same bytes are a CUDA kernel argument (by value)
//! and a WGSL uniform. `work()` is the one place FLOPs and bytes are counted; benchmarks read it.

use crate::{Error, Result, Tolerance};
use bytemuck::{Pod, Zeroable};

/// FLOPs and bytes moved by one call of an op (bytes: each input read once, each output
/// written once — the compulsory traffic, which is what "% of bandwidth" is measured against).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Work {
    /// Floating-point operations (a multiply-add counts 2).
    pub flops: f64,
    /// Bytes of compulsory memory traffic.
    pub bytes: f64,
}

impl Work {
    fn new(flops: f64, elems_moved: f64) -> Self {
        Work { flops, bytes: 4.0 * elems_moved }
    }
}

impl std::ops::Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        Work { flops: self.flops + o.flops, bytes: self.bytes + o.bytes }
    }
}

/// Every kernel-level op. A coverage test walks [`Op::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Backend::conv2d_fwd`](crate::Backend::conv2d_fwd), params [`Conv2dParams`].
    Conv2dFwd,
    /// [`Backend::conv2d_bwd_input`](crate::Backend::conv2d_bwd_input), params [`Conv2dParams`].
    Conv2dBwdInput,
    /// [`Backend::conv2d_bwd_weight`](crate::Backend::conv2d_bwd_weight), params [`Conv2dParams`].
    Conv2dBwdWeight,
    /// [`Backend::linear_fwd`](crate::Backend::linear_fwd), params [`LinearParams`].
    LinearFwd,
    /// [`Backend::linear_bwd_input`](crate::Backend::linear_bwd_input), params [`LinearParams`].
    LinearBwdInput,
    /// [`Backend::linear_bwd_weight`](crate::Backend::linear_bwd_weight), params [`LinearParams`].
    LinearBwdWeight,
    /// [`Backend::bias_add`](crate::Backend::bias_add), params [`BiasParams`].
    BiasAdd,
    /// [`Backend::bias_grad`](crate::Backend::bias_grad), params [`BiasParams`].
    BiasGrad,
    /// [`Backend::relu_fwd`](crate::Backend::relu_fwd), no params.
    ReluFwd,
    /// [`Backend::relu_bwd`](crate::Backend::relu_bwd), no params.
    ReluBwd,
    /// [`Backend::maxpool2d_fwd`](crate::Backend::maxpool2d_fwd), params [`Pool2dParams`].
    MaxPool2dFwd,
    /// [`Backend::maxpool2d_bwd`](crate::Backend::maxpool2d_bwd), params [`Pool2dParams`].
    MaxPool2dBwd,
    /// [`Backend::softmax_xent`](crate::Backend::softmax_xent), params [`XentParams`].
    SoftmaxXent,
    /// [`Backend::axpby`](crate::Backend::axpby), params [`EltParams`].
    Axpby,
    /// [`Backend::mul`](crate::Backend::mul), no params ([`EltParams`] for the work count).
    Mul,
    /// [`Backend::sum_rows`](crate::Backend::sum_rows), params [`RowParams`].
    SumRows,
    /// [`Backend::argmax_rows`](crate::Backend::argmax_rows), params [`RowParams`].
    ArgmaxRows,
    /// [`Backend::sign_step_`](crate::Backend::sign_step_), params [`StepParams`].
    SignStep,
    /// [`Backend::step_project_linf_`](crate::Backend::step_project_linf_), params [`StepParams`].
    StepProjectLinf,
    /// [`Backend::step_project_l2_`](crate::Backend::step_project_l2_), params [`StepParams`].
    StepProjectL2,
    /// [`Backend::sgd_update_`](crate::Backend::sgd_update_), params [`SgdParams`].
    SgdUpdate,
    /// [`Backend::adam_update_`](crate::Backend::adam_update_), params [`AdamParams`].
    AdamUpdate,
    /// [`Backend::rng_fill_`](crate::Backend::rng_fill_), params [`RngParams`].
    RngFill,
}

impl Op {
    /// Every op, in declaration order (what the coverage tests and `perturb bench` walk).
    pub const ALL: [Op; 23] = [
        Op::Conv2dFwd,
        Op::Conv2dBwdInput,
        Op::Conv2dBwdWeight,
        Op::LinearFwd,
        Op::LinearBwdInput,
        Op::LinearBwdWeight,
        Op::BiasAdd,
        Op::BiasGrad,
        Op::ReluFwd,
        Op::ReluBwd,
        Op::MaxPool2dFwd,
        Op::MaxPool2dBwd,
        Op::SoftmaxXent,
        Op::Axpby,
        Op::Mul,
        Op::SumRows,
        Op::ArgmaxRows,
        Op::SignStep,
        Op::StepProjectLinf,
        Op::StepProjectL2,
        Op::SgdUpdate,
        Op::AdamUpdate,
        Op::RngFill,
    ];

    /// The kernel-family name used for kernel entry points and bench rows (`conv2d_fwd`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Op::Conv2dFwd => "conv2d_fwd",
            Op::Conv2dBwdInput => "conv2d_bwd_input",
            Op::Conv2dBwdWeight => "conv2d_bwd_weight",
            Op::LinearFwd => "linear_fwd",
            Op::LinearBwdInput => "linear_bwd_input",
            Op::LinearBwdWeight => "linear_bwd_weight",
            Op::BiasAdd => "bias_add",
            Op::BiasGrad => "bias_grad",
            Op::ReluFwd => "relu_fwd",
            Op::ReluBwd => "relu_bwd",
            Op::MaxPool2dFwd => "maxpool2d_fwd",
            Op::MaxPool2dBwd => "maxpool2d_bwd",
            Op::SoftmaxXent => "softmax_xent",
            Op::Axpby => "axpby",
            Op::Mul => "mul",
            Op::SumRows => "sum_rows",
            Op::ArgmaxRows => "argmax_rows",
            Op::SignStep => "sign_step",
            Op::StepProjectLinf => "step_project_linf",
            Op::StepProjectL2 => "step_project_l2",
            Op::SgdUpdate => "sgd_update",
            Op::AdamUpdate => "adam_update",
            Op::RngFill => "rng_fill",
        }
    }

    /// Tolerance of this op against the f32 reference, given the length of the reduction
    /// each output element sums over (1 for elementwise ops). Rounding error of a sum of
    /// `k` products grows like sqrt(k) for a blocked or tree order, so both bounds widen with it.
    pub fn tolerance(self, reduction_len: usize) -> Tolerance {
        let k = (reduction_len.max(1)) as f64;
        match self {
            // Bit-exact by construction: comparisons, selects, integer counters.
            Op::ReluFwd | Op::ReluBwd | Op::MaxPool2dFwd | Op::ArgmaxRows | Op::SignStep | Op::StepProjectLinf => {
                Tolerance::EXACT
            }
            // uniform/sign are exact; normal goes through log/cos, whose last bits may differ.
            Op::RngFill => Tolerance { abs: 1e-6, rel: 1e-5 },
            Op::Axpby | Op::Mul | Op::BiasAdd | Op::SgdUpdate => Tolerance { abs: 1e-6, rel: 1e-6 },
            // sqrt and division per element.
            Op::AdamUpdate | Op::StepProjectL2 | Op::SoftmaxXent => Tolerance { abs: 1e-5, rel: 1e-5 },
            _ => Tolerance { abs: 1e-5 * k.sqrt(), rel: 2e-5 * k.sqrt() },
        }
    }
}

fn pos(op: &'static str, name: &str, v: usize) -> Result<u32> {
    if v == 0 {
        return Err(Error::invalid(op, format!("{name} must be > 0")));
    }
    u32::try_from(v).map_err(|_| Error::invalid(op, format!("{name} = {v} does not fit in u32")))
}

fn fits(op: &'static str, name: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(op, format!("{name} = {v} does not fit in u32")))
}

/// 2-D convolution, NCHW input [n, c_in, h, w], weight [c_out, c_in, kh, kw], output
/// [n, c_out, h_out, w_out], symmetric zero padding, no dilation, no groups.
///
/// Build it with [`Conv2dParams::new`], which checks the geometry; the output size is
/// h_out = (h + 2 pad - kh) / stride + 1 (floor), likewise w_out.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Conv2dParams {
    /// Batch size.
    pub n: u32,
    /// Input channels.
    pub c_in: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output channels.
    pub c_out: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Stride, the same in both directions (> 0).
    pub stride: u32,
    /// Zero padding on each of the four sides.
    pub pad: u32,
    /// Output height.
    pub h_out: u32,
    /// Output width.
    pub w_out: u32,
    /// Padding to 48 bytes; always 0.
    pub _pad0: u32,
}

impl Conv2dParams {
    /// Validates the geometry of input `[n, c_in, h, w]` and weight `[c_out, c_in, kh, kw]`
    /// and computes the output size.
    ///
    /// # Errors
    /// [`Error::Shape`] when the channel counts differ or the kernel is larger than the padded
    /// input; [`Error::InvalidArgument`] for a zero dimension or stride, or a size that does
    /// not fit in u32.
    ///
    /// ```
    /// use perturb_core::ops::Conv2dParams;
    ///
    /// // 28x28 MNIST, 16 filters of 4x4, stride 2, pad 1 -> 14x14.
    /// let p = Conv2dParams::new([8, 1, 28, 28], [16, 1, 4, 4], 2, 1).unwrap();
    /// assert_eq!(p.output_dims(), [8, 16, 14, 14]);
    /// assert_eq!(p.patch_len(), 16);
    /// assert!(Conv2dParams::new([8, 3, 28, 28], [16, 1, 4, 4], 2, 1).is_err()); // 3 vs 1 channels
    /// ```
    pub fn new(input: [usize; 4], weight: [usize; 4], stride: usize, pad: usize) -> Result<Self> {
        const OP: &str = "conv2d";
        let [n, c_in, h, w] = input;
        let [c_out, wc_in, kh, kw] = weight;
        if wc_in != c_in {
            return Err(Error::shape(
                OP,
                format!("input {input:?} has {c_in} channels but weight {weight:?} expects {wc_in}"),
            ));
        }
        pos(OP, "stride", stride)?;
        for (name, v) in [
            ("batch", n),
            ("in channels", c_in),
            ("height", h),
            ("width", w),
            ("out channels", c_out),
            ("kernel height", kh),
            ("kernel width", kw),
        ] {
            pos(OP, name, v)?;
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            return Err(Error::shape(
                OP,
                format!(
                    "kernel {kh}x{kw} larger than padded input {}x{} (input {input:?}, pad {pad})",
                    h + 2 * pad,
                    w + 2 * pad
                ),
            ));
        }
        let h_out = (h + 2 * pad - kh) / stride + 1;
        let w_out = (w + 2 * pad - kw) / stride + 1;
        Ok(Conv2dParams {
            n: fits(OP, "n", n)?,
            c_in: fits(OP, "c_in", c_in)?,
            h: fits(OP, "h", h)?,
            w: fits(OP, "w", w)?,
            c_out: fits(OP, "c_out", c_out)?,
            kh: fits(OP, "kh", kh)?,
            kw: fits(OP, "kw", kw)?,
            stride: fits(OP, "stride", stride)?,
            pad: fits(OP, "pad", pad)?,
            h_out: fits(OP, "h_out", h_out)?,
            w_out: fits(OP, "w_out", w_out)?,
            _pad0: 0,
        })
    }
    /// The input shape `[n, c_in, h, w]`.
    pub fn input_dims(&self) -> [usize; 4] {
        [self.n as usize, self.c_in as usize, self.h as usize, self.w as usize]
    }
    /// The weight shape `[c_out, c_in, kh, kw]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        [self.c_out as usize, self.c_in as usize, self.kh as usize, self.kw as usize]
    }
    /// The output shape `[n, c_out, h_out, w_out]`.
    pub fn output_dims(&self) -> [usize; 4] {
        [self.n as usize, self.c_out as usize, self.h_out as usize, self.w_out as usize]
    }
    /// Length of the dot product behind each output element (c_in * kh * kw).
    pub fn patch_len(&self) -> usize {
        (self.c_in * self.kh * self.kw) as usize
    }
    fn macs(&self) -> f64 {
        let [n, _, ho, wo] = self.output_dims();
        (n * self.c_out as usize * ho * wo) as f64 * self.patch_len() as f64
    }
    fn elems(&self) -> f64 {
        (self.input_dims().iter().product::<usize>()
            + self.weight_dims().iter().product::<usize>()
            + self.output_dims().iter().product::<usize>()) as f64
    }
    /// Work of the forward op; each backward is the same product reordered, so the same count.
    pub fn work(&self) -> Work {
        Work::new(2.0 * self.macs(), self.elems())
    }
}

/// Fully connected layer without bias: y[m, n] = x[m, k] · w[n, k]^T.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct LinearParams {
    /// Rows of x (the batch).
    pub m: u32,
    /// Input features.
    pub k: u32,
    /// Output features.
    pub n: u32,
    /// Padding to 16 bytes; always 0.
    pub _pad0: u32,
}

impl LinearParams {
    /// x [m, k], w [n, k], y [m, n]. [`Error::InvalidArgument`] if any size is 0 or does not
    /// fit in u32.
    pub fn new(m: usize, k: usize, n: usize) -> Result<Self> {
        const OP: &str = "linear";
        Ok(LinearParams {
            m: pos(OP, "batch", m)?,
            k: pos(OP, "in features", k)?,
            n: pos(OP, "out features", n)?,
            _pad0: 0,
        })
    }
    /// 2 m k n FLOPs; x, w and y each moved once. Each backward direction is the same product
    /// reordered, so the same count.
    pub fn work(&self) -> Work {
        let (m, k, n) = (self.m as f64, self.k as f64, self.n as f64);
        Work::new(2.0 * m * k * n, m * k + n * k + m * n)
    }
}

/// Per-channel bias over a tensor viewed as [outer, channels, inner]
/// (linear: inner = 1; conv NCHW: outer = N, inner = H*W).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct BiasParams {
    /// Product of the dimensions before the channel dimension (the batch).
    pub outer: u32,
    /// Channels: the bias length.
    pub channels: u32,
    /// Product of the dimensions after the channel dimension (h * w for NCHW, 1 for linear).
    pub inner: u32,
    /// Padding to 16 bytes; always 0.
    pub _pad0: u32,
}

impl BiasParams {
    /// [`Error::InvalidArgument`] if any size is 0 or does not fit in u32.
    pub fn new(outer: usize, channels: usize, inner: usize) -> Result<Self> {
        const OP: &str = "bias";
        Ok(BiasParams {
            outer: pos(OP, "outer", outer)?,
            channels: pos(OP, "channels", channels)?,
            inner: pos(OP, "inner", inner)?,
            _pad0: 0,
        })
    }
    /// Elements of y: outer * channels * inner.
    pub fn len(&self) -> usize {
        (self.outer * self.channels * self.inner) as usize
    }
    /// True when y has no elements (never, for params built by [`BiasParams::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bias add: one add per element; reads y and b, writes the output.
    pub fn work(&self) -> Work {
        let len = self.len() as f64;
        Work::new(len, 2.0 * len + self.channels as f64)
    }
    /// Bias gradient: reads dy, writes one value per channel.
    pub fn grad_work(&self) -> Work {
        let len = self.len() as f64;
        Work::new(len, len + self.channels as f64)
    }
}

/// Max pooling, NCHW, square window `k`, stride `stride`, no padding; backward routes each
/// output gradient to the first maximum of its window (PyTorch's tie rule).
///
/// h_out = (h - k) / stride + 1 (floor), likewise w_out: a partial window at the edge is dropped.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Pool2dParams {
    /// Batch size.
    pub n: u32,
    /// Channels.
    pub c: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Window side.
    pub k: u32,
    /// Stride, the same in both directions.
    pub stride: u32,
    /// Output height.
    pub h_out: u32,
    /// Output width.
    pub w_out: u32,
}

impl Pool2dParams {
    /// Validates input `[n, c, h, w]`, window `k` and `stride`. [`Error::InvalidArgument`] for
    /// a zero size, window or stride; [`Error::Shape`] when the window is larger than the input.
    pub fn new(input: [usize; 4], k: usize, stride: usize) -> Result<Self> {
        const OP: &str = "maxpool2d";
        let [n, c, h, w] = input;
        pos(OP, "kernel", k)?;
        pos(OP, "stride", stride)?;
        if h < k || w < k {
            return Err(Error::shape(OP, format!("window {k}x{k} larger than input {input:?}")));
        }
        Ok(Pool2dParams {
            n: pos(OP, "batch", n)?,
            c: pos(OP, "channels", c)?,
            h: pos(OP, "height", h)?,
            w: pos(OP, "width", w)?,
            k: k as u32,
            stride: stride as u32,
            h_out: fits(OP, "h_out", (h - k) / stride + 1)?,
            w_out: fits(OP, "w_out", (w - k) / stride + 1)?,
        })
    }
    /// The input shape `[n, c, h, w]`.
    pub fn input_dims(&self) -> [usize; 4] {
        [self.n as usize, self.c as usize, self.h as usize, self.w as usize]
    }
    /// The output shape `[n, c, h_out, w_out]`.
    pub fn output_dims(&self) -> [usize; 4] {
        [self.n as usize, self.c as usize, self.h_out as usize, self.w_out as usize]
    }
    /// Forward: k² comparisons per output; reads x, writes y.
    pub fn work(&self) -> Work {
        let out = self.output_dims().iter().product::<usize>() as f64;
        let inp = self.input_dims().iter().product::<usize>() as f64;
        Work::new(out * (self.k * self.k) as f64, inp + out)
    }
    /// Backward reads x and dy, writes dx.
    pub fn bwd_work(&self) -> Work {
        let out = self.output_dims().iter().product::<usize>() as f64;
        let inp = self.input_dims().iter().product::<usize>() as f64;
        Work::new(out * (self.k * self.k) as f64, 2.0 * inp + out)
    }
}

/// Fused softmax cross-entropy forward and backward over logits [n, classes] and u32 labels `[n]`:
/// per-example losses `[n]` and dlogits = (softmax - onehot) * grad_scale (1/n for the mean).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct XentParams {
    /// Batch size (rows of the logits).
    pub n: u32,
    /// Classes (columns of the logits).
    pub classes: u32,
    /// Factor applied to dlogits: 1/n for a mean loss, 1 for a sum.
    pub grad_scale: f32,
    /// Padding to 16 bytes; always 0.
    pub _pad0: u32,
}

impl XentParams {
    /// [`Error::InvalidArgument`] if `n` or `classes` is 0 or does not fit in u32.
    pub fn new(n: usize, classes: usize, grad_scale: f32) -> Result<Self> {
        const OP: &str = "softmax_xent";
        Ok(XentParams { n: pos(OP, "batch", n)?, classes: pos(OP, "classes", classes)?, grad_scale, _pad0: 0 })
    }
    /// About 5 FLOPs per logit; reads logits and labels, writes losses and dlogits.
    pub fn work(&self) -> Work {
        let (n, c) = (self.n as f64, self.classes as f64);
        // max, exp, sum, normalise, subtract: about 5 per logit.
        Work::new(5.0 * n * c, 2.0 * n * c + 2.0 * n)
    }
}

/// Elementwise ops over `len` elements: axpby (out = a*x + b*y), mul (out = x*y), relu.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct EltParams {
    /// Elements.
    pub len: u32,
    /// axpby's factor of x (unused by mul).
    pub a: f32,
    /// axpby's factor of y (unused by mul).
    pub b: f32,
    /// Padding to 16 bytes; always 0.
    pub _pad0: u32,
}

impl EltParams {
    /// [`Error::InvalidArgument`] if `len` does not fit in u32 (0 is allowed).
    pub fn new(len: usize, a: f32, b: f32) -> Result<Self> {
        Ok(EltParams { len: fits("elementwise", "len", len)?, a, b, _pad0: 0 })
    }
    /// `inputs` tensors read, one written, `flops_per` each.
    pub fn work(&self, inputs: usize, flops_per: f64) -> Work {
        let len = self.len as f64;
        Work::new(flops_per * len, (inputs as f64 + 1.0) * len)
    }
}

/// Row reductions over a [rows, cols] view: sum_rows, argmax_rows.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct RowParams {
    /// Rows: the output length.
    pub rows: u32,
    /// Columns: the length each output reduces over.
    pub cols: u32,
    /// Padding to 16 bytes; always 0.
    pub _pad0: u32,
    /// Padding to 16 bytes; always 0.
    pub _pad1: u32,
}

impl RowParams {
    /// [`Error::InvalidArgument`] if `rows` or `cols` is 0 or does not fit in u32.
    pub fn new(rows: usize, cols: usize) -> Result<Self> {
        const OP: &str = "rows";
        Ok(RowParams { rows: pos(OP, "rows", rows)?, cols: pos(OP, "cols", cols)?, _pad0: 0, _pad1: 0 })
    }
    /// One FLOP (an add or a comparison) per element; reads x, writes one value per row.
    pub fn work(&self) -> Work {
        let (r, c) = (self.rows as f64, self.cols as f64);
        Work::new(r * c, r * c + r)
    }
}

/// The attack step, in place on x of [n, d] (d = features per example), with x0 the clean
/// input and g the gradient:
/// - sign_step: x = clip(x + alpha * sign(g), lo, hi) (the FGSM step; eps unused);
/// - step_project_linf: x = clip(clamp(x + alpha * sign(g), x0 - eps, x0 + eps), lo, hi);
/// - step_project_l2: s = x + alpha * g / ||g||_2 (per example; zero g → no step),
///   x = clip(x0 + (s - x0) * min(1, eps / ||s - x0||_2), lo, hi).
///
/// sign(0) = 0, as in PyTorch.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct StepParams {
    /// Examples.
    pub n: u32,
    /// Features per example (c * h * w for images).
    pub d: u32,
    /// Step size, in data units (any finite value; 0 projects and clips without stepping).
    pub alpha: f32,
    /// Radius of the ball around x0 (L-inf or L2), in data units; >= 0.
    pub eps: f32,
    /// Lower end of the data range every result is clipped to.
    pub lo: f32,
    /// Upper end of the data range.
    pub hi: f32,
    /// Padding to 32 bytes; always 0.
    pub _pad0: u32,
    /// Padding to 32 bytes; always 0.
    pub _pad1: u32,
}

impl StepParams {
    /// x viewed as [n, d]. [`Error::InvalidArgument`] when alpha or eps is not finite, eps < 0,
    /// lo > hi (or either is NaN), or n or d is 0.
    pub fn new(n: usize, d: usize, alpha: f32, eps: f32, lo: f32, hi: f32) -> Result<Self> {
        const OP: &str = "attack step";
        if !alpha.is_finite() || !eps.is_finite() || eps < 0.0 {
            return Err(Error::invalid(OP, format!("alpha = {alpha} and eps = {eps} must be finite, eps >= 0")));
        }
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(Error::invalid(OP, format!("clip range [{lo}, {hi}] is empty")));
        }
        Ok(StepParams { n: pos(OP, "batch", n)?, d: pos(OP, "features", d)?, alpha, eps, lo, hi, _pad0: 0, _pad1: 0 })
    }
    /// Reads x, g (and x0 for projections), writes x.
    pub fn work(&self, reads: usize) -> Work {
        let len = (self.n as f64) * (self.d as f64);
        Work::new(4.0 * len, (reads as f64 + 1.0) * len)
    }
}

/// SGD with momentum and weight decay (PyTorch's rule, dampening 0):
/// g' = g + wd * w; m = momentum * m + g'; w -= lr * (nesterov ? g' + momentum * m : m).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct SgdParams {
    /// Elements of w, g and m.
    pub len: u32,
    /// Learning rate (>= 0).
    pub lr: f32,
    /// Momentum in [0, 1).
    pub momentum: f32,
    /// L2 weight decay added to the gradient (>= 0).
    pub weight_decay: f32,
    /// 1 for Nesterov momentum, 0 for heavy-ball.
    pub nesterov: u32,
    /// Padding to 32 bytes; always 0.
    pub _pad0: u32,
    /// Padding to 32 bytes; always 0.
    pub _pad1: u32,
    /// Padding to 32 bytes; always 0.
    pub _pad2: u32,
}

impl SgdParams {
    /// [`Error::InvalidArgument`] unless lr >= 0, 0 <= momentum < 1, weight_decay >= 0 (all
    /// finite) and `len` fits in u32.
    pub fn new(len: usize, lr: f32, momentum: f32, weight_decay: f32, nesterov: bool) -> Result<Self> {
        const OP: &str = "sgd_update";
        let ok = lr.is_finite()
            && lr >= 0.0
            && (0.0..1.0).contains(&momentum)
            && weight_decay.is_finite()
            && weight_decay >= 0.0;
        if !ok {
            return Err(Error::invalid(
                OP,
                format!(
                    "lr = {lr}, momentum = {momentum}, weight_decay = {weight_decay}: need lr >= 0, 0 <= momentum < 1, weight_decay >= 0"
                ),
            ));
        }
        Ok(SgdParams {
            len: fits(OP, "len", len)?,
            lr,
            momentum,
            weight_decay,
            nesterov: nesterov as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        })
    }
    /// 6 FLOPs per element; reads w, g, m and writes w, m.
    pub fn work(&self) -> Work {
        let len = self.len as f64;
        // reads w, g, m; writes w, m
        Work::new(6.0 * len, 5.0 * len)
    }
}

/// Adam / AdamW (PyTorch's rule). `bc1 = 1 - beta1^t`, `bc2 = 1 - beta2^t` are computed on the
/// host so every backend uses the same values. decoupled = 0: L2 penalty added to g (Adam);
/// 1: w *= 1 - lr * wd before the step (AdamW).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct AdamParams {
    /// Elements of w, g, m and v.
    pub len: u32,
    /// Learning rate (>= 0).
    pub lr: f32,
    /// First-moment decay in [0, 1).
    pub beta1: f32,
    /// Second-moment decay in [0, 1).
    pub beta2: f32,
    /// Added to sqrt(v̂) in the denominator (> 0).
    pub eps: f32,
    /// Weight decay (>= 0): an L2 term for Adam, a decoupled decay for AdamW.
    pub weight_decay: f32,
    /// 1 - beta1^step.
    pub bc1: f32,
    /// 1 - beta2^step.
    pub bc2: f32,
    /// 1 for AdamW (decoupled decay), 0 for Adam.
    pub decoupled: u32,
    /// Padding to 48 bytes; always 0.
    pub _pad0: u32,
    /// Padding to 48 bytes; always 0.
    pub _pad1: u32,
    /// Padding to 48 bytes; always 0.
    pub _pad2: u32,
}

impl AdamParams {
    /// The params of update number `step` (counting from 1), with its bias corrections.
    /// [`Error::InvalidArgument`] for step 0, lr < 0, a beta outside [0, 1), eps <= 0,
    /// weight_decay < 0, a non-finite value, or a `len` that does not fit in u32.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        len: usize,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        step: u64,
        decoupled: bool,
    ) -> Result<Self> {
        const OP: &str = "adam_update";
        if step == 0 {
            return Err(Error::invalid(OP, "step counts from 1"));
        }
        let ok = lr.is_finite()
            && lr >= 0.0
            && (0.0..1.0).contains(&beta1)
            && (0.0..1.0).contains(&beta2)
            && eps.is_finite()
            && eps > 0.0
            && weight_decay.is_finite()
            && weight_decay >= 0.0;
        if !ok {
            return Err(Error::invalid(
                OP,
                format!(
                    "lr = {lr}, betas = ({beta1}, {beta2}), eps = {eps}, weight_decay = {weight_decay} out of range"
                ),
            ));
        }
        let t = step.min(i32::MAX as u64) as i32;
        let bc1 = (1.0 - (beta1 as f64).powi(t)) as f32;
        let bc2 = (1.0 - (beta2 as f64).powi(t)) as f32;
        Ok(AdamParams {
            len: fits(OP, "len", len)?,
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            bc1,
            bc2,
            decoupled: decoupled as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        })
    }
    /// 12 FLOPs per element; reads w, g, m, v and writes w, m, v.
    pub fn work(&self) -> Work {
        let len = self.len as f64;
        // reads w, g, m, v; writes w, m, v
        Work::new(12.0 * len, 7.0 * len)
    }
}

/// Which stream `rng_fill_` draws: see [`crate::rng`].
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dist {
    /// Uniform in [a, b).
    Uniform = 0,
    /// Normal with mean a, standard deviation b.
    Normal = 1,
    /// a * (+1 or -1) with equal probability.
    Sign = 2,
}

/// Fills a tensor of `len` elements from the Philox stream (key = seed, counter from `offset`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RngParams {
    /// Elements to fill.
    pub len: u32,
    /// Low 32 bits of the seed (the Philox key).
    pub key_lo: u32,
    /// High 32 bits of the seed.
    pub key_hi: u32,
    /// Low 32 bits of the starting counter block.
    pub ctr_lo: u32,
    /// High 32 bits of the starting counter block.
    pub ctr_hi: u32,
    /// The [`Dist`] as its `u32` discriminant.
    pub dist: u32,
    /// First parameter of the distribution (see [`Dist`]).
    pub a: f32,
    /// Second parameter of the distribution (see [`Dist`]).
    pub b: f32,
}

impl RngParams {
    /// A fill of `len` elements of `dist` from key `seed`, starting at counter block `offset`
    /// (advance it by [`crate::rng::counters_used`] between fills). [`Error::InvalidArgument`]
    /// if `len` does not fit in u32.
    pub fn new(len: usize, seed: u64, offset: u64, dist: Dist, a: f32, b: f32) -> Result<Self> {
        Ok(RngParams {
            len: fits("rng_fill", "len", len)?,
            key_lo: seed as u32,
            key_hi: (seed >> 32) as u32,
            ctr_lo: offset as u32,
            ctr_hi: (offset >> 32) as u32,
            dist: dist as u32,
            a,
            b,
        })
    }
    /// The 64-bit seed.
    pub fn seed(&self) -> u64 {
        self.key_lo as u64 | ((self.key_hi as u64) << 32)
    }
    /// The 64-bit starting counter block.
    pub fn offset(&self) -> u64 {
        self.ctr_lo as u64 | ((self.ctr_hi as u64) << 32)
    }
    /// The distribution; [`Error::InvalidArgument`] for a discriminant that names none (only
    /// possible for params not built by [`RngParams::new`]).
    pub fn dist(&self) -> Result<Dist> {
        match self.dist {
            0 => Ok(Dist::Uniform),
            1 => Ok(Dist::Normal),
            2 => Ok(Dist::Sign),
            d => Err(Error::invalid("rng_fill", format!("unknown distribution {d}"))),
        }
    }
    /// About 20 integer ops per element; writes the fill.
    pub fn work(&self) -> Work {
        // Philox4x32-10: 10 rounds of 2 mul-hi/lo pairs per 4 outputs, ~20 ops per element.
        Work::new(20.0 * self.len as f64, self.len as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_structs_are_16_byte_multiples() {
        let sizes = [
            std::mem::size_of::<Conv2dParams>(),
            std::mem::size_of::<LinearParams>(),
            std::mem::size_of::<BiasParams>(),
            std::mem::size_of::<Pool2dParams>(),
            std::mem::size_of::<XentParams>(),
            std::mem::size_of::<EltParams>(),
            std::mem::size_of::<RowParams>(),
            std::mem::size_of::<StepParams>(),
            std::mem::size_of::<SgdParams>(),
            std::mem::size_of::<AdamParams>(),
            std::mem::size_of::<RngParams>(),
        ];
        assert_eq!(sizes, [48, 16, 16, 32, 16, 16, 16, 32, 32, 48, 32]);
    }

    #[test]
    fn conv_geometry_and_work() {
        let p = Conv2dParams::new([128, 32, 26, 26], [64, 32, 3, 3], 1, 0).unwrap();
        assert_eq!(p.output_dims(), [128, 64, 24, 24]);
        // 2 * N * Cout * Ho * Wo * Cin * kh * kw
        assert_eq!(p.work().flops, 2.0 * 128.0 * 64.0 * 576.0 * 288.0);
        let p = Conv2dParams::new([1, 1, 28, 28], [16, 1, 4, 4], 2, 1).unwrap();
        assert_eq!(p.output_dims(), [1, 16, 14, 14]);
    }

    #[test]
    fn conv_rejects_bad_shapes() {
        let e = Conv2dParams::new([2, 3, 8, 8], [4, 2, 3, 3], 1, 0).unwrap_err().to_string();
        assert!(e.contains("3 channels") && e.contains("expects 2"), "{e}");
        assert!(Conv2dParams::new([2, 3, 2, 2], [4, 3, 5, 5], 1, 0).is_err());
        assert!(Conv2dParams::new([2, 3, 8, 8], [4, 3, 3, 3], 0, 0).is_err());
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Op::ALL.len());
    }

    #[test]
    fn adam_bias_correction() {
        let p = AdamParams::new(10, 1e-3, 0.9, 0.999, 1e-8, 0.0, 2, false).unwrap();
        assert!((p.bc1 - 0.19).abs() < 1e-7);
        assert!((p.bc2 - (1.0 - 0.999f32 * 0.999)).abs() < 1e-7);
    }
}
