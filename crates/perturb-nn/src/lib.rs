//! perturb-nn: layers, models, initialisation, optimisers and safetensors I/O, on any
//! [`perturb_core::Backend`] through [`perturb_autograd`].
//!
//! A training step (the loop the CLI runs):
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use perturb_autograd::{Graph, Reduction};
//! use perturb_core::{Backend, DType, Shape};
//! use perturb_nn::{LrSchedule, Optimizer, Sgd, SgdConfig, build_model};
//!
//! let backend = perturb_cpu::CpuBackend::new();
//! let images = backend.zeros(&Shape::from([8, 1, 28, 28]), DType::F32)?;
//! let labels = backend.upload_u32(&[0, 1, 2, 3, 4, 5, 6, 7], &Shape::from([8]))?;
//! let model = build_model(&backend, "cnn-small", [1, 28, 28], 10, 0)?;
//! let cfg = SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() };
//! let mut opt = Sgd::new(&backend, model.params(), cfg)?;
//! let total_steps = 2;
//! let sched = LrSchedule::one_cycle(0.2, total_steps);
//! for step in 0..total_steps {
//!     let g = Graph::new(&backend);
//!     let bound = model.bind(&g, true); // false for an attack: no weight gradients
//!     let x = g.input(&images, false); // true for an attack's d loss / d input
//!     let logits = model.forward(&g, &bound, x)?;
//!     let loss = g.softmax_xent(logits, &labels, Reduction::Mean)?.loss;
//!     let grads = bound.grads(&g.backward(loss)?)?;
//!     opt.set_lr(sched.lr_at(step));
//!     opt.step(&backend, model.params(), &grads)?;
//! }
//! let path = std::env::temp_dir().join(format!("perturb-doc-{}.safetensors", std::process::id()));
//! model.save(&backend, &path)?;
//! let again = perturb_nn::load_model(&backend, &path)?;
//! assert_eq!((again.name(), again.input_shape(), again.classes()), ("cnn-small", [1, 28, 28], 10));
//! assert_eq!(again.param_count(), model.param_count());
//! // The file holds the trained weights: the reloaded model's logits [8, 10] are the same bits.
//! let (before, after) = (model.infer(&backend, &images)?, again.infer(&backend, &images)?);
//! assert_eq!(after.dims(), &[8, 10]);
//! assert_eq!(backend.download_f32(&after)?, backend.download_f32(&before)?);
//! # std::fs::remove_file(&path)?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod checkpoint;
mod error;
mod io;
mod layer;
mod model;
mod optim;
mod schedule;

pub use checkpoint::{CHECKPOINT_FILE, CHECKPOINT_FORMAT, Checkpoint};
pub use error::{Error, Result};
pub use io::{
    HostTensor, META_ARCHITECTURE, META_INPUT, META_MODEL, SafetensorsFile, load_model, read_safetensors, write_atomic,
    write_safetensors,
};
pub use layer::{Layer, ParamSpec, Sequential};
pub use model::{Bound, MODEL_NAMES, Model, Param, build_model, model_layers};
pub use optim::{Adam, AdamConfig, OptimState, Optimizer, Sgd, SgdConfig};
pub use schedule::LrSchedule;
