//! The backend-erased engine behind the handles: one generic implementation over
//! [`perturb_core::Backend`], reached through two object-safe traits so a handle does not carry
//! the backend's type. Every operation takes the model's lock: calls on one model (and on the
//! trainers made from it) from several threads run one at a time.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use perturb_adv::autoattack::{AutoAttackConfig, AutoAttackOutcome, run_autoattack};
use perturb_adv::grad::{LossTargets, loss_and_grad};
use perturb_adv::training::{MethodConfig, MonitorConfig, RunConfig, train};
use perturb_adv::{Attack, AttackConfig, AttackRun, Loss, run_attack};
use perturb_cli::backends::Resolved;
use perturb_core::{Backend, Shape};
use perturb_data::Dataset;
use perturb_nn::{Adam, AdamConfig, LrSchedule, Model, Optimizer, Sgd, SgdConfig, build_model, load_model};

use crate::error::{Error, Result, Status};

/// An open backend.
pub trait Engine: Send + Sync {
    /// "cpu", "wgpu" or "cuda".
    fn name(&self) -> &'static str;
    /// The device in words.
    fn device(&self) -> String;
    /// Loads a model file onto this backend.
    fn load(self: Arc<Self>, path: &Path) -> Result<Arc<dyn ModelOps>>;
    /// Builds and initialises a model by architecture name.
    fn build(self: Arc<Self>, arch: &str, input: [usize; 3], classes: usize, seed: u64) -> Result<Arc<dyn ModelOps>>;
}

/// The optimiser of a trainer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerChoice {
    /// SGD (momentum, Nesterov, weight decay as given).
    Sgd(SgdConfig),
    /// Adam or AdamW.
    Adam(AdamConfig),
}

/// What a trainer is built with.
#[derive(Debug, Clone)]
pub struct TrainerSettings {
    /// The method and its hyperparameters; its seed is the first step's, and step k uses seed + k.
    pub method: MethodConfig,
    /// The optimiser.
    pub optimizer: OptimizerChoice,
}

/// A model on some backend.
pub trait ModelOps: Send + Sync {
    /// [channels, height, width] and the class count.
    fn shape(&self) -> ([usize; 3], usize);
    /// Logits [n, classes] of `x` ([n, c, h, w]).
    fn forward(&self, x: &[f32]) -> Result<Vec<f32>>;
    /// d (sum over the batch of the cross-entropy) / d x, and that sum.
    fn input_grad(&self, x: &[f32], labels: &[u32]) -> Result<(Vec<f32>, f32)>;
    /// One attack over `data` in batches of `batch_size`.
    fn attack(&self, config: AttackConfig, data: &Dataset, batch_size: usize) -> Result<AttackRun>;
    /// AutoAttack-standard over `data`.
    fn autoattack(&self, config: &AutoAttackConfig, data: &Dataset) -> Result<AutoAttackOutcome>;
    /// Writes the model (weights and architecture) to `path`, atomically.
    fn save(&self, path: &Path) -> Result<()>;
    /// A trainer that updates this model's weights.
    fn trainer(self: Arc<Self>, settings: TrainerSettings) -> Result<Box<dyn TrainerOps>>;
}

/// A training state (optimiser moments, step count) bound to one model.
pub trait TrainerOps: Send + Sync {
    /// One optimiser step on a batch; returns the step's loss.
    fn step(&self, data: &Dataset, lr: f32) -> Result<f32>;
    /// Steps taken so far.
    fn steps(&self) -> u64;
    /// The model it trains.
    fn model(&self) -> Arc<dyn ModelOps>;
}

/// Opens the backend `choice` with `threads` CPU threads (`None`: all cores), through the
/// command line's resolution (so `auto` picks what `perturb --backend auto` picks).
pub fn open(choice: perturb_cli::backends::BackendChoice, threads: Option<usize>) -> Result<Arc<dyn Engine>> {
    Ok(match perturb_cli::backends::resolve(choice, threads)? {
        Resolved::Cpu(b) => Arc::new(EngineOf(b)),
        #[cfg(feature = "wgpu")]
        Resolved::Wgpu(b) => Arc::new(EngineOf(*b)),
        #[cfg(feature = "cuda")]
        Resolved::Cuda(b) => Arc::new(EngineOf(b)),
    })
}

struct EngineOf<B: Backend>(B);

impl<B: Backend> Engine for EngineOf<B> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn device(&self) -> String {
        self.0.device_name()
    }
    fn load(self: Arc<Self>, path: &Path) -> Result<Arc<dyn ModelOps>> {
        let model = load_model(&self.0, path).map_err(|e| Error::new(Status::Model, e.to_string()))?;
        Ok(Arc::new(ModelOf { engine: self, model, lock: Mutex::new(()) }))
    }
    fn build(self: Arc<Self>, arch: &str, input: [usize; 3], classes: usize, seed: u64) -> Result<Arc<dyn ModelOps>> {
        let model = build_model(&self.0, arch, input, classes, seed)
            .map_err(|e| Error::new(Status::InvalidArgument, e.to_string()))?;
        Ok(Arc::new(ModelOf { engine: self, model, lock: Mutex::new(()) }))
    }
}

struct ModelOf<B: Backend> {
    engine: Arc<EngineOf<B>>,
    model: Model<B>,
    /// Held for the whole of every operation: the weights are read by forwards and written by
    /// training steps.
    lock: Mutex<()>,
}

impl<B: Backend> ModelOf<B> {
    fn b(&self) -> &B {
        &self.engine.0
    }
    fn guard(&self) -> MutexGuard<'_, ()> {
        // A panic inside an earlier call poisoned the lock; the model itself is still whole
        // (the panic was caught at the boundary), so go on.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<B: Backend> ModelOps for ModelOf<B> {
    fn shape(&self) -> ([usize; 3], usize) {
        (self.model.input_shape(), self.model.classes())
    }
    fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let _g = self.guard();
        Ok(perturb_adv::run::logits(self.b(), &self.model, x)?)
    }
    fn input_grad(&self, x: &[f32], labels: &[u32]) -> Result<(Vec<f32>, f32)> {
        let _g = self.guard();
        let b = self.b();
        let [c, h, w] = self.model.input_shape();
        let xt = b.upload_f32(x, &Shape::from([labels.len(), c, h, w]))?;
        let targets = LossTargets::new(b, labels, self.model.classes(), Loss::Xent)?;
        let (per_example, grad) = loss_and_grad(b, &self.model, &xt, &targets, Loss::Xent)?;
        let losses = b.download_f32(&per_example)?;
        Ok((b.download_f32(&grad)?, losses.iter().sum()))
    }
    fn attack(&self, config: AttackConfig, data: &Dataset, batch_size: usize) -> Result<AttackRun> {
        let _g = self.guard();
        Ok(run_attack(self.b(), &self.model, &Attack::new(config), data, batch_size)?)
    }
    fn autoattack(&self, config: &AutoAttackConfig, data: &Dataset) -> Result<AutoAttackOutcome> {
        let _g = self.guard();
        Ok(run_autoattack(self.b(), &self.model, data, config, &mut |_| {})?)
    }
    fn save(&self, path: &Path) -> Result<()> {
        let _g = self.guard();
        self.model.save(self.b(), path).map_err(|e| Error::new(Status::Model, e.to_string()))
    }
    fn trainer(self: Arc<Self>, settings: TrainerSettings) -> Result<Box<dyn TrainerOps>> {
        settings.method.validate()?;
        let opt: Box<dyn Optimizer<B> + Send> = {
            let _g = self.guard();
            match settings.optimizer {
                OptimizerChoice::Sgd(cfg) => Box::new(Sgd::new(self.b(), self.model.params(), cfg)?),
                OptimizerChoice::Adam(cfg) => Box::new(Adam::new(self.b(), self.model.params(), cfg)?),
            }
        };
        Ok(Box::new(TrainerOf { model: self, method: settings.method, state: Mutex::new((opt, 0)) }))
    }
}

struct TrainerOf<B: Backend> {
    model: Arc<ModelOf<B>>,
    method: MethodConfig,
    /// The optimiser and the steps taken.
    state: Mutex<(Box<dyn Optimizer<B> + Send>, u64)>,
}

impl<B: Backend> TrainerOps for TrainerOf<B> {
    fn step(&self, data: &Dataset, lr: f32) -> Result<f32> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let _g = self.model.guard();
        let (opt, steps) = &mut *state;
        // One epoch of one batch through the library's training loop: the method's examples from
        // the current weights, one optimiser step, the divergence guard. Fresh noise every step.
        let method = self.method.clone().with_seed(self.method.seed.wrapping_add(*steps));
        let run = RunConfig {
            epochs: 1,
            batch_size: data.len(),
            seed: *steps,
            monitor: MonitorConfig { enabled: false, ..MonitorConfig::default() },
            loss_every: 1,
            eps_warmup_epochs: 0.0,
        };
        let schedule = LrSchedule::Constant { lr };
        let report =
            train(self.model.b(), &self.model.model, data, None, &method, &run, opt.as_mut(), &schedule, &mut |_| {})
                .map_err(|e| match e {
                perturb_adv::Error::InvalidArgument { param: "lr", msg } => Error::new(Status::Diverged, msg),
                other => other.into(),
            })?;
        *steps += 1;
        Ok(report.final_loss)
    }
    fn steps(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
    fn model(&self) -> Arc<dyn ModelOps> {
        self.model.clone()
    }
}
