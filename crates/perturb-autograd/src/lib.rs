//! perturb-autograd: a tape recorded op by op over any [`perturb_core::Backend`].
//!
//! A [`Graph`] records each op's output value and, when any input needs a gradient, what the
//! backward rule needs. [`Graph::backward`] walks the tape in reverse and returns [`Grads`].
//! Every derivative rule lives in one file (`rules.rs`) and calls only Backend ops, so the
//! same tape runs on the CPU, CUDA and wgpu backends.
//!
//! Gradients are computed only where a gradient-requiring leaf lies upstream: an attack that
//! asks for d loss / d input binds the weights with [`Graph::constant`] and then no
//! weight-gradient kernel (`conv2d_bwd_weight`, `linear_bwd_weight`, `bias_grad`) runs; a
//! branch with no gradient-requiring leaf records no backward at all. In-place attack ops
//! (sign step, projection) are not recorded: they carry no gradient.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use perturb_autograd::{Graph, Reduction};
//! use perturb_core::{Backend, Shape};
//!
//! let backend = perturb_cpu::CpuBackend::new();
//! let images = backend.upload_f32(&[0.5; 2 * 4], &Shape::from([2, 1, 2, 2]))?;
//! let weight = backend.upload_f32(&[0.1; 3 * 4], &Shape::from([3, 4]))?;
//! let labels = backend.upload_u32(&[0, 2], &Shape::from([2]))?;
//!
//! let g = Graph::new(&backend);
//! let x = g.input(&images, true); // an attack asks for d loss / d x
//! let w = g.constant(&weight); // ... and no weight gradient
//! let logits = g.linear(g.flatten(x)?, w)?;
//! let xent = g.softmax_xent(logits, &labels, Reduction::Sum)?;
//! let grads = g.backward(xent.loss)?;
//! assert_eq!(grads.wrt(x)?.dims(), &[2, 1, 2, 2]);
//! assert!(grads.get(w).is_none());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod counting;
mod error;
mod graph;
mod rules;

pub use counting::CountingBackend;
pub use error::{Error, Result};
pub use graph::{Grads, Graph, Reduction, Var, Xent};
