//! What a kernel-level bench row runs: [`Spec`], one op (or the conv layer) with its registry
//! parameters; its seeded inputs, its outputs on any backend, its `work()` and tolerance, the
//! host reference its outputs must match, and the `--shapes` syntax of its family.

use super::reference::{self as r, Expect};
use crate::{Error, Result};
use perturb_core::naive;
use perturb_core::ops::{
    AdamParams, BiasParams, Conv2dParams, Dist, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use perturb_core::{Backend, Op, Shape, Tensor, Work, rng};

/// Host data of one input.
#[derive(Debug, Clone)]
pub enum HostData {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

/// One input: data and dims.
#[derive(Debug, Clone)]
pub struct HostIn {
    pub data: HostData,
    pub dims: Vec<usize>,
}

impl HostIn {
    /// The f32 data (empty for a u32 input).
    pub fn f32s(&self) -> &[f32] {
        match &self.data {
            HostData::F32(v) => v,
            HostData::U32(_) => &[],
        }
    }
    fn u32s(&self) -> &[u32] {
        match &self.data {
            HostData::U32(v) => v,
            HostData::F32(_) => &[],
        }
    }
    /// A copy on backend `b`.
    pub fn upload<B: Backend>(&self, b: &B) -> perturb_core::Result<Tensor<B>> {
        match &self.data {
            HostData::F32(v) => b.upload_f32(v, &Shape::from(self.dims.as_slice())),
            HostData::U32(v) => b.upload_u32(v, &Shape::from(self.dims.as_slice())),
        }
    }
}

/// Seeded uniform data in [lo, hi) from the shared Philox stream.
pub fn uniform(seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    match RngParams::new(len, seed, 0, Dist::Uniform, lo, hi) {
        Ok(p) => (0..len).map(|i| rng::sample(&p, Dist::Uniform, i as u64)).collect(),
        Err(_) => vec![0.0; len],
    }
}

fn f32_in(seed: u64, dims: &[usize], lo: f32, hi: f32) -> HostIn {
    HostIn { data: HostData::F32(uniform(seed, dims.iter().product(), lo, hi)), dims: dims.to_vec() }
}

/// One kernel-level row: the op and its registry parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spec {
    Conv(Op, Conv2dParams),
    /// Forward plus both backwards of one conv layer, back to back.
    ConvLayer(Conv2dParams),
    Linear(Op, LinearParams),
    BiasAdd(BiasParams),
    BiasGrad(BiasParams),
    Relu(Op, usize),
    Pool(Op, Pool2dParams),
    Xent(XentParams),
    Axpby(EltParams),
    Mul(EltParams),
    Rows(Op, RowParams),
    Step(Op, StepParams),
    Sgd(SgdParams),
    Adam(AdamParams),
    Rng(RngParams),
}

const CONV_OPS: [Op; 3] = [Op::Conv2dFwd, Op::Conv2dBwdInput, Op::Conv2dBwdWeight];

impl Spec {
    /// The row's op name.
    pub fn name(&self) -> &'static str {
        match self {
            Spec::ConvLayer(_) => "conv2d_layer",
            s => s.ops()[0].name(),
        }
    }

    /// The registry ops this row launches (whose variants it can select).
    pub fn ops(&self) -> Vec<Op> {
        match *self {
            Spec::Conv(op, _) | Spec::Linear(op, _) | Spec::Relu(op, _) | Spec::Pool(op, _) => vec![op],
            Spec::Rows(op, _) | Spec::Step(op, _) => vec![op],
            Spec::ConvLayer(_) => CONV_OPS.to_vec(),
            Spec::BiasAdd(_) => vec![Op::BiasAdd],
            Spec::BiasGrad(_) => vec![Op::BiasGrad],
            Spec::Xent(_) => vec![Op::SoftmaxXent],
            Spec::Axpby(_) => vec![Op::Axpby],
            Spec::Mul(_) => vec![Op::Mul],
            Spec::Sgd(_) => vec![Op::SgdUpdate],
            Spec::Adam(_) => vec![Op::AdamUpdate],
            Spec::Rng(_) => vec![Op::RngFill],
        }
    }

    /// The problem size in words.
    pub fn shape(&self) -> String {
        match self {
            Spec::Conv(_, p) | Spec::ConvLayer(p) => {
                format!("x{:?} w{:?} s{} p{}", p.input_dims(), p.weight_dims(), p.stride, p.pad)
            }
            Spec::Linear(_, p) => format!("m{} k{} n{}", p.m, p.k, p.n),
            Spec::BiasAdd(p) | Spec::BiasGrad(p) => format!("[{}, {}, {}]", p.outer, p.channels, p.inner),
            Spec::Relu(_, len) => format!("len {len}"),
            Spec::Pool(_, p) => format!("x{:?} k{} s{}", p.input_dims(), p.k, p.stride),
            Spec::Xent(p) => format!("[{}, {}]", p.n, p.classes),
            Spec::Axpby(p) | Spec::Mul(p) => format!("len {}", p.len),
            Spec::Rows(_, p) => format!("[{}, {}]", p.rows, p.cols),
            Spec::Step(_, p) => format!("[{}, {}]", p.n, p.d),
            Spec::Sgd(p) => format!("len {}", p.len),
            Spec::Adam(p) => format!("len {}", p.len),
            Spec::Rng(p) => format!("len {}", p.len),
        }
    }

    /// FLOPs and compulsory bytes of one call, from the registry's `work()`.
    pub fn work(&self) -> Work {
        match *self {
            Spec::Conv(_, p) => p.work(),
            Spec::ConvLayer(p) => p.work() + p.work() + p.work(),
            Spec::Linear(_, p) => p.work(),
            Spec::BiasAdd(p) => p.work(),
            Spec::BiasGrad(p) => p.grad_work(),
            Spec::Relu(op, len) => {
                let e = EltParams { len: len as u32, a: 0.0, b: 0.0, _pad0: 0 };
                if op == Op::ReluFwd { e.work(1, 1.0) } else { e.work(2, 1.0) }
            }
            Spec::Pool(op, p) => {
                if op == Op::MaxPool2dFwd {
                    p.work()
                } else {
                    p.bwd_work()
                }
            }
            Spec::Xent(p) => p.work(),
            Spec::Axpby(p) => p.work(2, 3.0),
            Spec::Mul(p) => p.work(2, 1.0),
            Spec::Rows(_, p) => p.work(),
            Spec::Step(op, p) => p.work(if op == Op::SignStep { 2 } else { 3 }),
            Spec::Sgd(p) => p.work(),
            Spec::Adam(p) => p.work(),
            Spec::Rng(p) => p.work(),
        }
    }

    /// (op, reduction length) of each output, for its tolerance.
    pub fn tolerances(&self) -> Vec<(Op, usize)> {
        match *self {
            Spec::Conv(op, p) => vec![(op, conv_reduction(op, &p))],
            Spec::ConvLayer(p) => CONV_OPS.iter().map(|&op| (op, conv_reduction(op, &p))).collect(),
            Spec::Linear(op, p) => {
                let k = match op {
                    Op::LinearFwd => p.k,
                    Op::LinearBwdInput => p.n,
                    _ => p.m,
                };
                vec![(op, k as usize)]
            }
            Spec::BiasGrad(p) => vec![(Op::BiasGrad, (p.outer * p.inner) as usize)],
            Spec::Rows(op, p) => vec![(op, p.cols as usize)],
            Spec::Xent(_) => vec![(Op::SoftmaxXent, 1); 2],
            Spec::Sgd(_) => vec![(Op::SgdUpdate, 1); 2],
            Spec::Adam(_) => vec![(Op::AdamUpdate, 1); 3],
            s => vec![(s.ops()[0], 1)],
        }
    }

    /// The seeded host inputs, in the order [`Spec::run`] takes them.
    pub fn inputs(&self) -> Vec<HostIn> {
        let f = f32_in;
        match *self {
            Spec::Conv(op, p) => {
                let (x, w, y) = (p.input_dims(), p.weight_dims(), p.output_dims());
                match op {
                    Op::Conv2dFwd => vec![f(1, &x, -1.0, 1.0), f(2, &w, -1.0, 1.0)],
                    Op::Conv2dBwdInput => vec![f(3, &y, -1.0, 1.0), f(2, &w, -1.0, 1.0)],
                    _ => vec![f(1, &x, -1.0, 1.0), f(3, &y, -1.0, 1.0)],
                }
            }
            Spec::ConvLayer(p) => {
                vec![
                    f(1, &p.input_dims(), -1.0, 1.0),
                    f(2, &p.weight_dims(), -1.0, 1.0),
                    f(3, &p.output_dims(), -1.0, 1.0),
                ]
            }
            Spec::Linear(op, p) => {
                let (m, k, n) = (p.m as usize, p.k as usize, p.n as usize);
                match op {
                    Op::LinearFwd => vec![f(1, &[m, k], -1.0, 1.0), f(2, &[n, k], -1.0, 1.0)],
                    Op::LinearBwdInput => vec![f(3, &[m, n], -1.0, 1.0), f(2, &[n, k], -1.0, 1.0)],
                    _ => vec![f(1, &[m, k], -1.0, 1.0), f(3, &[m, n], -1.0, 1.0)],
                }
            }
            Spec::BiasAdd(p) => {
                let d = [p.outer as usize, p.channels as usize, p.inner as usize];
                vec![f(1, &d, -1.0, 1.0), f(2, &[d[1]], -1.0, 1.0)]
            }
            Spec::BiasGrad(p) => vec![f(1, &[p.outer as usize, p.channels as usize, p.inner as usize], -1.0, 1.0)],
            Spec::Relu(op, len) => {
                if op == Op::ReluFwd {
                    vec![f(1, &[len], -1.0, 1.0)]
                } else {
                    vec![f(2, &[len], -1.0, 1.0), f(1, &[len], -1.0, 1.0)]
                }
            }
            Spec::Pool(op, p) => {
                if op == Op::MaxPool2dFwd {
                    vec![f(1, &p.input_dims(), -1.0, 1.0)]
                } else {
                    vec![f(2, &p.output_dims(), -1.0, 1.0), f(1, &p.input_dims(), -1.0, 1.0)]
                }
            }
            Spec::Xent(p) => {
                let (n, c) = (p.n as usize, p.classes as usize);
                let labels = (0..n).map(|i| ((i * 7 + 3) % c) as u32).collect();
                vec![f(1, &[n, c], -4.0, 4.0), HostIn { data: HostData::U32(labels), dims: vec![n] }]
            }
            Spec::Axpby(p) | Spec::Mul(p) => {
                let n = p.len as usize;
                vec![f(1, &[n], -1.0, 1.0), f(2, &[n], -1.0, 1.0)]
            }
            Spec::Rows(_, p) => vec![f(1, &[p.rows as usize, p.cols as usize], -1.0, 1.0)],
            Spec::Step(op, p) => {
                let d = [p.n as usize, p.d as usize];
                let mut v = vec![f(1, &d, 0.0, 1.0), f(2, &d, -1.0, 1.0)];
                if op != Op::SignStep {
                    v.push(f(3, &d, 0.0, 1.0));
                }
                v
            }
            Spec::Sgd(p) => {
                let n = [p.len as usize];
                vec![f(1, &n, -1.0, 1.0), f(2, &n, -1.0, 1.0), f(3, &n, -0.1, 0.1)]
            }
            Spec::Adam(p) => {
                let n = [p.len as usize];
                vec![f(1, &n, -1.0, 1.0), f(2, &n, -1.0, 1.0), f(3, &n, -0.1, 0.1), f(4, &n, 0.0, 0.01)]
            }
            Spec::Rng(p) => vec![HostIn { data: HostData::F32(vec![0.0; p.len as usize]), dims: vec![p.len as usize] }],
        }
    }

    /// Runs the op once on `b` and returns the outputs to check (for in-place ops, the tensors
    /// they wrote).
    pub fn run<B: Backend>(&self, b: &B, t: &[Tensor<B>]) -> perturb_core::Result<Vec<Tensor<B>>> {
        Ok(match *self {
            Spec::Conv(op, p) => vec![match op {
                Op::Conv2dFwd => b.conv2d_fwd(&t[0], &t[1], &p)?,
                Op::Conv2dBwdInput => b.conv2d_bwd_input(&t[0], &t[1], &p)?,
                _ => b.conv2d_bwd_weight(&t[0], &t[1], &p)?,
            }],
            Spec::ConvLayer(p) => vec![
                b.conv2d_fwd(&t[0], &t[1], &p)?,
                b.conv2d_bwd_input(&t[2], &t[1], &p)?,
                b.conv2d_bwd_weight(&t[0], &t[2], &p)?,
            ],
            Spec::Linear(op, p) => vec![match op {
                Op::LinearFwd => b.linear_fwd(&t[0], &t[1], &p)?,
                Op::LinearBwdInput => b.linear_bwd_input(&t[0], &t[1], &p)?,
                _ => b.linear_bwd_weight(&t[0], &t[1], &p)?,
            }],
            Spec::BiasAdd(p) => vec![b.bias_add(&t[0], &t[1], &p)?],
            Spec::BiasGrad(p) => vec![b.bias_grad(&t[0], &p)?],
            Spec::Relu(op, _) => {
                vec![if op == Op::ReluFwd { b.relu_fwd(&t[0])? } else { b.relu_bwd(&t[0], &t[1])? }]
            }
            Spec::Pool(op, p) => {
                vec![if op == Op::MaxPool2dFwd {
                    b.maxpool2d_fwd(&t[0], &p)?
                } else {
                    b.maxpool2d_bwd(&t[0], &t[1], &p)?
                }]
            }
            Spec::Xent(p) => {
                let (l, d) = b.softmax_xent(&t[0], &t[1], &p)?;
                vec![l, d]
            }
            Spec::Axpby(p) => vec![b.axpby(&t[0], &t[1], &p)?],
            Spec::Mul(_) => vec![b.mul(&t[0], &t[1])?],
            Spec::Rows(op, p) => {
                vec![if op == Op::SumRows { b.sum_rows(&t[0], &p)? } else { b.argmax_rows(&t[0], &p)? }]
            }
            Spec::Step(op, p) => {
                match op {
                    Op::SignStep => b.sign_step_(&t[0], &t[1], &p)?,
                    Op::StepProjectLinf => b.step_project_linf_(&t[0], &t[1], &t[2], &p)?,
                    _ => b.step_project_l2_(&t[0], &t[1], &t[2], &p)?,
                }
                vec![t[0].clone()]
            }
            Spec::Sgd(p) => {
                b.sgd_update_(&t[0], &t[1], &t[2], &p)?;
                vec![t[0].clone(), t[2].clone()]
            }
            Spec::Adam(p) => {
                b.adam_update_(&t[0], &t[1], &t[2], &t[3], &p)?;
                vec![t[0].clone(), t[2].clone(), t[3].clone()]
            }
            Spec::Rng(p) => {
                b.rng_fill_(&t[0], &p)?;
                vec![t[0].clone()]
            }
        })
    }

    /// What each output of [`Spec::run`] on `ins` must be (the oracle, `perturb_core::naive`).
    pub fn reference(&self, ins: &[HostIn]) -> Vec<Expect> {
        let a = |i: usize| ins[i].f32s();
        let full = Expect::Full;
        match *self {
            Spec::Conv(op, p) => vec![r::conv(op, &p, a(0), a(1))],
            Spec::ConvLayer(p) => vec![
                r::conv(Op::Conv2dFwd, &p, a(0), a(1)),
                r::conv(Op::Conv2dBwdInput, &p, a(2), a(1)),
                r::conv(Op::Conv2dBwdWeight, &p, a(0), a(2)),
            ],
            Spec::Linear(op, p) => vec![r::linear(op, &p, a(0), a(1))],
            Spec::BiasAdd(p) => vec![full(naive::bias_add(a(0), a(1), &p))],
            Spec::BiasGrad(p) => vec![full(naive::bias_grad(a(0), &p))],
            Spec::Relu(op, _) => {
                vec![full(if op == Op::ReluFwd { naive::relu_fwd(a(0)) } else { naive::relu_bwd(a(0), a(1)) })]
            }
            Spec::Pool(op, p) => vec![full(if op == Op::MaxPool2dFwd {
                naive::maxpool2d_fwd(a(0), &p)
            } else {
                naive::maxpool2d_bwd(a(0), a(1), &p)
            })],
            Spec::Xent(p) => {
                let (l, d) = naive::softmax_xent(a(0), ins[1].u32s(), &p);
                vec![full(l), full(d)]
            }
            Spec::Axpby(p) => vec![full(naive::axpby(a(0), a(1), &p))],
            Spec::Mul(_) => vec![full(naive::mul(a(0), a(1)))],
            Spec::Rows(Op::SumRows, p) => vec![full(naive::sum_rows(a(0), &p))],
            Spec::Rows(_, p) => vec![full(naive::argmax_rows(a(0), &p).into_iter().map(|v| v as f32).collect())],
            Spec::Step(Op::SignStep, p) => vec![full(naive::sign_step(a(0), a(1), &p))],
            Spec::Step(Op::StepProjectLinf, p) => vec![full(naive::step_project_linf(a(0), a(1), a(2), &p))],
            Spec::Step(_, p) => vec![full(naive::step_project_l2(a(0), a(1), a(2), &p))],
            Spec::Sgd(p) => {
                let (w, m) = naive::sgd(a(0), a(1), a(2), &p);
                vec![full(w), full(m)]
            }
            Spec::Adam(p) => {
                let (w, m, v) = naive::adam(a(0), a(1), a(2), a(3), &p);
                vec![full(w), full(m), full(v)]
            }
            Spec::Rng(p) => vec![full(naive::rng_fill(&p))],
        }
    }
}

fn conv_reduction(op: Op, p: &Conv2dParams) -> usize {
    match op {
        Op::Conv2dFwd => p.patch_len(),
        Op::Conv2dBwdInput => (p.c_out * p.kh * p.kw) as usize,
        _ => (p.n * p.h_out * p.w_out) as usize,
    }
}

// ---- --shapes ------------------------------------------------------------------------------

fn bad(shape: &str, want: &str) -> Error {
    Error::flag("--shapes", format!("cannot read {shape:?}: expected {want}"))
}

/// `AxBxC...` as numbers; every one must be >= 1.
fn dims(s: &str, n: usize, shape: &str, want: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> =
        s.split('x').map(|t| t.trim().parse::<usize>().map_err(|_| bad(shape, want))).collect::<Result<_>>()?;
    if v.len() != n || v.contains(&0) {
        return Err(bad(shape, want));
    }
    Ok(v)
}

/// A `/`-separated option like `s2` or `p1` (`key` then a number).
fn opt_num(parts: &[&str], key: char, default: usize, shape: &str, want: &str) -> Result<usize> {
    for p in parts {
        if let Some(rest) = p.strip_prefix(key) {
            return rest.parse().map_err(|_| bad(shape, want));
        }
    }
    Ok(default)
}

/// The shape syntax of each op family, for error messages and `--help`.
pub const SHAPE_HELP: &str = "conv2d: NxCxHxW/KxCxRxS[/sS][/pP] (e.g. 128x32x26x26/64x32x3x3/s1/p0); \
linear: MxKxN (batch x in x out); bias: OUTERxCxINNER; relu, elementwise, optim, rng: LEN; \
maxpool2d: NxCxHxW[/kK][/sS]; softmax_xent, reduce: ROWSxCOLS; attack_step: NxD; \
train_step: BATCH; attack: MODEL/BATCH (e.g. cnn-small/128). Several shapes: comma-separated.";

/// Specs of `ops` (one family's ops) for one `--shapes` entry.
pub fn parse(family: &str, ops: &[Op], conv_layer: bool, shape: &str) -> Result<Vec<Spec>> {
    let parts: Vec<&str> = shape.split('/').map(str::trim).collect();
    let mut out = Vec::new();
    match family {
        "conv2d" => {
            let want = "NxCxHxW/KxCxRxS[/sS][/pP]";
            if parts.len() < 2 {
                return Err(bad(shape, want));
            }
            let x = dims(parts[0], 4, shape, want)?;
            let w = dims(parts[1], 4, shape, want)?;
            let s = opt_num(&parts[2..], 's', 1, shape, want)?;
            let pad = opt_num(&parts[2..], 'p', 0, shape, want)?;
            let p = Conv2dParams::new([x[0], x[1], x[2], x[3]], [w[0], w[1], w[2], w[3]], s, pad)
                .map_err(|e| Error::flag("--shapes", format!("{shape:?}: {e}")))?;
            out.extend(ops.iter().map(|&op| Spec::Conv(op, p)));
            if conv_layer {
                out.push(Spec::ConvLayer(p));
            }
        }
        "linear" => {
            let d = dims(shape, 3, shape, "MxKxN")?;
            let p = LinearParams::new(d[0], d[1], d[2])?;
            out.extend(ops.iter().map(|&op| Spec::Linear(op, p)));
        }
        "bias" => {
            let d = dims(shape, 3, shape, "OUTERxCxINNER")?;
            let p = BiasParams::new(d[0], d[1], d[2])?;
            for &op in ops {
                out.push(if op == Op::BiasAdd { Spec::BiasAdd(p) } else { Spec::BiasGrad(p) });
            }
        }
        "relu" | "elementwise" | "optim" | "rng" => {
            let n = dims(shape, 1, shape, "LEN")?[0];
            for &op in ops {
                out.push(match op {
                    Op::ReluFwd | Op::ReluBwd => Spec::Relu(op, n),
                    Op::Axpby => Spec::Axpby(EltParams::new(n, 0.5, -1.5)?),
                    Op::Mul => Spec::Mul(EltParams::new(n, 1.0, 0.0)?),
                    Op::SgdUpdate => Spec::Sgd(SgdParams::new(n, 0.05, 0.9, 5e-4, true)?),
                    Op::AdamUpdate => Spec::Adam(AdamParams::new(n, 1e-3, 0.9, 0.999, 1e-8, 1e-2, 3, true)?),
                    _ => Spec::Rng(RngParams::new(n, 7, 0, Dist::Normal, 0.0, 1.0)?),
                });
            }
        }
        "maxpool2d" => {
            let want = "NxCxHxW[/kK][/sS]";
            let x = dims(parts[0], 4, shape, want)?;
            let k = opt_num(&parts[1..], 'k', 2, shape, want)?;
            let s = opt_num(&parts[1..], 's', k, shape, want)?;
            let p = Pool2dParams::new([x[0], x[1], x[2], x[3]], k, s)
                .map_err(|e| Error::flag("--shapes", format!("{shape:?}: {e}")))?;
            out.extend(ops.iter().map(|&op| Spec::Pool(op, p)));
        }
        "softmax_xent" | "reduce" => {
            let d = dims(shape, 2, shape, "ROWSxCOLS")?;
            for &op in ops {
                out.push(match op {
                    Op::SoftmaxXent => Spec::Xent(XentParams::new(d[0], d[1], 1.0 / d[0] as f32)?),
                    _ => Spec::Rows(op, RowParams::new(d[0], d[1])?),
                });
            }
        }
        "attack_step" => {
            let d = dims(shape, 2, shape, "NxD")?;
            for &op in ops {
                let (alpha, eps) = if op == Op::StepProjectL2 { (0.5, 2.0) } else { (0.01, 0.03) };
                out.push(Spec::Step(op, StepParams::new(d[0], d[1], alpha, eps, 0.0, 1.0)?));
            }
        }
        _ => return Err(Error::flag("--op", format!("{family} takes no kernel shapes"))),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conv_with_options_and_rejects_garbage() {
        let s = parse("conv2d", &[Op::Conv2dFwd], true, "8x3x9x9/4x3x3x3/s2/p1").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].shape(), "x[8, 3, 9, 9] w[4, 3, 3, 3] s2 p1");
        assert_eq!(s[1].name(), "conv2d_layer");
        for badshape in ["8x3x9/4x3x3x3", "8x3x9x9", "8x3x9x9/4x3x3x3/sX", "axb", "8x3x9x9/4x2x3x3"] {
            let e = parse("conv2d", &[Op::Conv2dFwd], false, badshape).unwrap_err().to_string();
            assert!(e.contains("--shapes"), "{badshape}: {e}");
        }
        assert!(parse("linear", &[Op::LinearFwd], false, "4x0x2").is_err());
    }

    #[test]
    fn every_spec_runs_on_the_cpu_and_matches_its_reference() {
        let b = perturb_cpu::CpuBackend::with_threads(1).unwrap();
        let mut specs = parse("conv2d", &CONV_OPS, true, "3x5x13x11/7x5x3x3/s2/p1").unwrap();
        let fams: [(&str, &[Op], &str); 10] = [
            ("linear", &[Op::LinearFwd, Op::LinearBwdInput, Op::LinearBwdWeight], "5x7x3"),
            ("bias", &[Op::BiasAdd, Op::BiasGrad], "3x4x5"),
            ("relu", &[Op::ReluFwd, Op::ReluBwd], "37"),
            ("elementwise", &[Op::Axpby, Op::Mul], "37"),
            ("optim", &[Op::SgdUpdate, Op::AdamUpdate], "37"),
            ("rng", &[Op::RngFill], "37"),
            ("maxpool2d", &[Op::MaxPool2dFwd, Op::MaxPool2dBwd], "2x3x7x9/k3/s2"),
            ("softmax_xent", &[Op::SoftmaxXent], "5x10"),
            ("reduce", &[Op::SumRows, Op::ArgmaxRows], "5x10"),
            ("attack_step", &[Op::SignStep, Op::StepProjectLinf, Op::StepProjectL2], "3x17"),
        ];
        for (fam, ops, shape) in fams {
            specs.extend(parse(fam, ops, false, shape).unwrap());
        }
        for s in specs {
            let ins = s.inputs();
            let t: Vec<_> = ins.iter().map(|h| h.upload(&b).unwrap()).collect();
            let outs = s.run(&b, &t).unwrap();
            let exp = s.reference(&ins);
            let tols = s.tolerances();
            assert_eq!(outs.len(), exp.len(), "{}", s.name());
            assert_eq!(tols.len(), exp.len(), "{}", s.name());
            for ((o, e), (op, k)) in outs.iter().zip(&exp).zip(&tols) {
                let got = super::super::kernel::download(&b, o).unwrap();
                super::super::kernel::compare(&got, e, op.tolerance(*k))
                    .unwrap_or_else(|m| panic!("{}: {m}", s.name()));
            }
        }
    }
}
