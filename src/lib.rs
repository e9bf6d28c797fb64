//! perturb: hand-written GPU compute kernels for adversarial robustness.
//!
//! This facade re-exports the workspace's crates so tests, benches and programs linking the
//! engine need one dependency; the `perturb` binary is the command line (see the README).
pub use perturb_adv as adv;
pub use perturb_autograd as autograd;
pub use perturb_cli as cli;
pub use perturb_core as core;
pub use perturb_cpu as cpu;
#[cfg(feature = "cuda")]
pub use perturb_cuda as cuda;
pub use perturb_data as data;
pub use perturb_nn as nn;
#[cfg(feature = "wgpu")]
pub use perturb_wgpu as wgpu;
