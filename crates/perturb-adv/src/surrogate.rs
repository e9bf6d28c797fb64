//! A quickly trained standard model, for a transfer attack's surrogate when none is given
//! (and for tests): SGD with Nesterov momentum 0.9 and a one-cycle schedule, the command
//! line's `perturb train` defaults.

use perturb_autograd::{Graph, Reduction};
use perturb_core::{Backend, Shape};
use perturb_data::{Batches, Dataset};
use perturb_nn::{LrSchedule, Model, Optimizer, Sgd, SgdConfig, build_model};

use crate::{Error, Result};

/// How to train a surrogate.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Model name (`mlp`, `cnn-small`, `cnn-madry`).
    pub arch: String,
    /// Passes over the data.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Peak learning rate of the one-cycle schedule.
    pub lr: f32,
    /// Seed of the initialisation and the shuffling.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// An `mlp` for one epoch (a few seconds on the embedded digits on a CPU).
    fn default() -> Self {
        TrainConfig { arch: "mlp".into(), epochs: 1, batch_size: 16, lr: 0.03, seed: 1 }
    }
}

/// Trains a model of `cfg.arch` on `data` with cross-entropy.
pub fn train_standard<B: Backend>(b: &B, data: &Dataset, cfg: &TrainConfig) -> Result<Model<B>> {
    if cfg.epochs == 0 || cfg.batch_size == 0 || data.is_empty() {
        return Err(Error::invalid("surrogate", "training needs epochs >= 1, batch_size >= 1 and some data"));
    }
    let input = [data.channels, data.height, data.width];
    let model = build_model(b, &cfg.arch, input, data.num_classes, cfg.seed)?;
    let steps_per_epoch = data.len().div_ceil(cfg.batch_size) as u64;
    let schedule = LrSchedule::one_cycle(cfg.lr, steps_per_epoch * cfg.epochs as u64);
    let sgd = SgdConfig { lr: cfg.lr, momentum: 0.9, weight_decay: 0.0, nesterov: true };
    let mut opt = Sgd::new(b, model.params(), sgd)?;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut step = 0;
    for epoch in 0..cfg.epochs as u64 {
        let batches = Batches::new(data.len(), cfg.batch_size, Some(cfg.seed), epoch, false)?;
        for idx in batches.iter() {
            data.gather(idx, &mut xs, &mut ys)?;
            let x = b.upload_f32(&xs, &Shape::from([idx.len(), input[0], input[1], input[2]]))?;
            let y = b.upload_u32(&ys, &Shape::from([idx.len()]))?;
            let g = Graph::new(b);
            let bound = model.bind(&g, true);
            let xv = g.input(&x, false);
            let logits = model.forward(&g, &bound, xv)?;
            let loss = g.softmax_xent(logits, &y, Reduction::Mean)?.loss;
            let grads = bound.grads(&g.backward(loss)?)?;
            opt.set_lr(schedule.lr_at(step));
            opt.step(b, model.params(), &grads)?;
            step += 1;
        }
    }
    Ok(model)
}
