//! Optimisers over a model's parameters, updating in place through the backend's fused
//! `sgd_update_` / `adam_update_` kernels. State buffers are allocated once, at construction;
//! a step allocates nothing on the device.

use perturb_core::ops::{AdamParams, SgdParams};
use perturb_core::{Backend, DType, Tensor};

use crate::io::HostTensor;
use crate::model::Param;
use crate::{Error, Result};

/// An optimiser's state: named buffers (PyTorch's names: `momentum_buffer.0.weight`,
/// `exp_avg.0.weight`, `exp_avg_sq.0.weight`, ...) plus the step count. The tensors returned
/// by [`Optimizer::state`] alias the live buffers: download them before the next step.
pub struct OptimState<B: Backend> {
    /// `"sgd"` or `"adam"`.
    pub kind: String,
    /// Steps taken.
    pub step: u64,
    /// Named buffers.
    pub tensors: Vec<(String, Tensor<B>)>,
}

impl<B: Backend> OptimState<B> {
    /// Downloads the buffers (for a checkpoint).
    pub fn to_host(&self, backend: &B) -> Result<Vec<HostTensor>> {
        self.tensors
            .iter()
            .map(|(name, t)| {
                Ok(HostTensor { name: name.clone(), shape: t.dims().to_vec(), data: backend.download_f32(t)? })
            })
            .collect()
    }

    /// Uploads host buffers (from a checkpoint) into a state to pass to [`Optimizer::load_state`].
    pub fn from_host(backend: &B, kind: &str, step: u64, tensors: &[HostTensor]) -> Result<Self> {
        let tensors = tensors
            .iter()
            .map(|h| Ok((h.name.clone(), backend.upload_f32(&h.data, &h.shape.clone().into())?)))
            .collect::<Result<_>>()?;
        Ok(OptimState { kind: kind.to_string(), step, tensors })
    }
}

/// What every optimiser offers the training loop.
pub trait Optimizer<B: Backend> {
    /// One update of every parameter with its gradient (`grads[i]` for `params[i]`, as from
    /// [`crate::Bound::grads`]); both lists in the order the optimiser was built with.
    fn step(&mut self, backend: &B, params: &[Param<B>], grads: &[Tensor<B>]) -> Result<()>;
    /// The learning rate the next step uses.
    fn lr(&self) -> f32;
    /// Sets the learning rate (a schedule calls this before each step).
    fn set_lr(&mut self, lr: f32);
    /// Steps taken.
    fn steps(&self) -> u64;
    /// The state buffers and step count (handles aliasing the live buffers).
    fn state(&self) -> OptimState<B>;
    /// Restores a state exported by [`Optimizer::state`] (copied into the existing buffers).
    fn load_state(&mut self, backend: &B, state: &OptimState<B>) -> Result<()>;
    /// The settings other than the learning rate (which a schedule changes), as JSON: a
    /// checkpoint records them and a resume must match them.
    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// SGD settings (PyTorch's `torch.optim.SGD`, dampening 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor in [0, 1).
    pub momentum: f32,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
    /// Nesterov momentum (needs momentum > 0).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 0.01, momentum: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

/// Adam / AdamW settings (PyTorch's `torch.optim.Adam` and `AdamW`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Weight decay (L2 for Adam, decoupled for AdamW).
    pub weight_decay: f32,
    /// true: decoupled weight decay (AdamW); false: L2 penalty added to the gradient (Adam).
    pub decoupled: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false }
    }
}

impl AdamConfig {
    /// PyTorch's `AdamW` defaults (weight decay 0.01, decoupled).
    pub fn adamw() -> Self {
        AdamConfig { weight_decay: 0.01, decoupled: true, ..Default::default() }
    }
}

/// Names and shapes the optimiser was built for; every step and state load is checked
/// against them.
struct Slots<B: Backend> {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    _b: std::marker::PhantomData<B>,
}

impl<B: Backend> Slots<B> {
    fn new(params: &[Param<B>]) -> Self {
        Slots {
            names: params.iter().map(|p| p.name.clone()).collect(),
            shapes: params.iter().map(|p| p.tensor.dims().to_vec()).collect(),
            _b: std::marker::PhantomData,
        }
    }

    fn zeros(&self, backend: &B) -> Result<Vec<Tensor<B>>> {
        self.shapes.iter().map(|s| Ok(backend.zeros(&s.clone().into(), DType::F32)?)).collect()
    }

    fn check_step(&self, params: &[Param<B>], grads: &[Tensor<B>]) -> Result<()> {
        if params.len() != self.names.len() || grads.len() != self.names.len() {
            return Err(Error::Optim(format!(
                "built for {} parameters, step given {} parameters and {} gradients",
                self.names.len(),
                params.len(),
                grads.len()
            )));
        }
        for ((p, g), (name, shape)) in params.iter().zip(grads).zip(self.names.iter().zip(&self.shapes)) {
            if &p.name != name || p.tensor.dims() != shape.as_slice() || g.numel() != p.tensor.numel() {
                return Err(Error::Optim(format!(
                    "parameter {} {} with gradient {} does not match the optimiser's {name} {shape:?}",
                    p.name,
                    p.tensor.shape(),
                    g.shape()
                )));
            }
        }
        Ok(())
    }

    fn export(&self, prefix: &str, bufs: &[Tensor<B>]) -> impl Iterator<Item = (String, Tensor<B>)> {
        self.names.iter().zip(bufs).map(move |(n, t)| (format!("{prefix}.{n}"), t.clone()))
    }

    /// Copies the state's `prefix.*` buffers into `bufs`.
    fn import(&self, backend: &B, state: &OptimState<B>, prefix: &str, bufs: &[Tensor<B>]) -> Result<()> {
        for (name, buf) in self.names.iter().zip(bufs) {
            let key = format!("{prefix}.{name}");
            let Some((_, t)) = state.tensors.iter().find(|(n, _)| *n == key) else {
                return Err(Error::Optim(format!("state has no buffer '{key}'")));
            };
            if t.dims() != buf.dims() {
                return Err(Error::Optim(format!(
                    "state buffer '{key}' has shape {}, expected {}",
                    t.shape(),
                    buf.shape()
                )));
            }
            backend.copy_(buf, t)?;
        }
        Ok(())
    }
}

fn check_kind<B: Backend>(state: &OptimState<B>, kind: &str, expected_len: usize) -> Result<()> {
    if state.kind != kind {
        return Err(Error::Optim(format!("state is for '{}', this optimiser is '{kind}'", state.kind)));
    }
    if state.tensors.len() != expected_len {
        return Err(Error::Optim(format!("state has {} buffers, expected {expected_len}", state.tensors.len())));
    }
    Ok(())
}

/// SGD with momentum, weight decay and Nesterov momentum.
pub struct Sgd<B: Backend> {
    cfg: SgdConfig,
    slots: Slots<B>,
    momentum: Vec<Tensor<B>>,
    step: u64,
}

impl<B: Backend> Sgd<B> {
    /// Allocates one momentum buffer per parameter (zero, which matches PyTorch's first step).
    pub fn new(backend: &B, params: &[Param<B>], cfg: SgdConfig) -> Result<Self> {
        SgdParams::new(1, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)
            .map_err(|e| Error::Optim(e.to_string()))?;
        if cfg.nesterov && cfg.momentum == 0.0 {
            return Err(Error::Optim("Nesterov momentum needs momentum > 0".into()));
        }
        let slots = Slots::new(params);
        let momentum = slots.zeros(backend)?;
        Ok(Sgd { cfg, slots, momentum, step: 0 })
    }

    /// The settings (with the current learning rate).
    pub fn config(&self) -> SgdConfig {
        self.cfg
    }
}

impl<B: Backend> Optimizer<B> for Sgd<B> {
    fn step(&mut self, backend: &B, params: &[Param<B>], grads: &[Tensor<B>]) -> Result<()> {
        self.slots.check_step(params, grads)?;
        let c = self.cfg;
        for ((p, g), m) in params.iter().zip(grads).zip(&self.momentum) {
            let sp = SgdParams::new(p.tensor.numel(), c.lr, c.momentum, c.weight_decay, c.nesterov)?;
            backend.sgd_update_(&p.tensor, g, m, &sp)?;
        }
        self.step += 1;
        Ok(())
    }
    fn lr(&self) -> f32 {
        self.cfg.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.cfg.lr = lr;
    }
    fn steps(&self) -> u64 {
        self.step
    }
    fn state(&self) -> OptimState<B> {
        let tensors = self.slots.export("momentum_buffer", &self.momentum).collect();
        OptimState { kind: "sgd".into(), step: self.step, tensors }
    }
    fn hyperparameters(&self) -> serde_json::Value {
        let c = self.cfg;
        serde_json::json!({"momentum": c.momentum, "weight_decay": c.weight_decay, "nesterov": c.nesterov})
    }
    fn load_state(&mut self, backend: &B, state: &OptimState<B>) -> Result<()> {
        check_kind(state, "sgd", self.momentum.len())?;
        self.slots.import(backend, state, "momentum_buffer", &self.momentum)?;
        self.step = state.step;
        Ok(())
    }
}

/// Adam or AdamW.
pub struct Adam<B: Backend> {
    cfg: AdamConfig,
    slots: Slots<B>,
    m: Vec<Tensor<B>>,
    v: Vec<Tensor<B>>,
    step: u64,
}

impl<B: Backend> Adam<B> {
    /// Allocates the two moment buffers per parameter.
    pub fn new(backend: &B, params: &[Param<B>], cfg: AdamConfig) -> Result<Self> {
        let c = cfg;
        AdamParams::new(1, c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, 1, c.decoupled)
            .map_err(|e| Error::Optim(e.to_string()))?;
        let slots = Slots::new(params);
        let (m, v) = (slots.zeros(backend)?, slots.zeros(backend)?);
        Ok(Adam { cfg, slots, m, v, step: 0 })
    }

    /// The settings (with the current learning rate).
    pub fn config(&self) -> AdamConfig {
        self.cfg
    }
}

impl<B: Backend> Optimizer<B> for Adam<B> {
    fn step(&mut self, backend: &B, params: &[Param<B>], grads: &[Tensor<B>]) -> Result<()> {
        self.slots.check_step(params, grads)?;
        let (c, t) = (self.cfg, self.step + 1);
        for (((p, g), m), v) in params.iter().zip(grads).zip(&self.m).zip(&self.v) {
            let ap = AdamParams::new(p.tensor.numel(), c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, t, c.decoupled)?;
            backend.adam_update_(&p.tensor, g, m, v, &ap)?;
        }
        self.step = t;
        Ok(())
    }
    fn lr(&self) -> f32 {
        self.cfg.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.cfg.lr = lr;
    }
    fn steps(&self) -> u64 {
        self.step
    }
    fn state(&self) -> OptimState<B> {
        let tensors = self.slots.export("exp_avg", &self.m).chain(self.slots.export("exp_avg_sq", &self.v)).collect();
        OptimState { kind: "adam".into(), step: self.step, tensors }
    }
    fn hyperparameters(&self) -> serde_json::Value {
        let c = self.cfg;
        serde_json::json!({
            "beta1": c.beta1, "beta2": c.beta2, "eps": c.eps, "weight_decay": c.weight_decay, "decoupled": c.decoupled
        })
    }
    fn load_state(&mut self, backend: &B, state: &OptimState<B>) -> Result<()> {
        check_kind(state, "adam", self.m.len() * 2)?;
        self.slots.import(backend, state, "exp_avg", &self.m)?;
        self.slots.import(backend, state, "exp_avg_sq", &self.v)?;
        self.step = state.step;
        Ok(())
    }
}
