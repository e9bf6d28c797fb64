//! Every derivative rule of the tape, in one place, calling only Backend ops.
//!
//! Conventions:
//! - A rule sends a contribution only to inputs whose `requires_grad` is set, so with only the
//!   input image requiring grad no weight-gradient kernel (`conv2d_bwd_weight`,
//!   `linear_bwd_weight`, `bias_grad`) runs; nodes with no gradient-requiring input were
//!   recorded without a rule and are never visited.
//! - A gradient is either a tensor or a uniform value over a shape ([`Grad::Uniform`]): the
//!   seed d loss = 1 and its images through scalings, sums and reshapes stay host numbers, so
//!   a mean loss costs no broadcast kernel and the fused cross-entropy hands back its
//!   d loss / d logits unchanged.
//! - Rules never write in place: a pass-through gradient (reshape, bias, a = 1) is the same
//!   handle, and sums allocate, so aliases are harmless.
//! - Sign steps and projections are not recorded ops: they carry no gradient.

use perturb_core::ops::{EltParams, LinearParams};
use perturb_core::{Backend, DType, Shape, Tensor};

use crate::Result;
use crate::graph::{Node, Recorded, Var};

/// A gradient flowing backward.
pub(crate) enum Grad<B: Backend> {
    Tensor(Tensor<B>),
    /// Every element equals `value`.
    Uniform {
        value: f32,
        shape: Shape,
    },
}

impl<B: Backend> Clone for Grad<B> {
    fn clone(&self) -> Self {
        match self {
            Grad::Tensor(t) => Grad::Tensor(t.clone()),
            Grad::Uniform { value, shape } => Grad::Uniform { value: *value, shape: shape.clone() },
        }
    }
}

impl<B: Backend> Grad<B> {
    /// The gradient as a tensor (a fill for a uniform one).
    pub(crate) fn into_tensor(self, b: &B) -> Result<Tensor<B>> {
        match self {
            Grad::Tensor(t) => Ok(t),
            Grad::Uniform { value, shape } => filled(b, &shape, value),
        }
    }

    /// The same gradient viewed with `shape` (same element count).
    fn reshape(self, shape: &Shape) -> Result<Self> {
        Ok(match self {
            Grad::Tensor(t) => Grad::Tensor(t.reshape(shape.clone())?),
            Grad::Uniform { value, .. } => Grad::Uniform { value, shape: shape.clone() },
        })
    }

    /// s * gradient.
    fn scale(self, b: &B, s: f32) -> Result<Self> {
        Ok(match self {
            Grad::Uniform { value, shape } => Grad::Uniform { value: value * s, shape },
            Grad::Tensor(t) => Grad::Tensor(scaled(b, &t, s)?),
        })
    }
}

fn filled<B: Backend>(b: &B, shape: &Shape, value: f32) -> Result<Tensor<B>> {
    let t = b.zeros(shape, DType::F32)?;
    if value != 0.0 {
        b.fill_(&t, value)?;
    }
    Ok(t)
}

/// s * t (the same handle when s = 1).
fn scaled<B: Backend>(b: &B, t: &Tensor<B>, s: f32) -> Result<Tensor<B>> {
    if s == 1.0 {
        return Ok(t.clone());
    }
    Ok(b.axpby(t, t, &EltParams::new(t.numel(), s, 0.0)?)?)
}

/// g [rows] broadcast along columns and scaled: out[r, c] = s * g[r], as the rank-1 product
/// g [rows, 1] · (s * ones [cols, 1])ᵀ so that no broadcast kernel is needed.
fn broadcast_rows<B: Backend>(b: &B, g: &Tensor<B>, rows: usize, cols: usize, s: f32) -> Result<Tensor<B>> {
    if cols == 1 {
        return scaled(b, &g.reshape([rows, 1])?, s);
    }
    let ones = filled(b, &Shape::from([cols, 1]), s)?;
    Ok(b.linear_fwd(&g.reshape([rows, 1])?, &ones, &LinearParams::new(rows, 1, cols)?)?)
}

/// Adds a contribution to a var's pending gradient (a var used twice gets both).
pub(crate) fn accumulate<B: Backend>(b: &B, slot: &mut Option<Grad<B>>, g: Grad<B>) -> Result<()> {
    let sum = match (slot.take(), g) {
        (None, g) => g,
        (Some(Grad::Uniform { value: u, shape }), Grad::Uniform { value: v, .. }) => {
            Grad::Uniform { value: u + v, shape }
        }
        (Some(old), new) => {
            let shape = match &old {
                Grad::Tensor(t) => t.shape().clone(),
                Grad::Uniform { shape, .. } => shape.clone(),
            };
            let (x, y) = (old.into_tensor(b)?, new.into_tensor(b)?);
            let s = b.axpby(&x, &y, &EltParams::new(x.numel(), 1.0, 1.0)?)?;
            Grad::Tensor(s.reshape(shape)?)
        }
    };
    *slot = Some(sum);
    Ok(())
}

/// Runs the rule of `op` for upstream gradient `g`, sending each input's contribution to `acc`.
pub(crate) fn backward<B: Backend>(
    b: &B,
    tape: &[Node<B>],
    op: &Recorded<B>,
    g: Grad<B>,
    acc: &mut dyn FnMut(Var, Grad<B>) -> Result<()>,
) -> Result<()> {
    let value = |v: Var| &tape[v.index].value;
    let shape = |v: Var| tape[v.index].value.shape().clone();
    match op {
        // y = conv(x, w): dx = conv_bwd_input(dy, w), dw = conv_bwd_weight(x, dy).
        Recorded::Conv2d { x, w, p } => {
            let dy = g.into_tensor(b)?;
            if x.requires_grad {
                acc(*x, Grad::Tensor(b.conv2d_bwd_input(&dy, value(*w), p)?))?;
            }
            if w.requires_grad {
                acc(*w, Grad::Tensor(b.conv2d_bwd_weight(value(*x), &dy, p)?))?;
            }
        }
        // y = x · wᵀ: dx = dy · w, dw = dyᵀ · x.
        Recorded::Linear { x, w, p } => {
            let dy = g.into_tensor(b)?;
            if x.requires_grad {
                acc(*x, Grad::Tensor(b.linear_bwd_input(&dy, value(*w), p)?))?;
            }
            if w.requires_grad {
                acc(*w, Grad::Tensor(b.linear_bwd_weight(value(*x), &dy, p)?))?;
            }
        }
        // out = y + b (broadcast): dy passes through, db = sum of dy over all but channels.
        Recorded::BiasAdd { y, b: bias, p } => {
            if bias.requires_grad {
                let db = match &g {
                    Grad::Tensor(t) => Grad::Tensor(b.bias_grad(t, p)?.reshape(shape(*bias))?),
                    Grad::Uniform { value, .. } => {
                        Grad::Uniform { value: value * (p.outer as f32) * (p.inner as f32), shape: shape(*bias) }
                    }
                };
                acc(*bias, db)?;
            }
            if y.requires_grad {
                acc(*y, g)?;
            }
        }
        // dx = dy where x > 0.
        Recorded::Relu { x } => {
            if x.requires_grad {
                let dy = g.into_tensor(b)?;
                acc(*x, Grad::Tensor(b.relu_bwd(&dy, value(*x))?))?;
            }
        }
        // dx: each output's gradient to the first maximum of its window.
        Recorded::MaxPool2d { x, p } => {
            if x.requires_grad {
                let dy = g.into_tensor(b)?;
                acc(*x, Grad::Tensor(b.maxpool2d_bwd(&dy, value(*x), p)?))?;
            }
        }
        // A view: the gradient viewed back.
        Recorded::Reshape { x } => {
            if x.requires_grad {
                acc(*x, g.reshape(&shape(*x))?)?;
            }
        }
        // loss_i = xent(logits_i): dlogits_i = (softmax_i - onehot_i) * g_i; the fused forward
        // stored it already multiplied by `scale`.
        Recorded::Xent { logits, dlogits, scale } => {
            if logits.requires_grad {
                let d = match g {
                    Grad::Uniform { value, .. } => scaled(b, dlogits, value / scale)?,
                    Grad::Tensor(gt) => {
                        let (n, c) = (dlogits.dims()[0], dlogits.dims()[1]);
                        let bg = broadcast_rows(b, &gt, n, c, 1.0 / scale)?;
                        b.mul(dlogits, &bg)?
                    }
                };
                acc(*logits, Grad::Tensor(d))?;
            }
        }
        // out = a x + b y: dx = a dy, dy = b dy (x and y may be the same var).
        Recorded::Axpby { x, y, a, b: bc } => {
            if x == y {
                if x.requires_grad {
                    acc(*x, g.scale(b, a + bc)?)?;
                }
                return Ok(());
            }
            if y.requires_grad {
                acc(*y, g.clone().scale(b, *bc)?.reshape(&shape(*y))?)?;
            }
            if x.requires_grad {
                acc(*x, g.scale(b, *a)?)?;
            }
        }
        // out = x * y: dx = dout * y, dy = dout * x; for x * x, dx = 2 dout * x.
        Recorded::Mul { x, y } => {
            let times = |other: &Tensor<B>, extra: f32| -> Result<Tensor<B>> {
                match &g {
                    Grad::Uniform { value, .. } => scaled(b, other, value * extra),
                    Grad::Tensor(t) => scaled(b, &b.mul(t, other)?, extra),
                }
            };
            if x == y {
                if x.requires_grad {
                    acc(*x, Grad::Tensor(times(value(*x), 2.0)?.reshape(shape(*x))?))?;
                }
                return Ok(());
            }
            if x.requires_grad {
                acc(*x, Grad::Tensor(times(value(*y), 1.0)?.reshape(shape(*x))?))?;
            }
            if y.requires_grad {
                acc(*y, Grad::Tensor(times(value(*x), 1.0)?.reshape(shape(*y))?))?;
            }
        }
        // out[r] = s * sum_c x[r, c]: dx[r, c] = s * dout[r].
        Recorded::SumRows { x, rows, cols, scale } => {
            if x.requires_grad {
                let dx = match g {
                    Grad::Uniform { value, .. } => Grad::Uniform { value: value * scale, shape: shape(*x) },
                    Grad::Tensor(t) => {
                        let t = broadcast_rows(b, &t, *rows, *cols, *scale)?;
                        Grad::Tensor(t.reshape(shape(*x))?)
                    }
                };
                acc(*x, dx)?;
            }
        }
    }
    Ok(())
}
