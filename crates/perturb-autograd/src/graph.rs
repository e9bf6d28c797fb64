//! The tape: [`Graph`], its [`Var`] handles, the forward recording of each op, and the reverse
//! walk that produces [`Grads`]. The derivative rules themselves are in `rules.rs`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use perturb_core::ops::{BiasParams, Conv2dParams, EltParams, LinearParams, Pool2dParams, RowParams, XentParams};
use perturb_core::{Backend, DType, Shape, Tensor};

use crate::rules::{self, Grad};
use crate::{Error, Result};

static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// A value recorded on a [`Graph`]: an index into its tape plus whether a gradient flows to it.
/// Cheap to copy; only meaningful with the graph that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Var {
    pub(crate) graph: u64,
    pub(crate) index: usize,
    pub(crate) requires_grad: bool,
}

impl Var {
    /// Position on the tape (creation order).
    pub fn index(&self) -> usize {
        self.index
    }
    /// True when some gradient-requiring leaf lies upstream (or this is such a leaf).
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }
}

/// How [`Graph::softmax_xent`] reduces the per-example losses to the scalar loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Mean over the batch (PyTorch's default).
    Mean,
    /// Sum over the batch (what attacks use, so that per-example gradients are not scaled by 1/n).
    Sum,
}

/// The two outputs of [`Graph::softmax_xent`].
#[derive(Debug, Clone, Copy)]
pub struct Xent {
    /// The reduced loss, shape `[1]`.
    pub loss: Var,
    /// The per-example losses, shape `[n]`; differentiable too (weight them with `mul`).
    pub per_example: Var,
}

/// What the backward rule of a recorded op needs. Only stored when an input requires grad.
pub(crate) enum Recorded<B: Backend> {
    Conv2d {
        x: Var,
        w: Var,
        p: Conv2dParams,
    },
    Linear {
        x: Var,
        w: Var,
        p: LinearParams,
    },
    BiasAdd {
        y: Var,
        b: Var,
        p: BiasParams,
    },
    Relu {
        x: Var,
    },
    MaxPool2d {
        x: Var,
        p: Pool2dParams,
    },
    Reshape {
        x: Var,
    },
    /// Per-example softmax cross-entropy; `dlogits` = `scale` * d loss_i / d logits.
    Xent {
        logits: Var,
        dlogits: Tensor<B>,
        scale: f32,
    },
    Axpby {
        x: Var,
        y: Var,
        a: f32,
        b: f32,
    },
    Mul {
        x: Var,
        y: Var,
    },
    /// out[r] = scale * sum_c x[r, c].
    SumRows {
        x: Var,
        rows: usize,
        cols: usize,
        scale: f32,
    },
}

pub(crate) struct Node<B: Backend> {
    pub(crate) value: Tensor<B>,
    /// `None` for leaves and for ops none of whose inputs require grad.
    pub(crate) op: Option<Recorded<B>>,
    pub(crate) retain: bool,
}

/// A tape of recorded ops over backend `B`. Ops take `&self` (the tape sits in a `RefCell`),
/// so a model's forward can take `&Graph`. Build one graph per step and drop it afterwards:
/// the tape keeps every activation alive until then.
///
/// A forward and a backward, checked against the derivative by hand: with logits
/// z = x · wᵀ = \[0, 0\] and label 0, softmax(z) = \[0.5, 0.5\], so the loss is ln 2,
/// d loss / d z = softmax(z) - onehot(0) = \[-0.5, 0.5\], d loss / d x = (d loss / d z) · w
/// and d loss / d w = (d loss / d z)ᵀ · x.
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use perturb_autograd::{Graph, Reduction};
/// use perturb_core::{Backend, Shape, Tolerance, assert_close};
///
/// let b = perturb_cpu::CpuBackend::new();
/// let x = b.upload_f32(&[1.0, 1.0], &Shape::from([1, 2]))?; // one example, 2 features
/// let w = b.upload_f32(&[1.0, -1.0, 2.0, -2.0], &Shape::from([2, 2]))?; // [classes, features]
/// let y = b.upload_u32(&[0], &Shape::from([1]))?;
///
/// let g = Graph::new(&b);
/// let (xv, wv) = (g.input(&x, true), g.param(&w));
/// let z = g.linear(xv, wv)?;
/// let loss = g.softmax_xent(z, &y, Reduction::Sum)?.loss;
/// let grads = g.backward(loss)?;
///
/// let tol = Tolerance::new(1e-6, 1e-6);
/// assert_close(&b.download_f32(&g.value(loss)?)?, &[std::f32::consts::LN_2], tol);
/// assert_close(&b.download_f32(grads.wrt(xv)?)?, &[0.5, -0.5], tol);
/// assert_close(&b.download_f32(grads.wrt(wv)?)?, &[-0.5, -0.5, 0.5, 0.5], tol);
/// assert!(grads.get(z).is_none()); // an intermediate: not kept unless marked retain_grad
/// # Ok(())
/// # }
/// ```
pub struct Graph<'b, B: Backend> {
    backend: &'b B,
    id: u64,
    tape: RefCell<Vec<Node<B>>>,
}

impl<'b, B: Backend> std::fmt::Debug for Graph<'b, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph(#{}, {} nodes on {})", self.id, self.len(), self.backend.name())
    }
}

impl<'b, B: Backend> Graph<'b, B> {
    /// An empty tape on `backend`.
    pub fn new(backend: &'b B) -> Self {
        Graph { backend, id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed), tape: RefCell::new(Vec::new()) }
    }

    /// The backend every op runs on.
    pub fn backend(&self) -> &'b B {
        self.backend
    }

    /// Number of recorded values.
    pub fn len(&self) -> usize {
        self.tape.borrow().len()
    }

    /// True before anything is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // ---- leaves ------------------------------------------------------------------------

    /// A trainable parameter: a leaf that requires grad. The tensor handle is aliased, not copied.
    pub fn param(&self, t: &Tensor<B>) -> Var {
        self.leaf(t, true)
    }

    /// An input (images, targets); `requires_grad` for an attack's d loss / d input.
    pub fn input(&self, t: &Tensor<B>, requires_grad: bool) -> Var {
        self.leaf(t, requires_grad)
    }

    /// A leaf that never receives a gradient (frozen weights, labels as floats, masks).
    pub fn constant(&self, t: &Tensor<B>) -> Var {
        self.leaf(t, false)
    }

    /// The same value as `v`, cut from the tape: no gradient flows through it.
    pub fn detach(&self, v: Var) -> Result<Var> {
        let t = self.value_of("detach", v)?;
        Ok(self.leaf(&t, false))
    }

    /// Keeps the gradient of a non-leaf `v` in the [`Grads`] that `backward` returns
    /// (leaf gradients are always kept).
    pub fn retain_grad(&self, v: Var) -> Result<()> {
        self.check("retain_grad", v)?;
        self.tape.borrow_mut()[v.index].retain = true;
        Ok(())
    }

    fn leaf(&self, t: &Tensor<B>, requires_grad: bool) -> Var {
        let mut tape = self.tape.borrow_mut();
        tape.push(Node { value: t.clone(), op: None, retain: false });
        Var { graph: self.id, index: tape.len() - 1, requires_grad }
    }

    // ---- access ------------------------------------------------------------------------

    /// The value of `v` (a handle aliasing the tape's tensor).
    pub fn value(&self, v: Var) -> Result<Tensor<B>> {
        self.value_of("value", v)
    }

    /// The shape of `v`.
    pub fn shape(&self, v: Var) -> Result<Shape> {
        Ok(self.value_of("shape", v)?.shape().clone())
    }

    fn check(&self, op: &'static str, v: Var) -> Result<()> {
        if v.graph != self.id || v.index >= self.len() {
            return Err(Error::ForeignVar { op, index: v.index, var_graph: v.graph, graph: self.id });
        }
        Ok(())
    }

    fn value_of(&self, op: &'static str, v: Var) -> Result<Tensor<B>> {
        self.check(op, v)?;
        Ok(self.tape.borrow()[v.index].value.clone())
    }

    fn push(&self, value: Tensor<B>, inputs: &[Var], op: Recorded<B>) -> Var {
        let requires_grad = inputs.iter().any(|v| v.requires_grad);
        let op = requires_grad.then_some(op);
        let mut tape = self.tape.borrow_mut();
        tape.push(Node { value, op, retain: false });
        Var { graph: self.id, index: tape.len() - 1, requires_grad }
    }

    // ---- layers ------------------------------------------------------------------------

    /// Convolution without bias. x [n, c_in, h, w], w [c_out, c_in, kh, kw] -> [n, c_out, h_out, w_out].
    pub fn conv2d(&self, x: Var, w: Var, stride: usize, pad: usize) -> Result<Var> {
        let (xt, wt) = (self.value_of("conv2d", x)?, self.value_of("conv2d", w)?);
        let p = Conv2dParams::new(dims4("conv2d", "input", &xt)?, dims4("conv2d", "weight", &wt)?, stride, pad)?;
        let y = self.backend.conv2d_fwd(&xt, &wt, &p)?;
        Ok(self.push(y, &[x, w], Recorded::Conv2d { x, w, p }))
    }

    /// Fully connected without bias. x [m, k], w [n, k] -> [m, n].
    pub fn linear(&self, x: Var, w: Var) -> Result<Var> {
        let (xt, wt) = (self.value_of("linear", x)?, self.value_of("linear", w)?);
        let (xd, wd) = (xt.dims(), wt.dims());
        if xd.len() != 2 || wd.len() != 2 || xd[1] != wd[1] {
            return Err(Error::invalid(
                "linear",
                format!("input {} and weight {} must be [m, k] and [n, k]", xt.shape(), wt.shape()),
            ));
        }
        let p = LinearParams::new(xd[0], xd[1], wd[0])?;
        let y = self.backend.linear_fwd(&xt, &wt, &p)?;
        Ok(self.push(y, &[x, w], Recorded::Linear { x, w, p }))
    }

    /// Adds a per-channel bias b `[c]` to y [n, c, ...] (channel = dimension 1).
    pub fn bias_add(&self, y: Var, b: Var) -> Result<Var> {
        let (yt, bt) = (self.value_of("bias_add", y)?, self.value_of("bias_add", b)?);
        let d = yt.dims();
        if d.len() < 2 || bt.numel() != d[1] {
            return Err(Error::invalid(
                "bias_add",
                format!("bias {} does not match the channels (dimension 1) of {}", bt.shape(), yt.shape()),
            ));
        }
        let p = BiasParams::new(d[0], d[1], d[2..].iter().product())?;
        let out = self.backend.bias_add(&yt, &bt, &p)?;
        Ok(self.push(out, &[y, b], Recorded::BiasAdd { y, b, p }))
    }

    /// max(x, 0).
    pub fn relu(&self, x: Var) -> Result<Var> {
        let xt = self.value_of("relu", x)?;
        let y = self.backend.relu_fwd(&xt)?;
        Ok(self.push(y, &[x], Recorded::Relu { x }))
    }

    /// Max pooling, window k, stride `stride`, no padding. x [n, c, h, w].
    pub fn maxpool2d(&self, x: Var, k: usize, stride: usize) -> Result<Var> {
        let xt = self.value_of("maxpool2d", x)?;
        let p = Pool2dParams::new(dims4("maxpool2d", "input", &xt)?, k, stride)?;
        let y = self.backend.maxpool2d_fwd(&xt, &p)?;
        Ok(self.push(y, &[x], Recorded::MaxPool2d { x, p }))
    }

    /// A view of `x` with another shape (no copy).
    pub fn reshape(&self, x: Var, shape: impl Into<Shape>) -> Result<Var> {
        let y = self.value_of("reshape", x)?.reshape(shape)?;
        Ok(self.push(y, &[x], Recorded::Reshape { x }))
    }

    /// [n, ...] -> [n, rest] in row-major (NCHW: c, h, w) order; a view.
    pub fn flatten(&self, x: Var) -> Result<Var> {
        let s = self.shape(x)?;
        self.reshape(x, [s.batch(), s.per_item()])
    }

    // ---- loss --------------------------------------------------------------------------

    /// Softmax cross-entropy of logits [n, classes] against u32 labels `[n]` (one fused kernel
    /// computes the losses and d loss / d logits together).
    pub fn softmax_xent(&self, logits: Var, labels: &Tensor<B>, reduction: Reduction) -> Result<Xent> {
        let lt = self.value_of("softmax_xent", logits)?;
        let d = lt.dims();
        if d.len() != 2 {
            return Err(Error::invalid("softmax_xent", format!("logits {} must be [n, classes]", lt.shape())));
        }
        labels.expect_dtype("softmax_xent", DType::U32)?;
        labels.expect_numel("softmax_xent", "labels", d[0])?;
        let n = d[0];
        let scale = match reduction {
            Reduction::Mean => 1.0 / n as f32,
            Reduction::Sum => 1.0,
        };
        let (losses, dlogits) = self.backend.softmax_xent(&lt, labels, &XentParams::new(n, d[1], scale)?)?;
        let per_example = self.push(losses, &[logits], Recorded::Xent { logits, dlogits, scale });
        let loss = self.scaled_sum_rows(per_example, 1, n, scale, Shape::from([1]))?;
        Ok(Xent { loss, per_example })
    }

    // ---- elementwise and reductions ----------------------------------------------------

    /// a * x + b * y (same element count; the result has the shape of x).
    pub fn axpby(&self, x: Var, y: Var, a: f32, b: f32) -> Result<Var> {
        let (xt, yt) = (self.value_of("axpby", x)?, self.value_of("axpby", y)?);
        let out = self.backend.axpby(&xt, &yt, &EltParams::new(xt.numel(), a, b)?)?;
        Ok(self.push(out, &[x, y], Recorded::Axpby { x, y, a, b }))
    }

    /// x + y.
    pub fn add(&self, x: Var, y: Var) -> Result<Var> {
        self.axpby(x, y, 1.0, 1.0)
    }

    /// x - y.
    pub fn sub(&self, x: Var, y: Var) -> Result<Var> {
        self.axpby(x, y, 1.0, -1.0)
    }

    /// s * x.
    pub fn scale(&self, x: Var, s: f32) -> Result<Var> {
        self.axpby(x, x, s, 0.0)
    }

    /// x * y elementwise (same element count; the result has the shape of x).
    pub fn mul(&self, x: Var, y: Var) -> Result<Var> {
        let (xt, yt) = (self.value_of("mul", x)?, self.value_of("mul", y)?);
        let out = self.backend.mul(&xt, &yt)?;
        Ok(self.push(out, &[x, y], Recorded::Mul { x, y }))
    }

    /// Sum of each row of x viewed as [n, rest] -> `[n]`.
    pub fn sum_rows(&self, x: Var) -> Result<Var> {
        let s = self.shape(x)?;
        self.scaled_sum_rows(x, s.batch(), s.per_item(), 1.0, Shape::from([s.batch()]))
    }

    /// Sum of all elements -> `[1]`.
    pub fn sum_all(&self, x: Var) -> Result<Var> {
        let n = self.shape(x)?.numel();
        self.scaled_sum_rows(x, 1, n, 1.0, Shape::from([1]))
    }

    /// Mean of all elements -> `[1]`.
    pub fn mean_all(&self, x: Var) -> Result<Var> {
        let n = self.shape(x)?.numel();
        self.scaled_sum_rows(x, 1, n, 1.0 / n as f32, Shape::from([1]))
    }

    /// Squared L2 distance per row: sum_c (x - y)^2 over x, y viewed as [n, rest] -> `[n]`
    /// (logit pairing, consistency losses).
    pub fn sq_dist_rows(&self, x: Var, y: Var) -> Result<Var> {
        let d = self.sub(x, y)?;
        let d2 = self.mul(d, d)?;
        self.sum_rows(d2)
    }

    fn scaled_sum_rows(&self, x: Var, rows: usize, cols: usize, scale: f32, out_shape: Shape) -> Result<Var> {
        let xt = self.value_of("sum_rows", x)?;
        let mut out = self.backend.sum_rows(&xt, &RowParams::new(rows, cols)?)?;
        if scale != 1.0 {
            out = self.backend.axpby(&out, &out, &EltParams::new(rows, scale, 0.0)?)?;
        }
        let out = out.reshape(out_shape)?;
        Ok(self.push(out, &[x], Recorded::SumRows { x, rows, cols, scale }))
    }

    // ---- backward ----------------------------------------------------------------------

    /// Gradients of the one-element `loss` (seeded with d loss = 1) with respect to every
    /// gradient-requiring leaf (and every var marked with [`Graph::retain_grad`]).
    pub fn backward(&self, loss: Var) -> Result<Grads<B>> {
        let t = self.value_of("backward", loss)?;
        if t.numel() != 1 {
            return Err(Error::NotScalar { shape: t.shape().clone(), numel: t.numel() });
        }
        self.run_backward(loss, Grad::Uniform { value: 1.0, shape: t.shape().clone() })
    }

    /// Gradients of `sum(seed * out)`: `seed` has the element count of `out`.
    pub fn backward_with_seed(&self, out: Var, seed: &Tensor<B>) -> Result<Grads<B>> {
        let t = self.value_of("backward", out)?;
        seed.expect_dtype("backward", DType::F32)?;
        seed.expect_numel("backward", "seed", t.numel())?;
        self.run_backward(out, Grad::Tensor(seed.reshape(t.shape().clone())?))
    }

    fn run_backward(&self, out: Var, seed: Grad<B>) -> Result<Grads<B>> {
        let tape = self.tape.borrow();
        let mut kept: Vec<Option<Tensor<B>>> = (0..tape.len()).map(|_| None).collect();
        if !out.requires_grad {
            return Ok(Grads { graph: self.id, grads: kept });
        }
        let mut pending: Vec<Option<Grad<B>>> = (0..=out.index).map(|_| None).collect();
        pending[out.index] = Some(seed);
        for i in (0..=out.index).rev() {
            let Some(g) = pending[i].take() else { continue };
            let node = &tape[i];
            if node.op.is_none() || node.retain {
                // A leaf (or a retained value): hand the gradient out as a tensor.
                kept[i] = Some(g.clone().into_tensor(self.backend)?);
            }
            if let Some(op) = &node.op {
                rules::backward(self.backend, &tape, op, g, &mut |v: Var, contrib: Grad<B>| {
                    rules::accumulate(self.backend, &mut pending[v.index], contrib)
                })?;
            }
        }
        Ok(Grads { graph: self.id, grads: kept })
    }
}

fn dims4<B: Backend>(op: &'static str, what: &str, t: &Tensor<B>) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(t.dims())
        .map_err(|_| Error::invalid(op, format!("{what} {} must have rank 4 (NCHW)", t.shape())))
}

/// Gradients from one [`Graph::backward`]: one tensor per gradient-requiring leaf reached
/// from the loss (and per retained var). Gradient tensors may alias each other or forward
/// values (a pass-through rule copies nothing): treat them as read-only, or `duplicate` them.
pub struct Grads<B: Backend> {
    graph: u64,
    grads: Vec<Option<Tensor<B>>>,
}

impl<B: Backend> std::fmt::Debug for Grads<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.grads.iter().filter(|g| g.is_some()).count();
        write!(f, "Grads(graph #{}, {n} gradients)", self.graph)
    }
}

impl<B: Backend> Grads<B> {
    /// The gradient of `v`, or `None` when no gradient reached it (or `v` is from another graph).
    pub fn get(&self, v: Var) -> Option<&Tensor<B>> {
        if v.graph != self.graph {
            return None;
        }
        self.grads.get(v.index).and_then(Option::as_ref)
    }

    /// The gradient of `v`, or an error saying why there is none.
    pub fn wrt(&self, v: Var) -> Result<&Tensor<B>> {
        if v.graph != self.graph {
            return Err(Error::MissingGrad { index: v.index, why: "the variable belongs to another graph" });
        }
        if !v.requires_grad {
            return Err(Error::MissingGrad { index: v.index, why: "it does not require grad" });
        }
        self.get(v).ok_or(Error::MissingGrad {
            index: v.index,
            why: "the loss does not depend on it (or it is a non-leaf not marked retain_grad)",
        })
    }

    /// Removes and returns the gradient of `v`.
    pub fn take(&mut self, v: Var) -> Option<Tensor<B>> {
        if v.graph != self.graph {
            return None;
        }
        self.grads.get_mut(v.index).and_then(Option::take)
    }

    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.grads.iter().filter(|g| g.is_some()).count()
    }

    /// True when no gradient was produced.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
